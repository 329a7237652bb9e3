"""Approval of a unit's data, level by level (DHIS2's approval levels are the model).

For each unit × data set (a report type or an indicator set) × period:

    submitted ──approve──▶ approved ──accept (level above)──▶ accepted
        ▲                     │  ▲                                │
        └──── unapprove ──────┘  └──────── unaccept ──────────────┘
    approved ──return with a reason (level above)──▶ returned ──approve again──▶ approved

The unit's own node writes `approved` / `unapproved` (the head of the unit answers for its
data); the node of a level above writes `accepted`, `returned` or `unaccepted`. Each is an
`approval` record (kind 8) keyed by data set, period, unit and origin, sealed and
replicated like any record; the level above's step is sent down to the unit's node
(`routing.py`). The state is the fold of the latest step of each side, ordered by their
versions (hybrid clock times, comparable across nodes).

While data is `approved` or `accepted` it is locked: a local write that would change it
(an inbox file, `lienthong ingest`) is refused with `ApprovalLocked` until it is
un-approved (or returned). Who may write which step is checked where the record is
received (`authority_problem`): only the unit's own node approves its data, and a node
never accepts, returns or un-accepts the data of a unit it answers for itself.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from . import records
from .errors import LienthongError
from .indicator_sets import IndicatorSets
from .records import APPROVAL_ABOVE_ACTIONS, APPROVAL_OWN_ACTIONS, Envelope, Keyed
from .subtree import Subtrees

SUBMITTED, APPROVED, ACCEPTED, RETURNED = "submitted", "approved", "accepted", "returned"
LOCKED = frozenset({APPROVED, ACCEPTED})


class ApprovalLocked(LienthongError):
    """A write would change data its unit approved; un-approve (or have it returned) first."""

    def __init__(self, unit: str, dataset: str, period: str, state: str) -> None:
        who = "approved by its unit" if state == APPROVED else "approved by its unit and accepted by the level above"
        super().__init__(
            f"the data of unit {unit} for {dataset} {period} is {who}: it cannot change until it is un-approved",
            (
                f"un-approve it first: lienthong approve --dir DIR --period {period} --dataset {dataset} --unit {unit} --unapprove --reason …"
                if state == APPROVED
                else "ask the level above to un-accept or return it, then un-approve it here"
            ),
        )
        self.unit, self.dataset, self.period, self.state = unit, dataset, period, state
        self.message_vi = (
            f"Số liệu của đơn vị {unit} ({dataset}, kỳ {period}) đã được phê duyệt: không thể thay đổi khi chưa hủy phê duyệt."
        )


@dataclass(frozen=True)
class Step:
    action: str
    version: int
    origin: str
    reason: str
    by: str
    at: str


@dataclass(frozen=True)
class Approval:
    """The approval of one unit's data set for one period: the latest step of each side."""

    unit: str
    dataset: str
    period: str
    own: Step | None = None
    above: Step | None = None

    @property
    def state(self) -> str:
        own, above = self.own, self.above
        newer_above = above is not None and (own is None or above.version > own.version)
        if own is not None and own.action == APPROVED:
            if newer_above and above is not None and above.action == ACCEPTED:
                return ACCEPTED
            if newer_above and above is not None and above.action == RETURNED:
                return RETURNED
            return APPROVED
        if newer_above and above is not None and above.action == RETURNED:
            return RETURNED
        return SUBMITTED

    def to_dict(self) -> dict[str, object]:
        last = max((s for s in (self.own, self.above) if s is not None), key=lambda s: s.version, default=None)
        return {
            "unit": self.unit,
            "dataset": self.dataset,
            "period": self.period,
            "state": self.state,
            "last_step": None
            if last is None
            else {"action": last.action, "by": last.by, "at": last.at, "reason": last.reason, "origin": last.origin},
        }


def approvals(db: sqlite3.Connection, units: Iterable[str] | None = None) -> dict[tuple[str, str, str], Approval]:
    """Every approval held here, by (unit, data set, period); optionally of `units` only."""
    out: dict[tuple[str, str, str], Approval] = {}
    sql, args = "SELECT envelope FROM records WHERE kind = ? AND deleted = 0", list[object]([records.APPROVAL])
    if units is not None:  # the (kind, unit) index narrows it
        sql += " AND unit IN (SELECT value FROM json_each(?))"
        args.append(json.dumps(sorted(set(units))))
    for (raw,) in db.execute(sql, args):
        env = Envelope.FromString(raw)
        body = records.body_of(env)
        key = (env.unit, body.dataset, body.period)
        current = out.get(key) or Approval(*key)
        step = Step(body.action, env.version, env.origin, body.reason, body.by, body.at)
        if body.action in APPROVAL_OWN_ACTIONS and (current.own is None or current.own.version < step.version):
            current = Approval(*key, own=step, above=current.above)
        elif body.action in APPROVAL_ABOVE_ACTIONS and (current.above is None or current.above.version < step.version):
            current = Approval(*key, own=current.own, above=step)
        out[key] = current
    return out


