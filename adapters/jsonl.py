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
