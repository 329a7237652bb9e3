"""Indicator roll-up up the unit hierarchy: hand-computed values for each rule, sources kept,
merged units into their successors, one figure per unit, and real nodes feeding the province."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lienthong.adapters.intake import Inbox, take
from lienthong.adapters.registry import Registry
from lienthong.node.intake import StoreSink
from lienthong.sync import records
from lienthong.sync.catalogue import Catalogue, Indicator
from lienthong.sync.clock import HybridClock
from lienthong.sync.rollup import Figure, Rollup, rollup
from lienthong.sync.store import Store
from lienthong.sync.units import Unit, Units

from .conftest import MakeNode, listen_address
from .helpers import NodeProcess, cli, running, wait_until, write_jsonl

TESTDATA = Path(__file__).parent / "testdata"
SAMPLES = TESTDATA / "samples"
ROLLUP = TESTDATA / "rollup"
REGISTRY = Registry()

# What an operator works out by hand for October 2026 from the files `province()` takes:
# Ba Tri (sample, NFC), Thạnh Phú (sample, Windows-1258) and ROLLUP's Long Châu file, which
# also carries the merged An Đức (into Ba Tri on 2025-07-01) and Ba Tri's health station.
EXPECTED_2026_10 = {
    # sum, with a merged unit's figure counted for its successor
    ("KTXH.NS.01", "86"): Decimal("24454.95"),  # 12450.75 + 100 + 8904.2 + 3000
    ("KTXH.NS.01", "86-28894"): Decimal("12550.75"),  # Ba Tri's own 12450.75 + An Đức's 100
    ("KTXH.NS.01", "86-29077"): Decimal("8904.2"),
    ("KTXH.NS.01", "86-29254"): Decimal("3000"),
    ("KTXH.DVC.01", "86"): Decimal("1800"),  # 1283 + 517
    ("KTXH.DVC.01", "86-28894"): Decimal("1283"),
    ("KTXH.DVC.01", "86-29254"): Decimal("517"),
    # weighted average, weighed by KTXH.DVC.01: (97.4 x 1283 + 88.5 x 517) / 1800 = 94.8437…
    ("KTXH.DVC.02", "86"): Decimal("94.84"),
    ("KTXH.DVC.02", "86-28894"): Decimal("97.40"),
    ("KTXH.DVC.02", "86-29254"): Decimal("88.50"),
    ("KTXH.PA.01", "86"): Decimal("97"),  # 42 + 25 + 30
    ("KTXH.PA.01", "86-28894"): Decimal("42"),
    ("KTXH.PA.01", "86-29077"): Decimal("25"),
    ("KTXH.PA.01", "86-29254"): Decimal("30"),
    ("KTXH.PA.02", "86"): Decimal("60"),  # 39 + 21
    ("KTXH.PA.02", "86-28894"): Decimal("39"),
    ("KTXH.PA.02", "86-29254"): Decimal("21"),
    # derived ratio PA.02 / PA.01 x 100 from the rolled-up terms at each level
    ("KTXH.PA.03", "86"): Decimal("61.86"),  # 60 / 97 x 100 = 61.8556…
    ("KTXH.PA.03", "86-28894"): Decimal("92.86"),  # 39 / 42 x 100 = 92.857…
    ("KTXH.PA.03", "86-29254"): Decimal("70.00"),
    ("KTXH.PA.03", "86-29077"): None,  # Thạnh Phú reported PA.01 but no PA.02
    # three tiers: the health station's figure counts for Ba Tri and for the province
    ("KTXH.YT.01", "86"): Decimal("22"),  # 17 + 5
    ("KTXH.YT.01", "86-28894"): Decimal("5"),
    ("KTXH.YT.01", "86-28894-TYT"): Decimal("5"),
    ("KTXH.YT.01", "86-29077"): Decimal("17"),
    ("KTXH.MT.01", "86"): Decimal("87"),  # max(87, 64)
    ("KTXH.MT.01", "86-29077"): Decimal("64"),
    ("KTXH.MT.01", "86-29254"): Decimal("87"),
    ("KTXH.MT.02", "86-29254"): Decimal("12"),  # rule none: never rolled up
}


def province(tmp_path: Path) -> Store:
    """A provincial store holding the test definitions and October's values, taken through the intake."""
    store = Store.create(tmp_path / "86.db", "86")
    sink = StoreSink(store, HybridClock(), tmp_path, ["86"])
    files = [
        (ROLLUP / "units.csv", "ioc", "definitions-csv"),
        (ROLLUP / "indicators.csv", "ioc", "definitions-csv"),
        (SAMPLES / "inbox/thongke/chi-tieu-ktxh-thang-10-2026.csv", "thongke", ""),
        (SAMPLES / "inbox/thongke/chi-tieu-ktxh-thang-10-2026-cp1258.csv", "thongke", ""),
        (SAMPLES / "inbox/thongke/chi-tieu-ktxh-thang-9-2026-nfd.csv", "thongke", ""),
        (ROLLUP / "chi-tieu-long-chau-thang-10-2026.csv", "thongke", ""),
    ]
    for path, agency, adapter in files:
        result = take(path, Inbox(agency, path.parent, adapter=adapter), REGISTRY, sink, "86", move=False)
        assert result["status"] in ("SUCCESS", "WARNING") and result["importCount"]["refused"] == 0, result
    return store


