"""Disputes on a figure: a thread's life as the fold of its acts.

An agency or a higher tier questions a value or a report (Bến Tre Art. 4.5): the
node that holds the record opens a thread on it; the question travels down the
tree to the record's origin node (`routes`), which answers — explaining, or
correcting the value (a new version of the record and a `corrected` act, written
in one transaction); the opener closes the thread or reopens it. Every act is an
immutable `dispute` record, so the thread replicates both ways like feedback
events do, and its state is the fold of its acts in hybrid-logical-clock order
(tie-break: origin node, then record id): every node holding the same acts prints
the same thread, whatever order they arrived in.

    act        written by              allowed in                       leads to
    opened     the opener              (starts the thread)              open
    answered   the record's origin     open reopened                    answered
    corrected  the record's origin     open reopened                    corrected
    closed     the opener              open answered corrected reopened closed
    reopened   the opener              answered corrected closed        reopened

An act not allowed in the current state, or written by a node that may not write
it, is kept in the history marked ignored with the reason and changes nothing.
Who may write what is also checked where an act is received (`writer_problem`,
run by admission on every link, both ways; `thread_problem`, by the parent that
holds the thread): a node cannot answer in another origin's name nor close another
opener's thread, and a record's unit must lie in its sender's subtree like any other.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import records
from .errors import LienthongError
from .records import Envelope, RecordReader

ACTIONS = ("opened", "answered", "corrected", "closed", "reopened")
OPENER_ACTS = frozenset({"opened", "closed", "reopened"})
ORIGIN_ACTS = frozenset({"answered", "corrected"})
ALLOWED_FROM: dict[str, frozenset[str]] = {
    "answered": frozenset({"open", "reopened"}),
    "corrected": frozenset({"open", "reopened"}),
    "closed": frozenset({"open", "answered", "corrected", "reopened"}),
    "reopened": frozenset({"answered", "corrected", "closed"}),
}
LEADS_TO = {"opened": "open", "answered": "answered", "corrected": "corrected", "closed": "closed", "reopened": "reopened"}
DISPUTABLE = frozenset({records.INDICATOR, records.REPORT})


@dataclass(frozen=True)
class Act:
    """One dispute act as the fold reads it."""

    id: str  # record id, hex
    action: str
    at: str
    origin: str  # the node that wrote it
    version: int
    unit: str  # the unit it speaks for
    agency: str
    note: str
    value: str
    thread: str  # hex; '' in the opening act
    record: str  # hex
    record_origin: str
    thread_origin: str

    @classmethod
    def from_envelope(cls, env: Envelope) -> Act:
        body = records.body_of(env)
        return cls(
            env.id.hex(),
            body.action,
            body.at,
            env.origin,
            env.version,
            env.unit,
            env.agency,
            body.note,
            body.value,
            body.thread.hex(),
            body.record.hex(),
            body.record_origin,
            body.thread_origin,
        )

    def order(self) -> tuple[int, str, str]:
        return self.version, self.origin, self.id


@dataclass(frozen=True)
class Step:
    act: Act
    applied: bool
    state: str
    reason: str = ""


@dataclass
class Thread:
    """A dispute and its current state (the result of `fold`)."""

    id: str
    record: str
    record_kind: str
    record_origin: str
    record_unit: str
    record_version: int
    figure: str  # the value (or report title) as questioned
    opened_by: str  # node
    unit: str  # the unit it was opened for
    agency: str  # the agency that asked, when it asked through a unit's node
    opened_at: str
    reason: str
    state: str = "open"
    answer: str = ""
    corrected_value: str = ""
    history: list[Step] = field(default_factory=list)

    def to_dict(self, history: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "record": self.record,
            "record_kind": self.record_kind,
            "record_origin": self.record_origin,
            "record_unit": self.record_unit,
            "record_version": self.record_version,
            "figure": self.figure,
            "opened_by": self.opened_by,
            "unit": self.unit,
            "agency": self.agency,
            "opened_at": self.opened_at,
            "reason": self.reason,
            "state": self.state,
            "answer": self.answer,
            "corrected_value": self.corrected_value,
            "acts": len(self.history) + 1,
            "ignored_acts": sum(1 for s in self.history if not s.applied),
        }
        if history:
            out["history"] = [
                {
                    "id": s.act.id,
                    "action": s.act.action,
                    "at": s.act.at,
                    "by": s.act.origin,
                    "unit": s.act.unit,
                    **({"agency": s.act.agency} if s.act.agency else {}),
                    "note": s.act.note,
                    **({"value": s.act.value} if s.act.action == "corrected" else {}),
                    "applied": s.applied,
                    "state": s.state,
                    **({"ignored_because": s.reason} if s.reason else {}),
                }
                for s in self.history
            ]
        return out


# ---------------------------------------------------------------- the fold (pure)


def thread_from_envelope(env: Envelope) -> Thread:
    """The thread as its opening act states it, before any other act."""
    body = records.body_of(env)
    return Thread(
        id=env.id.hex(),
        record=body.record.hex(),
        record_kind=records.KIND_NAMES.get(body.record_kind, ""),
        record_origin=body.record_origin,
        record_unit=body.record_unit,
        record_version=body.record_version,
        figure=body.value,
        opened_by=env.origin,
        unit=env.unit,
        agency=env.agency,
        opened_at=body.at,
        reason=body.note,
    )


def fold(thread: Thread, acts: Iterable[Act]) -> Thread:
    """The thread's current state: its acts deduplicated by id, applied in (version, origin, id) order."""
    newest: dict[str, Act] = {}
    for act in acts:
        if act.id not in newest or act.version > newest[act.id].version:
            newest[act.id] = act
    out = Thread(**{**thread.__dict__, "history": []})
    for act in sorted(newest.values(), key=Act.order):
        reason = refusal(out, act)
        if reason:
            out.history.append(Step(act, False, out.state, reason))
            continue
        out.state = LEADS_TO[act.action]
        if act.action in ORIGIN_ACTS:
            out.answer = act.note
            out.corrected_value = act.value if act.action == "corrected" else out.corrected_value
        out.history.append(Step(act, True, out.state))
    return out


