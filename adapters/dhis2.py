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

The JSON is streamed (`JsonStream`, standard library only: json's raw_decode over a
sliding text buffer), so a million-value dataValueSet is parsed in flat memory. A file
that turns out to be truncated or broken part-way raises FileRefused when the break is
reached, possibly after rows were yielded; the pipeline stores a file in one
transaction, so nothing of it is stored. If `dataValues` comes before the top-level
`period`/`orgUnit` defaults, the file is read twice (first for the defaults).
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

from lienthong.sync import records
from lienthong.sync.errors import InputError

from . import messages, numbers, periods
from .base import FileRefused, ParseContext, Row
from .vn_csv import decode_head, fold_header, open_text

DEFAULT_COMBOS = frozenset({"", "default", "hllvx50cxc0"})  # DHIS2's default category option combo

# ---------------------------------------------------------------- streaming JSON (shared)

_WS = re.compile(r"[ \t\r\n]*")
_CHUNK = 1 << 16
_TAIL = 16  # an error this close to the end of the buffer may just be missing data
# What may be left at the end of a file cut inside a token: nothing, or the start of one.
_PARTIAL_TOKEN = re.compile(r"\s*(t(r(ue?)?)?|f(a(l(se?)?)?)?|n(u(ll?)?)?|-)?\s*")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_no_constants)


class JsonStream:
    """Reads one JSON document incrementally and yields its parts as events:

    - ("element", value, line) for each element of a top-level array;
    - ("item", value, line) for each element of the array under `stream_key` in a
      top-level object;
    - ("member", (key, value), line) for every other member of a top-level object;
    - ("root", value, line) when the document is neither an array nor an object.

    Only one element is held in memory at a time. Raises FileRefused (`empty`,
    `not_text`, `truncated`, `bad_json`) when the document is not readable JSON.
    """

    def __init__(self, path: Path, *, stream_key: str | None = None, fmt: str = "JSON") -> None:
        self.path = path
        self.stream_key = stream_key
        self.fmt = fmt

    def events(self) -> Iterator[tuple[str, Any, int]]:
        try:
            f = self.path.open("rb")
        except OSError as exc:
            raise messages.refused("unreadable", file=self.path.name, detail=exc.strerror or type(exc).__name__) from None
        with f:
            yield from _Scanner(f, self).document()


