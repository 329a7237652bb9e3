"""Citizen satisfaction (mức độ hài lòng), per unit, category and period.

Two sources, each a count of answers on the scale 1 (very unhappy) to 5 (very satisfied):

    feedback   the rating a citizen gave an item (`feedback_event` `satisfaction`, sync/feedback.py):
               the item's rating as folded (the last one applied), counted in the period of the
               day the rating event states, for the item's responsible unit and its category;
    survey     survey results imported from a CSV file (`lienthong feedback import-survey`,
               docs/adapters.md): indicator values of SURVEY_INDICATOR, one per unit, period and
               disaggregation `CATEGORY|RATING` (or `RATING` for a survey without categories),
               the value being how many answered that rating. A survey of a month counts in
               that month and its quarter; several values for one (unit, period,
               disaggregation) — the same survey imported twice at different nodes — count
               once: the newest version.

Per group (a unit, a category, a unit and category, everything) each source gives its number
of answers, the mean rating (two decimals), how many answered 4 or 5 ("satisfied") and that
share in percent (one decimal), and the answers per rating; `all` adds both sources up.

Read-only; the period is a month (2026-10) or a quarter (2026Q4).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import feedback as fb
from .errors import InputError
from .schedule import bounds, period_type

SURVEY_INDICATOR = "KTXH.HL.KS"  # Số phiếu khảo sát sự hài lòng, theo lĩnh vực và mức đánh giá
SURVEY_SOURCE = "survey"
RATINGS = (1, 2, 3, 4, 5)
SATISFIED_FROM = 4
REPORT_PERIOD_TYPES = ("monthly", "quarterly")


def canonical_period(text: str) -> str:
    """A report period as the store writes it: 2026-10, or 2026Q4 (2026-Q4 and 2026q4 accepted)."""
    period = text.strip().upper().replace("-Q", "Q")
    if period_type(period) not in REPORT_PERIOD_TYPES:
        raise InputError(
            f"{text!r} is not a month or a quarter",
            "write the period as a month 2026-10 or a quarter 2026-Q4",
            field="period",
            code="bad_period",
        )
    return period


def months_of(period: str) -> list[str]:
    """The months a month or quarter holds (YYYY-MM)."""
    start, end = bounds(period)
    out = []
    year, month = start.year, start.month
    while (year, month) <= (end.year, end.month):
        out.append(f"{year}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def survey_disaggregation(category: str, rating: int) -> str:
    return f"{category}|{rating}" if category else str(rating)


def parse_disaggregation(text: str) -> tuple[str, int] | None:
    """(category, rating) from a survey value's disaggregation, or None when it is not one."""
    category, _, rating = text.rpartition("|")
    if not rating.isdigit() or int(rating) not in RATINGS:
        return None
    return category, int(rating)


@dataclass
class Tally:
    """Answers per rating, of one source."""

    counts: dict[int, int] = field(default_factory=lambda: dict.fromkeys(RATINGS, 0))

    def add(self, rating: int, n: int = 1) -> None:
        self.counts[rating] += n

    def merged(self, other: Tally) -> Tally:
        return Tally({r: self.counts[r] + other.counts[r] for r in RATINGS})

    def to_dict(self) -> dict[str, Any]:
        responses = sum(self.counts.values())
        satisfied = sum(n for r, n in self.counts.items() if r >= SATISFIED_FROM)
        total = sum(r * n for r, n in self.counts.items())
        return {
            "responses": responses,
            "average": round(total / responses, 2) if responses else None,
            "satisfied": satisfied,
            "satisfied_pct": round(100 * satisfied / responses, 1) if responses else None,
            "by_rating": {str(r): self.counts[r] for r in RATINGS},
        }


@dataclass
class Group:
    feedback: Tally = field(default_factory=Tally)
    survey: Tally = field(default_factory=Tally)

    def to_dict(self) -> dict[str, Any]:
        return {"feedback": self.feedback.to_dict(), "survey": self.survey.to_dict(), "all": self.feedback.merged(self.survey).to_dict()}


@dataclass(frozen=True)
class Answer:
    """Some answers of one rating, for one unit and category."""

    unit: str
    category: str
    rating: int
    count: int
    source: str  # feedback | survey


def feedback_answers(items: Iterable[fb.Item], period: str) -> list[Answer]:
    """Each rated item whose (applied) rating was given in `period`, as one answer."""
    months = set(months_of(period))
    out = []
    for item in items:
        if not item.rating:
            continue
        rated = [s.event for s in item.history if s.applied and s.event.status == "satisfaction"]
        if rated and rated[-1].at[:7] in months:
            out.append(Answer(item.responsible, item.category, item.rating, 1, "feedback"))
    return out


def survey_answers(db: sqlite3.Connection, period: str) -> list[Answer]:
    """The survey values of `period` (and, for a quarter, of its months) in the read tables."""
    periods = sorted({period, *months_of(period)})
    newest: dict[tuple[str, str, str], tuple[int, float]] = {}
    sql = (
        "SELECT unit, period, disaggregation, value_number, version FROM indicator_values "
        f"WHERE indicator = ? AND period IN ({','.join('?' * len(periods))})"
    )
    for unit, value_period, disaggregation, number, version in db.execute(sql, (SURVEY_INDICATOR, *periods)):
        key = (unit, value_period, disaggregation)
        if number is not None and (key not in newest or version > newest[key][0]):
            newest[key] = (version, number)
    out = []
    for (unit, _, disaggregation), (_, number) in sorted(newest.items()):
        parsed = parse_disaggregation(disaggregation)
        if parsed is None or number < 0 or number != int(number):
            continue
        out.append(Answer(unit, parsed[0], parsed[1], int(number), SURVEY_SOURCE))
    return out


def summarise(
    answers: Iterable[Answer],
    period: str,
    *,
    within: Iterable[str] | None = None,
    unit_names: dict[str, str] | None = None,
    category_names: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The summary of `answers` (only units in `within`, when given)."""
    scope = None if within is None else set(within)
    total = Group()
    units: dict[str, Group] = {}
    categories: dict[str, Group] = {}
    cells: dict[tuple[str, str], Group] = {}
    for a in answers:
        if scope is not None and a.unit not in scope:
            continue
        for group in (
            total,
            units.setdefault(a.unit, Group()),
            categories.setdefault(a.category, Group()),
            cells.setdefault((a.unit, a.category), Group()),
        ):
            getattr(group, a.source).add(a.rating, a.count)
    names = unit_names or {}
    cat_names = category_names or {}
    return {
        "period": period,
        "scale": "1-5",
        "satisfied_from": SATISFIED_FROM,
        "total": total.to_dict(),
        "units": [{"unit": u, "unit_name": names.get(u, ""), **g.to_dict()} for u, g in sorted(units.items())],
        "categories": [{"category": c, "category_name": cat_names.get(c, ""), **g.to_dict()} for c, g in sorted(categories.items())],
        "rows": [{"unit": u, "category": c, **g.to_dict()} for (u, c), g in sorted(cells.items())],
    }


def category_names(items: Iterable[fb.Item]) -> dict[str, str]:
    """Category code -> the name the feedback items give it."""
    return {i.category: i.category_name for i in items if i.category_name}
