"""A fake adapter for tests of the watched-folder machinery and the contract suite.

It claims `*.fake` files whose lines are `unit;indicator;period;value`, and it can
be told to misbehave: a line `RAISE` makes `parse` raise RuntimeError (an adapter
bug the pipeline must isolate), a line `SLOW` sleeps a little.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from lienthong.sync import records
from lienthong.sync.errors import InputError

from .base import FileRefused, ParseContext, Row, RowError


class FakeAdapter:
    name = "fake"
    version = "1.0"
    description = "Test adapter: unit;indicator;period;value lines"
    kinds = frozenset({"indicator"})

    def claims(self, path: Path, head: bytes) -> bool:
        return path.suffix == ".fake"

    def parse(self, path: Path, context: ParseContext) -> Iterator[Row]:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise FileRefused("encoding", "Tệp không phải văn bản UTF-8.", "The file is not UTF-8 text.") from None
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            if line == "RAISE":
                raise RuntimeError("the fake adapter was told to fail")
            if line == "SLOW":
                time.sleep(0.05)
                continue
            parts = line.split(";")
            if len(parts) != 4:
                yield Row(number, error=RowError(number, "", "bad_row", "Dòng cần 4 cột.", "The line needs 4 columns."))
                continue
            unit, indicator, period, value = parts
            fields = {"unit": unit, "indicator": indicator, "period": period, "value": value, "agency": context.agency}
            try:
                yield Row(number, record=records.indicator_value(context.origin, fields))
            except InputError as exc:
                yield Row(number, error=RowError(number, exc.field, exc.code, exc.message, exc.message))
