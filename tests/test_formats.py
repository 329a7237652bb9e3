"""Built-in formats: every agency sample gives exactly the records samples/README.md lists,
every bad sample is refused the way it describes, and no bytes make a parser raise
anything but FileRefused (hypothesis)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
import unicodedata
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lienthong.adapters import jsonl, numbers, periods
from lienthong.adapters.base import Adapter, FileRefused, ParseContext, Row, RowError
from lienthong.adapters.dhis2 import Dhis2CsvAdapter, Dhis2JsonAdapter
from lienthong.adapters.jsonl import JsonLinesAdapter
from lienthong.adapters.open311 import Open311Adapter
from lienthong.adapters.report_manifest import ReportManifestAdapter
from lienthong.adapters.vn_csv import VietnameseCsvAdapter
from lienthong.sync import records

SAMPLES = Path(__file__).parent / "testdata" / "samples"
INBOX = SAMPLES / "inbox"
BAD = SAMPLES / "bad"
ORIGIN = "86"

VN_CSV, DHIS2_JSON, DHIS2_CSV = VietnameseCsvAdapter(), Dhis2JsonAdapter(), Dhis2CsvAdapter()
OPEN311, REPORT, JSONL = Open311Adapter(), ReportManifestAdapter(), JsonLinesAdapter()
ALL = [VN_CSV, DHIS2_JSON, DHIS2_CSV, OPEN311, REPORT, JSONL]
FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VIETNAMESE = set("ăâđêôơưáàảãạấầẩẫậắằẳẵặéèẻẽẹếềểễệíìỉĩịóòỏõọốồổỗộớờởỡợúùủũụứừửữựýỳỷỹỵ")


# ---------------------------------------------------------------- helpers


def context(inbox: Path, agency: str = "a", origin: str = ORIGIN, blobs: dict[str, bytes] | None = None) -> ParseContext:
    def store_blob(path: Path) -> str:
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if blobs is not None:
            blobs[digest] = data
        return digest

    return ParseContext(origin=origin, agency=agency, inbox=inbox, store_blob=store_blob)


def parse(adapter: Adapter, path: Path, ctx: ParseContext) -> tuple[list[tuple[int, dict[str, Any]]], list[RowError]]:
    """Every row, checked against the contract: (line, record as canonical fields) and errors."""
    got: list[tuple[int, dict[str, Any]]] = []
    errors: list[RowError] = []
    for row in adapter.parse(path, ctx):
        assert isinstance(row, Row) and row.line >= 1
        assert (row.record is None) != (row.error is None)
        if row.error is not None:
            assert row.error.line == row.line and row.error.code and row.error.message_vi and row.error.message_en
            errors.append(row.error)
        else:
            assert records.KIND_NAMES[row.record.kind] in adapter.kinds
            fields = records.to_dict(row.record.envelope(ctx.origin, 1))
            fields["body"] = records.body_of(row.record.envelope(ctx.origin, 1))
            fields["keyed"] = row.record
            got.append((row.line, fields))
    return got, errors


def indicators(got: list[tuple[int, dict[str, Any]]]) -> set[tuple[Any, ...]]:
    """(indicator, unit, period, disaggregation, value text, comment, follow_up, agency) of each record."""
    return {
        (
            f["indicator"],
            f["unit"],
            f["period"],
            f["body"].disaggregation,
            f["body"].value,
            f["body"].comment,
            f["body"].follow_up,
            f.get("agency", ""),
        )
        for _, f in got
    }


def assert_nfc(got: list[tuple[int, dict[str, Any]]]) -> None:
    for _, fields in got:
        for key, value in fields.items():
            if isinstance(value, str):
                assert value == unicodedata.normalize("NFC", value), key


def refusal(adapter: Adapter, path: Path, ctx: ParseContext) -> FileRefused:
    with pytest.raises(FileRefused) as err:
        for _ in adapter.parse(path, ctx):
            pass
    assert err.value.message_vi and err.value.message_en and err.value.code
    return err.value


def vietnamese(text: str) -> bool:
    return bool(set(text.lower()) & VIETNAMESE)


# ---------------------------------------------------------------- the good samples


def test_excel_export_utf8_bom_crlf_semicolons() -> None:
    """Six values; `12.450,75` is 12450.75, `1.283` is 1283, `97,4` is 97.4; Tháng 10/2026 and Quý III/2026."""
    got, errors = parse(VN_CSV, INBOX / "thongke" / "chi-tieu-ktxh-thang-10-2026.csv", context(INBOX / "thongke", "thongke", "86-28894"))
    assert errors == []
    assert indicators(got) == {
        ("KTXH.NS.01", "86-28894", "2026-10", "", "12450.75", "", False, "thongke"),
        ("KTXH.DVC.01", "86-28894", "2026-10", "", "1283", "", False, "thongke"),
        ("KTXH.DVC.02", "86-28894", "2026-10", "", "97.4", "", False, "thongke"),
        ("KTXH.PA.01", "86-28894", "2026-10", "", "42", "", False, "thongke"),
        ("KTXH.PA.02", "86-28894", "2026-10", "", "39", "Số liệu tạm tính", False, "thongke"),
        ("KTXH.GD.01", "86-28894", "2026Q3", "", "3", "", False, "thongke"),
    }
    assert [line for line, _ in got] == [2, 3, 4, 5, 6, 7]  # the header is line 1
    assert_nfc(got)


def test_legacy_windows_1258_export_is_detected_and_normalised() -> None:
    """Windows-1258 bytes decode to combining tone marks; the record text is NFC."""
    raw = (INBOX / "thongke" / "chi-tieu-ktxh-thang-10-2026-cp1258.csv").read_bytes()
    decoded = raw.decode("cp1258")
    assert decoded != unicodedata.normalize("NFC", decoded)  # the sample really is not NFC as decoded
    got, errors = parse(
        VN_CSV, INBOX / "thongke" / "chi-tieu-ktxh-thang-10-2026-cp1258.csv", context(INBOX / "thongke", "thongke", "86-29077")
    )
    assert errors == []
    assert indicators(got) == {
        ("KTXH.YT.01", "86-29077", "2026-10", "", "17", "", False, "thongke"),
        ("KTXH.NS.01", "86-29077", "2026-10", "", "8904.2", "", False, "thongke"),
        ("KTXH.PA.01", "86-29077", "2026-10", "", "25", "Đã đối chiếu với Tổng đài 1022", False, "thongke"),
    }
    assert_nfc(got)


def test_nfd_export_lands_on_the_same_record_as_nfc(tmp_path: Path) -> None:
    """The NFD file's row and the same row written in NFC are one record: same id, same body."""
    nfd_path = INBOX / "thongke" / "chi-tieu-ktxh-thang-9-2026-nfd.csv"
    text = nfd_path.read_text(encoding="utf-8")
    assert text != unicodedata.normalize("NFC", text)
    nfc_path = tmp_path / "chi-tieu-ktxh-thang-9-2026.csv"
    nfc_path.write_text(unicodedata.normalize("NFC", text), encoding="utf-8")
    got_nfd, errors = parse(VN_CSV, nfd_path, context(INBOX / "thongke", "thongke", "86-28894"))
    got_nfc, _ = parse(VN_CSV, nfc_path, context(tmp_path, "thongke", "86-28894"))
    assert errors == []
    assert indicators(got_nfd) == {("KTXH.PA.01", "86-28894", "2026-09", "", "38", "Bổ sung", False, "thongke")}
    assert [f["keyed"] for _, f in got_nfd] == [f["keyed"] for _, f in got_nfc]
    assert_nfc(got_nfd)


