"""Exports of `lienthong query`: CSV, JSON and DHIS2 dataValueSets, parsed back and checked value by value."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

import pytest

from lienthong.node.trust import ca

from .conftest import MakeNode
from .helpers import cli
from .test_rollup import EXPECTED_2026_10, ROLLUP, SAMPLES


@pytest.fixture(scope="module")
def province_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A provincial node holding the roll-up test definitions and October's values (made once: the tests only read it)."""
    base = tmp_path_factory.mktemp("export")
    ca.init_ca(base / "ca", "Test CA")
    node = base / "86"
    cli("init", "--dir", str(node), "--mode", "provincial", "--id", "86", "--ca", str(base / "ca"), "--listen", "127.0.0.1:0")
    thongke = SAMPLES / "inbox" / "thongke"
    files = [
        ROLLUP / "units.csv",
        ROLLUP / "indicators.csv",
        thongke / "chi-tieu-ktxh-thang-10-2026.csv",
        thongke / "chi-tieu-ktxh-thang-10-2026-cp1258.csv",
        ROLLUP / "chi-tieu-long-chau-thang-10-2026.csv",
    ]
    cli("ingest", "--dir", str(node), "--agency", "thongke", *map(str, files))
    return node


def query(node: Path, *args: str) -> str:
    return cli("query", "--dir", str(node), "indicators", *args).stdout


def test_rollup_csv_export_parses_back_to_the_hand_computed_values(province_dir: Path, tmp_path: Path) -> None:
    """--format csv --out: an Excel-friendly UTF-8 file (BOM) whose rows hold the exact rolled-up decimals and their sources."""
    out = tmp_path / "exports" / "chi-tieu-2026-10.csv"
    said = query(province_dir, "--rollup", "--period", "2026-10", "--format", "csv", "--out", str(out))
    assert f"to {out} (csv)" in said
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    with out.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    got = {(r["indicator"], r["unit"]): Decimal(r["value"]) if r["value"] else None for r in rows}
    assert got == EXPECTED_2026_10
    ba_tri = next(r for r in rows if (r["indicator"], r["unit"]) == ("KTXH.NS.01", "86-28894"))
    assert ba_tri["unit_name"] == "Xã Ba Tri" and ba_tri["name"] == "Thu ngân sách nhà nước trên địa bàn"
    assert "86-28900 86/thongke=100" in ba_tri["sources"] and "86-28894 86/thongke=12450.75" in ba_tri["sources"]
    assert "merged into 86-28894" in ba_tri["notes"]
    assert not list(out.parent.glob(".*.tmp"))  # written whole, then renamed


def test_dhis2_export_is_a_data_value_set_that_lienthong_takes_back(province_dir: Path, make_node: MakeNode, tmp_path: Path) -> None:
    """--format dhis2: dataElement, DHIS2 period ids, orgUnit, combos and text values; another node ingests it to the same values."""
    out = tmp_path / "dvs-202610.json"
    query(province_dir, "--rollup", "--period", "2026-10", "--format", "dhis2", "--out", str(out))
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["dataElementIdScheme"] == data["orgUnitIdScheme"] == "CODE"
    values = data["dataValues"]
    assert {tuple(sorted(v)) for v in values} == {
        ("attributeOptionCombo", "categoryOptionCombo", "dataElement", "orgUnit", "period", "value")
    }
    assert all(v["period"] == "202610" and v["categoryOptionCombo"] == v["attributeOptionCombo"] == "default" for v in values)
    assert all(isinstance(v["value"], str) for v in values)
    got = {(v["dataElement"], v["orgUnit"]): Decimal(v["value"]) for v in values}
    assert got == {key: value for key, value in EXPECTED_2026_10.items() if value is not None}
    assert got[("KTXH.DVC.02", "86")] == Decimal("94.84")
    # A national node (or any DHIS2-speaking system) takes the file as it is.
    national = make_node("VN")
    cli("ingest", "--dir", str(national), "--agency", "tinh86", str(out))
    back = json.loads(query(national, "--period", "2026-10", "--json"))
    assert {(r["indicator"], r["unit"]): Decimal(str(r["value"])) for r in back} == got


def test_quarterly_values_export_with_dhis2_quarter_ids(province_dir: Path) -> None:
    """A quarterly indicator exports with period 2026Q3 (from `Quý III/2026`), to stdout when --out is not given."""
    data = json.loads(query(province_dir, "--rollup", "--period", "Quý III/2026", "--format", "dhis2"))
    assert {(v["dataElement"], v["orgUnit"], v["period"], v["value"]) for v in data["dataValues"]} == {
        ("KTXH.GD.01", "86", "2026Q3", "3"),
        ("KTXH.GD.01", "86-28894", "2026Q3", "3"),
    }


def test_listing_exports_and_json_keep_their_shape(province_dir: Path, tmp_path: Path) -> None:
    """--json still prints the records' canonical fields; the listing exports as CSV and as DHIS2 with the agency as attribute."""
    listed = json.loads(query(province_dir, "--unit", "86-29077", "--json"))
    assert {(r["indicator"], r["value"]) for r in listed} == {
        ("KTXH.YT.01", 17),
        ("KTXH.NS.01", 8904.2),
        ("KTXH.PA.01", 25),
        ("KTXH.MT.01", 64),
    }
    assert set(listed[0]) >= {"kind", "indicator", "period", "value", "unit", "agency", "origin", "version", "id"}
    out = tmp_path / "list.csv"
    query(province_dir, "--unit", "86-29077", "--out", str(out))  # the format follows the file's suffix
    with out.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["indicator"], r["value"], r["agency"], r["origin"]) for r in rows} == {
        ("KTXH.YT.01", "17", "thongke", "86"),
        ("KTXH.NS.01", "8904.2", "thongke", "86"),
        ("KTXH.PA.01", "25", "thongke", "86"),
        ("KTXH.MT.01", "64", "thongke", "86"),
    }
    dvs = json.loads(query(province_dir, "--unit", "86-29077", "--period", "2026-10", "--format", "dhis2"))
    assert {(v["dataElement"], v["attributeOptionCombo"], v["value"]) for v in dvs["dataValues"]} == {
        ("KTXH.YT.01", "thongke", "17"),
        ("KTXH.NS.01", "thongke", "8904.2"),
        ("KTXH.PA.01", "thongke", "25"),
        ("KTXH.MT.01", "thongke", "64"),
    }


def test_export_mistakes_are_told_plainly(province_dir: Path) -> None:
    """Two formats at once, or DHIS2 for reports, fail with Error/Try and no traceback."""
    both = cli("query", "--dir", str(province_dir), "indicators", "--json", "--format", "csv", check=False)
    assert both.returncode == 1 and "Error: --json and --format csv ask for two formats" in both.stderr
    reports = cli("query", "--dir", str(province_dir), "reports", "--format", "dhis2", check=False)
    assert (
        reports.returncode == 1 and "Error: a DHIS2 dataValueSet holds indicator values only" in reports.stderr and "Try:" in reports.stderr
    )
