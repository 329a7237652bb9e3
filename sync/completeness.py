"""Report completeness and timeliness, as DHIS2 defines them, for the IOCs' periodic reports.

For a period, every *expected* report is one (unit, report type): a unit of the
schedule's level that is active during the period and still active on the due day
(sync/units.py holds the validity dates). So a unit created mid-period owes the
period's report when it exists on the due day, and from its next period otherwise; a
unit merged away before the due day owes nothing for that period: its successor, a
unit of the registry in its own right, answers for the territory.

Each expected report is

    on_time   submitted on or before the due day (Vietnam time, the due day inclusive)
    late      submitted after the due day
    missing   not submitted and the due day has passed
    pending   not submitted yet, and not yet due

judged on the *first* submission this node took (DHIS2 judges timeliness on the first
complete registration): a resubmission after the due day corrects the content, not
the date; a report withdrawn (deleted) and submitted again counts from the new one.

The submission time is the time a node *witnessed* it, never a date written in the file:
when the origin node first sealed the report (its version's clock, or the envelope's
`first_version` when only a later version reached this node), bounded by when this node
received it from a child (`seal_witness`): a node that received it can vouch it existed
then, whatever the origin's clock said. The `submitted_at` the unit stated is kept and
shown; one more than `STATED_TOLERANCE` from the witnessed time is flagged
(`stated_differs`).

    completeness = submitted (on time + late) / expected
    timeliness   = on time / expected
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from . import clock, records
from .schedule import VIETNAM, Schedule, Schedules, bounds, containing, period_type, shift
from .store import Store
from .units import Unit, Units

ON_TIME, LATE, MISSING, PENDING = "on_time", "late", "missing", "pending"
STATUSES = (ON_TIME, LATE, MISSING, PENDING)
# A stated submission time further than this from the witnessed one is flagged.
STATED_TOLERANCE = timedelta(days=1)
# Approval states in which data counts as approved (the same as sync/approval.py's LOCKED).
APPROVED_STATES = frozenset({"approved", "accepted"})


@dataclass(frozen=True)
class Submission:
    """A unit's report for one type and period, as first taken by this node."""

    unit: str
    report_type: str
    period: str
    submitted_at: datetime  # stated by the unit, first submission
    recorded_at: datetime  # when the origin node first stored it (its version's clock)
    last_submitted_at: datetime  # stated by the unit, latest version
    origin: str
    resubmitted: bool
    witnessed_at: datetime | None = None  # see the module docstring; None: recorded_at

    @property
    def witnessed(self) -> datetime:
        return self.witnessed_at or self.recorded_at

    @property
    def stated_differs(self) -> bool:
        """Whether the unit's stated time is far from the witnessed one (a date to look at)."""
        return abs(self.submitted_at - self.witnessed) > STATED_TOLERANCE

    def day(self) -> date:
        """The calendar day in Vietnam on which the (first) submission was witnessed."""
        return self.witnessed.astimezone(VIETNAM).date()


def _stated(text: str, fallback: datetime) -> datetime:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return fallback
    return parsed if parsed.tzinfo else fallback


def _clock_time(version: int) -> datetime:
    return datetime.fromtimestamp(clock.physical_ms(version) / 1000, UTC)


def witnessed_at(db: sqlite3.Connection, env: records.Envelope) -> tuple[datetime, datetime]:
    """(when the origin first wrote this record, when it was witnessed): the origin's time of
    its first version, bounded by when this node received the seal of `env` from a child."""
    recorded = _clock_time(env.first_version or env.version)
    row = db.execute("SELECT at_ms FROM seal_witness WHERE id = ?", (env.seal,)).fetchone() if env.seal else None
    if row is None:
        return recorded, recorded
    return recorded, min(recorded, datetime.fromtimestamp(row[0] / 1000, UTC))