def test_dhis2_positional_csv() -> None:
    """Four values for three communes; the one with flwup=true is flagged for follow-up."""
    got, errors = parse(DHIS2_CSV, INBOX / "soyte" / "datavalueset-202610-bulk.csv", context(INBOX / "soyte", "soyte"))
    assert errors == []
    assert indicators(got) == {
        ("KTXH.YT.01", "86-29254", "2026-10", "", "4", "", False, "soyte"),
        ("KTXH.YT.01", "86-29278", "2026-10", "", "7", "", False, "soyte"),
        ("KTXH.YT.01", "86-29494", "2026-10", "", "9", "Ổ dịch phường 4", True, "soyte"),
        ("YT.KHAM_BENH.LUOT", "86-29254", "2026-10", "", "5120", "", False, "soyte"),
    }
    assert [line for line, _ in got] == [2, 3, 4, 5]


def test_dhis2_json_with_top_level_defaults_and_disaggregation() -> None:
    """Four values; period and orgUnit come from the top level; NAM/NU are disaggregations."""
    got, errors = parse(DHIS2_JSON, INBOX / "soyte" / "datavalueset-202610-ba-tri.json", context(INBOX / "soyte", "soyte"))
    assert errors == []
    assert indicators(got) == {
        ("KTXH.YT.01", "86-28894", "2026-10", "", "12", "", False, "soyte"),
        ("YT.TIEMCHUNG.DU_MUI", "86-28894", "2026-10", "NAM", "118", "", False, "soyte"),
        ("YT.TIEMCHUNG.DU_MUI", "86-28894", "2026-10", "NU", "109", "", False, "soyte"),
        ("YT.KHAM_BENH.LUOT", "86-28894", "2026-10", "", "3412", "Gồm cả trạm y tế xã", False, "soyte"),
    }
    assert [line for line, _ in got] == [7, 8, 9, 10]
    assert_nfc(got)


def test_open311_requests_with_status_history() -> None:
    """Two feedback items dispatched to their units, citizen details kept, and every status event."""
    got, errors = parse(OPEN311, INBOX / "1022" / "open311-2026-11-20.json", context(INBOX / "1022", "1022"))
    assert errors == []
    assert_nfc(got)
    feedback = {f["source_id"]: f for _, f in got if f["kind"] == "feedback"}
    assert set(feedback) == {"1022-20261120-000153", "1022-20261120-000161"}
    first, second = feedback["1022-20261120-000153"], feedback["1022-20261120-000161"]
    assert {k: v for k, v in first.items() if k not in ("id", "body", "keyed", "origin", "version")} == {
        "kind": "feedback",
        "source_id": "1022-20261120-000153",
        "unit": "86-28894",
        "agency": "1022",
        "category": "GT-01",
        "category_name": "Hạ tầng giao thông",
        "description": "Ổ gà lớn trên đường tỉnh 885 đoạn gần chợ Ba Tri, xe máy dễ té ngã vào ban đêm.",
        "received_at": "2026-11-20T07:42:10+07:00",
        "address": "Đường tỉnh 885, ấp Phú Thạnh, xã Ba Tri",
        "lat": 10.0402,
        "lon": 106.5956,
        "has_location": True,
        "media_url": "https://1022.example.gov.vn/media/000153.jpg",
        "due_at": "2026-11-27T07:42:10+07:00",
        "assigned_unit": "86-28894",
        "citizen": {"name": "Nguyễn Văn An", "phone": "0903123456", "email": "an.nguyen@example.com"},
    }
    assert (second["unit"], second["assigned_unit"], second["category"], second["category_name"]) == (
        "86-29254",
        "86-29254",
        "MT-02",
        "Vệ sinh môi trường",
    )
    assert second["received_at"] == "2026-11-20T08:10:00+07:00" and second.get("citizen", {}) == {} and "due_at" not in second
    events = {
        (f["feedback"], f["status"], f["at"], f.get("note", ""), f.get("assigned_unit", ""), f["unit"], f["agency"])
        for _, f in got
        if f["kind"] == "feedback_event"
    }
    assert events == {
        ("1022-20261120-000153", "received", "2026-11-20T07:42:10+07:00", "Tiếp nhận qua Tổng đài 1022", "", "86-28894", "1022"),
        ("1022-20261120-000153", "assigned", "2026-11-20T09:05:00+07:00", "Chuyển UBND xã Ba Tri", "86-28894", "86-28894", "1022"),
        ("1022-20261120-000161", "received", "2026-11-20T08:10:00+07:00", "Tiếp nhận qua ứng dụng", "", "86-29254", "1022"),
        ("1022-20261120-000161", "assigned", "2026-11-20T10:00:00+07:00", "Chuyển phường Long Châu", "86-29254", "86-29254", "1022"),
        ("1022-20261120-000161", "resolved", "2026-11-21T16:30:00+07:00", "Đã xử lý xong", "", "86-29254", "1022"),
        # status "closed" with no closed note: closed at updated_datetime, with the status notes
        ("1022-20261120-000161", "closed", "2026-11-21T16:30:00+07:00", "Đã thu gom rác, vệ sinh khu vực", "", "86-29254", "1022"),
    }
    assert len([1 for _, f in got if f["kind"] == "feedback_event"]) == 6


