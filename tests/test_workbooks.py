"""Excel and OpenDocument workbooks through the whole pipeline (the `xlsx` adapter): the office
sample, Vietnamese report layouts made here as .xlsx and .ods, the checked-in .xls, refused
cells named as Excel names them, the sheet named in config, bombs and broken files refused
cleanly, and text in the legacy TCVN3/VNI encodings refused with a hint, in CSV and workbooks."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lienthong.adapters.base import FileRefused, ParseContext, Row
from lienthong.adapters.intake import Inbox, take
from lienthong.adapters.registry import Registry
from lienthong.adapters.xlsx import WorkbookAdapter, column_letters, sheet_ref
from lienthong.node.intake import StoreSink
from lienthong.sync import records
from lienthong.sync.clock import HybridClock
from lienthong.sync.store import Store

from .workbooks import TITLE, write_ods, write_ods_xml, write_xlsx

TESTDATA = Path(__file__).parent / "testdata"
SAMPLE = TESTDATA / "samples" / "inbox" / "thongke" / "chi-tieu-ktxh-thang-9-2026.xlsx"
XLS = TESTDATA / "workbooks" / "chi-tieu-thang-10-2026.xls"
DEFINITIONS = Path(__file__).parent.parent / "node" / "demo_data" / "definitions.jsonl"
REGISTRY = Registry()
ADAPTER = WorkbookAdapter()


def node(tmp_path: Path, node_id: str, definitions: bool = True) -> tuple[Store, StoreSink]:
    store = Store.create(tmp_path / f"{node_id}.db", node_id)
    sink = StoreSink(store, HybridClock(), tmp_path, [node_id])
    if definitions:
        take(DEFINITIONS, Inbox("ioc", DEFINITIONS.parent), REGISTRY, sink, node_id, move=False)
    return store, sink


def drop(tmp_path: Path, sink: StoreSink, node_id: str, source: Path, agency: str = "thongke", sheet: str = "") -> dict[str, Any]:
    inbox = tmp_path / "inbox" / agency
    inbox.mkdir(parents=True, exist_ok=True)
    if source.parent != inbox:
        shutil.copyfile(source, inbox / source.name)
    return take(inbox / source.name, Inbox(agency, inbox, sheet=sheet), REGISTRY, sink, node_id)


def values(store: Store) -> dict[tuple[str, str, str], str]:
    out = {}
    for envelope in store.iter_records(records.INDICATOR):
        d = records.to_dict(envelope)
        out[(d["indicator"], d["period"], d["unit"])] = str(d["value"])
    return out


def parse(path: Path, sheet: str = "") -> list[Row]:
    return list(ADAPTER.parse(path, ParseContext(origin="86", agency="thongke", inbox=path.parent, sheet=sheet)))


# ---------------------------------------------------------------- what comes out


def test_the_office_sample_gives_its_five_values(tmp_path: Path) -> None:
    """The workbook as offices make it (motto, merged title, date line, STT column, a formula) gives exactly its 5 values."""
    store, sink = node(tmp_path, "86-29077")
    result = drop(tmp_path, sink, "86-29077", SAMPLE)
    assert result["status"] == "SUCCESS", result
    assert result["adapter"] == "xlsx" and result["conflicts"] == []
    assert values(store) == {
        ("KTXH.NS.01", "2026-09", "86-29077"): "10877.4",
        ("KTXH.DVC.01", "2026-09", "86-29077"): "904",
        ("KTXH.PA.01", "2026-09", "86-29077"): "43",
        ("KTXH.GD.01", "2026Q3", "86-29077"): "2",
        ("KTXH.PA.02", "2026-09", "86-29077"): "38",  # the formula =H10-5, by its cached value
    }
    assert "/archive/" in result["archived_as"]
    store.close()


def _report_rows() -> list[list[Any]]:
    """A two-row header (the group «Số liệu» merged over «Giá trị | Ghi chú»), a row of column numbers, data, a footer."""
    return [
        *TITLE,
        ["STT", "Mã chỉ tiêu", "Tên chỉ tiêu", "Kỳ báo cáo", "Mã đơn vị", "Số liệu", None],
        [None, None, None, None, None, "Giá trị", "Ghi chú"],
        ["(1)", "(2)", "(3)", "(4)", "(5)", "(6)", "(7)"],
        [1, "KTXH.NS.01", "Thu ngân sách", "Tháng 10/2026", "86-28894", 12450.75, "số liệu sơ bộ"],
        [2, "KTXH.DVC.01", "Hồ sơ dịch vụ công", "Tháng 10/2026", "86-28894", "1.283", None],
        [3, "KTXH.PA.01", "Phản ánh", "Tháng 10/2026", "86-99999", 5, None],
        [4, "KTXH.PA.02", "Phản ánh đúng hạn", "Tháng 13/2026", "86-28894", 3, None],
        [5, "KTXH.YT.01", "Sốt xuất huyết", "Tháng 10/2026", "86-28894", "mười hai", None],
        [],
        [None, None, None, None, "NGƯỜI LẬP BIỂU"],
    ]


def test_a_vietnamese_report_workbook_is_read_and_each_refused_cell_is_named(tmp_path: Path) -> None:
    """Title rows, merged cells, a two-row header and a column-number row are passed; numbers stay numbers,
    text numbers are read as Vietnamese; each refused row names its cell ('Biểu 01'!E12), the unknown unit too."""
    store, sink = node(tmp_path, "86-28894")
    book = write_xlsx(
        tmp_path / "bao-cao-thang-10.xlsx", {"Biểu 01": _report_rows()}, {"Biểu 01": ["A1:C1", "E1:I1", "A4:G4", "F7:G7", "E16:G16"]}
    )
    result = drop(tmp_path, sink, "86-28894", book)
    assert result["status"] == "WARNING"
    assert result["importCount"] == {"imported": 2, "updated": 0, "unchanged": 0, "refused": 3}
    got = [(c["line"], c["cell"], c["field"], c["code"]) for c in result["conflicts"]]
    assert got == [
        (12, "'Biểu 01'!E12", "unit", "unknown_unit"),
        (13, "'Biểu 01'!D13", "period", "bad_period"),
        (14, "'Biểu 01'!F14", "value", "bad_value"),
    ]
    for conflict in result["conflicts"]:
        assert conflict["message"].startswith(f"Ô {conflict['cell']}: ")
        assert conflict["message_en"].startswith(f"Cell {conflict['cell']}: ")
    assert values(store) == {("KTXH.NS.01", "2026-10", "86-28894"): "12450.75", ("KTXH.DVC.01", "2026-10", "86-28894"): "1283"}
    store.close()


def test_the_sheet_named_in_config_is_read_and_a_missing_one_is_refused(tmp_path: Path) -> None:
    """Without config the first visible worksheet is read; `inbox.<agency>.sheet` picks another; a sheet
    that is not there refuses the file, listing the sheets it has."""
    rows = [*TITLE, ["Mã chỉ tiêu", "Kỳ báo cáo", "Mã đơn vị", "Giá trị"], ["KTXH.NS.01", "Tháng 10/2026", "86", 7]]
    book = write_xlsx(tmp_path / "two-sheets.xlsx", {"Hướng dẫn": [["Hướng dẫn điền biểu"]], "Số liệu": rows})
    with pytest.raises(FileRefused) as refused:
        parse(book)
    assert refused.value.code == "no_header"
    assert [r.record is not None for r in parse(book, sheet="Số liệu")] == [True]
    with pytest.raises(FileRefused) as missing:
        parse(book, sheet="Biểu 02")
    assert missing.value.code == "no_sheet" and "Hướng dẫn, Số liệu" in missing.value.message_vi


def test_a_hidden_first_sheet_is_passed_over(tmp_path: Path) -> None:
    """The first VISIBLE worksheet is read when no sheet is configured."""
    import openpyxl

    book = openpyxl.Workbook()
    book.active.title = "Ẩn"
    book.active.append(["nothing here"])
    book.active.sheet_state = "hidden"
    data = book.create_sheet("Biểu")
    for row in [["Mã chỉ tiêu", "Kỳ báo cáo", "Mã đơn vị", "Giá trị"], ["KTXH.NS.01", "2026-10", "86", 1.5]]:
        data.append(row)
    path = tmp_path / "hidden.xlsx"
    book.save(path)
    [row] = parse(path)
    assert row.record is not None
    body = records.BODY_TYPES[row.record.kind].FromString(row.record.body)
    assert (body.indicator, body.period) == ("KTXH.NS.01", "2026-10")


def test_an_ods_workbook_with_date_and_number_cells(tmp_path: Path) -> None:
    """OpenDocument: a date cell in the period column is that day, a number in a code column its digits,
    a decimal number cell exact (no float noise)."""
    path = write_ods(
        tmp_path / "bao-cao.ods",
        {
            "Trang tính1": [
                ["BÁO CÁO SỐ LIỆU"],
                [],
                ["STT", "Mã chỉ tiêu", "Kỳ báo cáo", "Mã đơn vị", "Giá trị"],
                [1, "KTXH.YT.01", dt.date(2026, 10, 24), 86, 0.1],
                [2, "KTXH.NS.01", "Quý IV/2026", "86", 12450.75],
            ]
        },
    )
    rows = parse(path)
    assert all(r.error is None for r in rows), [r.error for r in rows]
    store, sink = node(tmp_path, "86", definitions=False)
    result = drop(tmp_path, sink, "86", path)
    assert result["importCount"]["imported"] == 2 and result["adapter"] == "xlsx"
    assert values(store) == {("KTXH.YT.01", "2026-10-24", "86"): "0.1", ("KTXH.NS.01", "2026Q4", "86"): "12450.75"}
    store.close()


def test_the_legacy_xls_fixture(tmp_path: Path) -> None:
    """Excel 97-2003 (.xls): three values, one refused row named by its cell ('Biểu 01'!G10)."""
    store, sink = node(tmp_path, "86-28894", definitions=False)
    result = drop(tmp_path, sink, "86-28894", XLS)
    assert result["importCount"] == {"imported": 3, "updated": 0, "unchanged": 0, "refused": 1}
    assert [(c["cell"], c["code"]) for c in result["conflicts"]] == [("'Biểu 01'!G10", "bad_value")]
    assert values(store) == {
        ("KTXH.NS.01", "2026-10", "86-28894"): "12450.75",
        ("KTXH.DVC.01", "2026-10", "86-28894"): "1283",
        ("KTXH.YT.01", "2026-10-24", "86-28894"): "7",
    }
    store.close()


def test_cell_names() -> None:
    """Columns and sheets are written as Excel writes them."""
    assert [column_letters(i) for i in (0, 25, 26, 701, 702, 16383)] == ["A", "Z", "AA", "ZZ", "AAA", "XFD"]
    assert sheet_ref("Sheet1") == "Sheet1" and sheet_ref("Quý III") == "'Quý III'" and sheet_ref("O'Brien") == "'O''Brien'"


# ---------------------------------------------------------------- refused cleanly


def _far_corner(path: Path, corner: str = "XFD1048576") -> Path:
    """Two cells, A1 and XFD1048576: a reader that makes the sheet a dense grid asks for 512 GB."""
    import openpyxl

    write_xlsx(path, {"Sheet1": [["Mã chỉ tiêu", "Kỳ báo cáo", "Mã đơn vị", "Giá trị"]]})
    book = openpyxl.load_workbook(path)
    book.active[corner] = 1
    book.save(path)
    return path


def _mid_corner(path: Path) -> Path:
    """A1 and ALL130000: 130 million cells, 4 GB as a dense grid, an allocation that would succeed on
    this machine: only the reader's memory limit refuses it."""
    return _far_corner(path, "ALL130000")