def submissions(store: Store, units: Iterable[str] | None = None, period: str | None = None) -> dict[tuple[str, str, str], Submission]:
    """Every submitted (not withdrawn) report, by (unit, report type, period); optionally only
    those of `units`, of `period`. Two records for one key (two writers) keep the earlier first submission."""
    sql = "SELECT f.envelope, r.envelope FROM report_first f JOIN records r ON r.id = f.id WHERE r.deleted = 0"
    args: list[str] = []
    if units is not None:
        wanted = sorted(set(units))
        if not wanted:
            return {}
        sql += " AND r.unit IN (SELECT value FROM json_each(?))"
        args.append(json.dumps(wanted))
    out: dict[tuple[str, str, str], Submission] = {}
    db = store.reader()
    for first_raw, latest_raw in db.execute(sql, args):
        first, latest = records.Envelope.FromString(first_raw), records.Envelope.FromString(latest_raw)
        body, latest_body = records.body_of(first), records.body_of(latest)
        if period is not None and latest_body.period != period:
            continue
        recorded, witnessed = witnessed_at(db, first)
        sub = Submission(
            unit=latest.unit,
            report_type=latest_body.report_type,
            period=latest_body.period,
            submitted_at=_stated(body.submitted_at, recorded),
            recorded_at=recorded,
            last_submitted_at=_stated(latest_body.submitted_at, recorded),
            origin=latest.origin,
            resubmitted=latest.version != first.version,
            witnessed_at=witnessed,
        )
        key = (sub.unit, sub.report_type, sub.period)
        if key not in out or sub.witnessed < out[key].witnessed:
            out[key] = sub
    return out


def is_expected(unit: Unit, schedule: Schedule, period: str) -> bool:
    """Whether `unit` owes `schedule`'s report for `period` (see the module docstring)."""
    start, end = bounds(period)
    return unit.level == schedule.level and unit.active_during(start, end) and unit.active_on(schedule.due(period))


def judge(submission: Submission | None, due: date, today: date) -> str:
    if submission is not None:
        return ON_TIME if submission.day() <= due else LATE
    return MISSING if today > due else PENDING


@dataclass(frozen=True)
class Expected:
    """One expected report and how it stands."""

    unit: Unit
    schedule: Schedule
    period: str
    due: date
    status: str
    submission: Submission | None
    approval: str = ""  # the approval state of (unit, report type, period): sync/approval.py

    def to_dict(self) -> dict[str, Any]:
        sub = self.submission
        return {
            "unit": self.unit.code,
            "unit_name": self.unit.name,
            "level": self.unit.level,
            "report_type": self.schedule.report_type,
            "report_name": self.schedule.name,
            "period": self.period,
            "due": self.due.isoformat(),
            "status": self.status,
            "submitted_at": sub.submitted_at.isoformat() if sub else None,
            "recorded_at": sub.recorded_at.astimezone(VIETNAM).isoformat(timespec="seconds") if sub else None,
            "witnessed_at": sub.witnessed.astimezone(VIETNAM).isoformat(timespec="seconds") if sub else None,
            "stated_differs": sub.stated_differs if sub else False,
            "approval": self.approval,
            "last_submitted_at": sub.last_submitted_at.isoformat() if sub and sub.resubmitted else None,
            "origin": sub.origin if sub else None,
        }


@dataclass
class Rates:
    """Counts and DHIS2's two rates (percent, one decimal; None when nothing is expected)."""

    expected: int = 0
    on_time: int = 0
    late: int = 0
    missing: int = 0
    pending: int = 0

    def add(self, status: str) -> None:
        self.expected += 1
        setattr(self, status, getattr(self, status) + 1)

    @property
    def submitted(self) -> int:
        return self.on_time + self.late

    def to_dict(self) -> dict[str, Any]:
        def rate(n: int) -> float | None:
            return round(100 * n / self.expected, 1) if self.expected else None

        return {
            "expected": self.expected,
            "submitted": self.submitted,
            "on_time": self.on_time,
            "late": self.late,
            "missing": self.missing,
            "pending": self.pending,
            "completeness": rate(self.submitted),
            "timeliness": rate(self.on_time),
        }


