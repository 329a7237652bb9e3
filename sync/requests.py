"""On-demand data requests ("chia sẻ dữ liệu theo yêu cầu đặc thù") and their answers.

A **request** is a `definition` record of type `data_request`, written by the node that
asks (normally the province) and keyed by its code. Like every definition it flows down
to every child; each node shows the requests that address a unit it can see (see
`Scope`). Its fields:

    what          what is asked for, in plain words
    units         the addressed unit codes
    periods       the canonical periods the data must cover
    reason        why it is asked
    due           by when: a date (the whole day counts, Vietnam time) or an RFC 3339 date-time
    created_at    when it was written; requested_by: the operator

An **answer** is a `report` record of report type `data-request`, written by the node that
answers for the addressed unit:

    source_id     "<requesting node>/<request code>": which request it answers
    unit          the addressed unit it answers for
    title         "approved: <what>" or "declined: <what>" (the decision is the first word)
    summary       the reason
    signed_by     the operator who answered
    submitted_at  when it was answered
    period        the request's first period
    attachments   the shared data files, as content-addressed blobs {name, sha256, size}

Why a report and not a feedback-event-style record: a report's identity is
(source_id, unit, origin, agency), so the answer has exactly one writer (the answering
node) and a deterministic id; answering again writes a new version of the same record
and replaces the earlier answer everywhere (DESIGN §3). An immutable event per answer
would need a fold to find the current one, and two nodes could disagree until every
event arrived. Reports also carry attachments already.

Lateness is derived, never stored: an answer is late when it was given after the
request's deadline (DHIS2 timeliness: on the due day is on time). So a deadline the
province extends later is applied to every answer alike.

Everything here reads stored records; nothing is written but through `Store.write_local`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from . import records
from .errors import InputError
from .records import Envelope, Keyed
from .store import Store
from .subtree import Subtrees
from .units import Units

REQUEST_TYPE = "data_request"
ANSWER_TYPE = "data-request"
APPROVED, DECLINED, PENDING = "approved", "declined", "pending"
DECISIONS = (APPROVED, DECLINED)
# Vietnam keeps one time zone and no daylight saving: a due *date* ends at midnight there.
VIETNAM = timezone(timedelta(hours=7), "ICT")
REQUEST_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Request:
    """A data request as the requesting node wrote it."""

    origin: str
    code: str
    what: str
    units: tuple[str, ...]
    periods: tuple[str, ...]
    reason: str
    due: str
    created_at: str = ""
    requested_by: str = ""
    version: int = 0

    @property
    def key(self) -> str:
        """The request's identity across the federation: requesting node and code."""
        return f"{self.origin}/{self.code}"

    @property
    def deadline(self) -> datetime:
        return deadline(self.due)

    def as_dict(self) -> dict[str, Any]:
        """The request's fields as `requests create --json` and `requests list --json` print them."""
        return {
            "request": self.key,
            "code": self.code,
            "origin": self.origin,
            "what": self.what,
            "units": list(self.units),
            "periods": list(self.periods),
            "reason": self.reason,
            "due": self.due,
            "created_at": self.created_at,
            "requested_by": self.requested_by,
            "version": self.version,
        }


@dataclass(frozen=True)
class Answer:
    """One node's answer for one addressed unit."""

    request: str  # Request.key
    unit: str
    node: str  # the origin: the node that answered
    decision: str  # approved, declined, or "unknown" for a title this module did not write
    reason: str
    at: str
    operator: str
    attachments: tuple[dict[str, Any], ...] = ()
    agency: str = ""
    version: int = 0
    id: str = ""


@dataclass
class Scope:
    """Which units a node shows requests for, and which it may answer for.

    It answers for its own units (node.units, default its id) and the units below them
    in the registry, except units held by a node below it: a unit with a node of its
    own answers for itself. It shows requests for those and for every unit below it
    (its descendants' units at a middle tier)."""

    node_id: str
    answerable: set[str] = field(default_factory=set)
    visible: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, node_id: str, own_units: Iterable[str], registry: Units, below: Iterable[str] = ()) -> Scope:
        """`below`: units held by nodes below this one (child nodes' ids and units learned from them)."""

        def with_descendants(codes: Iterable[str]) -> set[str]:
            out: set[str] = set()
            for unit in codes:
                out.add(unit)
                out.update(registry.descendants(unit))
            return out

        explicit = {records.nfc(u) for u in own_units}
        own = with_descendants(explicit)
        held_below = with_descendants(set(below) - explicit)
        return cls(node_id, (own - held_below) | explicit, own | held_below)

    @classmethod
    def from_store(cls, store: Store, own_units: Iterable[str]) -> Scope:
        return cls.of(store.node_id, own_units, Units.from_store(store), units_below(store))

    def shows(self, request: Request) -> bool:
        return request.origin == self.node_id or any(u in self.visible for u in request.units)

    def shown_units(self, request: Request) -> list[str]:
        """The addressed units whose answers this node lists: all of them where the request was made."""
        if request.origin == self.node_id:
            return list(request.units)
        return [u for u in request.units if u in self.visible]