def _zip_bomb(path: Path) -> Path:
    """A real workbook plus an entry that unpacks to 600 MB (a few hundred KB packed)."""
    write_xlsx(path, {"Sheet1": [["Mã chỉ tiêu", "Kỳ báo cáo", "Mã đơn vị", "Giá trị"]]})
    with (
        zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z,
        z.open("xl/media/bomb.bin", "w", force_zip64=True) as f,
    ):
        block = b"\0" * (1 << 20)
        for _ in range(600):
            f.write(block)
    return path


def _ods_repeat_bomb(path: Path) -> Path:
    """An .ods whose one row says it repeats a million times with 16,384 filled cells each."""
    row = (
        '<table:table-row table:number-rows-repeated="1048575">'
        '<table:table-cell table:number-columns-repeated="16384" office:value-type="float" office:value="1"/></table:table-row>'
    )
    return write_ods_xml(path, {"Sheet1": row})


@pytest.mark.parametrize(
    ("name", "make", "code"),
    [
        ("far-corner.xlsx", _far_corner, "workbook_too_large"),
        ("mid-corner.xlsx", _mid_corner, "workbook_too_large"),
        ("zip-bomb.xlsx", _zip_bomb, "workbook_too_large"),
        ("repeat-bomb.ods", _ods_repeat_bomb, "workbook_too_large"),
        ("truncated.xlsx", lambda p: p.write_bytes(SAMPLE.read_bytes()[:3000]) and p, "broken_workbook"),
        ("not-a-workbook.xls", lambda p: p.write_bytes(b"<html><table><tr><td>1</td></tr></table></html>") and p, "broken_workbook"),
        ("empty.xlsx", lambda p: p.write_bytes(b"") or p, "empty"),
    ],
)
def test_bombs_and_broken_workbooks_are_refused_and_the_node_lives_on(tmp_path: Path, name: str, make: Any, code: str) -> None:
    """A bomb or a broken workbook is refused whole with a plain reason (ERROR, rejected/); the process
    taking it (this one) is unharmed and takes the next workbook."""
    store, sink = node(tmp_path, "86-29077")
    path = make(tmp_path / name)
    result = drop(tmp_path, sink, "86-29077", path)
    assert result["status"] == "ERROR" and result["error_code"] == code, result
    assert "/rejected/" in result["archived_as"] and result["description"] and result["description_en"]
    assert drop(tmp_path, sink, "86-29077", SAMPLE)["importCount"]["imported"] == 5
    store.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=st.sampled_from([SAMPLE, XLS]), data=st.data())
