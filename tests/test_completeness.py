"""Completeness and timeliness of periodic reports match a hand-computed table, edge cases included."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from lienthong.config.settings import load as load_settings
from lienthong.node.status import reports_owed
from lienthong.sync import records
from lienthong.sync.clock import HybridClock
from lienthong.sync.completeness import completeness, submissions
from lienthong.sync.downstream import Downstream
from lienthong.sync.errors import LienthongError
from lienthong.sync.schedule import Schedules, containing, shift, today_in_vietnam
from lienthong.sync.store import Store
from lienthong.sync.units import Units
from lienthong.sync.upstream import Upstream

from .conftest import MakeNode, listen_address
from .helpers import STORE_FILE, NodeProcess, cli, running, status, wait_until, write_jsonl
from .web_helpers import lienthong

DEMO_DEFINITIONS = Path(__file__).resolve().parent.parent / "node" / "demo_data" / "definitions.jsonl"


def definitions(year: int) -> list[dict[str, Any]]:
    """The demo's schedules, and a registry for the edge cases (valid_from / valid_to / successor)."""
    rows = [json.loads(line) for line in DEMO_DEFINITIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r["type"] == "report_schedule"]

    def unit(code: str, name: str, level: str = "commune", parent: str = "86", **extra: str) -> dict[str, Any]:
        return {"kind": "definition", "type": "unit", "code": code, "fields": {"name": name, "level": level, "parent": parent, **extra}}

    return [
        *rows,
        unit("86", "Tỉnh Vĩnh Long", "province", ""),
        unit("86-28894", "Xã Ba Tri"),
        unit("86-29077", "Xã Thạnh Phú"),
        unit("86-29278", "Phường Phước Hậu"),
        unit("86-29254", "Phường Long Châu"),
        unit("86-28756", "Phường An Hội"),
        unit("86-29494", "Phường Trà Vinh", valid_from=f"{year}-10-15"),  # created mid-period, before the due day
        unit("86-29560", "Xã Cầu Kè", valid_to=f"{year}-10-20", successor="86-29494"),  # merged away before the due day
        unit("86-30001", "Xã Mới", valid_from=f"{year}-10-28"),  # created after the due day
        unit("86-30002", "Xã Cũ", valid_to=f"{year}-10-26", successor="86-29494"),  # merged away after the due day
    ]


def report(unit: str, submitted_at: str, *, period: str, report_type: str = "BC-IOC-THANG", **extra: Any) -> dict[str, Any]:
    return {
        "kind": "report",
        "report_type": report_type,
        "period": period,
        "unit": unit,
        "title": f"Báo cáo {report_type} {period}",
        "submitted_at": submitted_at,
        **extra,
    }


def first_submissions(y: int) -> list[dict[str, Any]]:
    p = f"{y}-10"
    return [
        report("86-28894", f"{y}-10-24T16:20:00+07:00", period=p),  # before the due day
        report("86-29077", f"{y}-10-25T23:59:59+07:00", period=p),  # the last second of the due day
        report("86-29278", f"{y}-10-25T17:30:00+00:00", period=p),  # the 25th in UTC, the 26th in Vietnam
        report("86-29254", f"{y}-10-20T09:00:00+07:00", period=p),  # on time, resubmitted late below
        report("86-28756", f"{y}-10-27T08:00:00+07:00", period=p),  # late
        report("86-29560", f"{y}-10-10T08:00:00+07:00", period=p),  # merged away: not expected, not counted
        report("86", f"{y}-10-30T10:00:00+07:00", period=p),  # the province, due the 30th
    ]


def resubmissions(y: int) -> list[dict[str, Any]]:
    return [report("86-29254", f"{y}-10-28T15:00:00+07:00", period=f"{y}-10", summary="Số liệu đã chỉnh sửa")]