def test_report_manifest_stores_its_attachment() -> None:
    """One monthly report with its PDF stored as a blob and recorded as {name, sha256, size}."""
    blobs: dict[str, bytes] = {}
    folder = INBOX / "vanphong"
    got, errors = parse(REPORT, folder / "bc-ioc-thang-10-2026-ba-tri.report.json", context(folder, "vanphong", "86-28894", blobs))
    assert errors == []
    pdf = (folder / "bc-ioc-thang-10-2026-ba-tri.pdf").read_bytes()
    digest = hashlib.sha256(pdf).hexdigest()
    assert blobs == {digest: pdf}
    [(line, report)] = got
    assert line == 1
    assert {k: v for k, v in report.items() if k not in ("id", "body", "keyed", "origin", "version")} == {
        "kind": "report",
        "report_type": "BC-IOC-THANG",
        "period": "2026-10",
        "unit": "86-28894",
        "agency": "vanphong",
        "title": "Báo cáo tình hình hoạt động Trung tâm IOC tháng 10/2026",
        "summary": "Tiếp nhận 42 phản ánh, xử lý đúng hạn 39; hệ thống camera hoạt động ổn định 98,7%.",
        "submitted_at": "2026-10-24T16:20:00+07:00",
        "signed_by": "Chánh Văn phòng HĐND và UBND xã",
        "attachments": [{"name": "bc-ioc-thang-10-2026-ba-tri.pdf", "sha256": digest, "size": str(len(pdf))}],
    }


@pytest.mark.parametrize(
    ("sample", "adapter"),
    [
        ("1022/open311-2026-11-20.json", "open311"),
        ("soyte/datavalueset-202610-ba-tri.json", "dhis2-json"),
        ("soyte/datavalueset-202610-bulk.csv", "dhis2-csv"),
        ("thongke/chi-tieu-ktxh-thang-10-2026.csv", "vn-csv"),
        ("thongke/chi-tieu-ktxh-thang-10-2026-cp1258.csv", "vn-csv"),
        ("thongke/chi-tieu-ktxh-thang-9-2026-nfd.csv", "vn-csv"),
        ("vanphong/bc-ioc-thang-10-2026-ba-tri.report.json", "report-manifest"),
        ("vanphong/bc-ioc-thang-10-2026-ba-tri.pdf", None),
    ],
)
def test_exactly_one_adapter_claims_each_sample(sample: str, adapter: str | None) -> None:
    """claims() decides by name and first bytes; the samples are not ambiguous."""
    path = INBOX / sample
    head = path.read_bytes()[:4096]
    assert [a.name for a in ALL if a.claims(path, head)] == ([adapter] if adapter else [])


def test_adapters_satisfy_the_protocol() -> None:
    for adapter in ALL:
        assert isinstance(adapter, Adapter)
        assert adapter.name and adapter.version and adapter.description and adapter.kinds <= set(records.BUILDERS)
    assert {a.name for a in ALL} == {"vn-csv", "dhis2-json", "dhis2-csv", "open311", "report-manifest", "jsonl"}


# ---------------------------------------------------------------- the bad samples


def test_bad_rows_are_refused_with_their_line_and_field_and_the_rest_parse() -> None:
    """Line 2 period, 3 value, 4 unit, 5 ambiguous number; the unknown indicator (6) is for the pipeline to judge."""
    got, errors = parse(VN_CSV, BAD / "chi-tieu-loi.csv", context(BAD, "thongke", "86-28894"))
    assert {(e.line, e.field, e.code) for e in errors} == {
        (2, "period", "bad_period"),
        (3, "value", "bad_value"),
        (4, "unit", "missing"),
        (5, "value", "ambiguous_number"),
    }
    by_line = {e.line: e for e in errors}
    assert "Tháng 13/2026" in by_line[2].message_vi and "tháng" in by_line[2].message_vi
    assert "mười hai" in by_line[3].message_vi and "số" in by_line[3].message_vi
    assert "mã đơn vị" in by_line[4].message_vi.lower()
    assert "1,234.5" in by_line[5].message_vi and "không rõ ràng" in by_line[5].message_vi
    assert all(vietnamese(e.message_vi) for e in errors)
    assert {
        (line, *key) for line, key in zip([line for line, _ in got], [(f["indicator"], f["body"].value) for _, f in got], strict=True)
    } == {
        (6, "KHONG.TON.TAI", "5"),
        (7, "KTXH.YT.01", "7"),
    }


@pytest.mark.parametrize(("sample", "code"), [("empty.csv", "empty"), ("random-bytes.csv", "not_text")])
@pytest.mark.parametrize("adapter", [VN_CSV, DHIS2_CSV], ids=lambda a: a.name)
def test_empty_and_binary_csv_are_refused_as_a_whole(adapter: Adapter, sample: str, code: str) -> None:
    err = refusal(adapter, BAD / sample, context(BAD))
    assert err.code == code and vietnamese(err.message_vi) and sample in err.message_vi


def test_empty_and_binary_csv_are_claimed_so_the_receipt_explains() -> None:
    for sample in ("empty.csv", "random-bytes.csv"):
        path = BAD / sample
        assert [a.name for a in ALL if a.claims(path, path.read_bytes()[:4096])] == ["vn-csv"]


def test_truncated_dataset_is_refused_as_a_whole() -> None:
    err = refusal(DHIS2_JSON, BAD / "datavalueset-truncated.json", context(BAD))
    assert err.code == "truncated" and "cắt cụt" in err.message_vi and "gửi lại" in err.message_vi