def table(rows: list[dict[str, Any]]) -> dict[tuple[str, str], Decimal | None]:
    return {(r["indicator"], r["unit"]): Decimal(r["exact_value"]) if r["value"] is not None else None for r in rows}


def test_rollup_matches_the_hand_computed_table(tmp_path: Path) -> None:
    """Sum, weighted average, max, none and a derived ratio give exactly the hand-computed values at every level."""
    store = province(tmp_path)
    try:
        rows = rollup(store, "2026-10", extra=[])
    finally:
        store.close()
    assert table(rows) == EXPECTED_2026_10
    by_key = {(r["indicator"], r["unit"]): r for r in rows}
    top = by_key[("KTXH.DVC.02", "86")]
    assert top["aggregation"] == "weighted_avg" and top["level"] == "province" and top["unit_name"] == "Tỉnh Vĩnh Long"
    assert {(s["unit"], s["value"]) for s in top["sources"]} == {("86-28894", 97.4), ("86-29254", 88.5)}
    assert by_key[("KTXH.PA.03", "86-29077")]["notes"] == ["no numerator (KTXH.PA.02) value for this unit: no value"]
    # The rows come top-down: the province before its communes.
    units = [r["unit"] for r in rows if r["indicator"] == "KTXH.NS.01"]
    assert units[0] == "86" and units.index("86-28894") < units.index("86-29077")


def test_merged_unit_rolls_into_its_successor_only_after_the_merger(tmp_path: Path) -> None:
    """An Đức (merged into Ba Tri on 2025-07-01) counts for Ba Tri in 2026-10 but stands alone in 2025-06."""
    store = province(tmp_path)
    try:
        row = {"kind": "indicator", "indicator": "KTXH.NS.01", "unit": "86-28900", "period": "2025-06", "value": 70, "agency": "thongke"}
        store.write_local([records.build("86", row)], HybridClock(store.max_version()))
        after = {(r["indicator"], r["unit"]): r for r in rollup(store, "2026-10", extra=[])}
        before = table(rollup(store, "2025-06", extra=[]))
    finally:
        store.close()
    ba_tri = after[("KTXH.NS.01", "86-28894")]
    assert {s["unit"] for s in ba_tri["sources"]} == {"86-28894", "86-28900"}
    assert any("86-28900 merged into 86-28894" in note for note in ba_tri["notes"])
    assert ("KTXH.NS.01", "86-28900") not in after
    assert before == {("KTXH.NS.01", "86-28900"): Decimal("70"), ("KTXH.NS.01", "86"): Decimal("70")}


def test_nfd_and_nfc_files_land_on_the_same_unit_and_indicator(tmp_path: Path) -> None:
    """The NFD September file's value rolls up on the same unit and indicator rows as the NFC October file."""
    store = province(tmp_path)
    try:
        september = rollup(store, "2026-09", extra=[])
        october = rollup(store, "2026-10", extra=[])
    finally:
        store.close()
    assert table(september) == {
        ("KTXH.PA.01", "86-28894"): Decimal("38"),
        ("KTXH.PA.01", "86"): Decimal("38"),
        ("KTXH.PA.03", "86-28894"): None,  # no PA.02 in September: the ratio cannot be computed
        ("KTXH.PA.03", "86"): None,
    }
    assert set(table(september)) <= set(table(october))
    ba_tri = next(r for r in september if r["unit"] == "86-28894")
    assert ba_tri["unit_name"] == "Xã Ba Tri" and ba_tri["name"] == "Số phản ánh kiến nghị tiếp nhận"