def hand_table(y: int) -> dict[str, tuple[str, str | None]]:
    """unit -> (status, submitted_at) for BC-IOC-THANG {y}-10, worked out by hand."""
    return {
        "86-28756": ("late", f"{y}-10-27T08:00:00+07:00"),
        "86-28894": ("on_time", f"{y}-10-24T16:20:00+07:00"),
        "86-29077": ("on_time", f"{y}-10-25T23:59:59+07:00"),
        "86-29254": ("on_time", f"{y}-10-20T09:00:00+07:00"),
        "86-29278": ("late", f"{y}-10-25T17:30:00+00:00"),
        "86-29494": ("missing", None),
        "86-30002": ("missing", None),
    }


# province: 1 expected, on time. commune: 7 expected, 3 on time, 2 late, 2 missing -> completeness 5/7, timeliness 3/7
HAND_LEVELS = [
    {
        "level": "province",
        "expected": 1,
        "submitted": 1,
        "on_time": 1,
        "late": 0,
        "missing": 0,
        "pending": 0,
        "completeness": 100.0,
        "timeliness": 100.0,
    },
    {
        "level": "commune",
        "expected": 7,
        "submitted": 5,
        "on_time": 3,
        "late": 2,
        "missing": 2,
        "pending": 0,
        "completeness": 71.4,
        "timeliness": 42.9,
    },
]


def clock_at(moment: str, last: int = 0) -> HybridClock:
    """A clock that reads `moment` (ISO with offset): the node witnesses a write at that time."""
    ms = int(datetime.fromisoformat(moment).timestamp() * 1000)
    return HybridClock(last, wall=lambda: ms)


def write_as_stated(store: Store, origin: str, rows: list[dict[str, Any]]) -> None:
    """Write each report when it says it was submitted (in time order): its node witnessed it then."""
    for row in sorted(rows, key=lambda r: datetime.fromisoformat(r["submitted_at"])):
        store.write_local([records.build(origin, row)], clock_at(row["submitted_at"], store.latest_version()))


def sync_up(child: Store, parent: Store, cursor: int) -> int:
    """Replicate the child's change log after `cursor` into the parent, as the link does; return the new cursor."""
    while (batch := Upstream(child).changes_after(cursor, 1000)) is not None:
        assert (
            Downstream(parent).apply_from_child(child.node_id, child.epoch, batch.after, batch.last, batch.fingerprint, batch.envelopes)
            == []
        )
        cursor = batch.last
    return cursor


