"""Definition catalogues: the province's CSV lists become the same definitions the demo uses,
bad rows are refused with their line, the newest definition version wins, and the catalogue
says which reported values it cannot take."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from lienthong.adapters.base import ParseContext
from lienthong.adapters.definitions_csv import DefinitionsCsvAdapter
from lienthong.adapters.periods import canonical
from lienthong.sync import catalogue, records
from lienthong.sync.catalogue import Catalogue, dhis2_period, period_bounds, period_type_of
from lienthong.sync.store import Store

from .conftest import MakeNode
from .helpers import cli

TESTDATA = Path(__file__).parent / "testdata"
SAMPLES = TESTDATA / "samples"
ROLLUP = TESTDATA / "rollup"
DEMO_DEFINITIONS = Path(__file__).parent.parent / "node" / "demo_data" / "definitions.jsonl"
ADAPTER = DefinitionsCsvAdapter()


def parse(path: Path) -> list:
    return list(ADAPTER.parse(path, ParseContext(origin="86", agency="ioc", inbox=path.parent)))


def as_definitions(rows: list) -> dict[tuple[str, str], dict]:
    out = {}
    for row in rows:
        assert row.error is None, row.error
        body = records.body_of(row.record.envelope("86", 1))
        out[(body.type, body.code)] = json.loads(body.json)
    return out


def test_the_province_sample_lists_become_the_demo_definitions() -> None:
    """units.csv, indicators.csv and report-schedule.csv give exactly the definitions node/demo_data ships."""
    parsed: dict[tuple[str, str], dict] = {}
    for name in ("units.csv", "indicators.csv", "report-schedule.csv"):
        parsed |= as_definitions(parse(SAMPLES / "definitions" / name))
    demo = {}
    for line in DEMO_DEFINITIONS.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        if item["code"] in {code for _, code in parsed}:
            demo[(item["type"], item["code"])] = item["fields"]
    assert parsed == demo
    assert len(parsed) == 8 + 8 + 4


def test_extra_fields_for_weighted_averages_and_derived_indicators() -> None:
    """weight, numerator, denominator and factor are kept; an empty aggregation column is not needed for them."""
    defs = as_definitions(parse(ROLLUP / "indicators.csv"))
    assert defs[("indicator", "KTXH.DVC.02")] == {
        "name": "Tỷ lệ hồ sơ giải quyết đúng hạn",
        "measure": "%",
        "period_type": "monthly",
        "aggregation": "weighted_avg",
        "weight": "KTXH.DVC.01",
    }
    assert defs[("indicator", "KTXH.PA.03")]["numerator"] == "KTXH.PA.02"
    assert defs[("indicator", "KTXH.PA.03")]["factor"] == 100
    units = as_definitions(parse(ROLLUP / "units.csv"))
    assert units[("unit", "86-28900")] == {
        "name": "Xã An Đức",
        "level": "commune",
        "parent": "86",
        "valid_to": "2025-07-01",
        "successor": "86-28894",
    }


def test_bad_rows_are_refused_with_their_line_and_field(tmp_path: Path) -> None:
    """Unknown rules, a weighted average without weight, a ratio without denominator, a repeated code: each names its line."""
    path = tmp_path / "chi-tieu.csv"
    path.write_text(
        "Mã;Tên;Đơn vị tính;Loại kỳ;Cách tổng hợp;Trọng số;Tử số;Mẫu số\n"
        "A.01;Một;người;Tháng;Tổng;;;\n"
        "A.02;Hai;%;tháng;median;;;\n"
        "A.03;Ba;%;tháng;weighted average;;;\n"
        "A.04;Bốn;%;tháng;;;A.01;\n"
        "A.01;Một lần nữa;người;tháng;sum;;;\n"
        "A.05;Năm;người;thập kỷ;sum;;;\n"
        "A.06;Sáu;%;Quý;;;A.01 + A.05;A.01\n",
        encoding="utf-8",
    )
    assert ADAPTER.claims(path, path.read_bytes()[:4096])
    rows = parse(path)
    errors = {row.line: (row.error.field, row.error.code) for row in rows if row.error}
    assert errors == {
        3: ("aggregation", "invalid"),
        4: ("weight", "missing"),
        5: ("denominator", "missing"),
        6: ("code", "duplicate"),
        7: ("period_type", "invalid"),
    }
    good = as_definitions([row for row in rows if row.error is None])
    assert good[("indicator", "A.01")]["aggregation"] == "sum" and good[("indicator", "A.01")]["period_type"] == "monthly"
    assert good[("indicator", "A.06")] == {
        "name": "Sáu",
        "measure": "%",
        "period_type": "quarterly",
        "aggregation": "derived",
        "numerator": "A.01+A.05",
        "denominator": "A.01",
        "factor": 1,
    }
    assert all(row.error.message_vi and row.error.message_en for row in rows if row.error)


def test_it_claims_definition_lists_only() -> None:
    """The three lists are claimed by their header; no agency value file in the samples is."""
    for name in ("units.csv", "indicators.csv", "report-schedule.csv"):
        path = SAMPLES / "definitions" / name
        assert ADAPTER.claims(path, path.read_bytes()[:4096]), name
    for path in [*(SAMPLES / "inbox").rglob("*"), *(SAMPLES / "bad").rglob("*")]:
        if path.is_file():
            assert not ADAPTER.claims(path, path.read_bytes()[:4096]), path.name


def test_a_changed_definition_replaces_the_old_one_at_a_new_version(make_node: MakeNode, tmp_path: Path) -> None:
    """Loaded with `ingest --adapter definitions-csv`; re-loading a changed rule updates that one definition, newer version."""
    node = make_node("86")
    first = cli(
        "ingest", "--dir", str(node), "--adapter", "definitions-csv", str(SAMPLES / "definitions/units.csv"), str(ROLLUP / "indicators.csv")
    )
    assert "indicators.csv: 11 imported, 0 updated, 0 unchanged, 0 refused [definitions-csv]" in first.stdout
    before = catalogue_of(node)
    changed = tmp_path / "indicators.csv"
    changed.write_text(
        (ROLLUP / "indicators.csv")
        .read_text(encoding="utf-8")
        .replace("%,monthly,avg", "%,monthly,max")
        .replace("KTXH.MT.02,Số ngày mưa,ngày,monthly,none", "KTXH.MT.02,Số ngày mưa,ngày,monthly,sum"),
        encoding="utf-8",
    )
    second = cli("ingest", "--dir", str(node), "--adapter", "definitions-csv", str(changed))
    assert "0 imported, 1 updated, 10 unchanged, 0 refused" in second.stdout
    after = catalogue_of(node)
    assert after.get("KTXH.MT.02").aggregation == "sum" and before.get("KTXH.MT.02").aggregation == "none"
    assert after.get("KTXH.MT.02").version > before.get("KTXH.MT.02").version
    assert after.get("KTXH.NS.01").version == before.get("KTXH.NS.01").version
    assert after.version == after.get("KTXH.MT.02").version


def catalogue_of(node: Path) -> Catalogue:
    store = Store.open(node / "lienthong.db")
    try:
        return Catalogue.from_store(store)
    finally:
        store.close()


def test_newest_definition_wins_across_origins_and_bad_references_are_set_aside() -> None:
    """Two origins defining one code: the newer version is used; a ratio over an unknown indicator is not used, and says why."""

    def definition(origin: str, version: int, code: str, **fields: object) -> records.Envelope:
        keyed = records.definition(
            origin, {"type": "indicator", "code": code, "fields": {"name": code, "period_type": "monthly", **fields}}
        )
        return keyed.envelope(origin, version)

    cat = Catalogue.from_envelopes(
        [
            definition("83", 5, "X", aggregation="avg"),
            definition("86", 9, "X", aggregation="sum"),
            definition("86", 3, "R", aggregation="derived", numerator="X", denominator="NOPE"),
            definition("86", 4, "W", aggregation="weighted_avg", weight="X"),
        ]
    )
    assert cat.get("X").aggregation == "sum" and cat.get("X").origin == "86" and cat.get("X").version == 9
    assert "R" not in cat and "NOPE" in cat.problems["R"]
    assert cat.get("W").weight == "X"


def test_the_catalogue_refuses_derived_values_and_wrong_period_types() -> None:
    """A value for a derived indicator, or for a period of another type, is refused with a reason in both languages."""
    rows = parse(ROLLUP / "indicators.csv")
    cat = Catalogue.from_envelopes(row.record.envelope("86", i + 1) for i, row in enumerate(rows))
    derived = cat.check_value("KTXH.PA.03", "2026-10")
    assert derived is not None and derived.code == "derived_indicator" and "KTXH.PA.02" in derived.message_en
    wrong = cat.check_value("KTXH.GD.01", "2026-10")
    assert wrong is not None and wrong.code == "wrong_period_type" and "quý" in wrong.message_vi
    assert cat.check_value("KTXH.GD.01", "2026Q3") is None
    assert cat.check_value("KTXH.NS.01", "2026-10") is None
    assert cat.check_value("NOT.IN.CATALOGUE", "2026-10") is None  # unknown codes are the intake's own check


PERIODS = st.one_of(
    st.integers(2000, 2099).map(str),
    st.tuples(st.integers(2000, 2099), st.integers(1, 2)).map(lambda t: f"{t[0]}S{t[1]}"),
    st.tuples(st.integers(2000, 2099), st.integers(1, 4)).map(lambda t: f"{t[0]}Q{t[1]}"),
    st.tuples(st.integers(2000, 2099), st.integers(1, 12)).map(lambda t: f"{t[0]}-{t[1]:02d}"),
    st.tuples(st.integers(2000, 2099), st.integers(1, 52)).map(lambda t: f"{t[0]}W{t[1]:02d}"),
    st.dates().filter(lambda d: 2000 <= d.year <= 2099).map(lambda d: d.isoformat()),
)


@given(PERIODS)
def test_period_types_bounds_and_dhis2_ids_agree(period: str) -> None:
    """Every canonical period has ordered bounds of its own type, and its DHIS2 id reads back as the same period."""
    first, last = period_bounds(period)
    assert first <= last
    assert canonical(dhis2_period(period)) == period
    assert catalogue.period_type(period_type_of(period)) == period_type_of(period)
    if period_type_of(period) == "monthly":
        assert first.day == 1 and (last + timedelta(days=1)).day == 1


def test_the_lists_are_recognised_without_naming_the_adapter(make_node: MakeNode) -> None:
    """`lienthong ingest` on the province's three lists picks definitions-csv by their headers."""
    node = make_node("86")
    out = cli(
        "ingest", "--dir", str(node), *(str(SAMPLES / "definitions" / n) for n in ("units.csv", "indicators.csv", "report-schedule.csv"))
    )
    assert out.stdout.count("[definitions-csv]") == 3
    assert "report-schedule.csv: 4 imported" in out.stdout


