"""Citizen feedback (phản ánh, kiến nghị): an item's life as the fold of its events.

A feedback item is immutable (DESIGN §3); what happens to it is a series of
immutable `feedback_event` records written by whoever acts: the dispatcher
(received, assigned, closed, reopened, the citizen's satisfaction rating), the unit
that handles it (accepted, in_progress, resolved with the result, returned when it
is not the unit's responsibility). The item's current state is the fold of its
events in hybrid-logical-clock order (tie-break: origin node, then record id), so
every node holding the same events computes the same state, whatever order they
arrived in and however often.

States and the events that may move them (an event not allowed in the current
state is kept in the history marked *ignored* with the reason, and changes
nothing; it never fails the fold):

    event          allowed in                                         leads to
    received       any (the item itself already says so)              unchanged
    assigned(U)    received assigned accepted in_progress reopened    assigned to U
                   returned   (to the current assignee while being
                   handled: unchanged, progress kept)
    accepted       assigned reopened                                   accepted
    in_progress    received assigned accepted in_progress reopened    in_progress
    resolved       received assigned accepted in_progress reopened    resolved (note = result)
    closed         every state but closed                              closed
    reopened       resolved closed                                     reopened
    returned       assigned accepted in_progress reopened             returned (no assignee;
                                                                      U, if given, is suggested)
    satisfaction   resolved closed                                     unchanged, rating 1-5

accepted, in_progress, resolved and returned are the assignee's: one written at
another node than the item's own (the dispatcher's) must come from the assignee or
a unit above it in the registry, else it is ignored (a unit's late update after
the item was reassigned elsewhere changes nothing).

An item starts `assigned` when it names its unit on receipt (the 1022 hotline file
does), else `received`. Its deadline is `due_at` from the source; else
`received_at` plus the `due_days` of its category's `feedback_category` definition;
else plus DEFAULT_DUE_DAYS (the 1022 hotline's 7 days). It is handled when resolved
(or closed without a resolution), at the time the event states; handled on time
when that time is not after the deadline; overdue while open past the deadline.

Events name their item by (feedback_origin, agency, feedback = source ticket id).
An event from a system that does not know the item's origin (a unit's own Open311
export) is matched by the ticket id alone when exactly one item has it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import records
from .errors import InputError, LienthongError
from .records import Envelope
from .units import Units

if TYPE_CHECKING:  # only for annotations: the store's read tables fold feedback (read_tables imports this module)
    from .store import Store

DEFAULT_DUE_DAYS = 7
CATEGORY_DEFINITION = "feedback_category"
RECEIVED_INDICATOR = "KTXH.PA.01"  # Số phản ánh kiến nghị tiếp nhận
ON_TIME_INDICATOR = "KTXH.PA.02"  # Số phản ánh kiến nghị xử lý đúng hạn
DERIVED_SOURCE = "derived:feedback"
MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")

OPEN = frozenset({"received", "assigned", "accepted", "in_progress", "reopened", "returned"})
HANDLED = frozenset({"resolved", "closed"})
_HANDLING = frozenset({"received", "assigned", "accepted", "in_progress", "reopened"})
ALLOWED_FROM: dict[str, frozenset[str]] = {
    "assigned": OPEN,
    "accepted": frozenset({"assigned", "reopened"}),
    "in_progress": _HANDLING,
    "resolved": _HANDLING,
    "closed": OPEN | {"resolved"},
    "reopened": HANDLED,
    "returned": frozenset({"assigned", "accepted", "in_progress", "reopened"}),
    "satisfaction": HANDLED,
}
ASSIGNEES_ONLY = frozenset({"accepted", "in_progress", "resolved", "returned"})

Ancestors = Callable[[str], list[str]]


@dataclass(frozen=True)
class Event:
    """One feedback event as the fold reads it."""

    id: str  # record id, hex
    status: str
    at: str  # when it happened, as the actor stated it (RFC 3339)
    origin: str  # the node that wrote it
    version: int  # its hybrid-logical-clock version: the fold's order
    actor: str = ""  # the unit it was written for (the envelope's unit)
    unit: str = ""  # assigned: the new assignee; returned: the suggested unit
    note: str = ""
    rating: int = 0

    @classmethod
    def from_envelope(cls, env: Envelope) -> Event:
        body = records.body_of(env)
        return cls(env.id.hex(), body.status, body.at, env.origin, env.version, env.unit, body.unit, body.note, body.rating)

    def order(self) -> tuple[int, str, str]:
        return self.version, self.origin, self.id


@dataclass(frozen=True)
class Step:
    """An event in an item's history, and what the fold made of it."""

    event: Event
    applied: bool
    state: str  # the state after it
    reason: str = ""  # why it was ignored