def test_one_figure_per_unit_and_feedback_counts_fill_the_gaps(tmp_path: Path) -> None:
    """A unit's reported figure beats a feedback-derived count for it (which stays visible); a derived count fills a gap."""
    store = province(tmp_path)
    derived = [
        {"indicator": "KTXH.PA.01", "unit": "86-28894", "period": "2026-10", "value": 2, "origin": "86", "source": "derived"},
        {"indicator": "KTXH.PA.01", "unit": "86-29560", "period": "2026-10", "value": 4, "origin": "86", "source": "derived"},
    ]
    try:
        rows = {(r["indicator"], r["unit"]): r for r in rollup(store, "2026-10", extra=derived)}
    finally:
        store.close()
    ba_tri = rows[("KTXH.PA.01", "86-28894")]
    assert ba_tri["value"] == 42
    assert ba_tri["set_aside"] == [{"unit": "86-28894", "origin": "86", "agency": "", "value": 2, "from": "feedback"}]
    # 86-29560 is not in this registry: its count stands alone, not under the province.
    assert rows[("KTXH.PA.01", "86-29560")]["value"] == 4
    assert rows[("KTXH.PA.01", "86")]["value"] == 97


def test_rollup_takes_feedback_counts_from_the_feedback_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without `extra`, roll-up asks sync.feedback.derived_values for the month, and not for other period types."""
    asked: list[str] = []

    def fake(store: Store, period: str) -> list[dict[str, Any]]:
        asked.append(period)
        return [{"indicator": "KTXH.PA.01", "unit": "86-29254", "period": period, "value": 9, "origin": "86"}]

    import lienthong.sync.feedback as feedback

    monkeypatch.setattr(feedback, "derived_values", fake, raising=False)
    store = province(tmp_path)
    try:
        rows = {(r["indicator"], r["unit"]): r for r in rollup(store, "2026-10")}
        rollup(store, "2026Q3")
    finally:
        store.close()
    assert asked == ["2026-10"]
    assert rows[("KTXH.PA.01", "86-29254")]["set_aside"][0]["from"] == "feedback"


def test_values_of_a_derived_indicator_are_ignored_and_said_so(tmp_path: Path) -> None:
    """A value reported for a derived indicator never replaces the computed one; it is listed as set aside."""
    store = province(tmp_path)
    try:
        row = {"kind": "indicator", "indicator": "KTXH.PA.03", "unit": "86-29254", "period": "2026-10", "value": 99}
        store.write_local([records.build("86", row)], HybridClock(store.max_version()))
        rows = {(r["indicator"], r["unit"]): r for r in rollup(store, "2026-10", extra=[])}
    finally:
        store.close()
    cell = rows[("KTXH.PA.03", "86-29254")]
    assert cell["value"] == 70.0
    assert cell["set_aside"][0]["value"] == 99 and "computed" in cell["set_aside"][0]["reason"]


# ---------------------------------------------------------------- properties of the rules

REGISTRY_UNITS = Units([Unit("P", "P", "province", ""), *(Unit(f"C{i}", f"C{i}", "commune", "P") for i in range(6))])
RULES = Catalogue({code: Indicator(code, aggregation=code.lower(), period_type="monthly") for code in ("SUM", "AVG", "MIN", "MAX")})


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.decimals(min_value=-10_000, max_value=10_000, places=2, allow_nan=False), min_size=1, max_size=6),
    order=st.randoms(use_true_random=False),
)
def test_rules_hold_whatever_order_the_figures_arrive_in(values: list[Decimal], order: Any) -> None:
    """At the top: sum is the total, avg the mean, min/max the extremes, and arrival order changes nothing."""
    figures = [
        Figure(code, f"C{i}", "2026-10", "", value, f"C{i}", "", i + 1)
        for code in ("SUM", "AVG", "MIN", "MAX")
        for i, value in enumerate(values)
    ]
    shuffled = list(figures)
    order.shuffle(shuffled)
    tops = []
    for batch in (figures, shuffled):
        cells = {(c.indicator, c.unit): c.value for _, c in Rollup("2026-10", batch, REGISTRY_UNITS, RULES).cells()}
        tops.append(cells)
    assert tops[0] == tops[1]
    top = tops[0]
    assert top[("SUM", "P")] == sum(values)
    assert top[("MIN", "P")] == min(values) and top[("MAX", "P")] == max(values)
    assert top[("AVG", "P")] == (sum(values) / len(values)).quantize(Decimal("0.01"), rounding="ROUND_HALF_UP")


# ---------------------------------------------------------------- real nodes


@pytest.mark.slow
def test_province_rolls_up_what_communes_send_keeping_each_source(make_node: MakeNode, tmp_path: Path) -> None:
    """Communes' own figures travel up; at the province a commune's own figure is used and the health department's kept beside it."""
    province_dir = make_node("86")
    address = listen_address(province_dir)
    thanh_phu = make_node("86-29077", parent=address)
    ba_tri = make_node("86-28894", parent=address)
    cli("ingest", "--dir", str(thanh_phu), "--agency", "thongke", str(SAMPLES / "inbox/thongke/chi-tieu-ktxh-thang-10-2026-cp1258.csv"))
    thongke = SAMPLES / "inbox/thongke"
    cli(
        "ingest",
        "--dir",
        str(ba_tri),
        "--agency",
        "thongke",
        str(thongke / "chi-tieu-ktxh-thang-10-2026.csv"),
        str(thongke / "chi-tieu-ktxh-thang-9-2026-nfd.csv"),
    )
    soyte = {"kind": "indicator", "indicator": "KTXH.YT.01", "unit": "86-29077", "period": "2026-10", "value": 15, "agency": "soyte"}
    # The definitions lists are recognised by their header; the health department's figure is canonical JSON Lines.
    soyte_file = write_jsonl(tmp_path / "soyte.jsonl", [soyte])
    cli("ingest", "--dir", str(province_dir), str(ROLLUP / "units.csv"), str(ROLLUP / "indicators.csv"), str(soyte_file))

    def rolled(node: Path, period: str = "2026-10", agency: str | None = None) -> dict[tuple[str, str], dict[str, Any]]:
        store = Store.open(node / "lienthong.db")
        try:
            return {(r["indicator"], r["unit"]): r for r in rollup(store, period, agency=agency, extra=[])}
        finally:
            store.close()

    with running(NodeProcess(province_dir), NodeProcess(thanh_phu), NodeProcess(ba_tri)):
        wait_until(
            lambda: {("KTXH.PA.02", "86-28894"), ("KTXH.NS.01", "86-29077")} <= set(rolled(province_dir)),
            timeout=60,
            what="both communes' values at the province",
        )
        # The definitions came down: the commune rolls its own figures up with the same rules.
        wait_until(
            lambda: rolled(thanh_phu).get(("KTXH.NS.01", "86"), {}).get("aggregation") == "sum",
            timeout=30,
            what="the catalogue at the commune",
        )
    # What an operator's script gets from the command.
    out = cli("query", "--dir", str(province_dir), "indicators", "--rollup", "--period", "2026-10", "--json")
    at_province = {(r["indicator"], r["unit"]): r for r in json.loads(out.stdout)}
    dengue = at_province[("KTXH.YT.01", "86-29077")]
    assert dengue["value"] == 17
    assert dengue["sources"] == [{"unit": "86-29077", "origin": "86-29077", "agency": "thongke", "value": 17}]
    assert dengue["set_aside"] == [{"unit": "86-29077", "origin": "86", "agency": "soyte", "value": 15}]
    assert at_province[("KTXH.YT.01", "86")]["value"] == 17
    assert at_province[("KTXH.NS.01", "86")]["exact_value"] == "21354.95"  # 12450.75 + 8904.2
    assert at_province[("KTXH.PA.03", "86-28894")]["exact_value"] == "92.86"
    # The health department's view alone: only its figure.
    assert rolled(province_dir, agency="soyte")[("KTXH.YT.01", "86-29077")]["value"] == 15
    # The NFD September file from Ba Tri lands on the same unit and indicator as the NFC October file.
    september = rolled(province_dir, "2026-09")
    assert {key: r["value"] for key, r in september.items() if key[0] == "KTXH.PA.01"} == {
        ("KTXH.PA.01", "86-28894"): 38,
        ("KTXH.PA.01", "86"): 38,
    }
    assert set(september) <= set(at_province)


def test_rollup_without_a_period_or_of_reports_is_refused_plainly(make_node: MakeNode) -> None:
    """--rollup needs --period and indicators; a bad period is named; each says what to do."""
    node = make_node("86")
    no_period = cli("query", "--dir", str(node), "indicators", "--rollup", check=False)
    assert no_period.returncode == 1 and "Error: --rollup needs the period" in no_period.stderr and "Try: add --period" in no_period.stderr
    reports = cli("query", "--dir", str(node), "reports", "--rollup", "--period", "2026-10", check=False)
    assert reports.returncode == 1 and "Error: --rollup aggregates indicator values" in reports.stderr
    bad = cli("query", "--dir", str(node), "indicators", "--rollup", "--period", "Tháng 13/2026", check=False)
    assert bad.returncode == 1 and "no month 13" in bad.stderr and "Try:" in bad.stderr
    assert "Traceback" not in no_period.stderr + reports.stderr + bad.stderr