def test_truncated_after_good_values_is_still_refused(tmp_path: Path) -> None:
    """The break is found after values were yielded: FileRefused still ends the file (one transaction)."""
    whole = json.dumps(
        {"period": "202610", "orgUnit": "86-28894", "dataValues": [{"dataElement": f"D{i}", "value": str(i)} for i in range(2000)]}
    )
    path = tmp_path / "cut.json"
    path.write_text(whole[: len(whole) - 30])
    assert refusal(DHIS2_JSON, path, context(tmp_path)).code == "truncated"


def test_leading_zero_in_open311_is_refused_with_a_fix() -> None:
    """`"service_code": 006` is not JSON: the whole file is refused, saying where and what to write."""
    path = BAD / "open311-leading-zero.json"
    assert OPEN311.claims(path, path.read_bytes())
    err = refusal(OPEN311, path, context(BAD))
    assert err.code == "bad_json"
    assert "006" in err.message_vi and "service_code" in err.message_vi and "dòng 5" in err.message_vi
    assert '"006"' in err.message_vi and vietnamese(err.message_vi)


def test_unknown_unit_is_not_a_parser_error() -> None:
    """Unit 99-00000 parses; checking it against the registry is the pipeline's job."""
    got, errors = parse(DHIS2_JSON, BAD / "datavalueset-unknown-unit.json", context(BAD, "soyte"))
    assert errors == [] and indicators(got) == {("KTXH.YT.01", "99-00000", "2026-10", "", "3", "", False, "soyte")}


def test_report_with_missing_and_escaping_attachments_is_refused_naming_both() -> None:
    blobs: dict[str, bytes] = {}
    err = refusal(REPORT, BAD / "report-missing-attachment.report.json", context(BAD, blobs=blobs))
    assert err.code == "bad_attachment"
    for text in (err.message_vi, err.message_en):
        assert "khong-co-file-nay.pdf" in text and "../../etc/passwd" in text
    assert "không tìm thấy" in err.message_vi and "ngoài thư mục" in err.message_vi
    assert blobs == {}  # nothing stored


# ---------------------------------------------------------------- attachments and other edges


def manifest(folder: Path, attachments: list[Any], **extra: Any) -> Path:
    path = folder / "bc.report.json"
    fields = {
        "report_type": "BC-IOC-QUY",
        "period": "2026-Q3",
        "unit": "86-29077",
        "title": "Báo cáo quý III/2026",
        "submitted_at": "2026-09-24T10:00:00+07:00",
        "attachments": attachments,
    }
    path.write_text(json.dumps(dict(fields, **extra), ensure_ascii=False), encoding="utf-8")
    return path