@pytest.fixture
def province(tmp_path: Path) -> Iterator[Store]:
    """A province store holding the definitions, its own report, and the reports each commune's
    node replicated up: the first submissions, then (after they arrived) one resubmission after
    the due day."""
    parent = Store.create(tmp_path / "province.db", "86")
    parent.write_local([records.build("86", row) for row in definitions(2026)], clock_at("2026-09-01T08:00:00+07:00"))
    communes: dict[str, Store] = {}
    cursors: dict[str, int] = {}

    def submit(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            unit = row["unit"]
            if unit == "86":
                write_as_stated(parent, "86", [row])
                continue
            if unit not in communes:
                communes[unit] = Store.create(tmp_path / f"{unit}.db", unit)
                Downstream(parent).register_child(unit, "test")
            write_as_stated(communes[unit], unit, [row])
        for unit, child in communes.items():
            cursors[unit] = sync_up(child, parent, cursors.get(unit, 0))

    submit(first_submissions(2026))
    submit(resubmissions(2026))
    for child in communes.values():
        child.close()
    yield parent
    parent.close()


def judged(store: Store, period: str, today: date, **filters: Any) -> dict[str, Any]:
    result = completeness(Units.from_store(store), Schedules.from_store(store).items, submissions(store), period, today=today, **filters)
    return result.to_dict()


def test_completeness_matches_the_hand_computed_table(province: Store) -> None:
    """On time, late, missing per unit and the rates per level match the table worked out by hand."""
    out = judged(province, "2026-10", date(2026, 11, 23))
    communes = {r["unit"]: (r["status"], r["submitted_at"]) for r in out["reports"] if r["level"] == "commune"}
    assert communes == hand_table(2026)
    assert {r["due"] for r in out["reports"] if r["level"] == "commune"} == {"2026-10-25"}
    assert [r["unit"] for r in out["reports"] if r["level"] == "province"] == ["86"]
    assert out["levels"] == HAND_LEVELS
    assert [(r["level"], r["report_type"], r["expected"]) for r in out["report_types"]] == [
        ("province", "BC-IOC-THANG", 1),
        ("commune", "BC-IOC-THANG", 7),
    ]
    assert out["reports"][0]["unit"] == "86"  # levels top down


def test_a_resubmission_after_the_due_day_keeps_the_first_submissions_timeliness(province: Store) -> None:
    """Long Châu resubmitted on the 28th: still on time (first submission the 20th), both times shown."""
    out = judged(province, "2026-10", date(2026, 11, 23))
    row = next(r for r in out["reports"] if r["unit"] == "86-29254")
    assert row["status"] == "on_time"
    assert (row["submitted_at"], row["last_submitted_at"]) == ("2026-10-20T09:00:00+07:00", "2026-10-28T15:00:00+07:00")
    body = records.body_of(next(province.iter_records(records.REPORT, "86-29254")))
    assert body.submitted_at == "2026-10-28T15:00:00+07:00"  # the store itself holds only the latest version


def test_merged_away_and_not_yet_created_units_are_not_expected(province: Store) -> None:
    """A unit merged away before the due day, or created after it, is not expected; its report is not counted."""
    units = {r["unit"] for r in judged(province, "2026-10", date(2026, 11, 23))["reports"]}
    assert "86-29560" not in units and "86-30001" not in units
    november = {r["unit"] for r in judged(province, "2026-11", date(2026, 11, 23))["reports"]}
    assert "86-30001" in november and "86-30002" not in november and "86-29560" not in november


def test_before_the_due_day_unsubmitted_reports_are_pending_not_missing(province: Store) -> None:
    """On the due day itself nothing is missing yet; the day after, the unsubmitted are."""
    on_due_day = judged(province, "2026-10", date(2026, 10, 25), level="commune")
    assert {r["unit"]: r["status"] for r in on_due_day["reports"] if r["submitted_at"] is None} == {
        "86-29494": "pending",
        "86-30002": "pending",
    }
    assert on_due_day["levels"][0]["pending"] == 2 and on_due_day["levels"][0]["missing"] == 0
    day_after = judged(province, "2026-10", date(2026, 10, 26), level="commune")
    assert day_after["levels"][0]["missing"] == 2


def test_filters_and_quarterly_periods(province: Store) -> None:
    """--level and --report-type narrow the table; a quarter is judged against the quarterly schedules only."""
    only_province = judged(province, "2026-10", date(2026, 11, 23), level="province")
    assert [r["unit"] for r in only_province["reports"]] == ["86"]
    assert judged(province, "2026-10", date(2026, 11, 23), report_type="BC-IOC-QUY")["reports"] == []
    quarter = judged(province, "2026Q4", date(2026, 11, 23))
    assert {(r["report_type"], r["level"], r["due"]) for r in quarter["reports"]} == {
        ("BC-IOC-QUY", "commune", "2026-12-25"),
        ("BC-IOC-QUY", "province", "2026-12-30"),
    }
    assert {r["status"] for r in quarter["reports"]} == {"pending"}


def test_a_report_withdrawn_and_submitted_again_counts_from_the_new_submission(tmp_path: Path) -> None:
    """A tombstone forgets the first submission: withdrawn then resubmitted after the due day is late."""
    store = Store.create(tmp_path / "n.db", "86")
    try:
        store.write_local([records.build("86", row) for row in definitions(2026)], clock_at("2026-09-01T08:00:00+07:00"))
        write_as_stated(store, "86", [report("86-28756", "2026-10-20T08:00:00+07:00", period="2026-10")])
        key = ("86-28756", "BC-IOC-THANG", "2026-10")
        assert submissions(store)[key].day() == date(2026, 10, 20)
        withdrawn = report("86-28756", "2026-10-21T08:00:00+07:00", period="2026-10", deleted=True)
        write_as_stated(store, "86", [withdrawn])
        assert key not in submissions(store)
        write_as_stated(store, "86", [report("86-28756", "2026-10-29T08:00:00+07:00", period="2026-10")])
        row = next(r for r in judged(store, "2026-10", date(2026, 11, 23))["reports"] if r["unit"] == "86-28756")
    finally:
        store.close()
    assert (row["status"], row["submitted_at"], row["last_submitted_at"]) == ("late", "2026-10-29T08:00:00+07:00", None)


def test_a_store_from_before_migration_3_keeps_its_reports_as_first_submissions(tmp_path: Path) -> None:
    """Upgrading a store takes the reports it already holds as their first submissions."""
    path = tmp_path / "old.db"
    store = Store.create(path, "86")
    store.write_local([records.build("86", report("86-28894", "2026-10-24T16:20:00+07:00", period="2026-10"))], HybridClock())
    for statement in (
        "DROP TRIGGER report_first_insert",
        "DROP TRIGGER report_first_update",
        "DROP TABLE report_first",
        "ALTER TABLE children DROP COLUMN clock_offset_ms",  # migration 4
        "ALTER TABLE uplink DROP COLUMN clock_offset_ms",
        "DROP TRIGGER seal_witnessed",  # migration 5
        "DROP TABLE seal_witness",
        "DROP TABLE blob_refs",  # migration 6
        "DROP TABLE blob_wants",
        *(f"DROP TABLE {t}" for t in ("indicator_values", "reports", "report_files", "feedback_items", "feedback_events", "units")),
        "DELETE FROM meta WHERE key = 'read_tables_seq'",  # migration 7
    ):
        store.db.execute(statement)
    store.db.execute("PRAGMA user_version = 2")
    store.close()
    store = Store.open(path)
    try:
        assert list(submissions(store)) == [("86-28894", "BC-IOC-THANG", "2026-10")]
    finally:
        store.close()


def test_a_unit_definition_with_a_bad_date_is_named(tmp_path: Path) -> None:
    """A validity date that is not a date is refused naming the unit, not with a traceback."""
    store = Store.create(tmp_path / "n.db", "86")
    try:
        bad = {"kind": "definition", "type": "unit", "code": "86-1", "fields": {"level": "commune", "valid_to": "1/7/2025"}}
        store.write_local([records.build("86", bad)], HybridClock())
        with pytest.raises(LienthongError, match="unit 86-1: valid_to '1/7/2025' is not a date"):
            Units.from_store(store)
    finally:
        store.close()


def weekly_and_daily(store: Store, y: int) -> None:
    """A weekly and a daily commune schedule, three communes, and their reports for week {y}W49
    (Monday 2 to Sunday 8 December in 2024, due 2 days after) and for the day {y}-12-06 (due that day)."""
    schedules = [
        {"kind": "definition", "type": "report_schedule", "code": f"{t}@commune", "fields": {"report_type": t, **f}}
        for t, f in (
            ("BC-TUAN", {"name": "Báo cáo tuần", "period_type": "weekly", "level": "commune", "due": "2 days after the period"}),
            ("BC-NGAY", {"name": "Báo cáo ngày", "period_type": "daily", "level": "commune", "due": "0 days after the period"}),
        )
    ]
    units = [row for row in definitions(y) if row["type"] == "unit" and row["code"] in {"86", *WEEKLY_HAND}]
    store.write_local([records.build("86", row) for row in schedules + units], clock_at(f"{y}-09-01T08:00:00+07:00"))
    week, day = f"{y}W49", f"{y}-12-06"
    write_as_stated(
        store,
        "86",
        [
            report("86-28894", f"{y}-12-10T23:00:00+07:00", period=week, report_type="BC-TUAN"),  # the due day, late evening
            report("86-29077", f"{y}-12-10T17:30:00+00:00", period=week, report_type="BC-TUAN"),  # the 11th in Vietnam
            report("86-28894", f"{y}-12-06T20:00:00+07:00", period=day, report_type="BC-NGAY"),
            report("86-29077", f"{y}-12-07T08:00:00+07:00", period=day, report_type="BC-NGAY"),
        ],
    )


# unit -> (weekly status, daily status), worked out by hand; 86-29278 sent nothing
WEEKLY_HAND = {"86-28894": ("on_time", "on_time"), "86-29077": ("late", "late"), "86-29278": ("missing", "missing")}


def test_weekly_and_daily_schedules_are_judged_through_the_cli(make_node: MakeNode) -> None:
    """`reports completeness` judges a week (ISO, due 2 days after its Sunday) and a day (due that day) against their own schedules only."""
    node = make_node("86")
    store = Store.open(node / STORE_FILE)
    try:
        weekly_and_daily(store, 2024)  # a past year: today is after every due day
    finally:
        store.close()
    # The commands in this process (the suite's time): the same code as the installed command.
    week = json.loads(lienthong("reports", "completeness", "--dir", str(node), "--period", "2024W49", "--json"))
    day = json.loads(lienthong("reports", "completeness", "--dir", str(node), "--period", "2024-12-06", "--json"))
    assert {(r["report_type"], r["due"]) for r in week["reports"]} == {("BC-TUAN", "2024-12-10")}
    assert {(r["report_type"], r["due"]) for r in day["reports"]} == {("BC-NGAY", "2024-12-06")}
    assert {r["unit"]: (r["status"], d["status"]) for r, d in zip(week["reports"], day["reports"], strict=True)} == WEEKLY_HAND
    assert [(lv["level"], lv["expected"], lv["on_time"], lv["late"], lv["missing"]) for lv in week["levels"]] == [("commune", 3, 1, 1, 1)]
    assert json.loads(lienthong("reports", "completeness", "--dir", str(node), "--period", "2024-12", "--json"))["reports"] == []


def test_reports_completeness_json_through_the_cli(make_node: MakeNode) -> None:
    """`lienthong reports completeness --json` prints the hand-computed table; a bad period is one sentence and a hint."""
    node = make_node("86")
    store = Store.open(node / STORE_FILE)
    try:
        # A past year, so that the real today is after every due day whatever the machine's clock.
        store.write_local([records.build("86", row) for row in definitions(2024)], clock_at("2024-09-01T08:00:00+07:00"))
        write_as_stated(store, "86", first_submissions(2024) + resubmissions(2024))
    finally:
        store.close()
    out = json.loads(cli("reports", "completeness", "--dir", str(node), "--period", "2024-10", "--json").stdout)
    assert {r["unit"]: (r["status"], r["submitted_at"]) for r in out["reports"] if r["level"] == "commune"} == hand_table(2024)
    assert out["levels"] == HAND_LEVELS
    narrowed = json.loads(cli("reports", "completeness", "--dir", str(node), "--period", "2024-10", "--level", "province", "--json").stdout)
    assert [r["unit"] for r in narrowed["reports"]] == ["86"]
    table = cli("reports", "completeness", "--dir", str(node), "--period", "2024-10").stdout
    assert "86-29494" in table and "missing" in table and "71.4 %" in table
    bad = cli("reports", "completeness", "--dir", str(node), "--period", "Tháng 10/2024", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("Error: ") and "Try: " in bad.stderr
    unreadable = {
        "kind": "definition",
        "type": "report_schedule",
        "code": "BC-SAI@commune",
        "fields": {"report_type": "BC-SAI", "period_type": "monthly", "level": "commune", "due": "trước ngày 25"},
    }
    store = Store.open(node / STORE_FILE)
    try:
        store.write_local([records.build("86", unreadable)], HybridClock())
    finally:
        store.close()
    refused = cli("reports", "completeness", "--dir", str(node), "--period", "2024-10", check=False)
    assert refused.returncode == 1 and "'BC-SAI@commune'" in refused.stderr.splitlines()[0] and "Try: " in refused.stderr
    assert any("BC-SAI@commune" in problem for problem in status(node)["schedule_problems"])


def test_status_shows_what_a_unit_owes_and_flags_the_overdue(make_node: MakeNode) -> None:
    """A commune's status lists its unsubmitted reports of the previous, current and next periods, overdue ones flagged."""
    node = make_node("86-28894", parent="127.0.0.1:1")
    store = Store.open(node / STORE_FILE)
    try:
        clock = HybridClock()
        store.write_local([records.build("86-28894", row) for row in definitions(2026)], clock)
        store.write_local([records.build("86-28894", report("86-28894", "2026-11-20T10:00:00+07:00", period="2026-11"))], clock)
        owed, problems = reports_owed(store, load_settings(node), today=date(2026, 11, 26))
    finally:
        store.close()
    assert problems == []
    assert [(o["report_type"], o["period"], o["due"], o["overdue"]) for o in owed] == [
        ("BC-IOC-QUY", "2026Q3", "2026-09-25", True),
        ("BC-IOC-THANG", "2026-10", "2026-10-25", True),
        ("BC-IOC-QUY", "2026Q4", "2026-12-25", False),
        ("BC-IOC-THANG", "2026-12", "2026-12-25", False),
        ("BC-IOC-QUY", "2027Q1", "2027-03-25", False),
    ]
    assert owed[2]["days_left"] == 29
    data = status(node)
    assert data["schedule_problems"] == [] and all(o["unit"] == "86-28894" for o in data["reports_owed"])
    assert "reports owed" in cli("status", "--dir", str(node)).stdout


@pytest.mark.slow
def test_schedules_flow_down_and_submissions_flow_up_between_real_nodes(make_node: MakeNode, tmp_path: Path) -> None:
    """The province's schedules reach a commune node (its status shows what it owes); the commune's
    report and its resubmission reach the province, which judges it on the time the first was witnessed."""
    province = make_node("86")
    commune = make_node("86-28894", parent=listen_address(province))
    cli("ingest", "--dir", str(province), str(write_jsonl(tmp_path / "definitions.jsonl", definitions(2024))))
    first = report("86-28894", "2024-10-24T16:20:00+07:00", period="2024-10")
    cli("ingest", "--dir", str(commune), str(write_jsonl(tmp_path / "first.jsonl", [first])))

    def ba_tri_at_province() -> dict[str, Any] | None:
        out = json.loads(cli("reports", "completeness", "--dir", str(province), "--period", "2024-10", "--json").stdout)
        return next((r for r in out["reports"] if r["unit"] == "86-28894" and r["submitted_at"]), None)

    with running(NodeProcess(province), NodeProcess(commune)):
        wait_until(ba_tri_at_province, timeout=60, what="the commune's report at the province")
        late = report("86-28894", "2024-10-29T08:00:00+07:00", period="2024-10", summary="Bổ sung số liệu")
        cli("ingest", "--dir", str(commune), str(write_jsonl(tmp_path / "again.jsonl", [late])))
        row = wait_until(
            lambda: (r := ba_tri_at_province()) and r["last_submitted_at"] and r, timeout=60, what="the resubmission at the province"
        )
        owed = wait_until(lambda: status(commune)["reports_owed"], timeout=60, what="the schedules at the commune")
    # Stated as the 24th of October 2024 but witnessed now (its node wrote it today): late, and flagged.
    assert (row["status"], row["submitted_at"], row["last_submitted_at"]) == ("late", first["submitted_at"], late["submitted_at"])
    assert row["stated_differs"] is True
    next_month = shift(containing(today_in_vietnam(), "monthly"), 1)
    assert ("86-28894", "BC-IOC-THANG", next_month) in {(o["unit"], o["report_type"], o["period"]) for o in owed}