def test_damaged_workbook_bytes_only_ever_give_rows_or_a_refusal(tmp_path_factory: pytest.TempPathFactory, source: Path, data: Any) -> None:
    """Workbook bytes cut short or with bytes overwritten: parse yields rows or raises FileRefused, nothing else."""
    raw = bytearray(source.read_bytes())
    cut = data.draw(st.integers(min_value=1, max_value=len(raw)), label="cut")
    edits = data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), max_size=8), label="edits")
    for at, byte in edits:
        raw[at] = byte
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / ("damaged" + source.suffix)
    path.write_bytes(bytes(raw[:cut]))
    try:
        for row in ADAPTER.parse(path, ParseContext(origin="86", agency="a", inbox=folder)):
            assert isinstance(row, Row)
    except FileRefused as exc:
        assert exc.message_vi and exc.message_en


# ---------------------------------------------------------------- TCVN3 and VNI

# "Mã chỉ tiêu;Tên chỉ tiêu;Kỳ báo cáo;Mã đơn vị;Giá trị" typed with a TCVN3 (.VnTime) font, as the CSV holds it.
TCVN3_CSV = (
    b"M\xb7 ch\xd8 ti\xaau;T\xaan ch\xd8 ti\xaau;K\xfa b\xb8o c\xb8o;M\xb7 \xae\xacn v\xde;Gi\xb8 tr\xde\r\n"
    b"KTXH.NS.01;Thu ng\xa9n s\xb8ch;Th\xb8ng 10/2026;86-28894;12.450,75\r\n"
)