def test_report_period_2026_q3_and_nfd_attachment_name(tmp_path: Path) -> None:
    """`2026-Q3` is 2026Q3; an attachment saved with an NFD name is found from an NFC manifest."""
    name = "Phụ lục quý III.pdf"
    (tmp_path / unicodedata.normalize("NFD", name)).write_bytes(b"%PDF-1.4 phu luc")
    got, errors = parse(REPORT, manifest(tmp_path, [name]), context(tmp_path))
    assert errors == []
    [(_, report)] = got
    assert report["period"] == "2026Q3"
    assert report["attachments"] == [{"name": name, "sha256": hashlib.sha256(b"%PDF-1.4 phu luc").hexdigest(), "size": "16"}]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlinked_attachments_are_refused(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the inbox")
    (inbox / "link.pdf").symlink_to(secret)
    (inbox / "outdir").symlink_to(tmp_path)
    blobs: dict[str, bytes] = {}
    err = refusal(REPORT, manifest(inbox, ["link.pdf", "outdir/secret.txt", "/etc/hostname"]), context(inbox, blobs=blobs))
    assert "link.pdf" in err.message_vi and "outdir/secret.txt" in err.message_vi and "/etc/hostname" in err.message_vi
    assert "symlink" in err.message_vi and blobs == {}


def test_report_missing_title_is_a_row_error_and_nothing_is_stored(tmp_path: Path) -> None:
    (tmp_path / "a.pdf").write_bytes(b"x")
    blobs: dict[str, bytes] = {}
    got, errors = parse(REPORT, manifest(tmp_path, ["a.pdf"], title=""), context(tmp_path, blobs=blobs))
    assert got == [] and [(e.field, e.code) for e in errors] == [("title", "missing")] and blobs == {}


def test_dhis2_json_defaults_after_the_values_and_canonical_periods(tmp_path: Path) -> None:
    """dataValues before period/orgUnit still uses them; DHIS2 period ids map to canonical ones."""
    text = (
        '{"dataValues": [\n'
        ' {"dataElement": "A", "value": "1"},\n'
        ' {"dataElement": "B", "period": "2026W5", "orgUnit": "86-1", "value": "2.50"},\n'
        ' {"dataElement": "C", "period": "20261024", "value": "true", "followUp": true},\n'
        ' {"dataElement": "D", "period": "2026July", "value": "3"},\n'
        ' {"dataElement": "E", "period": "2026S1", "categoryOptionCombo": "default", "attributeOptionCombo": "DUAN", "value": "4"},\n'
        ' {"dataElement": "F", "value": "1,5"}\n'
        '], "period": "2026Q3", "orgUnit": "86-28894"}'
    )
    path = tmp_path / "dv.json"
    path.write_text(text)
    got, errors = parse(DHIS2_JSON, path, context(tmp_path, "soyte"))
    assert indicators(got) == {
        ("A", "86-28894", "2026Q3", "", "1", "", False, "soyte"),
        ("B", "86-1", "2026W05", "", "2.50", "", False, "soyte"),
        ("C", "86-28894", "2026-10-24", "", "1", "", True, "soyte"),
        ("E", "86-28894", "2026S1", "|DUAN", "4", "", False, "soyte"),
    }
    assert {(e.line, e.field, e.code) for e in errors} == {(5, "period", "bad_period"), (7, "value", "ambiguous_number")}
    assert "năm tài chính" in {e.line: e for e in errors}[5].message_vi


def test_json_stream_keeps_line_numbers_across_chunks(tmp_path: Path) -> None:
    """Items spanning the reader's 64 KiB chunks parse whole, each at the line of its '{'."""
    lines = ['{"period": "202610", "orgUnit": "86-28894", "dataValues": [']
    expected = {}
    for i in range(1500):
        comment = "Ghi chú dài " * (i % 40)
        if i % 3 == 0:
            lines.append(f'  {{"dataElement": "D{i}",')
            lines.append(f'   "value": "{i}", "comment": "{comment}"}},')
            expected[len(lines) - 1] = f"D{i}"
        else:
            lines.append(f'  {{"dataElement": "D{i}", "value": "{i}", "comment": "{comment}"}},')
            expected[len(lines)] = f"D{i}"
    lines[-1] = lines[-1].rstrip(",")
    lines.append("]}")
    path = tmp_path / "big.json"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert path.stat().st_size > 4 * 65536
    got, errors = parse(DHIS2_JSON, path, context(tmp_path))
    assert errors == []
    assert {line: f["indicator"] for line, f in got} == expected


def test_open311_unknown_note_extended_status_and_undispatched_request(tmp_path: Path) -> None:
    requests = [
        {
            "service_request_id": 42,
            "status": "in_progress",
            "service_code": "GT-01",
            "description": "Đèn đường hỏng",
            "requested_datetime": "2026-11-21T19:02:00+07:00",
            "updated_datetime": "2026-11-22T08:00:00+07:00",
            "notes": [
                {"datetime": "2026-11-21T19:02:00+07:00", "type": "submitted"},
                {"datetime": "2026-11-21T20:00:00+07:00", "type": "escalated"},
            ],
        },
        {"service_request_id": "x", "status": "open", "service_code": "A", "requested_datetime": "2026-11-21T19:02:00+07:00"},
    ]
    path = tmp_path / "o.json"
    path.write_text(json.dumps(requests, ensure_ascii=False, indent=1))
    got, errors = parse(OPEN311, path, context(tmp_path, "1022", origin="86"))
    feedback = [f for _, f in got if f["kind"] == "feedback"]
    assert [(f["source_id"], f["unit"], f.get("assigned_unit", "")) for f in feedback] == [("42", "86", "")]
    assert {(f["status"], f["at"]) for _, f in got if f["kind"] == "feedback_event"} == {
        ("received", "2026-11-21T19:02:00+07:00"),
        ("in_progress", "2026-11-22T08:00:00+07:00"),
    }
    assert {(e.field, e.code) for e in errors} == {("status", "bad_status"), ("description", "missing")}
    assert all(vietnamese(e.message_vi) for e in errors)


def test_vn_csv_title_rows_english_headers_and_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text(
        'BÁO CÁO CHỈ TIÊU THÁNG 10/2026\n\nindicator,period,unit,value\nA,Năm 2026,86-1,12.5\nB,24/10/2026,86-1,"1,5"\n', encoding="utf-8"
    )
    got, errors = parse(VN_CSV, path, context(tmp_path))
    assert indicators(got) == {("A", "86-1", "2026", "", "12.5", "", False, "a")}
    assert [(e.line, e.code) for e in errors] == [(5, "ambiguous_number")]
    path.write_text('sep=,\nMã chỉ tiêu,Kỳ báo cáo,Mã đơn vị,Giá trị (triệu đồng)\nA,2026-10,86-1,"1.234,5"\n', encoding="utf-8")
    got, errors = parse(VN_CSV, path, context(tmp_path))
    assert errors == [] and indicators(got) == {("A", "86-1", "2026-10", "", "1234.5", "", False, "a")} and got[0][0] == 3
    path.write_text("Mã chỉ tiêu;Kỳ báo cáo;Giá trị\nA;2026-10;5\n", encoding="utf-8")
    err = refusal(VN_CSV, path, context(tmp_path))
    assert err.code == "missing_column" and "Mã đơn vị" in err.message_vi


def test_jsonl_adapter_defaults_the_agency_and_keeps_the_old_parser(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(
        '{"kind": "indicator", "indicator": "A", "unit": "86-1", "period": "2026-10", "value": 1.50}\n'
        "\n"
        '{"kind": "indicator", "indicator": "A", "unit": "86-1", "period": "2026-13", "value": 1, "agency": "soyte"}\n'
        "not json\n",
        encoding="utf-8",
    )
    old = list(jsonl.parse(path, "86"))  # the original parser (lienthong ingest) still works unchanged
    assert [n for n, _ in old] == [1, 3, 4] and isinstance(old[1][1], jsonl.LineError) and isinstance(old[2][1], jsonl.LineError)
    with path.open("a", encoding="utf-8") as f:
        f.write('{"kind": "definition", "type": "indicator", "code": "A", "fields": {"weight": 0.5}}\n')
    got, errors = parse(JSONL, path, context(tmp_path, "thongke"))
    assert [(line, f["kind"], f.get("agency", "")) for line, f in got] == [(1, "indicator", "thongke"), (5, "definition", "")]
    assert got[0][1]["body"].value == "1.50"  # decimal digits kept as written
    assert [(e.line, e.field, e.code) for e in errors] == [(3, "period", "bad_period"), (4, "", "bad_json")]


def test_every_records_error_code_has_a_vietnamese_sentence() -> None:
    """Each InputError code the record builders (sync/records.py) and their field checks (sync/fields.py)
    can raise is explained to staff in Vietnamese."""
    import inspect
    import re

    from lienthong.adapters import messages
    from lienthong.sync import fields

    source = inspect.getsource(records) + inspect.getsource(fields)
    codes = set(re.findall(r'code="(\w+)"', source)) | {"invalid"}
    assert codes >= {"missing", "bad_period", "bad_value", "bad_time", "bad_kind", "bad_status", "too_long"}
    for code in codes:
        vi, en = messages.text(code, field="period", value="x")
        assert code in messages.CATALOG and vietnamese(vi) and en and "?" not in vi


def test_dhis2_csv_header_without_value_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dv.csv"
    path.write_text("dataelement,period,orgunit\nA,202610,86-1\n")
    err = refusal(DHIS2_CSV, path, context(tmp_path))
    assert err.code == "missing_column" and "value" in err.message_vi


# ---------------------------------------------------------------- periods and numbers


@pytest.mark.parametrize(
    ("text", "period"),
    [
        ("Tháng 10/2026", "2026-10"),
        ("tháng 1 năm 2026", "2026-01"),
        (unicodedata.normalize("NFD", "Tháng 9/2026"), "2026-09"),
        ("Thang 9/2026", "2026-09"),
        ("10/2026", "2026-10"),
        ("Quý III/2026", "2026Q3"),
        ("Quý 3/2026", "2026Q3"),
        ("QUÝ IV NĂM 2026", "2026Q4"),
        ("Năm 2026", "2026"),
        ("6 tháng đầu năm 2026", "2026S1"),
        ("Tuần 5/2026", "2026W05"),
        ("24/10/2026", "2026-10-24"),
        ("2026-10", "2026-10"),
        ("202610", "2026-10"),
        ("2026Q3", "2026Q3"),
        ("2026-Q3", "2026Q3"),
        ("2026", "2026"),
        ("2026W5", "2026W05"),
        ("20261024", "2026-10-24"),
        ("2026-10-24", "2026-10-24"),
        ("2026S1", "2026S1"),
    ],
)
def test_periods(text: str, period: str) -> None:
    assert periods.canonical(text) == period
    assert records.PERIOD.match(period)


@pytest.mark.parametrize(
    "text", ["Tháng 13/2026", "Quý V/2026", "2026Q5", "2026W54", "2025W53", "31/02/2026", "2026July", "2026BiW3", "", "mười"]
)
def test_impossible_periods_are_refused(text: str) -> None:
    with pytest.raises(periods.PeriodError):
        periods.canonical(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("12.450,75", "12450.75"),
        ("1.283", "1283"),
        ("97,4", "97.4"),
        ("42", "42"),
        ("-3,5", "-3.5"),
        ("1 234,5", "1234.5"),
        ("1.234.567", "1234567"),
    ],
)
def test_vietnamese_numbers(text: str, value: str) -> None:
    assert Decimal(numbers.parse_vietnamese(text)) == Decimal(value)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("1,234.5", "ambiguous_number"),
        ("12.45", "ambiguous_number"),
        ("0.5", "ambiguous_number"),
        ("mười hai", "bad_value"),
        ("", "bad_value"),
        ("NaN", "bad_value"),
    ],
)
def test_vietnamese_numbers_refused(text: str, code: str) -> None:
    with pytest.raises(numbers.NumberError) as err:
        numbers.parse_vietnamese(text)
    assert err.value.code == code


