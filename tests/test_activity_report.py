"""The drafted IOC activity report (`lienthong report draft`) and the satisfaction summary
(`feedback stats --satisfaction`, `feedback import-survey`): hand-computed figures, and the
.docx read back equal to the JSON for the same period.

One province node, filled through the real write paths (`ingest` of agency files, one of them
under libfaketime so that it is dated in October, `feedback import-survey`, `user add` for an
audit entry dated in October), is shared by the checks of this module."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import docx
import pytest

from lienthong.adapters import survey_csv
from lienthong.node.trust import ca
from lienthong.sync import activity, records, satisfaction
from lienthong.sync.clock import HybridClock
from lienthong.sync.errors import LienthongError
from lienthong.sync.store import Store

from .helpers import STORE_FILE, cli, write_jsonl

FAKETIME = next(Path("/usr/lib").glob("*-linux-gnu/faketime/libfaketimeMT.so.1"), Path("/usr/lib/faketime/libfaketimeMT.so.1"))
IN_OCTOBER = {"LD_PRELOAD": str(FAKETIME), "FAKETIME": "@2026-10-20 03:00:00", "FAKETIME_DONT_FAKE_MONOTONIC": "1", "TZ": "UTC"}
DEMO_DEFINITIONS = Path(__file__).resolve().parent.parent / "node" / "demo_data" / "definitions.jsonl"


def _unit(code: str, name: str, level: str = "commune", parent: str = "86") -> dict[str, Any]:
    return {"kind": "definition", "type": "unit", "code": code, "fields": {"name": name, "level": level, "parent": parent}}


def _report(unit: str, at: str) -> dict[str, Any]:
    return {
        "kind": "report",
        "report_type": "BC-IOC-THANG",
        "period": "2026-10",
        "unit": unit,
        "title": "Báo cáo tháng 10",
        "submitted_at": at,
    }


def _item(source_id: str, unit: str, category: str, name: str, received: str, due: str) -> dict[str, Any]:
    return {
        "kind": "feedback",
        "source_id": source_id,
        "unit": unit,
        "agency": "1022",
        "category": category,
        "category_name": name,
        "description": "Phản ánh",
        "received_at": received,
        "due_at": due,
    }


def _event(source_id: str, status: str, at: str, unit: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "feedback_event", "feedback": source_id, "agency": "1022", "status": status, "at": at, "unit": unit, **extra}


def _value(indicator: str, unit: str, period: str, value: int) -> dict[str, Any]:
    return {"kind": "indicator", "indicator": indicator, "unit": unit, "period": period, "value": value, "agency": "thongke"}


BA_TRI, THANH_PHU, PHUOC_HAU = "86-28894", "86-29077", "86-29278"
SCHEDULES = [json.loads(line) for line in DEMO_DEFINITIONS.read_text(encoding="utf-8").splitlines() if '"report_schedule"' in line]
DATA = [
    *SCHEDULES,
    _unit("86", "Tỉnh Vĩnh Long", "province", ""),
    _unit(BA_TRI, "Xã Ba Tri"),
    _unit(THANH_PHU, "Xã Thạnh Phú"),
    _unit(PHUOC_HAU, "Phường Phước Hậu"),
    {
        "kind": "definition",
        "type": "indicator",
        "code": "KTXH.NS.01",
        "fields": {"name": "Thu ngân sách nhà nước trên địa bàn", "measure": "triệu đồng", "period_type": "monthly", "aggregation": "sum"},
    },
    _value("KTXH.NS.01", BA_TRI, "2026-10", 10000),
    _value("KTXH.NS.01", THANH_PHU, "2026-10", 5000),
    _value("KTXH.NS.01", BA_TRI, "2026-09", 9000),
    _value("KTXH.NS.01", THANH_PHU, "2026-09", 5000),
    _report(BA_TRI, "2026-10-24T16:20:00+07:00"),  # on time (due the 25th)
    _report(THANH_PHU, "2026-10-27T08:00:00+07:00"),  # late; Phước Hậu sends nothing: missing
    _report("86", "2026-10-30T10:00:00+07:00"),  # the province, due the 30th: on time
    _item("F1", BA_TRI, "GT-01", "Giao thông", "2026-10-02T08:00:00+07:00", "2026-10-09T17:00:00+07:00"),
    _item("F2", BA_TRI, "GT-01", "Giao thông", "2026-10-10T08:00:00+07:00", "2026-10-17T17:00:00+07:00"),
    _item("F3", THANH_PHU, "MT-01", "Môi trường", "2026-10-15T08:00:00+07:00", "2026-10-22T17:00:00+07:00"),
    _item("F4", THANH_PHU, "MT-01", "Môi trường", "2026-10-28T08:00:00+07:00", "2026-11-04T17:00:00+07:00"),
    _item("F5", BA_TRI, "GT-01", "Giao thông", "2026-09-28T08:00:00+07:00", "2026-10-05T17:00:00+07:00"),  # September's
    _event("F1", "resolved", "2026-10-05T10:00:00+07:00", BA_TRI, note="Đã vá ổ gà"),  # on time
    _event("F1", "satisfaction", "2026-10-06T10:00:00+07:00", BA_TRI, rating=5),
    _event("F2", "resolved", "2026-10-20T10:00:00+07:00", BA_TRI, note="Đã xử lý"),  # late
    _event("F2", "satisfaction", "2026-10-21T10:00:00+07:00", BA_TRI, rating=2),
    _event("F4", "closed", "2026-11-01T10:00:00+07:00", THANH_PHU),  # on time; F3 stays open, overdue
]
SURVEY = (
    "don_vi;ky;linh_vuc;muc_do;so_phieu\n"
    f"{BA_TRI};2026-10;GT-01;5;10\n"
    f"{BA_TRI};2026-10;GT-01;4;5\n"
    f"{BA_TRI};2026-10;GT-01;1;2\n"
    f"{THANH_PHU};2026-10;MT-01;3;1\n"
    f"{THANH_PHU};2026-Q4;MT-01;4;3\n"  # the quarter's survey: in Q4's report, not October's
)


@pytest.fixture(scope="module")
def province(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A province node holding October's data (see the module docstring)."""
    if not FAKETIME.exists():
        pytest.fail("libfaketime is missing: scripts/test.sh installs it (apt-get install faketime)")
    root = tmp_path_factory.mktemp("report")
    ca.init_ca(root / "ca", "Test CA")
    node = root / "86"
    cli(
        "init",
        "--dir",
        str(node),
        "--mode",
        "provincial",
        "--id",
        "86",
        "--name",
        "Tỉnh Vĩnh Long",
        "--ca",
        str(root / "ca"),
        "--listen",
        "127.0.0.1:0",
    )
    # Reports are judged on when a node witnessed them: each is taken at its stated time, in order.
    for n, row in enumerate(r for r in DATA if r["kind"] == "report"):
        at = dt.datetime.fromisoformat(str(row["submitted_at"])).astimezone(dt.UTC)
        env = {**IN_OCTOBER, "FAKETIME": f"@{at:%Y-%m-%d %H:%M:%S}"}
        cli("ingest", "--dir", str(node), str(write_jsonl(root / f"report-{n}.jsonl", [row])), env=env)
    cli("ingest", "--dir", str(node), str(write_jsonl(root / "data.jsonl", [r for r in DATA if r["kind"] != "report"])))
    # An agency's file taken on 20 October, one row refused (a unit no one defined).
    bad = write_jsonl(
        root / "thongke.jsonl", [_value("KTXH.NS.01", PHUOC_HAU, "2026-08", 1), _value("KTXH.NS.01", "99-99999", "2026-08", 1)]
    )
    assert cli("ingest", "--dir", str(node), "--agency", "thongke", str(bad), env=IN_OCTOBER, check=False).returncode == 1
    cli("user", "add", "--dir", str(node), "thanh", "--role", "viewer", "--password", "mat-khau-dai-12345", env=IN_OCTOBER)
    (root / "survey.csv").write_text(SURVEY, encoding="utf-8")
    cli("feedback", "import-survey", "--dir", str(node), str(root / "survey.csv"), "--agency", "sonoivu")
    return node


