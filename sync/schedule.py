"""Report schedules: which report each level of unit owes, for which periods, by which day.

The province sends them down as `report_schedule` definitions, one per report type
and level (code `BC-IOC-THANG@commune`), with the fields `report_type`, `name`,
`period_type` (monthly, quarterly, sixmonthly, yearly, weekly, daily), `level` and `due`.

A due rule names a day of a month counted from the period:

    day 25 of the period's month            (monthly periods)
    day 25 of the quarter's last month      (quarterly; also first, second, third)
    day 30 of the half-year's last month    (six-monthly; also first)
    day 15 of the year's last month         (yearly; also first)
    day 10 of the period's first month      (any period type; also last)
    day 5 of the month after the period     (monthly to yearly periods)
    last day of …                           (any of the above)
    2 days after the period                 (any period type; "0 days": its last day)

Weeks and days are counted in days, never in months: "day 10 of the period's first month"
of a week that starts on 28 September would fall before the week.

A day beyond the month's end means its last day ("day 30" in February is the 28th or
29th), as the regulations' "by the 30th" is read. Deadlines are calendar days in
Vietnam time (UTC+07:00) and the due day itself is on time. A rule that does not
read exactly like one of these is refused with the definition's code, never guessed.

Periods are written as the adapters write them: 2026-10, 2026Q3, 2026S1, 2026, 2026W05 (an
ISO 8601 week, Monday to Sunday), 2026-10-31.
"""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone

from . import records
from .errors import LienthongError
from .store import Store

VIETNAM = timezone(timedelta(hours=7), "ICT")
SCHEDULE_DEFINITION = "report_schedule"
PERIOD_TYPES = ("monthly", "quarterly", "sixmonthly", "yearly", "weekly", "daily")
MONTHS_IN = {"monthly": 1, "quarterly": 3, "sixmonthly": 6, "yearly": 12}
DAYS_IN = {"weekly": 7, "daily": 1}  # the period types counted in days
_BY_MONTHS = frozenset(MONTHS_IN)

_PERIOD_FORMS = {
    "monthly": re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$"),
    "quarterly": re.compile(r"^(\d{4})Q([1-4])$"),
    "sixmonthly": re.compile(r"^(\d{4})S([12])$"),
    "yearly": re.compile(r"^(\d{4})$"),
    "weekly": re.compile(r"^(\d{4})W(0[1-9]|[1-4]\d|5[0-3])$"),
    "daily": re.compile(r"^(\d{4})-(\d{2})-(\d{2})$"),
}
_RULE = re.compile(r"^(?:day (?P<day>\d{1,2})|(?P<last>last day)) of the (?P<anchor>.+)$")
_DAYS_AFTER = re.compile(r"^(?P<days>\d{1,3}) days? after the period$")
# anchor -> (period types it fits, None for any; months to count; counted from the period's
# last month rather than its first)
_ANCHORS: dict[str, tuple[frozenset[str] | None, int, bool]] = {
    "period's month": (frozenset({"monthly"}), 0, False),
    "period's first month": (_BY_MONTHS, 0, False),
    "period's last month": (_BY_MONTHS, 0, True),
    "month after the period": (_BY_MONTHS, 1, True),
    "quarter's first month": (frozenset({"quarterly"}), 0, False),
    "quarter's second month": (frozenset({"quarterly"}), 1, False),
    "quarter's third month": (frozenset({"quarterly"}), 2, False),
    "quarter's last month": (frozenset({"quarterly"}), 0, True),
    "half-year's first month": (frozenset({"sixmonthly"}), 0, False),
    "half-year's last month": (frozenset({"sixmonthly"}), 0, True),
    "year's first month": (frozenset({"yearly"}), 0, False),
    "year's last month": (frozenset({"yearly"}), 0, True),
}
RULE_HINT = (
    'write it like "day 25 of the period\'s month", "day 25 of the quarter\'s last month", "last day of the month after the period"'
    ' or "2 days after the period"'
)


# ---------------------------------------------------------------- periods


def period_type(period: str) -> str | None:
    """The period type a period is written in (2026-10 → monthly), or None."""
    for name, form in _PERIOD_FORMS.items():
        if form.match(period):
            return name
    return None


def _not_a_period(period: str) -> LienthongError:
    return LienthongError(
        f"{period!r} is not a reporting period",
        "write a month 2026-10, a quarter 2026Q3, a half-year 2026S1, a year 2026, a week 2026W05 or a day 2026-10-31",
    )


