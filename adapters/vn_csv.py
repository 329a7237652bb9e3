"""Indicator values from Vietnamese spreadsheet CSV exports (`vn-csv`).

What agencies' Excel and legacy software actually write:

- Encoding is detected, never configured: the file is checked as strict UTF-8 (a BOM
  is allowed) in one fast streaming pass; if that fails it is read as Windows-1258,
  the legacy Vietnamese code page (whose decoded text uses combining tone marks and
  only becomes NFC when normalised). Bytes that are neither, or control characters,
  refuse the file as not text. A file mixing both encodings is read as Windows-1258.
- The separator (`;` from Excel in vi-VN, `,`, or tab) is sniffed from the header line.
  Lines before the header (a title such as "BÁO CÁO CHỈ TIÊU ...") are skipped, up to
  `MAX_PREAMBLE` lines, and so is Excel's `sep=;` line (which then names the separator). Line numbers are physical lines of the file: with no title
  lines the header is line 1 and the first value line 2.
- Headers are matched after NFC, case-folding, whitespace collapsing and removing
  accents: `Mã chỉ tiêu`, `Ma chi tieu` and `MÃ CHỈ TIÊU` are one column. English
  `indicator, period, unit, value` work too (there `unit` is the unit code).
- Numbers: a file with a Vietnamese value header (`Giá trị`) or `;` separators is in
  the Vietnamese locale (`12.450,75`); otherwise `.` is the decimal point. Ambiguous
  numbers are refused (numbers.py). Periods: periods.py (`Tháng 10/2026`, `Quý III/2026`,
  `dd/mm/yyyy`, ...).
- The indicator and unit names and the unit of measure (`Đơn vị tính`) are read but not
  stored: an indicator value record carries codes only; the definitions hold names.
- Streaming: the csv module reads a text stream row by row; memory stays flat.

The encoding detection, the separator sniffing and the header folding live in
parsing.py, shared with dhis2-csv and definitions-csv.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lienthong.sync import records
from lienthong.sync.errors import InputError

from . import messages, numbers, periods
from .base import ParseContext, Row
from .parsing import CONTROL, decode_head, fold_header, not_text, open_text, sniff_delimiter

MAX_PREAMBLE = 20
_FORMAT = "CSV"

# Canonical field -> header spellings, in folded form (periods.fold, '_' and '-' as spaces).
HEADERS: dict[str, frozenset[str]] = {
    "indicator": frozenset({"ma chi tieu", "indicator", "indicator code", "ma chi so"}),
    "indicator_name": frozenset({"ten chi tieu", "chi tieu", "indicator name"}),
    "measure": frozenset({"don vi tinh", "dvt", "measure", "unit of measure"}),
    "period": frozenset({"ky bao cao", "ky", "thoi ky", "ky so lieu", "period"}),
    "unit": frozenset({"ma don vi", "ma dvhc", "unit", "unit code"}),
    "unit_name": frozenset({"ten don vi", "unit name"}),
    "value": frozenset({"gia tri", "so lieu", "value"}),
    "comment": frozenset({"ghi chu", "comment", "note", "notes"}),
    "disaggregation": frozenset({"phan to", "ma phan to", "disaggregation"}),
    "agency": frozenset({"co quan", "ma co quan", "agency"}),
}
REQUIRED = ("indicator", "period", "unit", "value")
VIETNAMESE_VALUE_HEADERS = frozenset({"gia tri", "so lieu"})
REQUIRED_VI = {"indicator": "Mã chỉ tiêu", "period": "Kỳ báo cáo", "unit": "Mã đơn vị", "value": "Giá trị"}
EXPECTED_HEADER = "Mã chỉ tiêu;Tên chỉ tiêu;Đơn vị tính;Kỳ báo cáo;Mã đơn vị;Tên đơn vị;Giá trị;Ghi chú"
_BY_SPELLING = {spelling: name for name, spellings in HEADERS.items() for spelling in spellings}


# ---------------------------------------------------------------- headers


def header_columns(cells: list[str]) -> dict[str, int]:
    """Canonical field -> column index for the known headers among `cells` (first wins)."""
    found: dict[str, int] = {}
    for index, cell in enumerate(cells):
        name = _BY_SPELLING.get(fold_header(cell))
        if name and name not in found:
            found[name] = index
    return found


def _looks_like_header(columns: dict[str, int]) -> bool:
    known = set(columns) & set(REQUIRED)
    return len(columns) >= 3 and len(known) >= 2


def _is_dhis2_header(cells: list[str]) -> bool:
    return bool(cells) and fold_header(cells[0]).replace(" ", "") in {"dataelement", "de"}


def _split(line: str, delimiter: str) -> list[str]:
    try:
        return next(csv.reader([line], delimiter=delimiter), [])
    except csv.Error:
        return line.split(delimiter)


# ---------------------------------------------------------------- the adapter


class VietnameseCsvAdapter:
    """Indicator values from Vietnamese spreadsheet CSV exports."""

    name = "vn-csv"
    version = "1.0"
    description = "Chỉ tiêu từ tệp CSV xuất từ Excel/phần mềm (UTF-8 hoặc Windows-1258, số kiểu 1.234,5, kỳ Tháng 10/2026) / indicator values from Vietnamese spreadsheet CSV exports"
    kinds = frozenset({"indicator"})

    def claims(self, path: Path, head: bytes) -> bool:
        try:
            if path.suffix.lower() != ".csv":
                return False
            if not head.strip(b" \t\r\n\xef\xbb\xbf") or CONTROL.search(head):
                return True  # empty or not text: claimed so the receipt says so in plain words
            lines = decode_head(head).splitlines()
            complete = lines[:-1] if len(head) >= 4096 and len(lines) > 1 else lines
            for line in complete[:MAX_PREAMBLE]:
                if not line.strip():
                    continue
                cells = _split(line, sniff_delimiter(line))
                if _is_dhis2_header(cells):
                    return False
                if _looks_like_header(header_columns(cells)):
                    return True
            return False
        except Exception:  # claims never raises
            return False

    def parse(self, path: Path, context: ParseContext) -> Iterator[Row]:
        with open_text(path) as stream:
            yield from self._parse(path, stream, context)

    def _parse(self, path: Path, stream: io.TextIOWrapper, context: ParseContext) -> Iterator[Row]:
        header_line, header, delimiter = _find_header(path, stream)
        columns = header_columns(header)
        missing = [field for field in REQUIRED if field not in columns]
        if missing:
            raise messages.refused(
                "missing_column",
                file=path.name,
                columns_vi=", ".join(f"«{REQUIRED_VI[f]}»" for f in missing),
                columns_en=", ".join(f"«{f}»" for f in missing),
            )
        vietnamese = delimiter == ";" or fold_header(header[columns["value"]]) in VIETNAMESE_VALUE_HEADERS
        parse_number = numbers.parse_vietnamese if vietnamese else numbers.parse_plain
        example = "12.450,75" if vietnamese else "12450.75"
        names = {field: header[index].strip() for field, index in columns.items()}
        reader = csv.reader(stream, delimiter=delimiter)
        consumed = header_line  # physical lines read so far
        while True:
            start = consumed + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                consumed = header_line + reader.line_num
                yield Row(start, error=messages.row_error(start, "", "bad_row", detail=str(exc)))
                continue
            except UnicodeDecodeError:  # detect_encoding checked every byte; only if the file changed under us
                raise not_text(path, _FORMAT, "không đọc được", "undecodable bytes") from None
            consumed = header_line + reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            yield _row(start, cells, columns, names, parse_number, example, context)


def _find_header(path: Path, stream: io.TextIOWrapper) -> tuple[int, list[str], str]:
    """The header's physical line number, its cells and the separator; FileRefused if absent."""
    seen_text = False
    forced = ""
    for number in range(1, MAX_PREAMBLE + 1):
        try:
            line = stream.readline()
        except UnicodeDecodeError:
            raise not_text(path, _FORMAT, "không đọc được", "undecodable bytes") from None
        if not line:
            break
        if not line.strip():
            continue
        seen_text = True
        if number == 1 and line.strip().lower().startswith("sep=") and len(line.strip()) == 5:
            forced = line.strip()[4]  # Excel's "sep=;" line names the separator
            continue
        delimiter = forced or sniff_delimiter(line)
        cells = _split(line.rstrip("\r\n"), delimiter)
        if _looks_like_header(header_columns(cells)) or (number == 1 and _has_required(cells)):
            return number, cells, delimiter
    if not seen_text:
        raise messages.refused("empty", file=path.name)
    raise messages.refused("no_header", file=path.name, expected=EXPECTED_HEADER)