# ---------------------------------------------------------------- writing


def request_record(
    origin: str,
    *,
    code: str,
    what: str,
    units: Sequence[str],
    periods: Sequence[str],
    reason: str,
    due: str,
    created_at: str,
    requested_by: str = "",
) -> Keyed:
    """The definition record of a request; every field checked (InputError names the bad one)."""
    code = code.strip()
    if not REQUEST_CODE.match(code):
        raise InputError(
            f"'{code}' is not a valid request code", "use letters, digits, '.', '_' or '-' (e.g. YC-20261120-01)", field="code"
        )
    unit_list = _unique(records.code({"unit": u}, "unit") for u in units)
    if not unit_list:
        raise InputError("a request must address at least one unit", "add --unit CODE (repeatable)", field="units", code="missing")
    period_list = _unique(records.period({"period": p}) for p in periods)
    if not period_list:
        raise InputError("a request must name at least one period", "add --period P (repeatable), e.g. 2026Q3", field="periods")
    fields = {
        "what": _words(what, "what", "say what data is asked for"),
        "units": unit_list,
        "periods": period_list,
        "reason": _words(reason, "reason", "add --reason TEXT saying why the data is needed"),
        "due": check_due(due),
        "created_at": records.timestamp({"created_at": created_at}, "created_at"),
        "requested_by": records.text({"requested_by": requested_by}, "requested_by", required=False, limit=200),
    }
    return records.definition(origin, {"type": REQUEST_TYPE, "code": code, "fields": fields})


def answer_record(
    origin: str,
    request: Request,
    unit: str,
    decision: str,
    *,
    reason: str,
    at: str,
    operator: str = "",
    attachments: Sequence[Mapping[str, Any]] = (),
) -> Keyed:
    """The report record that answers `request` for `unit`. Declines need a reason and carry no files."""
    if decision not in DECISIONS:
        raise InputError(f"an answer is approved or declined (got {decision!r})", "use --approve or --decline", field="decision")
    if unit not in request.units:
        raise InputError(
            f"request {request.key} does not address unit {unit}",
            "answer for one of its units: " + ", ".join(request.units),
            field="unit",
        )
    if decision == DECLINED and not reason.strip():
        raise InputError("a declined request needs a reason", "add --reason TEXT saying why the data cannot be shared", field="reason")
    if decision == DECLINED and attachments:
        raise InputError("a declined request carries no data files", "leave the files out, or --approve", field="attachments")
    return records.report(
        origin,
        {
            "report_type": ANSWER_TYPE,
            "source_id": request.key,
            "unit": unit,
            "period": request.periods[0],
            "title": f"{decision}: {request.what}",
            "summary": reason,
            "signed_by": operator,
            "submitted_at": at,
            "attachments": list(attachments),
        },
    )


def new_code(existing: Iterable[str], today: date) -> str:
    """The next free code of the day: YC-20261120-01, -02, … ("yêu cầu": request)."""
    prefix = f"YC-{today:%Y%m%d}-"
    taken = {c for c in existing if c.startswith(prefix)}
    n = len(taken) + 1
    while f"{prefix}{n:02d}" in taken:
        n += 1
    return f"{prefix}{n:02d}"


# ---------------------------------------------------------------- deadlines


def check_due(text: str) -> str:
    """A due date (2026-11-30) or date-time with offset, as given; InputError otherwise."""
    value = text.strip()
    try:
        deadline(value)
    except ValueError:
        raise InputError(
            f"'due' is not a date or a date-time with offset (got {text!r})",
            "write it as 2026-11-30 or 2026-11-30T17:00:00+07:00",
            field="due",
            code="bad_time",
        ) from None
    return value


def deadline(due: str) -> datetime:
    """The first instant that is too late: a date's following midnight in Vietnam, or the date-time itself."""
    if len(due) == 10:
        day = date.fromisoformat(due)
        return datetime.combine(day + timedelta(days=1), datetime.min.time(), VIETNAM)
    moment = datetime.fromisoformat(due)
    if moment.tzinfo is None:
        raise ValueError("no UTC offset")
    return moment


def is_late(at: str, due: str) -> bool:
    """Whether something done at `at` (RFC 3339) missed `due`; unreadable times are not called late."""
    try:
        return datetime.fromisoformat(at) >= deadline(due)
    except (ValueError, TypeError):
        return False