def states(db: sqlite3.Connection, units: Iterable[str] | None = None) -> dict[tuple[str, str, str], str]:
    """(unit, data set, period) -> state, for those that have any step."""
    return {key: a.state for key, a in approvals(db, units).items()}


class Approved:
    """Which data its unit approved (approved or accepted), for commands that count only that:
    a report by its report type, an indicator value by any indicator set holding it."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.locked = {key for key, state in states(db).items() if state in LOCKED}
        self.sets = IndicatorSets.load(db)

    def value(self, unit: str, indicator: str, period: str) -> bool:
        return any((unit, dataset, period) in self.locked for dataset in self.sets.containing(indicator))

    def report(self, unit: str, report_type: str, period: str) -> bool:
        return (unit, report_type, period) in self.locked


def check_unlocked(db: sqlite3.Connection, keyed: Sequence[Keyed]) -> None:
    """Refuse (`ApprovalLocked`) a local write that would change approved data: a report of an
    approved report type, or a value of an indicator of an approved indicator set."""
    if not keyed or db.execute("SELECT 1 FROM records WHERE kind = ? LIMIT 1", (records.APPROVAL,)).fetchone() is None:
        return  # no approval at all on this node: one cheap indexed query per write
    locked = {key: state for key, state in states(db, {k.unit for k in keyed}).items() if state in LOCKED}
    if not locked:
        return
    sets: IndicatorSets | None = None
    for item in keyed:
        if item.kind not in (records.REPORT, records.INDICATOR):
            continue
        body = records.BODY_TYPES[item.kind].FromString(item.body)
        if item.kind == records.REPORT:
            datasets = {body.report_type}
        else:
            sets = sets or IndicatorSets.load(db)
            datasets = sets.containing(body.indicator)
        for dataset in sorted(datasets):
            state = locked.get((item.unit, dataset, body.period))
            if state is not None:
                raise ApprovalLocked(item.unit, dataset, body.period, state)


def step_problem(action: str, state: str, unit: str, dataset: str, period: str) -> tuple[str, str] | None:
    """Why `action` (approved, unapproved, accepted, returned, unaccepted) does not follow from
    `state`, as (message, hint), or None: the same rules for the CLI and the console."""
    what = f"{dataset} {period} of unit {unit}"
    if action == APPROVED and state in LOCKED:
        return f"{what} is already {state}", "change data only after un-approving it"
    if action == "unapproved" and state == ACCEPTED:
        return f"{what} was accepted by the level above", "ask the level above to un-accept or return it first"
    if action == "unapproved" and state != APPROVED:
        return f"{what} is not approved (it is {state})", "there is nothing to un-approve"
    if action in (ACCEPTED, RETURNED) and state not in (APPROVED, ACCEPTED):
        return f"{what} is not approved by its unit yet (it is {state})", "the unit's head approves it first"
    if action == ACCEPTED and state == ACCEPTED:
        return f"{what} is already accepted", "nothing to do"
    if action == "unaccepted" and state != ACCEPTED:
        return f"{what} is not accepted (it is {state})", "there is nothing to un-accept"
    return None


def authority_problem(subtrees: Subtrees, env: Envelope) -> tuple[str, str] | None:
    """Why the origin of an approval record may not write it, or None: only the node that answers
    for the unit approves or un-approves its data; that node never accepts, returns or un-accepts it."""
    body = records.body_of(env)
    owner = subtrees.node_of_unit(env.unit)
    if body.action in APPROVAL_OWN_ACTIONS and owner and env.origin != owner:
        return (
            "approval_not_own",
            f"node {env.origin} may not {body.action.removesuffix('d')} the data of unit {env.unit}: only its own node {owner} does",
        )
    if body.action in APPROVAL_ABOVE_ACTIONS and env.origin == owner:
        return (
            "approval_own_acceptance",
            f"node {env.origin} answers for unit {env.unit}: it cannot mark its own data {body.action}; the level above does",
        )
    return None