def _has_required(cells: list[str]) -> bool:
    return bool(set(header_columns(cells)) & set(REQUIRED))


def _row(
    line: int,
    cells: list[str],
    columns: dict[str, int],
    names: dict[str, str],
    parse_number: Any,
    example: str,
    context: ParseContext,
) -> Row:
    def cell(field: str) -> str:
        index = columns.get(field)
        return cells[index].strip() if index is not None and index < len(cells) else ""

    fields: dict[str, Any] = {
        "indicator": cell("indicator"),
        "period": cell("period"),
        "unit": cell("unit"),
        "value": cell("value"),
        "comment": cell("comment"),
        "disaggregation": cell("disaggregation"),
        "agency": cell("agency") or context.agency,
    }
    for field in REQUIRED:
        if not fields[field]:
            return Row(line, error=messages.row_error(line, field, "missing", column=names.get(field)))
    try:
        fields["period"] = periods.canonical(fields["period"])
    except periods.PeriodError as exc:
        error = messages.row_error(line, "period", "bad_period", value=exc.value, reason_vi=exc.reason_vi, reason_en=exc.reason_en)
        return Row(line, error=error)
    raw_value = fields["value"]
    try:
        fields["value"] = parse_number(raw_value)
    except numbers.NumberError as exc:
        error = messages.row_error(
            line,
            "value",
            exc.code,
            value=raw_value,
            column=names.get("value"),
            example=example,
            detail_vi=exc.detail_vi,
            detail_en=exc.detail_en,
        )
        return Row(line, error=error)
    try:
        return Row(line, record=records.indicator_value(context.origin, fields))
    except InputError as exc:
        return Row(line, error=messages.from_input_error(line, exc, dict(fields, value=raw_value), names))