# ---------------------------------------------------------------- properties: nothing but FileRefused

SUFFIX = {
    "vn-csv": ".csv",
    "dhis2-csv": ".csv",
    "dhis2-json": ".json",
    "open311": ".json",
    "report-manifest": ".report.json",
    "jsonl": ".jsonl",
}
SEEDS = {
    "vn-csv": [
        INBOX / "thongke" / "chi-tieu-ktxh-thang-10-2026.csv",
        INBOX / "thongke" / "chi-tieu-ktxh-thang-10-2026-cp1258.csv",
        BAD / "chi-tieu-loi.csv",
    ],
    "dhis2-csv": [INBOX / "soyte" / "datavalueset-202610-bulk.csv"],
    "dhis2-json": [INBOX / "soyte" / "datavalueset-202610-ba-tri.json", BAD / "datavalueset-truncated.json"],
    "open311": [INBOX / "1022" / "open311-2026-11-20.json", BAD / "open311-leading-zero.json"],
    "report-manifest": [INBOX / "vanphong" / "bc-ioc-thang-10-2026-ba-tri.report.json", BAD / "report-missing-attachment.report.json"],
    "jsonl": [],
}
SEED_BYTES = {name: [p.read_bytes() for p in paths] for name, paths in SEEDS.items()}
SEED_BYTES["jsonl"] = [
    b'{"kind": "indicator", "indicator": "A", "unit": "86-1", "period": "2026-10", "value": 1.5}\n'
    b'{"kind": "feedback_event", "feedback": "x", "status": "closed", "at": "2026-10-01T00:00:00+07:00", "unit": "86-1"}\n'
]
TOKENS = [
    b'"',
    b";",
    b",",
    b"\n",
    b"\r\n",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b"0",
    b"006",
    b"-",
    b".",
    b"\xff",
    b"\x00",
    "ữ".encode(),
    b"\xe1",
    b"null",
    b"1e999",
    b"../",
]


def consume(adapter: Adapter, path: Path, ctx: ParseContext) -> None:
    """parse() yields well-formed rows or raises FileRefused, nothing else."""
    adapter.claims(path, path.read_bytes()[:4096])
    try:
        for row in adapter.parse(path, ctx):
            assert isinstance(row, Row) and row.line >= 1
            assert (row.record is None) != (row.error is None)
            if row.error is not None:
                assert row.error.message_vi and row.error.message_en and row.error.code
            else:
                assert records.KIND_NAMES[row.record.kind] in adapter.kinds
    except FileRefused as exc:
        assert exc.code and exc.message_vi and exc.message_en


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["delete", "insert", "replace", "truncate", "duplicate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "insert":
            data[at:at] = draw(st.one_of(st.sampled_from(TOKENS), st.binary(min_size=1, max_size=4)))
        elif op == "replace" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[at:]
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 40))]
    return bytes(data)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("formats")
    (folder / "bc-ioc-thang-10-2026-ba-tri.pdf").write_bytes((INBOX / "vanphong" / "bc-ioc-thang-10-2026-ba-tri.pdf").read_bytes())
    return folder


@pytest.mark.parametrize("adapter", ALL, ids=lambda a: a.name)
@FAST
@given(data=st.data())
def test_arbitrary_and_mutated_bytes_only_ever_refuse(adapter: Adapter, scratch: Path, data: st.DataObject) -> None:
    """Random bytes, and valid files with bytes cut, inserted or changed: rows or FileRefused, never a crash."""
    content = data.draw(st.one_of(st.binary(max_size=1500), mutated(SEED_BYTES[adapter.name])), label="content")
    path = scratch / f"fuzz-{adapter.name}{SUFFIX[adapter.name]}"
    path.write_bytes(content)
    consume(adapter, path, context(scratch))