@dataclass
class Item:
    """A feedback item and its current state (the result of `fold`)."""

    id: str
    source_id: str
    origin: str
    agency: str
    unit: str
    received_at: str
    due_at: str
    due_rule: str  # source | category | default
    category: str = ""
    category_name: str = ""
    description: str = ""
    address: str = ""
    citizen: dict[str, str] = field(default_factory=dict)
    state: str = "received"
    assignee: str = ""
    suggested_unit: str = ""
    result: str = ""
    rating: int = 0
    handled_at: str = ""
    history: list[Step] = field(default_factory=list)

    @property
    def responsible(self) -> str:
        """The unit answerable for it: the assignee, else the unit it is about."""
        return self.assignee or self.unit

    @property
    def is_open(self) -> bool:
        return self.state not in HANDLED

    def on_time(self) -> bool | None:
        """Handled by the deadline (None while open)."""
        if not self.handled_at:
            return None
        return _time(self.handled_at) <= _time(self.due_at)

    def overdue(self, now: dt.datetime) -> bool:
        return self.is_open and now > _time(self.due_at)

    def to_dict(self, now: dt.datetime, history: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "source_id": self.source_id,
            "origin": self.origin,
            "agency": self.agency,
            "unit": self.unit,
            "category": self.category,
            "category_name": self.category_name,
            "description": self.description,
            "address": self.address,
            "received_at": self.received_at,
            "state": self.state,
            "assignee": self.assignee,
            "suggested_unit": self.suggested_unit,
            "due_at": self.due_at,
            "due_rule": self.due_rule,
            "overdue": self.overdue(now),
            "handled_at": self.handled_at,
            "on_time": self.on_time(),
            "result": self.result,
            "rating": self.rating or None,
            "events": len(self.history),
            "ignored_events": sum(1 for s in self.history if not s.applied),
        }
        if history:
            out["citizen"] = self.citizen
            out["history"] = [
                {
                    "id": s.event.id,
                    "status": s.event.status,
                    "at": s.event.at,
                    "by": s.event.origin,
                    "unit": s.event.actor,
                    **({"assigned_unit": s.event.unit} if s.event.unit else {}),
                    **({"rating": s.event.rating} if s.event.rating else {}),
                    "note": s.event.note,
                    "applied": s.applied,
                    "state": s.state,
                    **({"ignored_because": s.reason} if s.reason else {}),
                }
                for s in self.history
            ]
        return out


# ---------------------------------------------------------------- the fold (pure)


def item_from_envelope(env: Envelope, due_days: dict[str, int] | None = None) -> Item:
    """The item's facts as received, before any event (its deadline decided here)."""
    body = records.body_of(env)
    due_at, rule = body.due_at, "source"
    if not due_at:
        days = (due_days or {}).get(body.category)
        rule = "category" if days is not None else "default"
        due_at = (_time(body.received_at) + dt.timedelta(days=DEFAULT_DUE_DAYS if days is None else days)).isoformat()
    citizen = {k: v for k, v in (("name", body.citizen.name), ("phone", body.citizen.phone), ("email", body.citizen.email)) if v}
    return Item(
        id=env.id.hex(),
        source_id=body.source_id,
        origin=env.origin,
        agency=env.agency,
        unit=env.unit,
        received_at=body.received_at,
        due_at=due_at,
        due_rule=rule,
        category=body.category,
        category_name=body.category_name,
        description=body.description,
        address=body.address,
        citizen=citizen,
        state="assigned" if body.assigned_unit else "received",
        assignee=body.assigned_unit,
    )


def fold(item: Item, events: Iterable[Event], ancestors: Ancestors | None = None) -> Item:
    """The item's current state: its events deduplicated by id (newest version kept),
    applied in (version, origin, id) order. Returns a new Item; `item` is unchanged."""
    newest: dict[str, Event] = {}
    for event in events:
        if event.id not in newest or event.version > newest[event.id].version:
            newest[event.id] = event
    out = Item(**{**item.__dict__, "history": []})
    for event in sorted(newest.values(), key=Event.order):
        reason = refusal(out, event, ancestors)
        if reason:
            out.history.append(Step(event, False, out.state, reason))
            continue
        _apply(out, event)
        out.history.append(Step(event, True, out.state))
    return out