# The same header typed with a VNI font ("Maõ chæ tieâu"), under a title line.
VNI_CSV = "BAÙO CAÙO\r\nMaõ chæ tieâu;Kyø baùo caùo;Maõ ñôn vò;Giaù trò\r\nKTXH.NS.01;Thaùng 10/2026;86-28894;5\r\n".encode("cp1252")


@pytest.mark.parametrize(("encoding", "data", "shown"), [("TCVN3", TCVN3_CSV, "M· chØ tiªu"), ("VNI", VNI_CSV, "Maõ chæ tieâu")])
def test_a_legacy_encoded_csv_is_refused_with_a_hint_to_convert_it(tmp_path: Path, encoding: str, data: bytes, shown: str) -> None:
    """A CSV whose header reads "M· chØ tiªu" (TCVN3) or "Maõ chæ tieâu" (VNI) is recognised and refused, naming the
    encoding and saying to convert it to Unicode."""
    store, sink = node(tmp_path, "86-28894")
    path = tmp_path / f"chi-tieu-{encoding.lower()}.csv"
    path.write_bytes(data)
    result = drop(tmp_path, sink, "86-28894", path)
    assert result["status"] == "ERROR" and result["error_code"] == "legacy_encoding", result
    assert result["adapter"] == "vn-csv"
    assert encoding in result["description"] and "Unicode" in result["description"] and shown in result["description"]
    assert encoding in result["description_en"] and "Unicode" in result["description_en"]
    store.close()