# ---------------------------------------------------------------- reading


def read_request(env: Envelope) -> Request | None:
    """The request a definition record holds, or None when it is another definition."""
    body = records.body_of(env)
    if body.type != REQUEST_TYPE:
        return None
    fields = json.loads(body.json or "{}")
    return Request(
        origin=env.origin,
        code=body.code,
        what=str(fields.get("what", "")),
        units=tuple(str(u) for u in fields.get("units") or ()),
        periods=tuple(str(p) for p in fields.get("periods") or ()),
        reason=str(fields.get("reason", "")),
        due=str(fields.get("due", "")),
        created_at=str(fields.get("created_at", "")),
        requested_by=str(fields.get("requested_by", "")),
        version=env.version,
    )


def read_answer(env: Envelope) -> Answer | None:
    """The answer a report record holds, or None when it is another report."""
    body = records.body_of(env)
    if body.report_type != ANSWER_TYPE or not body.source_id:
        return None
    word = body.title.split(":", 1)[0].strip().lower()
    return Answer(
        request=body.source_id,
        unit=env.unit,
        node=env.origin,
        decision=word if word in DECISIONS else "unknown",
        reason=body.summary,
        at=body.submitted_at,
        operator=body.signed_by,
        attachments=tuple({"name": a.name, "sha256": a.sha256, "size": a.size} for a in body.attachments),
        agency=env.agency,
        version=env.version,
        id=env.id.hex(),
    )


def requests(store: Store) -> list[Request]:
    """Every live request this node holds, oldest first."""
    found = (read_request(env) for env in store.iter_records(records.DEFINITION))
    return sorted((r for r in found if r is not None), key=lambda r: (r.created_at, r.key))


def answers(store: Store) -> list[Answer]:
    found = (read_answer(env) for env in store.iter_records(records.REPORT))
    return [a for a in found if a is not None]


def units_below(store: Store) -> set[str]:
    """Nodes below this one, whose units they answer for: its children, the nodes the province's
    node registry places below them, and nodes this node learned of through a child's records."""
    subtrees = Subtrees.load(store.reader(), store.node_id)
    nodes = subtrees.children | subtrees.relayed.keys() | subtrees.tree.keys()
    return {node for node in nodes if subtrees.child_for_node(node)}


def find(all_requests: Sequence[Request], ref: str) -> Request:
    """The request named `ref`: its code, or ORIGIN/CODE when codes from two nodes clash."""
    ref = records.nfc(ref.strip())
    matches = [r for r in all_requests if ref in (r.key, r.code)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise InputError(f"this node holds no request {ref!r}", "see the requests it holds with `lienthong requests list --dir DIR`")
    raise InputError(f"{len(matches)} requests have the code {ref!r}", "name one as " + " or ".join(r.key for r in matches))


# ---------------------------------------------------------------- the board: requests with their answers


def board(all_requests: Sequence[Request], all_answers: Sequence[Answer], scope: Scope, now: datetime) -> list[dict[str, Any]]:
    """Each request this node shows, with one row per shown unit: its latest answer or pending."""
    latest: dict[tuple[str, str], Answer] = {}
    for given in all_answers:
        key = (given.request, given.unit)
        # The latest version wins; ties (two nodes, one clock reading) go to the node id, so any order gives one board.
        if key not in latest or (given.version, given.node, given.agency) > (latest[key].version, latest[key].node, latest[key].agency):
            latest[key] = given
    out = []
    for request in all_requests:
        if not scope.shows(request):
            continue
        past_due = now >= request.deadline
        rows = []
        for unit in scope.shown_units(request):
            answer = latest.get((request.key, unit))
            if answer is None:
                rows.append({"unit": unit, "status": PENDING, "overdue": past_due, "answerable": unit in scope.answerable})
                continue
            rows.append(
                {
                    "unit": unit,
                    "status": answer.decision,
                    "reason": answer.reason,
                    "answered_at": answer.at,
                    "late": is_late(answer.at, request.due),
                    "node": answer.node,
                    "operator": answer.operator,
                    "attachments": list(answer.attachments),
                    "answerable": unit in scope.answerable,
                    "id": answer.id,
                    "version": answer.version,
                }
            )
        out.append({**request.as_dict(), "past_due": past_due, "answers": rows})
    return out


def _words(value: str, name: str, hint: str) -> str:
    """Required free text: NFC, stripped, not blank."""
    checked = records.text({name: value}, name, required=False, limit=2_000)
    if not checked:
        raise InputError(f"'{name}' is required", hint, field=name, code="missing")
    return checked


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