def test_ingest_refuses_values_the_catalogue_forbids_and_definitions_below_the_province(make_node: MakeNode, tmp_path: Path) -> None:
    """A derived indicator's value and a value for the wrong period type are refused row by row with
    the catalogue's reason; a subordinate node cannot issue definitions; the valid rows are taken."""
    province = make_node("86")
    rollup = Path(__file__).parent / "testdata" / "rollup"
    cli("ingest", "--dir", str(province), "--adapter", "definitions-csv", str(rollup / "units.csv"), str(rollup / "indicators.csv"))
    rows = [
        {"kind": "indicator", "indicator": "KTXH.PA.03", "unit": "86", "period": "2026-10", "value": 90},
        {"kind": "indicator", "indicator": "KTXH.DS.01", "unit": "86", "period": "2026-10", "value": 1000},
        {"kind": "indicator", "indicator": "KTXH.NS.01", "unit": "86", "period": "2026-10", "value": 12},
    ]
    values = tmp_path / "values.jsonl"
    values.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = cli("ingest", "--dir", str(province), str(values), check=False)
    assert result.returncode == 1
    assert "never reported" in result.stderr and "is a monthly period" in result.stderr
    listed = json.loads(cli("query", "--dir", str(province), "indicators", "--json").stdout)
    assert [(r["indicator"], r["period"]) for r in listed] == [("KTXH.NS.01", "2026-10")]

    commune = make_node("86-28894", parent="127.0.0.1:1")
    refused = cli("ingest", "--dir", str(commune), "--adapter", "definitions-csv", str(rollup / "units.csv"), check=False)
    assert refused.returncode == 1 and "Only the provincial node issues definitions" in refused.stderr
    assert json.loads(cli("status", "--dir", str(commune), "--json").stdout)["records"]["definition"] == 0