def test_a_vni_workbook_is_refused_with_a_hint_to_convert_it(tmp_path: Path) -> None:
    """A workbook typed with a VNI font ("Maõ chæ tieâu") is refused the same way, naming VNI."""
    rows = [
        ["BAÙO CAÙO"],
        ["STT", "Maõ chæ tieâu", "Kyø baùo caùo", "Maõ ñôn vò", "Giaù trò"],
        [1, "KTXH.NS.01", "Thaùng 10/2026", "86", 5],
    ]
    path = write_xlsx(tmp_path / "vni.xlsx", {"Sheet1": rows})
    with pytest.raises(FileRefused) as refused:
        parse(path)
    assert refused.value.code == "legacy_encoding"
    assert "VNI" in refused.value.message_vi and "Unicode" in refused.value.message_en and "Unikey" in refused.value.hint


def test_unicode_headers_are_never_taken_for_legacy_text() -> None:
    """The legacy check finds nothing in proper Unicode headers, as UTF-8 or as Windows-1258 bytes."""
    from lienthong.adapters.legacy_text import encode, legacy_encoding

    header = "STT;Mã chỉ tiêu;Tên chỉ tiêu;Đơn vị tính;Kỳ báo cáo;Mã đơn vị;Tên đơn vị;Giá trị;Ghi chú"
    assert legacy_encoding(header.encode("utf-8")) is None
    cp1258 = TESTDATA / "samples" / "inbox" / "thongke" / "chi-tieu-ktxh-thang-10-2026-cp1258.csv"
    assert all(legacy_encoding(line) is None for line in cp1258.read_bytes().splitlines())
    assert legacy_encoding(b"Ma chi tieu;Gia tri;Ky bao cao") is None
    assert encode("Mã chỉ tiêu", "TCVN3") == b"M\xb7 ch\xd8 ti\xaau"
    assert encode("Mã chỉ tiêu", "VNI") == "Maõ chæ tieâu".encode("cp1252")


@pytest.mark.slow
def test_a_running_node_takes_a_workbook_and_a_bomb_leaves_it_running(make_node: Any) -> None:
    """A real node process: the far-corner bomb dropped first is refused (the node keeps running), then the office
    workbook copied in is taken: its 5 values are in the store."""
    from .helpers import NodeProcess, status, wait_until

    node = make_node("86-29077", agency="thongke")
    inbox = node / "inbox" / "thongke"
    proc = NodeProcess(node).start()
    try:
        bomb = _far_corner(node / "far-corner.xlsx")
        bomb.rename(inbox / bomb.name)
        wait_until(lambda: Path(str(inbox / "rejected" / bomb.name) + ".receipt.json").exists(), what="the bomb's receipt")
        assert json.loads(Path(str(inbox / "rejected" / bomb.name) + ".receipt.json").read_text())["error_code"] == "workbook_too_large"
        shutil.copyfile(SAMPLE, inbox / SAMPLE.name)
        wait_until(lambda: status(node)["records"].get("indicator", 0) == 5, what="the workbook's 5 values")
        assert proc.proc is not None and proc.proc.poll() is None
    finally:
        assert proc.stop() == 0