def _first_day(period: str) -> tuple[str, date]:
    """(period type, first day) of a week or a day; refuses anything else."""
    kind = period_type(period) or ""
    match = _PERIOD_FORMS[kind].match(period) if kind in DAYS_IN else None
    try:
        if match and kind == "weekly":
            return kind, date.fromisocalendar(int(match.group(1)), int(match.group(2)), 1)
        if match:
            return kind, date.fromisoformat(period)
    except ValueError:  # week 53 of a year with 52, 31 April
        pass
    raise _not_a_period(period)


def _first_month(period: str) -> tuple[str, int, int]:
    """(period type, year, first month) of a period of months; refuses anything else."""
    kind = period_type(period)
    if kind is None or kind in DAYS_IN:
        raise _not_a_period(period)
    match = _PERIOD_FORMS[kind].match(period)
    assert match is not None
    year = int(match.group(1))
    index = int(match.group(2)) if match.lastindex and match.lastindex > 1 else 1
    return kind, year, (index - 1) * MONTHS_IN[kind] + 1


def _add_months(year: int, month: int, n: int) -> tuple[int, int]:
    total = year * 12 + month - 1 + n
    return total // 12, total % 12 + 1


def _month_end(year: int, month: int) -> date:
    return date(year, month, calendar.monthrange(year, month)[1])


def bounds(period: str) -> tuple[date, date]:
    """The first and last day of a period (both inclusive)."""
    if period_type(period) in DAYS_IN:
        kind, first = _first_day(period)
        return first, first + timedelta(days=DAYS_IN[kind] - 1)
    kind, year, month = _first_month(period)
    end_year, end_month = _add_months(year, month, MONTHS_IN[kind] - 1)
    return date(year, month, 1), _month_end(end_year, end_month)


def _name(kind: str, year: int, month: int) -> str:
    index = (month - 1) // MONTHS_IN[kind] + 1
    return {"monthly": f"{year}-{month:02d}", "quarterly": f"{year}Q{index}", "sixmonthly": f"{year}S{index}", "yearly": f"{year}"}[kind]


def containing(day: date, kind: str) -> str:
    """The period of type `kind` that holds `day`."""
    if kind == "weekly":
        year, week, _ = day.isocalendar()
        return f"{year}W{week:02d}"
    if kind == "daily":
        return day.isoformat()
    return _name(kind, day.year, day.month)


def shift(period: str, n: int) -> str:
    """The period `n` periods after `period` (before, when negative)."""
    if period_type(period) in DAYS_IN:
        kind, first = _first_day(period)
        return containing(first + timedelta(days=n * DAYS_IN[kind]), kind)
    kind, year, month = _first_month(period)
    return _name(kind, *_add_months(year, month, n * MONTHS_IN[kind]))


def today_in_vietnam(now: datetime | None = None) -> date:
    return (now or datetime.now(UTC)).astimezone(VIETNAM).date()


# ---------------------------------------------------------------- due rules


@dataclass(frozen=True)
class DueRule:
    """A parsed due rule: a day (None: the last) of a month counted from the period, or
    `days_after` days after the period's last day."""

    text: str
    day: int | None
    months: int
    from_last: bool
    days_after: int | None = None

    def due(self, period: str) -> date:
        if self.days_after is not None:
            return bounds(period)[1] + timedelta(days=self.days_after)
        kind, year, month = _first_month(period)
        offset = self.months + (MONTHS_IN[kind] - 1 if self.from_last else 0)
        due_year, due_month = _add_months(year, month, offset)
        end = _month_end(due_year, due_month)
        return end if self.day is None else end.replace(day=min(self.day, end.day))


def parse_due(text: str, kind: str, where: str) -> DueRule:
    """Read a due rule for periods of type `kind`; `where` names the definition in errors."""
    normal = " ".join(records.nfc(text).replace("\u2019", "'").lower().split())
    after = _DAYS_AFTER.match(normal)
    if after:
        return DueRule(text=text, day=None, months=0, from_last=True, days_after=int(after.group("days")))
    match = _RULE.match(normal)
    anchor = _ANCHORS.get(match.group("anchor")) if match else None
    if match is None or anchor is None:
        raise LienthongError(f"report schedule {where}: the due rule {text!r} cannot be read", RULE_HINT)
    fits, months, from_last = anchor
    if fits is not None and kind not in fits:
        raise LienthongError(
            f"report schedule {where}: the due rule {text!r} does not fit {kind} periods",
            'use "the period\'s month" for monthly reports, "the quarter\'s … month" for quarterly ones, "the period\'s last month",'
            ' or "N days after the period" for weekly and daily ones',
        )
    day = None if match.group("last") else int(match.group("day"))
    if day is not None and not 1 <= day <= 31:
        raise LienthongError(f"report schedule {where}: the due rule {text!r} names day {day}", "use a day from 1 to 31, or 'last day'")
    return DueRule(text=text, day=day, months=months, from_last=from_last)


