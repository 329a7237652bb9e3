"""Report schedules: due rules read strictly, deadlines in Vietnam time, periods as the adapters write them."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
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
    assert date(2026, 1, 1) <= rule.due("2026-01") <= date(2026, 2, 28)


periods = st.one_of(
    st.builds(lambda y, m: f"{y}-{m:02d}", st.integers(1990, 2090), st.integers(1, 12)),
    st.builds(lambda y, q: f"{y}Q{q}", st.integers(1990, 2090), st.integers(1, 4)),
    st.builds(lambda y, s: f"{y}S{s}", st.integers(1990, 2090), st.integers(1, 2)),
    st.builds(str, st.integers(1990, 2090)),
)


@given(periods, st.integers(-30, 30))
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


@pytest.mark.parametrize("bad", ["2026-13", "2026Q5", "2026W05", "2026-10-24", "Tháng 10/2026", ""])
def test_a_period_that_is_not_a_reporting_period_is_refused(bad: str) -> None:
    """Weeks, days and malformed periods are refused with a hint giving the accepted forms."""
    with pytest.raises(LienthongError) as caught:
        bounds(bad)
    assert "2026Q3" in caught.value.hint


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
        ({"period_type": "weekly", "level": "commune", "due": "day 1 of the period's month"}, "period type 'weekly'"),
        ({"period_type": "monthly", "level": "commune"}, "'due' is missing"),
    ],
)
def test_an_incomplete_schedule_definition_is_refused_naming_it(fields: dict[str, object], says: str) -> None:
    """A schedule without its level or due rule, or with an unknown period type, is refused by code."""
    with pytest.raises(LienthongError) as caught:
        Schedule.from_definition("BC-X@commune", fields)
    assert "'BC-X@commune'" in caught.value.message and says in caught.value.message