# ---------------------------------------------------------------- properties: valid rows round-trip

LETTERS = "aăâbcdđeêghiklmnoôơpqrstuưvxyAĂÂĐÊÔƠƯáàảãạấầẩẫậắằẳẵặéèẻẽẹếềểễệíìỉĩịóòỏõọốồổỗộớờởỡợúùủũụứừửữựýỳỷỹỵ"
codes = st.from_regex(r"[A-Z]{2,4}(\.[A-Z0-9_]{1,6}){0,2}", fullmatch=True)
units = st.from_regex(r"86-[0-9]{5}", fullmatch=True)
vn_text = st.text(alphabet=LETTERS + " ,.;\"'-", max_size=30)
values = st.decimals(min_value=-(10**9), max_value=10**9, places=2, allow_nan=False, allow_infinity=False) | st.integers(
    -(10**6), 10**9
).map(Decimal)


@st.composite
def written_periods(draw: st.DrawFn, vietnamese_forms: bool = True) -> tuple[str, str]:
    """(a period as an agency writes it, its canonical form)."""
    year = draw(st.integers(2000, 2099))
    month, quarter, day = draw(st.integers(1, 12)), draw(st.integers(1, 4)), draw(st.integers(1, 28))
    roman = ["I", "II", "III", "IV"][quarter - 1]
    forms = [
        (f"{year}", f"{year}"),
        (f"{year}{month:02d}", f"{year}-{month:02d}"),
        (f"{year}Q{quarter}", f"{year}Q{quarter}"),
        (f"{year}{month:02d}{day:02d}", f"{year}-{month:02d}-{day:02d}"),
        (f"{year}S{1 + month % 2}", f"{year}S{1 + month % 2}"),
    ]
    if vietnamese_forms:
        forms += [
            (f"Tháng {month}/{year}", f"{year}-{month:02d}"),
            (f"Quý {roman}/{year}", f"{year}Q{quarter}"),
            (f"Năm {year}", f"{year}"),
            (f"{year}-{month:02d}", f"{year}-{month:02d}"),
            (f"{year}-Q{quarter}", f"{year}Q{quarter}"),
            (f"{day:02d}/{month:02d}/{year}", f"{year}-{month:02d}-{day:02d}"),
        ]
    return draw(st.sampled_from(forms))


indicator_rows = st.lists(st.tuples(codes, units, written_periods(), values, vn_text), min_size=1, max_size=12)


def to_cp1258(text: str) -> bytes:
    """Windows-1258 as legacy software writes it: base letters with ă/â/ê/ô/ơ/ư/đ, tone marks combining."""
    tones = "\u0300\u0301\u0303\u0309\u0323"
    out: list[str] = []
    for cluster in _clusters(unicodedata.normalize("NFD", text)):
        base = unicodedata.normalize("NFC", "".join(ch for ch in cluster if ch not in tones))
        out.append(base + "".join(ch for ch in cluster if ch in tones))
    return "".join(out).encode("cp1258")


def _clusters(text: str) -> list[str]:
    clusters: list[str] = []
    for ch in text:
        if clusters and unicodedata.combining(ch):
            clusters[-1] += ch
        else:
            clusters.append(ch)
    return clusters


def expected_text(text: str) -> str:
    return unicodedata.normalize("NFC", text).strip()


@FAST
@given(
    rows=indicator_rows,
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "cp1258"]),
    newline=st.sampled_from(["\r\n", "\n"]),
    group=st.booleans(),
)
def test_vn_csv_round_trip(scratch: Path, rows: list[tuple[Any, ...]], encoding: str, newline: str, group: bool) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator=newline)
    writer.writerow(["Mã chỉ tiêu", "Tên chỉ tiêu", "Đơn vị tính", "Kỳ báo cáo", "Mã đơn vị", "Tên đơn vị", "Giá trị", "Ghi chú"])
    for code, unit, (period, _), value, comment in rows:
        writer.writerow([code, "Tên", "lượt", period, unit, "Xã", numbers.format_vietnamese(value, group=group), comment])
    text = buffer.getvalue()
    path = scratch / "roundtrip.csv"
    path.write_bytes(to_cp1258(text) if encoding == "cp1258" else text.encode(encoding))
    got, errors = parse(VN_CSV, path, context(scratch))
    assert errors == []
    assert [(f["indicator"], f["unit"], f["period"], Decimal(f["body"].value), f["body"].comment) for _, f in got] == [
        (code, unit, canonical, value, expected_text(comment)) for code, unit, (_, canonical), value, comment in rows
    ]


@FAST
@given(
    rows=st.lists(
        st.tuples(codes, written_periods(False), units, st.sampled_from(["", "NAM", "NU"]), values, vn_text, st.booleans()),
        min_size=1,
        max_size=12,
    ),
    header=st.booleans(),
)
def test_dhis2_csv_round_trip(scratch: Path, rows: list[tuple[Any, ...]], header: bool) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(
            ["dataelement", "period", "orgunit", "catoptcombo", "attroptcombo", "value", "storedby", "lastupdated", "comment", "flwup"]
        )
    for code, (period, _), unit, coc, value, comment, followup in rows:
        writer.writerow([code, period, unit, coc, "", str(value), "soyte", "2026-11-03T08:15:00.000", comment, str(followup).lower()])
    path = scratch / "roundtrip-dhis2.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8")
    assert DHIS2_CSV.claims(path, path.read_bytes()[:4096]) or (not header and not rows[0][0])
    got, errors = parse(DHIS2_CSV, path, context(scratch))
    assert errors == []
    assert [
        (f["indicator"], f["period"], f["unit"], f["body"].disaggregation, Decimal(f["body"].value), f["body"].comment, f["body"].follow_up)
        for _, f in got
    ] == [
        (code, canonical, unit, coc, value, expected_text(comment), followup)
        for code, (_, canonical), unit, coc, value, comment, followup in rows
    ]


