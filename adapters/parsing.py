"""Helpers the format adapters share for reading agency files: text encodings, CSV
headers and separators, a streaming JSON reader.

What belongs here: a reading helper that two or more format modules (jsonl, vn_csv, xlsx,
dhis2, open311, report_manifest, definitions_csv) use. Format modules never import one
another; whatever they share lives here (values: numbers.py and periods.py; sentences:
messages.py). A helper only one format uses stays in that format's module. Everything
here streams (flat memory for any file size) and refuses an unreadable file with a
`FileRefused` from the message catalogue, never with another exception.
"""

from __future__ import annotations

import codecs
import io
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

from . import messages
from .base import FileRefused
from .legacy_text import legacy_encoding
from .legacy_text import sample as legacy_sample
from .periods import fold

_CHUNK = 1 << 20
CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # bytes that no agency text file contains


# ---------------------------------------------------------------- text files (CSV and the like)


def detect_encoding(path: Path, *, fmt: str = "CSV") -> str:
    """'utf-8-sig' or 'cp1258' for the whole file, in one streaming pass; FileRefused if neither or empty."""
    utf8 = codecs.getincrementaldecoder("utf-8")()
    utf8_ok = cp1258_ok = True
    seen_text = False
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                if CONTROL.search(chunk):
                    raise not_text(path, fmt, "có ký tự điều khiển", "it contains control characters")
                if not seen_text and chunk.strip(b" \t\r\n\xef\xbb\xbf"):
                    seen_text = True
                if utf8_ok:
                    try:
                        utf8.decode(chunk)
                    except UnicodeDecodeError:
                        utf8_ok = False
                if cp1258_ok and not utf8_ok:
                    try:
                        chunk.decode("cp1258")
                    except UnicodeDecodeError:
                        cp1258_ok = False
                if not (utf8_ok or cp1258_ok):
                    raise not_text(path, fmt, "không phải mã UTF-8 hay Windows-1258", "neither UTF-8 nor Windows-1258")
            if utf8_ok:
                try:
                    utf8.decode(b"", final=True)
                except UnicodeDecodeError:
                    utf8_ok = False
    except OSError as exc:
        raise messages.refused("unreadable", file=path.name, detail=exc.strerror or type(exc).__name__) from None
    if not seen_text:
        raise messages.refused("empty", file=path.name)
    if utf8_ok:
        return "utf-8-sig"
    if not cp1258_ok:
        raise not_text(path, fmt, "không phải mã UTF-8 hay Windows-1258", "neither UTF-8 nor Windows-1258")
    # UTF-8 failed before the cp1258 check started: verify the whole file as cp1258.
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                chunk.decode("cp1258")
    except UnicodeDecodeError:
        raise not_text(path, fmt, "không phải mã UTF-8 hay Windows-1258", "neither UTF-8 nor Windows-1258") from None
    except OSError as exc:
        raise messages.refused("unreadable", file=path.name, detail=exc.strerror or type(exc).__name__) from None
    return "cp1258"


def not_text(path: Path, fmt: str, vi: str, en: str) -> FileRefused:
    return messages.refused("not_text", file=path.name, format=fmt, detail_vi=vi, detail_en=en)


def legacy_refusal(file: str, raw: bytes) -> FileRefused:
    """The file's text is in the TCVN3 or VNI legacy encoding (legacy_text.py): refused, saying how to convert it."""
    encoding = legacy_encoding(raw) or "TCVN3/VNI"
    error = messages.refused("legacy_encoding", file=file, encoding=encoding, sample=legacy_sample(raw))
    error.hint = f"convert the file from {encoding} to Unicode (Unikey: Công cụ chuyển mã, or Excel with the font changed to a Unicode one), then drop it in again"
    return error


def open_text(path: Path, *, fmt: str = "CSV") -> io.TextIOWrapper:
    """The file as a text stream for the csv module, its encoding detected."""
    encoding = detect_encoding(path, fmt=fmt)
    try:
        return path.open(encoding=encoding, newline="", errors="strict")
    except OSError as exc:
        raise messages.refused("unreadable", file=path.name, detail=exc.strerror or type(exc).__name__) from None


def decode_head(head: bytes) -> str:
    """Best-effort text of a file's first bytes (for `claims`): UTF-8, else Windows-1258."""
    try:
        return codecs.getincrementaldecoder("utf-8-sig")().decode(head)
    except UnicodeDecodeError:
        return head.decode("cp1258", errors="replace")


def sniff_delimiter(line: str) -> str:
    """';', ',' or a tab: whichever occurs most outside quotes in `line` (',' on a tie)."""
    outside = re.sub(r'"[^"]*"', "", line)
    counts = {d: outside.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: (counts[d], d == ","))
    return best if counts[best] else ","


def fold_header(cell: str) -> str:
    """'Giá trị (triệu đồng)*' -> 'gia tri': accents, case, '_'/'-', a trailing note in brackets and '*' or ':' go."""
    folded = fold(cell.replace("_", " ").replace("-", " "))
    return re.sub(r"\s*\([^)]*\)\s*$", "", folded).strip(" *:.")


# ---------------------------------------------------------------- streaming JSON

_WS = re.compile(r"[ \t\r\n]*")
_JSON_CHUNK = 1 << 16
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

    def fill(self, want: int = _JSON_CHUNK) -> bool:
        """Read more text; False at end of file."""
        if self.eof:
            return False
        if self.pos > _JSON_CHUNK and self.pos > len(self.buf) // 2:
            self.line_at(self.pos)
            self.buf = self.buf[self.pos :]
            self.mark_pos -= self.pos
            self.pos = 0
        try:
            data = self.f.read(max(want, _JSON_CHUNK))
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


def json_text(value: Any) -> Any:
    """Identifiers and values may arrive as JSON numbers; codes are text."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | Decimal):
        return str(value)
    return value