# ---------------------------------------------------------------- definitions owed by a level


@dataclass(frozen=True)
class DefinitionReader:
    """Reads the fields of one definition owed by a level (a report schedule, an indicator set).

    `what` names the definition's kind in errors ("report schedule"); a missing or unreadable
    field is refused with `LienthongError`, naming the definition's code and the field.
    """

    what: str
    code: str
    fields: Mapping[str, object]

    def text(self, name: str) -> str:
        """A field that must hold text: stripped and NFC-normalised."""
        value = self.fields.get(name)
        if not isinstance(value, str) or not value.strip():
            raise LienthongError(f"{self.what} '{self.code}': '{name}' is missing", f"the province must send '{name}' in this definition")
        return records.nfc(value.strip())

    def period_type(self) -> str:
        """The `period_type` field, one of PERIOD_TYPES."""
        kind = self.text("period_type").lower()
        if kind not in PERIOD_TYPES:
            raise LienthongError(f"{self.what} '{self.code}': period type {kind!r} is not known", "use one of " + ", ".join(PERIOD_TYPES))
        return kind

    def subject(self, name: str) -> str:
        """What the definition is for (its `report_type`, its `dataset`): the field, else the code before '@'."""
        return records.nfc(str(self.fields.get(name) or self.code.split("@", 1)[0]).strip())


# ---------------------------------------------------------------- schedules


@dataclass(frozen=True)
class Schedule:
    """One report type as owed by the units of one level."""

    code: str
    report_type: str
    name: str
    period_type: str
    level: str
    rule: DueRule
    version: int = 0

    def due(self, period: str) -> date:
        return self.rule.due(period)

    @classmethod
    def from_definition(cls, code: str, fields: Mapping[str, object], version: int = 0) -> Schedule:
        """Read one `report_schedule` definition; a missing or unreadable field is refused, naming it."""
        read = DefinitionReader("report schedule", code, fields)
        kind = read.period_type()
        report_type = read.subject("report_type")
        return cls(
            code=code,
            report_type=report_type,
            name=str(fields.get("name") or report_type),
            period_type=kind,
            level=read.text("level"),
            rule=parse_due(read.text("due"), kind, repr(code)),
            version=version,
        )


@dataclass(frozen=True)
class Schedules:
    """Every report schedule a node holds, and the definitions that could not be read."""

    items: tuple[Schedule, ...]
    problems: tuple[LienthongError, ...] = ()

    @classmethod
    def from_store(cls, store: Store) -> Schedules:
        return cls.from_envelopes(store.iter_records(records.DEFINITION))

    @classmethod
    def from_envelopes(cls, envelopes: Iterable[records.Envelope]) -> Schedules:
        # Two definitions for one report type and level (from two writers): the newest wins.
        chosen: dict[tuple[str, str], Schedule] = {}
        problems: list[LienthongError] = []
        for env in envelopes:
            body = records.body_of(env)
            if body.type != SCHEDULE_DEFINITION:
                continue
            try:
                fields = json.loads(body.json or "{}")
                schedule = Schedule.from_definition(records.nfc(body.code), fields if isinstance(fields, dict) else {}, env.version)
            except LienthongError as exc:
                problems.append(exc)
                continue
            key = (schedule.report_type, schedule.level)
            if key not in chosen or chosen[key].version < schedule.version:
                chosen[key] = schedule
        return cls(tuple(sorted(chosen.values(), key=lambda s: (s.level, s.period_type, s.report_type))), tuple(problems))

    def check(self) -> None:
        """Raise the first problem: for commands whose answer would be wrong without it."""
        if self.problems:
            raise self.problems[0]

    def for_period(self, period: str) -> list[Schedule]:
        kind = period_type(period)
        return [s for s in self.items if s.period_type == kind]

    def for_level(self, level: str) -> list[Schedule]:
        return [s for s in self.items if s.level == level]

    def __iter__(self) -> Iterator[Schedule]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)
