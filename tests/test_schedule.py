"""Report schedules: due rules read strictly, deadlines in Vietnam time, periods as the adapters write them."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lienthong.sync import records
from lienthong.sync.clock import HybridClock
from lienthong.sync.errors import LienthongError
from lienthong.sync.schedule import (
    PERIOD_TYPES,
    Schedule,
    Schedules,
    bounds,
    containing,
    parse_due,
    period_type,
    shift,
    today_in_vietnam,
)
from lienthong.sync.store import Store

DEMO_DEFINITIONS = Path(__file__).resolve().parent.parent / "node" / "demo_data" / "definitions.jsonl"


@pytest.mark.parametrize(
    ("rule", "kind", "period", "due"),
    [
        ("day 25 of the period's month", "monthly", "2026-10", date(2026, 10, 25)),
        ("day 30 of the period's month", "monthly", "2026-10", date(2026, 10, 30)),
        ("day 30 of the period's month", "monthly", "2026-02", date(2026, 2, 28)),
        ("day 30 of the period's month", "monthly", "2028-02", date(2028, 2, 29)),
        ("day 25 of the quarter's last month", "quarterly", "2026Q3", date(2026, 9, 25)),
        ("day 30 of the quarter's last month", "quarterly", "2026Q4", date(2026, 12, 30)),
        ("day 10 of the quarter's second month", "quarterly", "2026Q1", date(2026, 2, 10)),
        ("last day of the month after the period", "quarterly", "2026Q4", date(2027, 1, 31)),
        ("day 5 of the month after the period", "monthly", "2026-12", date(2027, 1, 5)),
        ("day 15 of the year's last month", "yearly", "2026", date(2026, 12, 15)),
        ("day 31 of the half-year's last month", "sixmonthly", "2026S1", date(2026, 6, 30)),
        ("day 20 of the period's first month", "yearly", "2026", date(2026, 1, 20)),
        ("2 days after the period", "weekly", "2026W49", date(2026, 12, 8)),  # Mon 30 Nov – Sun 6 Dec, then 2 days
        ("1 day after the period", "weekly", "2026W53", date(2027, 1, 4)),  # 2026 has an ISO week 53, ending 3 Jan 2027
        ("0 days after the period", "daily", "2026-10-31", date(2026, 10, 31)),
        ("1 day after the period", "daily", "2026-12-31", date(2027, 1, 1)),
        ("5 days after the period", "monthly", "2026-02", date(2026, 3, 5)),
    ],
)
def test_due_rules_give_the_regulations_deadlines(rule: str, kind: str, period: str, due: date) -> None:
    """Each due rule form gives the hand-computed deadline; a day past the month's end is its last day."""
    assert parse_due(rule, kind, "'X'").due(period) == due


def test_due_rules_tolerate_case_spacing_and_typographic_apostrophes() -> None:
    """A rule typed in a word processor (capitals, double spaces, ’) reads the same as the plain one."""
    assert parse_due("Day  25 of the period\u2019s month", "monthly", "'X'").due("2026-10") == date(2026, 10, 25)


@pytest.mark.parametrize(
    ("rule", "kind", "says"),
    [
        ("by the 25th", "monthly", "cannot be read"),
        ("day 25 of the period's month or so", "monthly", "cannot be read"),
        ("day 25 of the quarter's last month", "monthly", "does not fit monthly"),
        ("day 25 of the period's month", "quarterly", "does not fit quarterly"),
        ("day 0 of the period's month", "monthly", "names day 0"),
        ("day 32 of the period's month", "monthly", "names day 32"),
        ("day 10 of the period's first month", "weekly", "does not fit weekly"),  # a month counted from a week: refused
        ("day 5 of the month after the period", "daily", "does not fit daily"),
        ("2 days before the period", "daily", "cannot be read"),
        ("", "monthly", "cannot be read"),
    ],
)
def test_unreadable_due_rules_are_refused_naming_the_definition(rule: str, kind: str, says: str) -> None:
    """A rule that is not exactly one of the known forms is refused with the definition's code and a hint."""
    with pytest.raises(LienthongError) as caught:
        parse_due(rule, kind, "'BC-X@commune'")
    assert "'BC-X@commune'" in caught.value.message and says in caught.value.message
    assert caught.value.hint


@given(st.text(max_size=60))
def test_due_rule_parser_never_crashes(text: str) -> None:
    """Any text either parses or is refused with a LienthongError; nothing else escapes."""
    try:
        rule = parse_due(text, "monthly", "'X'")
    except LienthongError:
        return
    assert date(2026, 1, 1) <= rule.due("2026-01") <= date(2026, 1, 31) + timedelta(days=999)


periods = st.one_of(
    st.builds(lambda y, m: f"{y}-{m:02d}", st.integers(1990, 2090), st.integers(1, 12)),
    st.builds(lambda y, q: f"{y}Q{q}", st.integers(1990, 2090), st.integers(1, 4)),
    st.builds(lambda y, s: f"{y}S{s}", st.integers(1990, 2090), st.integers(1, 2)),
    st.builds(str, st.integers(1990, 2090)),
)
weeks_and_days = st.one_of(
    st.builds(lambda d: f"{d.isocalendar()[0]}W{d.isocalendar()[1]:02d}", st.dates(date(1990, 1, 1), date(2090, 12, 31))),
    st.builds(date.isoformat, st.dates(date(1990, 1, 1), date(2090, 12, 31))),
)


