"""Reporting periods as agencies write them, turned into canonical periods.

Canonical (docs/records.md): `2026` year, `2026S1` half, `2026Q3` quarter,
`2026-10` month, `2026W05` ISO week, `2026-10-24` day.

Accepted, besides the canonical forms:

- Vietnamese: `Năm 2026`, `6 tháng đầu năm 2026` / `6 tháng cuối năm 2026`,
  `Quý III/2026` (also `Quý 3/2026`, `Quý III năm 2026`), `Tháng 10/2026` (also
  `Tháng 10 năm 2026`, `10/2026`), `Tuần 5/2026`, `24/10/2026` and `Ngày 24/10/2026`
  (dd/mm/yyyy). Accents, case and spacing do not matter (NFC or NFD, `Thang 10/2026`).
- Variants: `2026-Q3`, `2026q3`, `2026-W05`, `2026W5`, `2026-S1`, `202610`, `20261024`.
- DHIS2 period ids: `2026`, `202610`, `20261024`, `2026Q3`, `2026W5`, `2026S1`. DHIS2 period
  types without a canonical equivalent (financial years `2026July`, bi-weeks `2026BiW3`,
  bi-months `202601B`, weeks starting Wednesday..Sunday `2026WedW5`, six-months from April
  or November `2026AprilS1`) are refused with that reason.

Impossible periods (`Tháng 13/2026`, `Quý V/2026`, week 53 of a 52-week year, 31/02/2026)
are refused: `canonical()` raises `PeriodError` with a reason in both languages.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from functools import lru_cache

from lienthong.sync.errors import LienthongError

YEAR_MIN, YEAR_MAX = 1900, 2100
ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4}


class PeriodError(LienthongError, ValueError):
    """Not a period; `reason_vi`/`reason_en` say why when it is more than a typo.

    Also a ValueError, as it always was, for callers that catch that. The reasons start
    with their own separator (`: quý phải từ I đến IV`, ` (empty)`), ready to append."""

    def __init__(self, value: str, reason_vi: str = "", reason_en: str = "") -> None:
        super().__init__(f"{value!r} is not a period{reason_en}", "write it as 2026-10, 2026Q3, 2026 or Tháng 10/2026")
        self.value = value
        self.reason_vi = reason_vi
        self.reason_en = reason_en


def fold(text: str) -> str:
    """Accent-, case- and space-insensitive form: 'Quý  III/2026' -> 'quy iii/2026'."""
    decomposed = unicodedata.normalize("NFD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    stripped = stripped.replace("đ", "d").replace("Đ", "D")
    return " ".join(stripped.casefold().split())


_SEP = r"\s*(?:[/.-]|\s|nam)\s*"
_FORMS: list[tuple[str, re.Pattern[str]]] = [
    ("year", re.compile(r"^(?:nam\s*)?(?P<y>\d{4})$")),
    ("half", re.compile(r"^6 thang (?P<h>dau|cuoi)(?: nam)?\s*(?P<y>\d{4})$")),
    ("half", re.compile(r"^(?P<y>\d{4})\s*-?\s*[sh](?P<h>\d)$")),
    ("quarter", re.compile(r"^quy\s*(?P<q>[ivx]+|\d{1,2})" + _SEP + r"(?P<y>\d{4})$")),
    ("quarter", re.compile(r"^(?P<y>\d{4})\s*-?\s*q(?P<q>\d{1,2})$")),
    ("month", re.compile(r"^(?:thang\s*)?(?P<m>\d{1,2})" + _SEP + r"(?P<y>\d{4})$")),
    ("month", re.compile(r"^(?P<y>\d{4})-?(?P<m>\d{2})$")),
    ("week", re.compile(r"^tuan\s*(?P<w>\d{1,2})" + _SEP + r"(?P<y>\d{4})$")),
    ("week", re.compile(r"^(?P<y>\d{4})\s*-?\s*w(?P<w>\d{1,2})$")),
    ("day", re.compile(r"^(?:ngay\s*)?(?P<d>\d{1,2})[/.-](?P<m>\d{1,2})[/.-](?P<y>\d{4})$")),
    ("day", re.compile(r"^(?P<y>\d{4})-?(?P<m>\d{2})-?(?P<d>\d{2})$")),
]
# DHIS2 period types with no canonical equivalent, named for the refusal.
_DHIS2_OTHER: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(r"^\d{4}(april|july|oct|nov)$"), "năm tài chính của DHIS2", "a DHIS2 financial year"),
    (re.compile(r"^\d{4}biw\d{1,2}$"), "kỳ hai tuần của DHIS2", "a DHIS2 bi-week"),
    (re.compile(r"^\d{6}b$"), "kỳ hai tháng của DHIS2", "a DHIS2 bi-month"),
    (re.compile(r"^\d{4}(wed|thu|sat|sun)w\d{1,2}$"), "tuần không bắt đầu từ thứ Hai", "a week not starting on Monday"),
    (re.compile(r"^\d{4}(april|nov)s[12]$"), "nửa năm không bắt đầu từ tháng 1", "a half-year not starting in January"),
    (re.compile(r"^\d{4}novq[1-4]$"), "quý không bắt đầu từ tháng 1", "a quarter not starting in January"),
]


@lru_cache(maxsize=4096)  # a file repeats a handful of periods a million times
def canonical(text: str) -> str:
    """The canonical period for `text`, or PeriodError."""
    raw = text if isinstance(text, str) else str(text)
    folded = fold(raw)
    if not folded:
        raise PeriodError(raw, " (để trống)", " (empty)")
    for kind, pattern in _FORMS:
        match = pattern.match(folded)
        if match:
            return _build(raw, kind, match)
    for pattern, vi, en in _DHIS2_OTHER:
        if pattern.match(folded):
            raise PeriodError(raw, f": đây là {vi}, không có kỳ tương ứng", f": it is {en}, which has no canonical period")
    raise PeriodError(raw)


def _build(raw: str, kind: str, m: re.Match[str]) -> str:
    year = int(m["y"])
    if not YEAR_MIN <= year <= YEAR_MAX:
        raise PeriodError(raw, f": năm {year} nằm ngoài khoảng {YEAR_MIN}–{YEAR_MAX}", f": year {year} is outside {YEAR_MIN}–{YEAR_MAX}")
    if kind == "year":
        return f"{year:04d}"
    if kind == "half":
        half = {"dau": 1, "cuoi": 2}.get(m["h"]) or int(m["h"])
        if half not in (1, 2):
            raise PeriodError(raw, ": nửa năm chỉ có 1 hoặc 2", ": a half-year is 1 or 2")
        return f"{year:04d}S{half}"
    if kind == "quarter":
        q = m["q"]
        quarter = ROMAN.get(q, 0) if not q.isdigit() else int(q)
        if not 1 <= quarter <= 4:
            raise PeriodError(raw, ": quý phải từ I đến IV", ": the quarter must be 1 to 4 (I to IV)")
        return f"{year:04d}Q{quarter}"
    if kind == "month":
        month = int(m["m"])
        if not 1 <= month <= 12:
            raise PeriodError(raw, f": không có tháng {month}, tháng phải từ 1 đến 12", f": there is no month {month}; months are 1 to 12")
        return f"{year:04d}-{month:02d}"
    if kind == "week":
        week = int(m["w"])
        try:
            date.fromisocalendar(year, week, 1)
        except ValueError:
            raise PeriodError(raw, f": năm {year} không có tuần {week}", f": {year} has no ISO week {week}") from None
        return f"{year:04d}W{week:02d}"
    month, day = int(m["m"]), int(m["d"])
    try:
        date(year, month, day)
    except ValueError:
        raise PeriodError(raw, f": không có ngày {day}/{month}/{year}", f": there is no day {year}-{month:02d}-{day:02d}") from None
    return f"{year:04d}-{month:02d}-{day:02d}"