def refusal(item: Item, event: Event, ancestors: Ancestors | None = None) -> str:
    """Why `event` would change nothing in `item`'s current state ('' when it applies)."""
    status = event.status
    if status == "received":
        return ""
    allowed = ALLOWED_FROM.get(status)
    if allowed is None:
        return f"'{status}' is not a feedback event"
    if item.state not in allowed:
        return f"'{status}' cannot follow '{item.state}'"
    if status == "assigned" and not event.unit:
        return "the assignment names no unit"
    if status == "satisfaction" and not 1 <= event.rating <= 5:
        return "the satisfaction rating is not 1 to 5"
    if status in ASSIGNEES_ONLY and event.origin != item.origin and item.assignee:
        above = ancestors(item.assignee) if ancestors else []
        if event.actor != item.assignee and event.actor not in above:
            return f"written for {event.actor or 'no unit'}, but the item is assigned to {item.assignee}"
    return ""


def _apply(item: Item, event: Event) -> None:
    status = event.status
    if status == "received":
        return
    if status == "assigned":
        if event.unit == item.assignee and item.state in ("accepted", "in_progress"):
            return  # assigned again to the unit already handling it: progress is kept
        item.state, item.assignee, item.suggested_unit = "assigned", event.unit, ""
    elif status == "returned":
        item.state, item.assignee, item.suggested_unit = "returned", "", event.unit
    elif status == "satisfaction":
        item.rating = event.rating
    elif status == "resolved":
        item.state, item.result, item.handled_at = "resolved", event.note, event.at
    elif status == "closed":
        item.state = "closed"
        item.handled_at = item.handled_at or event.at  # closed without a resolution: handled now
    elif status == "reopened":
        item.state, item.handled_at, item.result = "reopened", "", ""
    else:
        item.state = status


# ---------------------------------------------------------------- matching events to items


def attach(items: Sequence[Envelope], events: Iterable[Envelope]) -> tuple[dict[bytes, list[Event]], list[Event]]:
    """Group events under their items (exact name first, else a unique ticket id);
    returns (item id -> events, orphans: events whose item this node does not hold)."""
    by_id = {env.id: env for env in items}
    by_ticket: dict[str, list[bytes]] = {}
    by_origin_ticket: dict[tuple[str, str], list[bytes]] = {}
    for env in items:
        source_id = records.body_of(env).source_id
        by_ticket.setdefault(source_id, []).append(env.id)
        by_origin_ticket.setdefault((env.origin, source_id), []).append(env.id)
    grouped: dict[bytes, list[Event]] = {rid: [] for rid in by_id}
    orphans: list[Event] = []
    for env in events:
        body = records.body_of(env)
        exact = records.feedback_id(body.feedback_origin, env.agency, body.feedback)
        candidates = [exact] if exact in by_id else by_origin_ticket.get((body.feedback_origin, body.feedback)) or []
        if len(candidates) != 1:
            candidates = by_ticket.get(body.feedback, [])
        (grouped[candidates[0]] if len(candidates) == 1 else orphans).append(Event.from_envelope(env))
    return grouped, orphans


# ---------------------------------------------------------------- reading a store


@dataclass
class Folded:
    """Every feedback item a node holds, folded, and the events it cannot place."""

    items: list[Item]
    orphans: list[Event]


def load(store: Store) -> Folded:
    """Fold every feedback item held by `store` (sorted by received time, then id)."""
    registry = Units.from_store(store)
    due_days = _due_days(store)
    envs = list(store.iter_records(records.FEEDBACK))
    grouped, orphans = attach(envs, store.iter_records(records.FEEDBACK_EVENT))
    items = [fold(item_from_envelope(env, due_days), grouped[env.id], registry.ancestors) for env in envs]
    items.sort(key=lambda i: (_time(i.received_at), i.id))
    return Folded(items, orphans)