@FAST
@given(
    rows=st.lists(
        st.tuples(codes, st.none() | written_periods(False), st.none() | units, st.sampled_from(["", "NAM", "NU"]), values, vn_text),
        min_size=1,
        max_size=12,
    ),
    values_first=st.booleans(),
    indent=st.sampled_from([None, 1, 2]),
)
def test_dhis2_json_round_trip(scratch: Path, rows: list[tuple[Any, ...]], values_first: bool, indent: int | None) -> None:
    items = []
    for code, period, unit, coc, value, comment in rows:
        item: dict[str, Any] = {"dataElement": code, "value": str(value)}
        if period:
            item["period"] = period[0]
        if unit:
            item["orgUnit"] = unit
        if coc:
            item["categoryOptionCombo"] = coc
        if comment:
            item["comment"] = comment
        items.append(item)
    top = {"period": "2026Q3", "orgUnit": "86-00001"}
    document = {"dataValues": items, **top} if values_first else {"dataSet": "X", **top, "dataValues": items}
    path = scratch / "roundtrip.json"
    path.write_text(json.dumps(document, ensure_ascii=False, indent=indent), encoding="utf-8")
    got, errors = parse(DHIS2_JSON, path, context(scratch))
    assert errors == []
    expected = {
        (code, period[1] if period else "2026Q3", unit or "86-00001", coc, value, expected_text(comment))
        for code, period, unit, coc, value, comment in rows
    }
    assert {
        (f["indicator"], f["period"], f["unit"], f["body"].disaggregation, Decimal(f["body"].value), f["body"].comment) for _, f in got
    } == expected
    assert len(got) == len(rows)


notes_types = st.lists(
    st.sampled_from(["submitted", "assigned", "accepted", "in progress", "resolved", "closed", "reopened", "returned"]),
    unique=True,
    max_size=5,
)
words = st.text(alphabet=LETTERS + " ", min_size=1, max_size=30).filter(lambda s: s.strip())


@FAST
@given(
    requests=st.lists(
        st.tuples(st.from_regex(r"1022-[0-9]{6}", fullmatch=True), codes, words, units, notes_types, st.sampled_from(["open", "closed"])),
        min_size=1,
        max_size=6,
        unique_by=lambda r: r[0],
    )
)
def test_open311_round_trip(scratch: Path, requests: list[tuple[Any, ...]]) -> None:
    document = []
    for number, (source_id, code, description, unit, kinds, status) in enumerate(requests):
        document.append(
            {
                "service_request_id": source_id,
                "status": status,
                "service_code": code,
                "description": description,
                "agency_responsible": unit,
                "requested_datetime": "2026-11-20T07:42:10+07:00",
                "updated_datetime": "2026-11-21T07:00:00+07:00",
                "first_name": "Trần",
                "last_name": description[:5],
                "notes": [
                    {"datetime": f"2026-11-20T{8 + i:02d}:00:{number:02d}+07:00", "type": kind, "description": description}
                    for i, kind in enumerate(kinds)
                ],
            }
        )
    path = scratch / "roundtrip-open311.json"
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    got, errors = parse(OPEN311, path, context(scratch, "1022"))
    assert errors == []
    assert [
        (f["source_id"], f["category"], f["description"], f["unit"], f["citizen"]["name"]) for _, f in got if f["kind"] == "feedback"
    ] == [(s, c, expected_text(d), u, expected_text(f"Trần {d[:5].strip()}")) for s, c, d, u, _, _ in requests]
    status_of = {"submitted": "received", "in progress": "in_progress"}
    expected_events = []
    for source_id, _, _, _, kinds, status in requests:
        expected_events += [(source_id, status_of.get(kind, kind)) for kind in kinds]
        if status == "closed" and "closed" not in kinds:
            expected_events.append((source_id, "closed"))
    assert [(f["feedback"], f["status"]) for _, f in got if f["kind"] == "feedback_event"] == expected_events


@FAST
@given(
    title=words,
    period=written_periods(),
    names=st.lists(
        st.text(alphabet=LETTERS + "-_ 0123456789", min_size=1, max_size=20).filter(lambda s: s.strip() == s and s not in (".", "..")),
        unique=True,
        max_size=4,
    ),
)
def test_report_manifest_round_trip(title: str, period: tuple[str, str], names: list[str]) -> None:
    assume(len({unicodedata.normalize("NFC", n) for n in names}) == len(names))
    with tempfile.TemporaryDirectory() as folder:
        inbox = Path(folder)
        for i, name in enumerate(names):
            (inbox / f"{name}.pdf").write_bytes(b"%PDF" + bytes([i]) * i)
        path = manifest(inbox, [f"{name}.pdf" for name in names], title=title, period=period[0])
        blobs: dict[str, bytes] = {}
        got, errors = parse(REPORT, path, context(inbox, blobs=blobs))
    assert errors == []
    [(_, report)] = got
    assert (report["title"], report["period"]) == (expected_text(title), period[1])
    attachments = [
        {
            "name": unicodedata.normalize("NFC", f"{n}.pdf"),
            "sha256": hashlib.sha256(b"%PDF" + bytes([i]) * i).hexdigest(),
            "size": str(4 + i),
        }
        for i, n in enumerate(names)
    ]
    assert report.get("attachments", []) == attachments
    assert len(blobs) == len(names)


@FAST
@given(rows=indicator_rows)
def test_jsonl_round_trip(scratch: Path, rows: list[tuple[Any, ...]]) -> None:
    path = scratch / "roundtrip.jsonl"
    lines = [
        json.dumps({"kind": "indicator", "indicator": c, "unit": u, "period": p[1], "value": str(v), "comment": m}, ensure_ascii=False)
        for c, u, p, v, m in rows
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    got, errors = parse(JSONL, path, context(scratch, "thongke"))
    assert errors == []
    assert [(f["indicator"], f["unit"], f["period"], Decimal(f["body"].value), f["body"].comment, f["agency"]) for _, f in got] == [
        (c, u, p[1], v, expected_text(m), "thongke") for c, u, p, v, m in rows
    ]