def _draft(node: Path, fmt: str, period: str = "2026-10", *extra: str) -> Path:
    out = node.parent / f"report-{period}.{fmt}"
    cli("report", "draft", "--dir", str(node), "--period", period, "--format", fmt, "--out", str(out), *extra)
    return out


def _figures(node: Path, period: str = "2026-10") -> dict[str, Any]:
    return json.loads(_draft(node, "json", period).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def october(province: Path) -> dict[str, Any]:
    """`report draft --format json` for October."""
    return _figures(province)


def test_figures_are_the_hand_computed_ones(october: dict[str, Any]) -> None:
    """October: feedback counts by category and unit, completeness per level with late and missing units named,
    the headline indicator against September, the refused row, the audit entry and the satisfaction totals."""
    f = october
    assert (f["period"], f["unit"], f["previous_period"]) == ("2026-10", "86", "2026-09")
    total = f["feedback"]["total"]
    assert {k: total[k] for k in ("received", "handled", "on_time", "late", "open", "overdue")} == {
        "received": 4, "handled": 3, "on_time": 2, "late": 1, "open": 1, "overdue": 1,
    }  # fmt: skip
    assert [(c["category"], c["received"], c["on_time"], c["late"], c["overdue"]) for c in f["feedback"]["categories"]] == [
        ("GT-01", 2, 1, 1, 0),
        ("MT-01", 2, 1, 0, 1),
    ]
    assert [(u["unit"], u["unit_name"], u["received"]) for u in f["feedback"]["units"]] == [
        (BA_TRI, "Xã Ba Tri", 2),
        (THANH_PHU, "Xã Thạnh Phú", 2),
    ]
    levels = {lv["level"]: lv for lv in f["completeness"]["levels"]}
    assert (levels["commune"]["expected"], levels["commune"]["on_time"], levels["commune"]["late"], levels["commune"]["missing"]) == (
        3,
        1,
        1,
        1,
    )
    assert levels["commune"]["completeness"] == 66.7 and levels["province"]["timeliness"] == 100.0
    assert [r["unit"] for r in f["completeness"]["late"]] == [THANH_PHU]
    assert [r["unit"] for r in f["completeness"]["missing"]] == [PHUOC_HAU]
    [ns] = [r for r in f["indicators"]["rows"] if r["indicator"] == "KTXH.NS.01"]
    assert (ns["value"], ns["previous"], ns["change"], ns["change_pct"]) == (15000, 14000, 1000, 7.1)
    # Files taken in October: the three reports (each at its stated time) and the agency's file with its refused row.
    assert (f["refused"]["files"], f["refused"]["rows_refused"]) == (4, 1)
    assert [a["agency"] for a in f["refused"]["agencies"] if a["rows_refused"]] == ["thongke"]
    assert [(a["action"], a["entries"]) for a in f["security"]["actions"]] == [("user.add", 1)]
    sat = f["satisfaction"]["total"]
    assert (sat["feedback"]["responses"], sat["survey"]["responses"], sat["all"]["responses"]) == (2, 18, 20)
    assert (sat["all"]["average"], sat["all"]["satisfied"], sat["all"]["satisfied_pct"]) == (4.1, 16, 80.0)
    assert sat["all"]["by_rating"] == {"1": 2, "2": 1, "3": 1, "4": 5, "5": 11}


def _number(text: str) -> int | float | None:
    """A number as the document writes it (1.234,5; 80%; +1.000; -) back to what the JSON holds."""
    text = text.strip().rstrip("%").lstrip("+")
    if text == "-":
        return None
    value = float(text.replace(".", "").replace(",", "."))
    return int(value) if value == int(value) and "," not in text else value


def _tables(document: Any) -> dict[str, list[list[str]]]:
    """The document's data tables, by their first header cell and a second one to tell them apart."""
    out = {}
    for table in document.tables[1:-1]:  # the letterhead and the signature block are layout tables
        rows = [[cell.text for cell in row.cells] for row in table.rows]
        out[f"{rows[0][0]}/{rows[0][2]}"] = rows[1:]
    return out


def test_docx_numbers_equal_the_json_and_it_has_the_administrative_layout(province: Path, october: dict[str, Any]) -> None:
    """The .docx read back with python-docx prints the JSON's numbers, table by table, in the layout of Nghị định 30/2020."""
    f = october
    document = docx.Document(str(_draft(province, "docx")))
    head = "\n".join(cell.text for cell in document.tables[0].rows[0].cells)
    for words in (
        "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
        "Độc lập - Tự do - Hạnh phúc",
        "Số: …/BC-IOC",
        "UBND TỈNH VĨNH LONG",
        "Vĩnh Long, ngày",
    ):
        assert words in head
    closing = "\n".join(cell.text for cell in document.tables[-1].rows[0].cells)
    assert "Nơi nhận:" in closing and "GIÁM ĐỐC" in closing
    text = "\n".join(p.text for p in document.paragraphs)
    assert "BÁO CÁO" in text and "tháng 10 năm 2026" in text
    tables = _tables(document)
    keys = ("received", "handled", "on_time", "late", "open", "overdue")
    by_category = tables["Mã/Tiếp nhận"]
    assert [[r[0], *map(_number, r[2:])] for r in by_category] == [
        *([c["category"], *(c[k] for k in keys)] for c in f["feedback"]["categories"]),
        ["Tổng cộng", *(f["feedback"]["total"][k] for k in keys)],
    ]
    assert [[r[0], *map(_number, r[2:])] for r in tables["Mã đơn vị/Tiếp nhận"]] == [
        *([u["unit"], *(u[k] for k in keys)] for u in f["feedback"]["units"]),
        ["Tổng cộng", *(f["feedback"]["total"][k] for k in keys)],
    ]
    levels = ("expected", "submitted", "on_time", "late", "missing", "completeness", "timeliness")
    assert [list(map(_number, r[1:])) for r in tables["Cấp/Đã gửi"]] == [[lv[k] for k in levels] for lv in f["completeness"]["levels"]]
    assert f"{f['completeness']['late'][0]['unit_name']} ({THANH_PHU}" in text and f"Phường Phước Hậu ({PHUOC_HAU}" in text
    assert [[r[0], *map(_number, r[3:])] for r in tables["Mã/Đơn vị tính"]] == [
        [r["indicator"], r["value"], r["previous"], r["change"], r["change_pct"]] for r in f["indicators"]["rows"]
    ]
    assert [list(map(_number, r[1:])) for r in tables["Cơ quan/Tệp bị từ chối"]] == [
        [a["files"], a["files_refused"], a["rows_refused"]] for a in f["refused"]["agencies"]
    ]
    assert [[r[0], *map(_number, r[1:])] for r in tables["Loại sự kiện/Số lần"]] == [
        [a["action"], a["entries"], a["events"]] for a in f["security"]["actions"]
    ]

    def sat(g: dict[str, Any]) -> list[Any]:
        fb, sv, both = g["feedback"], g["survey"], g["all"]
        return [fb["responses"], fb["average"], sv["responses"], sv["average"], both["satisfied"], both["satisfied_pct"]]

    assert [[r[0], *map(_number, r[2:])] for r in tables["Mã đơn vị/Phiếu (phản ánh)"]] == [
        [u["unit"], *sat(u)] for u in f["satisfaction"]["units"]
    ]
    assert [[r[0], *map(_number, r[2:])] for r in tables["Mã/Phiếu (phản ánh)"]] == [
        [c["category"], *sat(c)] for c in f["satisfaction"]["categories"]
    ]


def test_markdown_and_pdf_renderings(province: Path) -> None:
    """--format md prints the same sections; --format pdf renders through LibreOffice in a font with Vietnamese glyphs."""
    md = _draft(province, "md").read_text(encoding="utf-8")
    assert "**CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM**" in md and "**Nơi nhận:**" in md
    assert "| GT-01 | Giao thông | 2 | 2 | 1 | 1 | 0 | 0 |" in md
    pdf = _draft(province, "pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and b"LiberationSerif" in pdf


def test_quarter_and_feedback_stats_satisfaction(province: Path, october: dict[str, Any]) -> None:
    """The Q4 report (2026-Q4) counts the quarter's survey and October's; `feedback stats --satisfaction --json`
    equals the report's satisfaction section for the same period."""
    q4 = _figures(province, "2026-Q4")
    assert (q4["period"], q4["previous_period"]) == ("2026Q4", "2026Q3")
    assert q4["satisfaction"]["total"]["survey"]["responses"] == 21
    stats = cli("feedback", "stats", "--dir", str(province), "--period", "2026-10", "--satisfaction", "--json").stdout
    assert json.loads(stats) == october["satisfaction"]
    text = cli("feedback", "stats", "--dir", str(province), "--period", "2026-10", "--satisfaction").stdout
    assert f"{BA_TRI:<14} GT-01" in text


def test_refusals_are_one_sentence_and_a_hint(province: Path, tmp_path: Path) -> None:
    """A bad period, a survey with a bad row (nothing of it stored) and a PDF without LibreOffice: Error/Try, no traceback."""
    bad = cli("report", "draft", "--dir", str(province), "--period", "2026-13", "--out", str(tmp_path / "r.docx"), check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("Error: ") and "Try: " in bad.stderr and "Traceback" not in bad.stderr
    survey = tmp_path / "bad.csv"
    survey.write_text(
        f"don_vi,ky,linh_vuc,muc_do,so_phieu\n{PHUOC_HAU},2026-11,GT-01,5,4\n{PHUOC_HAU},2026-11,GT-01,6,1\n", encoding="utf-8"
    )
    refused = cli("feedback", "import-survey", "--dir", str(province), str(survey), check=False)
    assert refused.returncode == 1 and "line 3: muc_do" in refused.stderr and "nothing imported" in refused.stderr
    store = Store.open(province / STORE_FILE)
    try:
        assert store.reader().execute("SELECT count(*) FROM indicator_values WHERE period = '2026-11'").fetchone()[0] == 0
    finally:
        store.close()
    env = {"PATH": str(Path(sys.executable).parent) + os.pathsep + "/nonexistent"}
    no_office = cli(
        "report",
        "draft",
        "--dir",
        str(province),
        "--period",
        "2026-10",
        "--format",
        "pdf",
        "--out",
        str(tmp_path / "r.pdf"),
        env=env,
        check=False,
    )
    assert no_office.returncode == 1 and "soffice" in no_office.stderr and "Try: " in no_office.stderr and not (tmp_path / "r.pdf").exists()


# ---------------------------------------------------------------- in process: the rules, cheaply


def test_survey_csv_layout_spellings_and_refusals(tmp_path: Path) -> None:
    """Headers with accents and ',' read like the ASCII ones; 1.200 is a count; bad rows are named; a header lacking a column is refused whole."""
    good = tmp_path / "khao-sat.csv"
    good.write_text(
        "\ufeffĐơn vị,Kỳ,Lĩnh vực,Mức độ,Số phiếu\n86-28894,2026-Q4,,5,1.200\n86-28894,2026-10,GT-01,0,3\n86-28894,2026-10,GT-01,4,ba\n",
        encoding="utf-8",
    )
    rows, refused = survey_csv.read(good, "86", "sonoivu")
    [(line, record)] = rows
    body = records.body_of(record.envelope("86", 1))
    assert (line, record.unit, body.period, body.disaggregation, body.value) == (2, "86-28894", "2026Q4", "5", "1200")
    assert [(r.line, r.column) for r in refused] == [(3, "muc_do"), (4, "so_phieu")]
    lacking = tmp_path / "thieu.csv"
    lacking.write_text("don_vi;ky;so_phieu\n86-28894;2026-10;4\n", encoding="utf-8")
    with pytest.raises(LienthongError, match="muc_do"):
        survey_csv.read(lacking, "86")


def test_survey_counts_once_per_unit_period_rating_and_a_month_counts_in_its_quarter(tmp_path: Path) -> None:
    """The same survey imported under two agencies counts once (the newest); October's survey counts in Q4, not in November."""
    store = Store.create(tmp_path / STORE_FILE, "86")
    try:

        def value(period: str, rating: int, count: int, agency: str) -> records.Keyed:
            fields = {"indicator": satisfaction.SURVEY_INDICATOR, "unit": BA_TRI, "period": period, "value": count, "agency": agency}
            return records.indicator_value("86", {**fields, "disaggregation": satisfaction.survey_disaggregation("GT-01", rating)})

        store.write_local([value("2026-10", 5, 10, "sonoivu"), value("2026Q4", 4, 3, "sonoivu")], HybridClock(store.max_version()))
        store.write_local([value("2026-10", 5, 12, "1022")], HybridClock(store.max_version()))  # the same survey, corrected, again
        store.fresh_read_tables()  # survey results are read from the read tables, which follow the records
        quarter = satisfaction.summarise(satisfaction.survey_answers(store.reader(), "2026Q4"), "2026Q4")
        november = satisfaction.summarise(satisfaction.survey_answers(store.reader(), "2026-11"), "2026-11")
    finally:
        store.close()
    assert quarter["total"]["survey"]["by_rating"] == {"1": 0, "2": 0, "3": 0, "4": 3, "5": 12}
    assert (quarter["total"]["all"]["average"], quarter["total"]["all"]["satisfied_pct"]) == (4.8, 100.0)
    assert november["total"]["all"]["responses"] == 0 and november["total"]["all"]["average"] is None


def test_security_events_are_counted_in_vietnam_days() -> None:
    """Refused connections count by their `count`; an entry at 17:30 UTC on 31 October is 1 November in Vietnam; unreadable times are skipped."""
    entries = [
        {"node": "86", "time": "2026-10-01T00:00:00+07:00", "action": "connection.refused", "details": {"count": 40}},
        {"node": "86-28894", "time": "2026-10-15T03:00:00+00:00", "action": "record.refused", "details": {}},
        {"node": "86", "time": "2026-10-31T17:30:00+00:00", "action": "connection.refused", "details": {"count": 7}},
        {"node": "86", "time": "not a time", "action": "cert.issue", "details": {}},
    ]
    out = activity.security_figures(entries, [{"node": "86-29077", "problem": "rewritten"}], "2026-10")
    assert out["actions"] == [
        {"action": "connection.refused", "entries": 1, "events": 40},
        {"action": "record.refused", "entries": 1, "events": 1},
    ]
    assert out["nodes"] == [{"node": "86", "entries": 1}, {"node": "86-28894", "entries": 1}]
    assert out["chains_broken"] == [{"node": "86-29077", "problem": "rewritten"}]