@dataclass
class Completeness:
    """Every expected report of a period, and the rates per level and per report type."""

    period: str
    today: date
    reports: list[Expected] = field(default_factory=list)
    # Levels top down (province before commune), by their units' depth in the registry.
    level_order: dict[str, int] = field(default_factory=dict)

    def levels(self) -> dict[str, Rates]:
        out: dict[str, Rates] = {}
        for item in self.reports:
            out.setdefault(item.unit.level, Rates()).add(item.status)
        return out

    def by_report_type(self) -> dict[tuple[str, str], Rates]:
        out: dict[tuple[str, str], Rates] = {}
        for item in self.reports:
            out.setdefault((item.unit.level, item.schedule.report_type), Rates()).add(item.status)
        return out

    def _rank(self, level: str) -> tuple[int, str]:
        return self.level_order.get(level, 0), level

    def to_dict(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "as_of": self.today.isoformat(),
            "reports": [item.to_dict() for item in self.reports],
            "levels": [
                {"level": level, **rates.to_dict()} for level, rates in sorted(self.levels().items(), key=lambda i: self._rank(i[0]))
            ],
            "report_types": [
                {"level": level, "report_type": report_type, **rates.to_dict()}
                for (level, report_type), rates in sorted(self.by_report_type().items(), key=lambda i: (self._rank(i[0][0]), i[0][1]))
            ],
        }


def completeness(
    units: Units,
    schedules: Sequence[Schedule],
    subs: dict[tuple[str, str, str], Submission],
    period: str,
    *,
    today: date,
    report_type: str | None = None,
    level: str | None = None,
    within: Iterable[str] | None = None,
    approvals: Mapping[tuple[str, str, str], str] | None = None,
    approved_only: bool = False,
) -> Completeness:
    """Judge every report expected for `period` (a period of the schedules' type) as of `today`.

    `within` limits the units to those codes (a node's subtree); None means all. `approvals`:
    the approval state of each (unit, report type, period) (`approval.states`); with
    `approved_only`, a report counts as submitted only once its unit approved it."""
    kind = period_type(period) if bounds(period) else None  # bounds() refuses what is not a period
    scope = None if within is None else set(within)
    result = Completeness(period, today)
    for schedule in schedules:
        if schedule.period_type != kind:
            continue
        if (report_type and schedule.report_type != report_type) or (level and schedule.level != level):
            continue
        due = schedule.due(period)
        for unit in units:
            if (scope is not None and unit.code not in scope) or not is_expected(unit, schedule, period):
                continue
            key = (unit.code, schedule.report_type, period)
            state = (approvals or {}).get(key, "")
            sub = subs.get(key)
            if approved_only and state not in APPROVED_STATES:
                sub = None
            shown = (state or "submitted") if sub is not None else state
            result.reports.append(Expected(unit, schedule, period, due, judge(sub, due, today), sub, shown))
    for item in result.reports:
        depth = len(units.ancestors(item.unit.code))
        result.level_order[item.unit.level] = min(depth, result.level_order.get(item.unit.level, depth))
    result.reports.sort(key=lambda e: (result._rank(e.unit.level), e.schedule.report_type, e.unit.code))
    return result


def owed(
    units: Units, schedules: Schedules, subs: dict[tuple[str, str, str], Submission], own: Iterable[str], today: date
) -> list[dict[str, Any]]:
    """What `own` units have not submitted for the previous, current and next period of each
    of their schedules, soonest due first; `overdue` when the due day has passed."""
    out: list[dict[str, Any]] = []
    for code in own:
        unit = units.get(records.nfc(code))
        if unit is None:
            continue
        for schedule in schedules.for_level(unit.level):
            current = containing(today, schedule.period_type)
            for period in (shift(current, -1), current, shift(current, 1)):
                if not is_expected(unit, schedule, period) or (unit.code, schedule.report_type, period) in subs:
                    continue
                due = schedule.due(period)
                out.append(
                    {
                        "unit": unit.code,
                        "report_type": schedule.report_type,
                        "report_name": schedule.name,
                        "period": period,
                        "due": due.isoformat(),
                        "days_left": (due - today).days,
                        "overdue": today > due,
                    }
                )
    out.sort(key=lambda item: (item["due"], item["unit"], item["report_type"]))
    return out
