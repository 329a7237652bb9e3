"""A complete third-party lienthong adapter: tab-separated indicator values.

Each line of a `*.tsv` file is `unit<TAB>indicator<TAB>period<TAB>value`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lienthong.adapters.base import FileRefused, ParseContext, Row, RowError
from lienthong.sync import records
from lienthong.sync.errors import InputError


class TsvAdapter:
    name = "tsv"
    version = "0.1.0"
    description = "Tab-separated indicator values (example plugin)"
    kinds = frozenset({"indicator"})

    def claims(self, path: Path, head: bytes) -> bool:
        return path.suffix.lower() == ".tsv"

    def parse(self, path: Path, context: ParseContext) -> Iterator[Row]:
        try:
            handle = path.open(encoding="utf-8", newline="")
            first = handle.readline()
        except UnicodeDecodeError:
            raise FileRefused("encoding", "Tệp không phải văn bản UTF-8.", "The file is not UTF-8 text.") from None
        with handle:
            for number, line in enumerate([first, *handle], start=1):
                if not line.strip():
                    continue
                parts = line.rstrip("\r\n").split("\t")
                if len(parts) != 4:
                    yield Row(number, error=RowError(number, "", "bad_row", "Dòng cần đúng 4 cột.", "The line needs exactly 4 columns."))
                    continue
                unit, indicator, period, value = parts
                fields = {"unit": unit, "indicator": indicator, "period": period, "value": value, "agency": context.agency}
                try:
                    yield Row(number, record=records.indicator_value(context.origin, fields))
                except InputError as exc:
                    yield Row(number, error=RowError(number, exc.field, exc.code, exc.message, exc.message))