def refusal(thread: Thread, act: Act) -> str:
    """Why `act` changes nothing in `thread`'s current state ('' when it applies)."""
    allowed = ALLOWED_FROM.get(act.action)
    if allowed is None:
        return f"'{act.action}' cannot follow the opening of a thread"
    if act.thread != thread.id or act.record != thread.record or act.record_origin != thread.record_origin:
        return "it names another thread or record"
    if act.action in ORIGIN_ACTS and act.origin != thread.record_origin:
        return f"written by {act.origin}, but only the record's origin {thread.record_origin} answers"
    if act.action in OPENER_ACTS and act.origin != thread.opened_by:
        return f"written by {act.origin}, but only the opener {thread.opened_by} closes or reopens"
    if thread.state not in allowed:
        return f"'{act.action}' cannot follow '{thread.state}'"
    if act.action == "corrected" and not act.value:
        return "the correction names no value"
    return ""


# ---------------------------------------------------------------- checks where an act is received


def writer_problem(env: Envelope) -> tuple[str, str] | None:
    """Why a received dispute act cannot be stored whoever holds what, or None: an act the
    writer may not write (answering in another origin's name, closing another opener's thread)."""
    body = records.body_of(env)
    if body.action not in ACTIONS:
        return "malformed", f"'{body.action}' is not a dispute act"
    if len(body.record) != records.ID_BYTES or (body.action == "opened") == bool(body.thread):
        return "malformed", "the dispute act does not name its record and thread"
    if body.action in ORIGIN_ACTS and env.origin != body.record_origin:
        return (
            "not_dispute_party",
            f"node {env.origin} may not write '{body.action}' on a dispute: only the record's origin {body.record_origin} answers",
        )
    if body.action in OPENER_ACTS and env.origin != body.thread_origin:
        return (
            "not_dispute_party",
            f"node {env.origin} may not write '{body.action}' on a dispute opened by {body.thread_origin}",
        )
    if body.action == "opened" and body.record_origin == env.origin:
        return "not_dispute_party", f"node {env.origin} disputes its own record; it corrects it instead"
    return None


def thread_problem(db: sqlite3.Connection, env: Envelope, arriving: Mapping[bytes, bytes] | None = None) -> tuple[str, str] | None:
    """Why a received act does not belong to the thread it names (held here, or `arriving` in the
    same batch: id -> envelope), or None: a node that claims to be a record's origin, or a thread's
    opener, must be the one the thread says."""
    body = records.body_of(env)
    if body.action == "opened":
        return None
    raw = (arriving or {}).get(body.thread)
    if raw is None:
        row = db.execute("SELECT envelope FROM records WHERE id = ? AND kind = ?", (body.thread, records.DISPUTE)).fetchone()
        if row is None:
            return None  # the thread is not held here: the fold where it is decides
        raw = row[0]
    opening = records.body_of(Envelope.FromString(raw))
    if (opening.record, opening.record_origin, opening.thread_origin) != (body.record, body.record_origin, body.thread_origin):
        return (
            "not_dispute_party",
            f"the act names dispute {body.thread.hex()} but not its record's origin {opening.record_origin} "
            f"and opener {opening.thread_origin}: only they may act on it",
        )
    return None


