"""An indicator table, whatever file holds it: the column headers agencies write, finding the
header row, and turning one row's cells into an indicator value record or a refused row.

The Vietnamese CSV adapter (vn_csv.py) and the workbook adapter (xlsx.py) read the same
table — `Mã chỉ tiêu | Tên chỉ tiêu | Đơn vị tính | Kỳ báo cáo | Mã đơn vị | Tên đơn vị |
Giá trị | Ghi chú`, below title rows — from different containers; what they share is here,
so a row gives the same record and the same receipt sentence from either.

- Headers are matched after NFC, case-folding, whitespace collapsing and removing
  accents: `Mã chỉ tiêu`, `Ma chi tieu` and `MÃ CHỈ TIÊU` are one column. English
  `indicator, period, unit, value` work too (there `unit` is the unit code).
- A row is a header when it names at least three known columns, two of them required.
- The indicator and unit names and the unit of measure (`Đơn vị tính`) are read but not
  stored: an indicator value record carries codes only; the definitions hold names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lienthong.sync import records
from lienthong.sync.errors import InputError

from . import messages, numbers, periods
from .base import ParseContext, Row
from .parsing import fold_header

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

ValueParser = Callable[[str], str]


def header_columns(cells: list[str]) -> dict[str, int]:
    """Canonical field -> column index for the known headers among `cells` (first wins)."""
    found: dict[str, int] = {}
    for index, cell in enumerate(cells):
        name = _BY_SPELLING.get(fold_header(cell))
        if name and name not in found:
            found[name] = index
    return found


def known_header(cell: str) -> bool:
    return fold_header(cell) in _BY_SPELLING


def looks_like_header(columns: dict[str, int]) -> bool:
    known = set(columns) & set(REQUIRED)
    return len(columns) >= 3 and len(known) >= 2


def has_required(cells: list[str]) -> bool:
    return bool(set(header_columns(cells)) & set(REQUIRED))


def missing_columns(file: str, columns: dict[str, int]) -> None:
    """Raise FileRefused `missing_column` naming the required columns the header lacks."""
    missing = [field for field in REQUIRED if field not in columns]
    if missing:
        raise messages.refused(
            "missing_column",
            file=file,
            columns_vi=", ".join(f"«{REQUIRED_VI[f]}»" for f in missing),
            columns_en=", ".join(f"«{f}»" for f in missing),
        )


def value_parser(vietnamese: bool) -> tuple[ValueParser, str]:
    """The number parser for the table's locale and the example its sentences give."""
    return (numbers.parse_vietnamese, "12.450,75") if vietnamese else (numbers.parse_plain, "12450.75")


def build_row(
    line: int,
    fields: dict[str, Any],
    names: dict[str, str],
    parse_number: ValueParser,
    example: str,
    context: ParseContext,
) -> Row:
    """One table row -> Row: `fields` are the row's stripped texts by canonical field
    (indicator, period, unit, value, comment, disaggregation, agency)."""
    fields["agency"] = fields.get("agency") or context.agency
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