def test_a_table_that_starts_below_and_right_of_a1_names_the_right_cells(tmp_path: Path) -> None:
    """Nothing in rows 1-4 or columns A-B: row numbers and column letters are still the sheet's own."""
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Sheet1"
    table = [
        ["Mã chỉ tiêu", "Kỳ báo cáo", "Mã đơn vị", "Giá trị"],
        ["KTXH.NS.01", "Tháng 10/2026", "86", "không rõ"],
        ["KTXH.NS.02", "", "86", 1],
    ]
    for r, row in enumerate(table):
        for c, value in enumerate(row):
            sheet.cell(row=5 + r, column=3 + c, value=value)
    path = tmp_path / "offset.xlsx"
    book.save(path)
    errors = [(r.line, r.error.cell, r.error.code) for r in parse(path) if r.error]
    assert errors == [(6, "Sheet1!F6", "bad_value"), (7, "Sheet1!D7", "missing")]


def test_a_workbook_parsed_in_a_child_process_gives_the_same_receipt_and_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large workbook is read and its records built on the second core (parse_child.py): the refused
    cells (the adapter's and the unknown unit the node finds) and the values stored are those of an in-process take."""
    from lienthong.adapters import intake
    from lienthong.adapters.intake import Limits

    started: list[int] = []
    real = intake.child_rows
    monkeypatch.setattr(intake, "child_rows", lambda *a, **k: started.append(1) or real(*a, **k))
    receipts, stored = [], []
    # One workbook, copied: a workbook written twice differs in its zip timestamps (and so its sha256)
    # when the writes fall in different seconds, as on a loaded machine.
    made = write_xlsx(tmp_path / "bao-cao-thang-10.xlsx", {"Biểu 01": _report_rows()}, {"Biểu 01": ["A1:C1", "F7:G7"]})
    for mode, limits in (("inproc", Limits(parse_child_bytes=1 << 40)), ("child", Limits(parse_child_bytes=0))):
        store, sink = node(tmp_path / mode if (tmp_path / mode).mkdir() is None else tmp_path, "86-28894")
        book = tmp_path / mode / made.name
        book.write_bytes(made.read_bytes())
        result = take(book, Inbox("thongke", book.parent), REGISTRY, sink, "86-28894", limits, move=False)
        receipts.append({k: v for k, v in result.items() if k not in ("received_at", "processed_at")})
        stored.append(values(store))
        store.close()
    assert started == [1]
    assert receipts[0] == receipts[1]
    assert [c["cell"] for c in receipts[1]["conflicts"]] == ["'Biểu 01'!E12", "'Biểu 01'!D13", "'Biểu 01'!F14"]
    assert stored[0] == stored[1] and len(stored[1]) == 2


def test_the_sheet_named_in_config_is_read_when_the_workbook_is_parsed_in_a_child(tmp_path: Path) -> None:
    """`inbox.<agency>.sheet` reaches the child process that reads a large workbook: the named sheet's values
    are taken, not the first sheet's (which has no table)."""
    from lienthong.adapters.intake import Limits

    store, sink = node(tmp_path, "86", definitions=False)
    rows = [*TITLE, ["Mã chỉ tiêu", "Kỳ báo cáo", "Mã đơn vị", "Giá trị"], ["KTXH.NS.01", "Tháng 10/2026", "86", 7]]
    book = write_xlsx(tmp_path / "two-sheets.xlsx", {"Hướng dẫn": [["Hướng dẫn điền biểu"]], "Số liệu": rows})
    result = take(book, Inbox("thongke", tmp_path, sheet="Số liệu"), REGISTRY, sink, "86", Limits(parse_child_bytes=0), move=False)
    assert result["importCount"]["imported"] == 1, result
    assert values(store) == {("KTXH.NS.01", "2026-10", "86"): "7"}
    store.close()
