"""Canonical JSON Lines: one record per line, the format `lienthong ingest` takes.

Each line is an object with `kind` (indicator, report, feedback, feedback_event,
definition) and that kind's fields (docs/records.md). Text is NFC-normalised and
numbers keep their decimal digits (parsed as Decimal, never float).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from lienthong.sync import records
from lienthong.sync.errors import InputError
from lienthong.sync.records import Keyed

from . import messages
from .base import ParseContext, Row

MAX_LINE = 1_000_000


@dataclass(frozen=True)
class LineError:
    """One refused line: where, which field, a code and a sentence."""

    line: int
    field: str
    code: str
    message: str


def parse(path: Path, origin: str) -> Iterator[tuple[int, Keyed | LineError]]:
    """Yield (line number, record or error) for every non-blank line of `path`."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            yield number, _line(number, raw, origin)


def _line(number: int, raw: bytes, origin: str) -> Keyed | LineError:
    if len(raw) > MAX_LINE:
        return LineError(number, "", "too_long", f"the line is longer than {MAX_LINE} bytes")
    try:
        text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError:
        return LineError(number, "", "encoding", "the line is not UTF-8 text")
    try:
        fields = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        return LineError(number, "", "bad_json", f"not valid JSON: {exc.msg} at column {exc.colno}")
    if not isinstance(fields, dict):
        return LineError(number, "", "bad_json", "each line must be a JSON object")
    try:
        return records.build(origin, fields)
    except InputError as exc:
        return LineError(number, exc.field, exc.code, f"{exc.message}; {exc.hint}" if exc.hint else exc.message)


class JsonLinesAdapter:
    """Canonical JSON Lines (`*.jsonl`, `*.ndjson`) as an adapter: one record per line.

    Lines are read one at a time (flat memory). Each line names its `kind`; a line
    without an `agency` gets the inbox's. A refused line is a row error (its JSON,
    its fields or its encoding); a file whose first non-blank line is not UTF-8 text,
    or that has no non-blank line at all, is refused as a whole.
    """

    name = "jsonl"
    version = "1.0"
    description = "Bản ghi chuẩn, mỗi dòng một đối tượng JSON (*.jsonl, *.ndjson) / canonical JSON Lines"
    kinds = frozenset(records.BUILDERS)

    def claims(self, path: Path, head: bytes) -> bool:
        try:
            return path.suffix.lower() in (".jsonl", ".ndjson")
        except Exception:
            return False

    def parse(self, path: Path, context: ParseContext) -> Iterator[Row]:
        try:
            f = path.open("rb")
        except OSError as exc:
            raise messages.refused("unreadable", file=path.name, detail=exc.strerror or type(exc).__name__) from None
        with f:
            seen = False
            for number, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                if not seen:
                    seen = True
                    try:
                        raw.decode("utf-8-sig")
                    except UnicodeDecodeError:
                        raise messages.refused(
                            "not_text", file=path.name, format="JSON Lines", detail_vi="không phải mã UTF-8", detail_en="not UTF-8"
                        ) from None
                    if b"\x00" in raw:
                        raise messages.refused(
                            "not_text", file=path.name, format="JSON Lines", detail_vi="có ký tự NUL", detail_en="it contains NUL"
                        )
                yield _adapter_row(number, raw, context)
            if not seen:
                raise messages.refused("empty", file=path.name)


def _adapter_row(number: int, raw: bytes, context: ParseContext) -> Row:
    if len(raw) > MAX_LINE:
        return Row(number, error=messages.row_error(number, "", "too_long", message_id="line_too_long", limit=MAX_LINE))
    try:
        text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError:
        return Row(number, error=messages.row_error(number, "", "encoding", message_id="line_encoding"))
    try:
        fields = json.loads(text, parse_float=Decimal)
    except (json.JSONDecodeError, RecursionError) as exc:
        detail = f"{exc.msg}, column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        return Row(number, error=messages.row_error(number, "", "bad_json", message_id="line_bad_json", detail=detail))
    except ValueError as exc:  # an integer too long to convert
        return Row(number, error=messages.row_error(number, "", "bad_json", message_id="line_bad_json", detail=str(exc)))
    if not isinstance(fields, dict):
        return Row(number, error=messages.row_error(number, "", "bad_json", message_id="not_object"))
    if fields.get("kind") == "definition":
        fields = json.loads(text)  # a definition's fields are stored as JSON text: keep floats JSON can write
    if not fields.get("agency"):
        fields["agency"] = context.agency
    try:
        return Row(number, record=records.build(context.origin, fields))
    except InputError as exc:
        return Row(number, error=messages.from_input_error(number, exc, fields))
    except (TypeError, ValueError, OverflowError) as exc:  # e.g. a report attachment size that is not a number
        return Row(number, error=messages.row_error(number, "", "invalid", value=str(exc)))