@given(st.one_of(periods, weeks_and_days), st.integers(-30, 30))
def test_periods_tile_the_calendar(period: str, n: int) -> None:
    """Periods of one type follow each other without gap or overlap, and shifting back and forth returns."""
    kind = period_type(period)
    assert kind in PERIOD_TYPES
    first, last = bounds(period)
    assert containing(first, kind) == period and containing(last, kind) == period
    assert (bounds(shift(period, 1))[0] - last).days == 1
    assert shift(shift(period, n), -n) == period


@given(periods, st.integers(1, 31))
def test_due_day_of_the_periods_last_month_lies_in_that_month(period: str, day: int) -> None:
    """'day N of the period's last month' always falls inside the period, never past its end."""
    first, last = bounds(period)
    due = parse_due(f"day {day} of the period's last month", period_type(period) or "", "'X'").due(period)
    assert first <= due <= last and (due.year, due.month) == (last.year, last.month)


@pytest.mark.parametrize("bad", ["2026-13", "2026Q5", "2026W00", "2027W53", "2026W5", "2026-02-30", "2026-10-1", "Tháng 10/2026", ""])
def test_a_period_that_is_not_a_reporting_period_is_refused(bad: str) -> None:
    """Malformed periods, a week 53 of a year of 52 weeks and a day that does not exist are refused with a hint giving the accepted forms."""
    with pytest.raises(LienthongError) as caught:
        bounds(bad)
    assert "2026Q3" in caught.value.hint and "2026W05" in caught.value.hint


def test_today_is_the_calendar_day_in_vietnam() -> None:
    """17:30 UTC is already the next day in Vietnam (UTC+07:00)."""
    assert today_in_vietnam(datetime(2026, 10, 25, 17, 30, tzinfo=UTC)) == date(2026, 10, 26)
    assert today_in_vietnam(datetime(2026, 10, 25, 16, 59, tzinfo=UTC)) == date(2026, 10, 25)


def test_demo_schedules_load_from_a_store_and_a_bad_one_is_named(tmp_path: Path) -> None:
    """The province's four schedules load from stored definitions; an unreadable one is listed by code, the rest still load."""
    store = Store.create(tmp_path / "p.db", "86")
    try:
        rows = [json.loads(line) for line in DEMO_DEFINITIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
        bad = {
            "kind": "definition",
            "type": "report_schedule",
            "code": "BC-SAI@commune",
            "fields": {"report_type": "BC-SAI", "period_type": "monthly", "level": "commune", "due": "before the 25th"},
        }
        store.write_local([records.build("86", row) for row in [*rows, bad]], HybridClock())
        schedules = Schedules.from_store(store)
    finally:
        store.close()
    assert {(s.report_type, s.level, s.period_type) for s in schedules} == {
        ("BC-IOC-THANG", "commune", "monthly"),
        ("BC-IOC-QUY", "commune", "quarterly"),
        ("BC-IOC-THANG", "province", "monthly"),
        ("BC-IOC-QUY", "province", "quarterly"),
    }
    assert [s.due("2026-10") for s in schedules.for_period("2026-10")] == [date(2026, 10, 25), date(2026, 10, 30)]
    assert len(schedules.problems) == 1 and "'BC-SAI@commune'" in schedules.problems[0].message
    with pytest.raises(LienthongError, match="BC-SAI@commune"):
        schedules.check()


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"period_type": "monthly", "due": "day 25 of the period's month"}, "'level' is missing"),
        ({"period_type": "fortnightly", "level": "commune", "due": "2 days after the period"}, "period type 'fortnightly'"),
        ({"period_type": "monthly", "level": "commune"}, "'due' is missing"),
    ],
)
def test_an_incomplete_schedule_definition_is_refused_naming_it(fields: dict[str, object], says: str) -> None:
    """A schedule without its level or due rule, or with an unknown period type, is refused by code."""
    with pytest.raises(LienthongError) as caught:
        Schedule.from_definition("BC-X@commune", fields)
    assert "'BC-X@commune'" in caught.value.message and says in caught.value.message


def test_weekly_and_daily_schedules_are_read_and_their_periods_follow_the_calendar() -> None:
    """A weekly and a daily report schedule load; weeks are ISO weeks (Monday to Sunday, across a year's end) and days follow each other."""
    weekly = Schedule.from_definition("BC-TUAN@commune", {"period_type": "weekly", "level": "commune", "due": "2 days after the period"})
    daily = Schedule.from_definition("BC-NGAY@commune", {"period_type": "Daily", "level": "commune", "due": "0 days after the period"})
    assert (weekly.period_type, daily.period_type) == ("weekly", "daily")
    assert bounds("2026W01") == (date(2025, 12, 29), date(2026, 1, 4))
    assert containing(date(2027, 1, 3), "weekly") == "2026W53" and shift("2026W53", 1) == "2027W01"
    assert containing(date(2026, 12, 31), "daily") == "2026-12-31" and shift("2026-12-31", 1) == "2027-01-01"
    assert weekly.due("2026W53") == date(2027, 1, 5) and daily.due("2026-12-06") == date(2026, 12, 6)
