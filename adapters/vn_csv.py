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

- A header typed in the legacy TCVN3 or VNI encodings ("M· chØ tiªu") refuses the file
  with a hint to convert it to Unicode (legacy_text.py).

The encoding detection, the separator sniffing and the header folding live in
parsing.py, shared with dhis2-csv and definitions-csv; the table's headers and the row
builder in indicator_table.py, shared with the workbook adapter (xlsx.py).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import messages
from .base import ParseContext, Row
from .indicator_table import (
    EXPECTED_HEADER,
    VIETNAMESE_VALUE_HEADERS,
    build_row,
    has_required,
    header_columns,
    looks_like_header,
    missing_columns,
    value_parser,
)
from .legacy_text import legacy_encoding
from .parsing import CONTROL, decode_head, fold_header, legacy_refusal, not_text, open_text, sniff_delimiter

MAX_PREAMBLE = 20
_FORMAT = "CSV"


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
                if looks_like_header(header_columns(cells)) or legacy_encoding(line.encode("cp1258", "replace")):
                    return True  # a header typed in TCVN3/VNI too: claimed so the receipt says to convert it
            return False
        except Exception:  # claims never raises
            return False

    def parse(self, path: Path, context: ParseContext) -> Iterator[Row]:
        with open_text(path) as stream:
            yield from self._parse(path, stream, context)

    def _parse(self, path: Path, stream: io.TextIOWrapper, context: ParseContext) -> Iterator[Row]:
        header_line, header, delimiter = _find_header(path, stream)
        columns = header_columns(header)
        missing_columns(path.name, columns)
        vietnamese = delimiter == ";" or fold_header(header[columns["value"]]) in VIETNAMESE_VALUE_HEADERS
        parse_number, example = value_parser(vietnamese)
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
    legacy = b""  # the first line that reads as a TCVN3/VNI header
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
        if looks_like_header(header_columns(cells)) or (number == 1 and has_required(cells)):
            return number, cells, delimiter
        raw = line.encode(stream.encoding, "replace")  # the bytes as the file holds them
        if not legacy and legacy_encoding(raw):
            legacy = raw
    if not seen_text:
        raise messages.refused("empty", file=path.name)
    if legacy:
        raise legacy_refusal(path.name, legacy)
    raise messages.refused("no_header", file=path.name, expected=EXPECTED_HEADER)


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

    fields = {field: cell(field) for field in ("indicator", "period", "unit", "value", "comment", "disaggregation", "agency")}
    return build_row(line, fields, names, parse_number, example, context)