def _due_days(store: Store) -> dict[str, int]:
    """Per category, the deadline in days the province set (`feedback_category` definitions)."""
    out: dict[str, int] = {}
    for env in store.iter_records(records.DEFINITION):
        body = records.body_of(env)
        if body.type != CATEGORY_DEFINITION:
            continue
        days = json.loads(body.json or "{}").get("due_days")
        if isinstance(days, int | float) and not isinstance(days, bool) and days > 0:
            out[body.code] = int(days)
    return out


def find(items: Sequence[Item], ref: str) -> Item:
    """The item named by `ref`: its record id (hex, or a unique prefix of at least 6
    digits) or its source ticket id. Raises when no item or several match."""
    ref = records.nfc(ref.strip())
    matches = [i for i in items if i.source_id == ref]
    if not matches and re.fullmatch(r"[0-9a-fA-F]{6,32}", ref):
        matches = [i for i in items if i.id.startswith(ref.lower())]
    if not matches:
        raise LienthongError(f"no feedback item {ref!r} on this node", "list them with `lienthong feedback list --dir DIR`")
    if len(matches) > 1:
        names = "; ".join(f"{i.id} ({i.source_id} from {i.agency or 'no agency'} at {i.origin})" for i in matches[:5])
        raise LienthongError(f"{ref!r} names {len(matches)} feedback items: {names}", "give the record id instead")
    return matches[0]


def event_fields(
    item: Item, status: str, at: str, *, actor: str, note: str = "", unit: str = "", rating: int | None = None
) -> dict[str, Any]:
    """The canonical fields of a new event on `item` (build it with `records.build`).

    The event carries the item's agency, so it names its item exactly."""
    fields: dict[str, Any] = {
        "kind": "feedback_event",
        "feedback": item.source_id,
        "feedback_origin": item.origin,
        "status": status,
        "at": at,
        "note": note,
        "unit": actor,
        "agency": item.agency,
        "assigned_unit": unit,
    }
    if rating is not None:
        fields["rating"] = rating
    return fields


# ---------------------------------------------------------------- derived values and status


def derived_values(store: Store, period: str) -> list[dict[str, Any]]:
    """KTXH.PA.01 (received) and KTXH.PA.02 (handled on time) per unit for a month.

    Both count the items received in `period` (YYYY-MM, by the date of `received_at`
    as the source wrote it), per responsible unit (the assignee, else the item's
    unit); PA.02 counts those of them handled by their deadline so far. Rows are
    shaped like `records.to_dict` of indicator values, with `source` saying they are
    derived, never typed. A unit with items gets both rows (PA.02 may be 0)."""
    if not MONTH.match(period):
        raise InputError(f"'{period}' is not a month", "write the period as YYYY-MM, e.g. 2026-11", field="period", code="bad_period")
    received: dict[str, int] = {}
    on_time: dict[str, int] = {}
    for item in load(store).items:
        if item.received_at[:7] != period:
            continue
        unit = item.responsible
        received[unit] = received.get(unit, 0) + 1
        on_time[unit] = on_time.get(unit, 0) + (1 if item.on_time() else 0)
    rows = []
    for indicator, counts, what in (
        (RECEIVED_INDICATOR, received, "feedback items received"),
        (ON_TIME_INDICATOR, on_time, "feedback items handled by their deadline"),
    ):
        for unit in sorted(counts):
            rows.append(
                {
                    "kind": "indicator",
                    "indicator": indicator,
                    "period": period,
                    "value": counts[unit],
                    "unit": unit,
                    "origin": store.node_id,
                    "source": DERIVED_SOURCE,
                    "comment": f"{what}, counted from the feedback this node holds",
                }
            )
    return rows


def status_summary(store: Store, now: dt.datetime | float, limit: int = 5) -> dict[str, Any]:
    """For the node's `status`: open items, overdue ones (the first `limit`, most overdue
    first) and events whose item this node does not hold."""
    when = now if isinstance(now, dt.datetime) else dt.datetime.fromtimestamp(now, dt.UTC)
    folded = load(store)
    open_items = [i for i in folded.items if i.is_open]
    overdue = sorted((i for i in open_items if i.overdue(when)), key=lambda i: (_time(i.due_at), i.id))
    return {
        "open": len(open_items),
        "overdue": len(overdue),
        "overdue_items": [
            {"id": i.id, "source_id": i.source_id, "state": i.state, "assignee": i.responsible, "due_at": i.due_at} for i in overdue[:limit]
        ],
        "orphan_events": len(folded.orphans),
    }


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)