def routes(env: Envelope, child_for_node: Callable[[str], str]) -> set[str]:
    """The children a dispute act goes down to: the one whose subtree holds the record's origin
    (the question travels to it) and the one holding the opener (the answer travels back)."""
    body = records.body_of(env)
    return {child_for_node(body.record_origin), child_for_node(body.thread_origin)} - {""}


# ---------------------------------------------------------------- reading a store


@dataclass
class Folded:
    threads: list[Thread]
    orphans: list[Act]  # acts whose opening act this node does not hold


def load(store: RecordReader) -> Folded:
    """Fold every dispute thread held by `store` (sorted by opening time, then id)."""
    openings: dict[str, Envelope] = {}
    acts: dict[str, list[Act]] = {}
    for env in store.iter_records(records.DISPUTE):
        act = Act.from_envelope(env)
        if act.action == "opened":
            openings[act.id] = env
        else:
            acts.setdefault(act.thread, []).append(act)
    threads = [fold(thread_from_envelope(env), acts.pop(tid, [])) for tid, env in openings.items()]
    threads.sort(key=lambda t: (t.opened_at, t.id))
    return Folded(threads, [a for group in acts.values() for a in group])


def find(threads: Sequence[Thread], ref: str) -> Thread:
    """The thread named by `ref`: its id, or a unique prefix of at least 6 hex digits."""
    ref = ref.strip().lower()
    matches = [t for t in threads if t.id.startswith(ref)] if re.fullmatch(r"[0-9a-f]{6,32}", ref) else []
    if not matches:
        raise LienthongError(f"no dispute {ref!r} on this node", "list them with `lienthong dispute list --dir DIR`")
    if len(matches) > 1:
        raise LienthongError(f"{ref!r} names {len(matches)} disputes", "give more digits of its id")
    return matches[0]


def find_record(store: RecordReader, ref: str) -> Envelope:
    """The indicator value or report named by `ref`: its record id as `lienthong query` prints it
    (32 hex digits), or a unique prefix of at least 6."""
    ref = ref.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{6,32}", ref):
        raise LienthongError(f"{ref!r} is not a record id", "copy the id column of `lienthong query --dir DIR indicators --format json`")
    matches = [env for kind in sorted(DISPUTABLE) for env in store.iter_records(kind) if env.id.hex().startswith(ref)]
    if not matches:
        raise LienthongError(
            f"no indicator value or report {ref!r} on this node", "find its id with `lienthong query --dir DIR indicators`"
        )
    if len(matches) > 1:
        raise LienthongError(f"{ref!r} names {len(matches)} records", "give more digits of its id")
    return matches[0]


def figure(env: Envelope) -> str:
    """What is questioned in a record, as text: an indicator's value, a report's title."""
    body = records.body_of(env)
    return str(body.value) if env.kind == records.INDICATOR else str(body.title)


def act_fields(thread: Thread, action: str, at: str, *, unit: str, note: str = "", value: str = "") -> dict[str, Any]:
    """The fields of a new act on `thread` (build it with `records.dispute`)."""
    return {
        "thread": thread.id,
        "action": action,
        "at": at,
        "note": note,
        "record": thread.record,
        "record_origin": thread.record_origin,
        "record_kind": records.KINDS_BY_NAME.get(thread.record_kind, 0),
        "record_unit": thread.record_unit,
        "record_version": thread.record_version,
        "thread_origin": thread.opened_by,
        "value": value,
        "unit": unit,
    }


def opening_fields(record: Envelope, at: str, *, unit: str, agency: str, reason: str) -> dict[str, Any]:
    """The fields of the act that opens a thread on `record`."""
    return {
        "action": "opened",
        "at": at,
        "note": reason,
        "record": record.id.hex(),
        "record_origin": record.origin,
        "record_kind": record.kind,
        "record_unit": record.unit,
        "record_version": record.version,
        "value": figure(record),
        "unit": unit,
        "agency": agency,
    }
