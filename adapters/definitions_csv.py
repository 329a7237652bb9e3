"""The province's definition lists as CSV (`definitions-csv`): units, indicators, report schedules, indicator sets.

The provincial IOC keeps its catalogues as spreadsheets; each export becomes `definition`
records that flow down to every node. The file's header says which list it is:

| list | columns (required in bold) | definition |
|---|---|---|
| units | **code**, **name**, **level**, parent, valid_from, valid_to, successor | `unit` code |
| indicators | **code**, **name**, **period_type**, **aggregation** (empty with a numerator: derived), unit (the measurement unit; or `measure`), weight, numerator, denominator, factor, decimals | `indicator` code |
| report schedule | **code**, **name**, **period_type**, **level**, **due** | `report_schedule` code@level |
| indicator sets | **code**, **name**, **period_type**, **level**, **due**, **indicators** (codes separated by `,`, `;` or spaces) | `indicator_set` code@level |

Header names match regardless of case and accents, and a few Vietnamese spellings work
(`Mã`, `Tên`, `Cấp`, `Đơn vị cha`, `Đơn vị tính`, `Loại kỳ`, `Cách tổng hợp`, `Hạn nộp`, `Chỉ số`).
Encoding and separator as in `vn-csv` (UTF-8 with or without BOM, or Windows-1258; `,`,
`;` or tab). Dates are ISO (2025-07-01) or dd/mm/yyyy. A code listed twice in one file is
refused at its second line. The adapter claims a `.csv` file only when its header is one
of these lists, so agency value files never reach it.

Only the province writes definitions: the intake refuses them on other nodes.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

from lienthong.sync import catalogue, records
from lienthong.sync.errors import InputError

from . import messages
from .base import ParseContext, Row, RowError
from .parsing import decode_head, open_text, sniff_delimiter

# Canonical column -> folded spellings (catalogue.fold: no accents, lower case, '_'/'-' as spaces).
COLUMNS: dict[str, frozenset[str]] = {
    "code": frozenset({"code", "ma", "ma so"}),
    "name": frozenset({"name", "ten"}),
    "level": frozenset({"level", "cap"}),
    "parent": frozenset({"parent", "don vi cha", "ma don vi cha", "parent code"}),
    "valid_from": frozenset({"valid from", "hieu luc tu", "tu ngay"}),
    "valid_to": frozenset({"valid to", "hieu luc den", "den ngay"}),
    "successor": frozenset({"successor", "sap nhap vao", "don vi ke thua"}),
    "measure": frozenset({"unit", "measure", "don vi tinh", "dvt"}),
    "period_type": frozenset({"period type", "loai ky", "ky bao cao"}),
    "aggregation": frozenset({"aggregation", "cach tong hop", "tong hop"}),
    "weight": frozenset({"weight", "trong so"}),
    "numerator": frozenset({"numerator", "tu so"}),
    "denominator": frozenset({"denominator", "mau so"}),
    "factor": frozenset({"factor", "he so"}),
    "decimals": frozenset({"decimals", "so chu so thap phan"}),
    "due": frozenset({"due", "han nop", "han"}),
    "indicators": frozenset({"indicators", "chi so", "cac chi so", "danh sach chi so", "ma chi so"}),
}
_BY_SPELLING = {spelling: name for name, spellings in COLUMNS.items() for spelling in spellings}
REQUIRED = {
    "unit": ("code", "name", "level"),
    "indicator": ("code", "name", "period_type"),
    "report_schedule": ("code", "name", "period_type", "level", "due"),
    "indicator_set": ("code", "name", "period_type", "level", "due", "indicators"),
}
EXPECTED = (
    "code,name,level,parent | code,name,unit,period_type,aggregation | code,name,period_type,level,due"
    " | code,name,period_type,level,due,indicators"
)
_DATE_DMY = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")


def columns_of(cells: list[str]) -> dict[str, int]:
    """Canonical column -> index, for the cells of a header line (first spelling wins)."""
    found: dict[str, int] = {}
    for index, cell in enumerate(cells):
        name = _BY_SPELLING.get(catalogue.fold(cell.strip().lstrip("\ufeff")))
        if name and name not in found:
            found[name] = index
    return found


def list_type(columns: dict[str, int]) -> str:
    """Which definition list a header describes: unit, indicator, report_schedule, or '' (none)."""
    if "code" not in columns or "name" not in columns:
        return ""
    if "due" in columns and "indicators" in columns:
        return "indicator_set"
    if "due" in columns:
        return "report_schedule"
    if "aggregation" in columns or "numerator" in columns:
        return "indicator"
    if "level" in columns and "parent" in columns:
        return "unit"
    return ""


def _row_error(line: int, field: str, vi: str, en: str, code: str = "invalid") -> Row:
    return Row(line, error=RowError(line, field, code, vi, en))


def _day(value: str, field: str) -> str:
    """An ISO date from '2025-07-01' or '01/07/2025' (InputError otherwise)."""
    match = _DATE_DMY.match(value)
    try:
        day = date(int(match[3]), int(match[2]), int(match[1])) if match else date.fromisoformat(value)
    except ValueError:
        raise InputError(f"'{field}' is not a date (got {value!r})", "write it as 2025-07-01 or 01/07/2025", field=field) from None
    return day.isoformat()


def definition_fields(kind: str, values: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """(definition code, fields) for one row of a `kind` list; InputError if a field is unusable."""
    code = records.code(values, "code")
    if kind == "indicator":
        return code, catalogue.indicator_fields(values)
    if kind == "report_schedule":
        name, due, level = records.text(values, "name"), records.text(values, "due"), records.code(values, "level")
        period_type = catalogue.period_type(values.get("period_type"))
        return f"{code}@{level}", {"report_type": code, "name": name, "period_type": period_type, "level": level, "due": due}
    if kind == "indicator_set":
        name, due, level = records.text(values, "name"), records.text(values, "due"), records.code(values, "level")
        period_type = catalogue.period_type(values.get("period_type"))
        indicators = [records.nfc(c.strip()) for c in re.split(r"[,;\s]+", records.text(values, "indicators")) if c.strip()]
        return f"{code}@{level}", {
            "dataset": code,
            "name": name,
            "indicators": indicators,
            "period_type": period_type,
            "level": level,
            "due": due,
        }
    fields: dict[str, Any] = {
        "name": records.text(values, "name"),
        "level": records.code(values, "level"),
        "parent": records.code(values, "parent", required=False),
    }
    for name in ("valid_from", "valid_to"):
        if values.get(name):
            fields[name] = _day(values[name], name)
    if values.get("successor"):
        if "valid_to" not in fields:
            raise InputError("a successor needs 'valid_to', the day of the merger", "add valid_to", field="valid_to", code="missing")
        fields["successor"] = records.code(values, "successor")
    if fields.get("valid_from") and fields.get("valid_to") and fields["valid_from"] >= fields["valid_to"]:
        raise InputError("'valid_to' must come after 'valid_from'", "correct the dates", field="valid_to")
    return code, fields


class DefinitionsCsvAdapter:
    """Units, indicators and report schedules from the province's CSV lists."""

    name = "definitions-csv"
    version = "1.0"
    description = "Danh mục của tỉnh (đơn vị, bộ chỉ tiêu, lịch báo cáo) từ tệp CSV / the province's definition lists as CSV"
    kinds = frozenset({"definition"})

    def claims(self, path: Path, head: bytes) -> bool:
        try:
            if path.suffix.lower() != ".csv" or not head.strip():
                return False
            first = decode_head(head).splitlines()[0]
            return bool(list_type(columns_of(next(csv.reader([first], delimiter=sniff_delimiter(first)), []))))
        except Exception:
            return False

    def parse(self, path: Path, context: ParseContext) -> Iterator[Row]:
        stream = open_text(path)
        with stream:
            reader = csv.reader(stream, delimiter=",")
            kind, columns, before = "", {}, 1
            seen: dict[str, int] = {}
            try:
                header_line = stream.readline()
                while header_line and not header_line.strip():
                    header_line, before = stream.readline(), before + 1
                if not header_line.strip():
                    raise messages.refused("empty", file=path.name)
                delimiter = sniff_delimiter(header_line)
                reader = csv.reader(stream, delimiter=delimiter)
                columns = columns_of(next(csv.reader([header_line], delimiter=delimiter), []))
                kind = list_type(columns)
                if not kind:
                    raise messages.refused("no_header", file=path.name, expected=EXPECTED)
                lacking = [c for c in REQUIRED[kind] if c not in columns]
                if lacking:
                    raise messages.refused("missing_column", file=path.name, columns_vi=", ".join(lacking), columns_en=", ".join(lacking))
                for cells in reader:
                    line = reader.line_num + before  # physical line in the file (the header is line `before`)
                    if not any(cell.strip() for cell in cells):
                        continue
                    yield self._row(line, kind, columns, cells, seen, context)
            except csv.Error as exc:
                line = reader.line_num + before
                yield Row(line, error=messages.row_error(line, "", "bad_row", detail=str(exc)))
            except UnicodeDecodeError:
                raise messages.refused(
                    "not_text", file=path.name, format="CSV", detail_vi="lỗi mã ký tự", detail_en="bad encoding"
                ) from None

    @staticmethod
    def _row(line: int, kind: str, columns: dict[str, int], cells: list[str], seen: dict[str, int], context: ParseContext) -> Row:
        values = {name: records.nfc(cells[index].strip()) if index < len(cells) else "" for name, index in columns.items()}
        try:
            code, fields = definition_fields(kind, values)
        except InputError as exc:
            return Row(line, error=messages.from_input_error(line, exc, values))
        if code in seen:
            return _row_error(
                line,
                "code",
                f"Mã {code} đã có ở dòng {seen[code]} của tệp này; mỗi mã chỉ ghi một lần.",
                f"Code {code} is already on line {seen[code]} of this file; list each code once.",
                "duplicate",
            )
        seen[code] = line
        try:
            return Row(line, record=records.definition(context.origin, {"type": kind, "code": code, "fields": fields}))
        except InputError as exc:
            return Row(line, error=messages.from_input_error(line, exc, values))
