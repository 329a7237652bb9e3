"""Health indicators from DHIS2: dataValueSets as JSON (`dhis2-json`) and as CSV (`dhis2-csv`).

Mapping (codes are taken as identifiers; no UID lookup):

    dataElement          -> indicator
    period               -> period (DHIS2 period id -> canonical, periods.py); item or top-level
    orgUnit              -> unit; item or top-level
    categoryOptionCombo  -> disaggregation ("default" and DHIS2's default combo are none)
    attributeOptionCombo -> appended to the disaggregation as "<coc>|<aoc>" when not default,
                            so values that differ only by attribute stay separate records
    value                -> value ('.' decimal point; true/false -> 1/0 as DHIS2 analytics does)
    comment              -> comment
    followup / followUp  -> follow_up
    deleted              -> a tombstone (DHIS2 exports deleted values with includeDeleted)

storedby, created, lastupdated and dataSet/completeDate are not kept.

The JSON is streamed (`parsing.JsonStream`, standard library only: json's raw_decode over a
sliding text buffer), so a million-value dataValueSet is parsed in flat memory. A file
that turns out to be truncated or broken part-way raises FileRefused when the break is
reached, possibly after rows were yielded; the pipeline stores a file in one
transaction, so nothing of it is stored. If `dataValues` comes before the top-level
`period`/`orgUnit` defaults, the file is read twice (first for the defaults).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from lienthong.sync import records
from lienthong.sync.errors import InputError

from . import messages, numbers, periods
from .base import FileRefused, ParseContext, Row
from .parsing import JsonStream, decode_head, fold_header, json_text, open_text

DEFAULT_COMBOS = frozenset({"", "default", "hllvx50cxc0"})  # DHIS2's default category option combo

# ---------------------------------------------------------------- mapping


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() in {"true", "1", "yes", "y", "x"}


def _combo(coc: str, aoc: str) -> str:
    coc = coc if coc.lower() not in DEFAULT_COMBOS else ""
    if aoc and aoc.lower() not in DEFAULT_COMBOS:
        return f"{coc}|{aoc}"
    return coc


def _value(raw: Any) -> str:
    if isinstance(raw, bool):
        return "1" if raw else "0"
    if isinstance(raw, int | Decimal):
        return str(raw)
    if not isinstance(raw, str):
        raise numbers.NumberError("bad_value", messages.shown(raw))
    if raw.strip().lower() in {"true", "false"}:
        return "1" if raw.strip().lower() == "true" else "0"
    return numbers.parse_plain(raw)


def _data_value(
    line: int, item: dict[str, Any], defaults: dict[str, Any], context: ParseContext, names: dict[str, str] | None = None
) -> Row:
    """One DHIS2 data value (keys already lower-cased) -> Row."""

    def get(key: str) -> Any:
        value = item.get(key)
        if value is None or value == "":
            value = defaults.get(key)
        return json_text(value)

    raw_value = get("value")
    fields: dict[str, Any] = {
        "indicator": get("dataelement"),
        "period": get("period"),
        "unit": get("orgunit"),
        "value": raw_value,
        "comment": get("comment"),
        "follow_up": _truthy(get("followup")),
        "agency": context.agency,
        "deleted": _truthy(get("deleted")),
    }
    coc, aoc = get("categoryoptioncombo"), get("attributeoptioncombo")
    columns = names or {}
    for field in ("indicator", "period", "unit", "value"):
        value = fields[field]
        if value is None or (isinstance(value, str) and not value.strip()):
            return Row(line, error=messages.row_error(line, field, "missing", column=columns.get(field)))
    if not isinstance(coc or "", str) or not isinstance(aoc or "", str):
        return Row(line, error=messages.row_error(line, "disaggregation", "invalid", value=coc if not isinstance(coc or "", str) else aoc))
    fields["disaggregation"] = _combo((coc or "").strip(), (aoc or "").strip())
    if isinstance(fields["period"], str):
        try:
            fields["period"] = periods.canonical(fields["period"])
        except periods.PeriodError as exc:
            error = messages.row_error(line, "period", "bad_period", value=exc.value, reason_vi=exc.reason_vi, reason_en=exc.reason_en)
            return Row(line, error=error)
    try:
        fields["value"] = _value(raw_value)
    except numbers.NumberError as exc:
        error = messages.row_error(
            line, "value", exc.code, value=raw_value, column=columns.get("value"), detail_vi=exc.detail_vi, detail_en=exc.detail_en
        )
        return Row(line, error=error)
    try:
        return Row(line, record=records.indicator_value(context.origin, fields))
    except InputError as exc:
        return Row(line, error=messages.from_input_error(line, exc, dict(fields, value=raw_value), columns))


# ---------------------------------------------------------------- dhis2-json

_JSON_KEYS = {
    "dataelement": "dataelement",
    "period": "period",
    "orgunit": "orgunit",
    "categoryoptioncombo": "categoryoptioncombo",
    "attributeoptioncombo": "attributeoptioncombo",
    "value": "value",
    "comment": "comment",
    "followup": "followup",
    "deleted": "deleted",
}


def _lower_keys(item: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in item.items():
        name = _JSON_KEYS.get(key.lower()) if isinstance(key, str) else None
        if name and name not in out:
            out[name] = value
    return out


class Dhis2JsonAdapter:
    """DHIS2 dataValueSets in JSON, streamed."""

    name = "dhis2-json"
    version = "1.0"
    description = "Chỉ tiêu y tế từ DHIS2 (dataValueSets JSON) / DHIS2 dataValueSets JSON"
    kinds = frozenset({"indicator"})

    def claims(self, path: Path, head: bytes) -> bool:
        try:
            name = path.name.lower()
            return name.endswith(".json") and not name.endswith(".report.json") and b'"dataValues"' in head
        except Exception:
            return False

    def parse(self, path: Path, context: ParseContext) -> Iterator[Row]:
        # Pass 1 yields every value it can build; a value lacking its period or orgUnit
        # while the top-level default is not yet known (the file puts dataValues first)
        # is deferred, and pass 2 yields exactly those once all defaults are known.
        defaults: dict[str, Any] = {}
        deferred = False
        values_started = False
        for event, payload, line in self._events(path):
            if event == "member":
                name, value = payload
                if name == "attributeoptioncombo" and values_started:
                    raise _shape(
                        path,
                        "'attributeOptionCombo' chung của tệp phải đứng trước 'dataValues'",
                        "the file's 'attributeOptionCombo' must come before 'dataValues'",
                    )
                defaults[name] = value
            else:
                values_started = True
                if _needs_later(payload, defaults):
                    deferred = True
                    continue
                yield _item_row(line, payload, defaults, context)
        if not deferred:
            return
        running: dict[str, Any] = {}
        for event, payload, line in self._events(path):
            if event == "member":
                running[payload[0]] = payload[1]
            elif _needs_later(payload, running):
                yield _item_row(line, payload, defaults, context)

    def _events(self, path: Path) -> Iterator[tuple[str, Any, int]]:
        """("member", (default name, value), line) for top-level defaults, ("item", value, line) per data value."""
        for event, payload, line in JsonStream(path, stream_key="dataValues", fmt="DHIS2 JSON").events():
            if event == "item":
                yield event, payload, line
            elif event == "member":
                key, value = payload
                name = _JSON_KEYS.get(key.lower()) if isinstance(key, str) else None
                if isinstance(key, str) and key.lower() == "datavalues":
                    raise _shape(path, "'dataValues' phải là một danh sách [...]", "'dataValues' must be an array")
                if name in ("period", "orgunit", "attributeoptioncombo") and not isinstance(value, dict | list):
                    yield event, (name, value), line
            else:
                raise _shape(
                    path, "tệp phải là một đối tượng JSON {...} có 'dataValues'", "the file must be a JSON object with 'dataValues'"
                )


def _needs_later(item: Any, defaults: dict[str, Any]) -> bool:
    if not isinstance(item, dict) or ("period" in defaults and "orgunit" in defaults):
        return False
    keys = {key.lower() for key in item if isinstance(key, str) and item[key] not in (None, "")}
    return any(name not in keys and name not in defaults for name in ("period", "orgunit"))


def _item_row(line: int, item: Any, defaults: dict[str, Any], context: ParseContext) -> Row:
    if not isinstance(item, dict):
        return Row(line, error=messages.row_error(line, "", "not_object", message_id="not_object"))
    return _data_value(line, _lower_keys(item), defaults, context)


def _shape(path: Path, vi: str, en: str) -> FileRefused:
    return messages.refused("wrong_shape", file=path.name, format="DHIS2", detail_vi=vi, detail_en=en)


# ---------------------------------------------------------------- dhis2-csv

POSITIONAL = (
    "dataelement",
    "period",
    "orgunit",
    "categoryoptioncombo",
    "attributeoptioncombo",
    "value",
    "storedby",
    "lastupdated",
    "comment",
    "followup",
    "deleted",
)
_CSV_ALIASES = {
    "dataelement": "dataelement",
    "de": "dataelement",
    "period": "period",
    "pe": "period",
    "orgunit": "orgunit",
    "ou": "orgunit",
    "catoptcombo": "categoryoptioncombo",
    "categoryoptioncombo": "categoryoptioncombo",
    "coc": "categoryoptioncombo",
    "attroptcombo": "attributeoptioncombo",
    "attributeoptioncombo": "attributeoptioncombo",
    "aoc": "attributeoptioncombo",
    "value": "value",
    "storedby": "storedby",
    "lastupdated": "lastupdated",
    "created": "created",
    "comment": "comment",
    "flwup": "followup",
    "followup": "followup",
    "deleted": "deleted",
}
_CANONICAL_FIELD = {"dataelement": "indicator", "period": "period", "orgunit": "unit", "value": "value"}
_DHIS2_PERIOD = re.compile(
    r"^\d{4}([01]\d([0-3]\d|B)?|Q[1-4]|S[12]|W\d{1,2}|BiW\d{1,2}|(Wed|Thu|Sat|Sun)W\d{1,2}|April|July|Oct|Nov|AprilS[12]|NovS[12])?$"
)


def _header_key(cell: str) -> str | None:
    return _CSV_ALIASES.get(fold_header(cell).replace(" ", ""))


def _is_header(cells: list[str]) -> bool:
    """A header names the data element column first; a data row whose data element happens
    to be called "DE" is told apart by the period in its second cell."""
    return _header_key(cells[0]) == "dataelement" and not (len(cells) > 1 and _DHIS2_PERIOD.match(cells[1].strip()))


class Dhis2CsvAdapter:
    """DHIS2 dataValueSets in CSV: positional columns, with or without a header line."""

    name = "dhis2-csv"
    version = "1.0"
    description = "Chỉ tiêu y tế từ DHIS2 (dataValueSets CSV) / DHIS2 dataValueSets CSV"
    kinds = frozenset({"indicator"})

    def claims(self, path: Path, head: bytes) -> bool:
        try:
            if path.suffix.lower() != ".csv":
                return False
            lines = [line for line in decode_head(head).splitlines() if line.strip()]
            if not lines:
                return False
            cells = next(csv.reader([lines[0]]), [])
            if cells and _is_header(cells):
                return True
            return 6 <= len(cells) <= 11 and bool(_DHIS2_PERIOD.match(cells[1].strip())) and bool(cells[0].strip())
        except Exception:
            return False

    def parse(self, path: Path, context: ParseContext) -> Iterator[Row]:
        with open_text(path, fmt="DHIS2 CSV") as stream:
            reader = csv.reader(stream)
            keys: list[str | None] = list(POSITIONAL)
            names = {"indicator": "dataelement", "period": "period", "unit": "orgunit", "value": "value"}
            first = True
            consumed = 0
            while True:
                start = consumed + 1
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    consumed = reader.line_num
                    yield Row(start, error=messages.row_error(start, "", "bad_row", detail=str(exc)))
                    continue
                consumed = reader.line_num
                if not any(cell.strip() for cell in cells):
                    continue
                if first:
                    first = False
                    if _is_header(cells):
                        keys = [_header_key(cell) for cell in cells]
                        names = {_CANONICAL_FIELD[k]: cell.strip() for k, cell in zip(keys, cells, strict=True) if k in _CANONICAL_FIELD}
                        missing = [key for key in ("period", "orgunit", "value") if key not in keys]
                        if missing:
                            listed = ", ".join(f"«{key}»" for key in missing)
                            raise messages.refused("missing_column", file=path.name, columns_vi=listed, columns_en=listed)
                        continue
                item: dict[str, Any] = {}
                for key, cell in zip(keys, cells, strict=False):
                    if key and key not in item:
                        item[key] = cell.strip()
                yield _data_value(start, item, {}, context, names)
