"""Satisfaction survey results from a CSV file (docs/adapters.md, "Satisfaction surveys").

One row per unit, period, service category and rating: how many respondents gave that
rating. The header names the columns (any order; Vietnamese with or without accents, or
English; `;` or `,` between cells; UTF-8, a byte-order mark allowed):

    don_vi (unit)   ky (period)   linh_vuc (category, optional)   muc_do (rating 1-5)   so_phieu (count)

Each row becomes an indicator value of `satisfaction.SURVEY_INDICATOR` for that unit and
period, disaggregated by `CATEGORY|RATING`, its value the count; it replicates and is
sealed like any indicator value. Read whole, all or nothing: `read` returns the records
(with their lines) and the rows it refused (line, column, why); the caller stores nothing when any row is
refused.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from lienthong.sync import records
from lienthong.sync.catalogue import fold
from lienthong.sync.errors import LienthongError
from lienthong.sync.satisfaction import RATINGS, SURVEY_INDICATOR, canonical_period, survey_disaggregation

COLUMNS: dict[str, frozenset[str]] = {
    "unit": frozenset({"don vi", "ma don vi", "unit"}),
    "period": frozenset({"ky", "ky bao cao", "period"}),
    "category": frozenset({"linh vuc", "ma linh vuc", "category"}),
    "rating": frozenset({"muc do", "muc hai long", "muc danh gia", "rating"}),
    "count": frozenset({"so phieu", "so nguoi", "count", "responses"}),
}
CANONICAL = {"unit": "don_vi", "period": "ky", "category": "linh_vuc", "rating": "muc_do", "count": "so_phieu"}
REQUIRED = ("unit", "period", "rating", "count")
THOUSANDS = re.compile(r"\d{1,3}(\.\d{3})+")
MAX_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Refused:
    line: int
    column: str
    reason: str


def read(path: Path, origin: str, agency: str = "") -> tuple[list[tuple[int, records.Keyed]], list[Refused]]:
    """The survey's records with their line numbers, and the rows refused. Raises LienthongError when the file itself cannot be read."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise LienthongError(f"cannot read {path}: {exc.strerror or exc}", "check the path and that you may read it") from exc
    if len(raw) > MAX_BYTES:
        raise LienthongError(f"{path} is larger than {MAX_BYTES // 1024 // 1024} MB", "split the survey into several files")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LienthongError(f"{path} is not UTF-8 text", "save the file as CSV UTF-8 (Excel: CSV UTF-8 (Comma delimited))") from exc
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    delimiter = ";" if first.count(";") > first.count(",") else ","
    rows = csv.reader(io.StringIO(text), delimiter=delimiter)
    header: dict[str, int] = {}
    out: list[tuple[int, records.Keyed]] = []
    refused: list[Refused] = []
    for cells in rows:
        number = rows.line_num  # the file's line (a quoted cell may span lines)
        if not any(c.strip() for c in cells):
            continue
        if not header:
            header = _header(cells, path)
            continue
        row = {name: cells[i].strip() if i < len(cells) else "" for name, i in header.items()}
        try:
            out.append((number, _record(row, origin, agency)))
        except _RowError as exc:
            refused.append(Refused(number, CANONICAL.get(exc.column, exc.column), exc.reason))
        except LienthongError as exc:  # a builder's own check (a unit code too long, …)
            refused.append(Refused(number, getattr(exc, "field", "") or "", exc.message))
    if not header:
        raise LienthongError(f"{path} is empty", "export the survey results with their header row")
    return out, refused


def _header(cells: list[str], path: Path) -> dict[str, int]:
    header: dict[str, int] = {}
    for i, cell in enumerate(cells):
        name = next((field for field, spellings in COLUMNS.items() if fold(cell.strip("\ufeff")) in spellings), None)
        if name is not None:
            header.setdefault(name, i)
    lacking = [f"{CANONICAL[name]} ({name})" for name in REQUIRED if name not in header]
    if lacking:
        raise LienthongError(
            f"{path} lacks the column(s) {', '.join(lacking)} in its header",
            "the header must name don_vi, ky, muc_do and so_phieu (and linh_vuc for categories): see docs/adapters.md",
        )
    return header


class _RowError(Exception):
    def __init__(self, column: str, reason: str) -> None:
        super().__init__(reason)
        self.column, self.reason = column, reason


def _record(row: dict[str, str], origin: str, agency: str) -> records.Keyed:
    for name in REQUIRED:
        if not row.get(name):
            raise _RowError(name, f"{name} is empty")
    try:
        period = canonical_period(row["period"])
    except LienthongError as exc:
        raise _RowError("period", exc.message) from exc
    rating = row["rating"]
    if not rating.isdigit() or int(rating) not in RATINGS:
        raise _RowError("rating", f"the rating must be 1 to 5 (got {rating!r})")
    count = row["count"].replace(" ", "")
    if THOUSANDS.fullmatch(count):  # 1.200: a Vietnamese thousands separator
        count = count.replace(".", "")
    if not count.isdigit():
        raise _RowError("count", f"the count must be a whole number of respondents (got {row['count']!r})")
    category = records.nfc(row.get("category", ""))
    if "|" in category:
        raise _RowError("category", f"a category code cannot hold '|' (got {category!r})")
    return records.indicator_value(
        origin,
        {
            "indicator": SURVEY_INDICATOR,
            "unit": row["unit"],
            "period": period,
            "disaggregation": survey_disaggregation(category, int(rating)),
            "value": int(count),
            "agency": agency,
            "comment": "satisfaction survey: respondents giving this rating",
        },
    )