class _Scanner:
    def __init__(self, f: BinaryIO, stream: JsonStream) -> None:
        self.f = f
        self.name = stream.path.name
        self.stream_key = stream.stream_key
        self.fmt = stream.fmt
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.mark_pos = 0  # line bookkeeping: buf[mark_pos] is on line mark_line
        self.mark_line = 1

    # -- buffer

    def fill(self, want: int = _CHUNK) -> bool:
        """Read more text; False at end of file."""
        if self.eof:
            return False
        if self.pos > _CHUNK and self.pos > len(self.buf) // 2:
            self.line_at(self.pos)
            self.buf = self.buf[self.pos :]
            self.mark_pos -= self.pos
            self.pos = 0
        try:
            data = self.f.read(max(want, _CHUNK))
        except OSError as exc:
            raise messages.refused("unreadable", file=self.name, detail=exc.strerror or type(exc).__name__) from None
        try:
            text = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError:
            if not data:  # the file ends inside a multi-byte character
                raise self.truncated(len(self.buf)) from None
            raise messages.refused(
                "not_text", file=self.name, format=self.fmt, detail_vi="không phải mã UTF-8", detail_en="not UTF-8"
            ) from None
        if "\x00" in text:
            raise messages.refused("not_text", file=self.name, format=self.fmt, detail_vi="có ký tự NUL", detail_en="it contains NUL")
        if not data:
            self.eof = True
        self.buf += text
        return bool(data) or bool(text)

    def line_at(self, pos: int) -> int:
        if pos > self.mark_pos:
            self.mark_line += self.buf.count("\n", self.mark_pos, pos)
            self.mark_pos = pos
        return self.mark_line

    def peek(self) -> str:
        """The next non-blank character ('' at end of file), leaving pos on it."""
        while True:
            match = _WS.match(self.buf, self.pos)
            self.pos = match.end() if match else self.pos
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.fill():
                return ""

    def value(self) -> Any:
        """Decode the value at pos, reading more text as needed."""
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                unterminated = exc.msg.startswith("Unterminated string")
                if not self.eof and (unterminated or exc.pos >= len(self.buf) - _TAIL):
                    self.fill(2 * (len(self.buf) - self.pos))
                    continue
                if unterminated or _PARTIAL_TOKEN.fullmatch(self.buf, exc.pos):
                    raise self.truncated(exc.pos) from None
                raise self.bad(exc.pos, exc.msg) from None
            except RecursionError:
                raise self.bad(self.pos, "nested too deeply", "lồng nhau quá sâu") from None
            except ValueError as exc:  # NaN/Infinity, or an integer too long to convert
                raise self.bad(self.pos, str(exc), "có số không hợp lệ (NaN, Infinity hoặc quá dài)") from None
            if end >= len(self.buf) and not self.eof:
                self.fill(2 * (len(self.buf) - self.pos))
                continue  # a number may go on in the next chunk
            self.pos = end
            return value

    # -- errors

    def truncated(self, pos: int) -> FileRefused:
        return messages.refused("truncated", file=self.name, line=self.line_at(min(pos, len(self.buf))))

    def bad(self, pos: int, detail_en: str, detail_vi: str = "") -> FileRefused:
        pos = min(pos, len(self.buf))
        line = self.line_at(pos)
        column = pos - (self.buf.rfind("\n", 0, pos) + 1) + 1
        zero = re.match(r"\d+", self.buf[pos : pos + 32])
        if zero and pos > 0 and self.buf[pos - 1] == "0" and not re.match(r"[\d.]", self.buf[pos - 2 : pos - 1] or " "):
            value = "0" + zero.group()
            key = re.search(r'"([^"\\]{1,64})"\s*:\s*-?$', self.buf[max(0, pos - 200) : pos - 1])
            return messages.refused(
                "bad_json",
                message_id="json_leading_zero",
                file=self.name,
                line=line,
                value=value,
                key=f"trường «{key.group(1)}» có " if key else "",
                key_en=f"in «{key.group(1)}», " if key else "",
            )
        vi = detail_vi or _JSON_MESSAGES_VI.get(detail_en.split(":")[0], "cấu trúc JSON không đúng")
        return messages.refused("bad_json", file=self.name, line=line, column=column, detail_vi=vi, detail_en=detail_en)

    def expect(self, found: str, wanted: str) -> FileRefused:
        if not found:
            return self.truncated(len(self.buf))
        return self.bad(self.pos, f"expected {wanted}, found {found!r}", f"cần {wanted} nhưng gặp «{found}»")

    # -- grammar of the top level

    def document(self) -> Iterator[tuple[str, Any, int]]:
        first = self.peek()
        if not first:
            raise messages.refused("empty", file=self.name)
        if first == "[":
            self.pos += 1
            yield from self.array("element")
        elif first == "{":
            self.pos += 1
            yield from self.object()
        else:
            line = self.line_at(self.pos)
            yield "root", self.value(), line
        extra = self.peek()
        if extra:
            raise self.bad(self.pos, "extra data after the end of the document", "còn dữ liệu thừa sau khi tài liệu JSON đã kết thúc")

    def array(self, event: str) -> Iterator[tuple[str, Any, int]]:
        if self.peek() == "]":
            self.pos += 1
            return
        while True:
            if self.peek() == "":
                raise self.truncated(len(self.buf))
            line = self.line_at(self.pos)
            yield event, self.value(), line
            c = self.peek()
            if c == ",":
                self.pos += 1
                if self.peek() == "]":
                    raise self.bad(self.pos, "trailing comma before ']'", "có dấu phẩy thừa trước «]»")
            elif c == "]":
                self.pos += 1
                return
            else:
                raise self.expect(c, "',' or ']'")

    def object(self) -> Iterator[tuple[str, Any, int]]:
        c = self.peek()
        if c == "}":
            self.pos += 1
            return
        while True:
            if c != '"':
                raise self.expect(c, "a member name in double quotes")
            key = self.value()
            c = self.peek()
            if c != ":":
                raise self.expect(c, "':'")
            self.pos += 1
            c = self.peek()
            if key == self.stream_key and c == "[":
                self.pos += 1
                yield from self.array("item")
            else:
                if not c:
                    raise self.truncated(len(self.buf))
                line = self.line_at(self.pos)
                yield "member", (key, self.value()), line
            c = self.peek()
            if c == ",":
                self.pos += 1
                c = self.peek()
            elif c == "}":
                self.pos += 1
                return
            else:
                raise self.expect(c, "',' or '}'")


_JSON_MESSAGES_VI = {
    "Expecting value": "thiếu giá trị hoặc giá trị viết sai",
    "Expecting ',' delimiter": "thiếu dấu phẩy giữa hai phần tử",
    "Expecting ':' delimiter": "thiếu dấu hai chấm sau tên trường",
    "Expecting property name enclosed in double quotes": "tên trường phải đặt trong dấu ngoặc kép (hoặc có dấu phẩy thừa)",
    "Invalid control character at": "có ký tự điều khiển trong chuỗi",
    "Invalid \\escape": "có ký tự thoát «\\» không hợp lệ",
    "Invalid \\uXXXX escape": "có mã «\\u» không hợp lệ",
}


# ---------------------------------------------------------------- shared mapping


def json_text(value: Any) -> Any:
    """Identifiers and values may arrive as JSON numbers; codes are text (shared with open311)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | Decimal):
        return str(value)
    return value


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
