"""Roll-up: indicator values for one period, aggregated up the unit hierarchy.

What goes in (figures): every indicator value the node holds for the period, and the
counts a node derives from citizen feedback (`sync.feedback.derived_values`, when that
module is installed). Each figure keeps its source: the unit it was reported for, the
node that wrote it (origin) and the agency that supplied it.

How figures combine (decided here, documented in docs/records.md):

1. One figure per unit. Several sources may report the same indicator for the same unit
   and disaggregation (the commune's own figure and the health department's). They are
   never added together: the unit's own figure (written by the node whose id is that
   unit) is used, else the newest reported figure, else a feedback-derived figure. The
   others stay visible as `set_aside`.
2. Merged units. A figure for a unit that was merged away before the period began
   counts for its successor (`Units.successor` on the period's first day), in addition to
   the successor's own figure; hierarchy and names are the successor's.
3. Up the hierarchy, DHIS2 style: the value at a unit aggregates the figures of the unit
   itself and of every unit below it, by the indicator's rule: sum, avg (plain mean of
   the figures), weighted_avg (sum of value x weight over sum of weights; the weight is
   the weighting indicator's figure for the same unit and period, else for the period's
   year; a figure without a weight is left out and named), min, max. `none` is not
   rolled up: only the reporting unit's own row. Indicators missing from the catalogue
   are treated as `none` (their rule is unknown).
4. Derived indicators are computed at every unit from the rolled-up numerator and
   denominator (terms joined by '+' are added), x factor; a missing or zero denominator
   gives no value and says so. A value reported for a derived indicator is ignored.
5. Disaggregations (e.g. NAM/NU) roll up separately; no total is invented across them.

Read-only: nothing here writes to the store.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from . import feedback, records
from .catalogue import COMPUTED, Catalogue, Indicator, period_bounds, period_type_of
from .units import Units

FROM_REPORT = "reported"
FROM_FEEDBACK = "feedback"


@dataclass(frozen=True)
class Figure:
    """One value for one unit, with where it came from."""

    indicator: str
    unit: str  # the unit it was reported for
    period: str
    disaggregation: str
    value: Decimal
    origin: str
    agency: str
    version: int
    source: str = FROM_REPORT

    def precedence(self) -> tuple[int, int, str, str]:
        """Lower is preferred: own figure, then newest reported, then feedback-derived."""
        rank = 2 if self.source == FROM_FEEDBACK else 0 if self.origin == self.unit else 1
        return rank, -self.version, self.origin, self.agency

    def described(self, **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"unit": self.unit, "origin": self.origin, "agency": self.agency, "value": number(self.value)}
        if self.source != FROM_REPORT:
            out["from"] = self.source
        out.update(extra)
        return out


@dataclass
class Cell:
    """The rolled-up value of one indicator at one unit for one disaggregation."""

    indicator: str
    unit: str
    disaggregation: str
    value: Decimal | None
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def number(value: Decimal) -> int | float:
    """A Decimal as a JSON number: whole numbers stay integers."""
    return int(value) if value == value.to_integral_value() else float(value)


def _decimal(value: object) -> Decimal | None:
    try:
        out = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return out if out.is_finite() else None


# ---------------------------------------------------------------- figures in


def feedback_values(store: Any, period: str) -> list[dict[str, Any]]:
    """Counts derived from citizen feedback for the period (they are monthly), if this lienthong has them."""
    if period_type_of(period) != "monthly":
        return []
    return [dict(row) for row in feedback.derived_values(store, period)]


def collect(store: Any, periods: Iterable[str], agency: str | None = None) -> list[Figure]:
    """Every live indicator value the store holds for `periods`, as figures."""
    wanted = set(periods)
    out: list[Figure] = []
    for env in store.iter_records(records.INDICATOR):
        body = records.body_of(env)
        if body.period not in wanted or (agency is not None and env.agency != agency):
            continue
        value = _decimal(body.value)
        if value is not None:
            out.append(Figure(body.indicator, env.unit, body.period, body.disaggregation, value, env.origin, env.agency, env.version))
    return out


def figures_from_rows(rows: Iterable[Mapping[str, Any]], source: str = FROM_FEEDBACK) -> list[Figure]:
    """Figures from rows shaped like `records.to_dict` of indicator values (rows without a number are skipped)."""
    out = []
    for row in rows:
        value = _decimal(row.get("value"))
        if value is None or not row.get("indicator") or not row.get("unit") or not row.get("period"):
            continue
        out.append(
            Figure(
                records.nfc(str(row["indicator"])),
                records.nfc(str(row["unit"])),
                str(row["period"]),
                records.nfc(str(row.get("disaggregation") or "")),
                value,
                str(row.get("origin") or ""),
                str(row.get("agency") or ""),
                int(row.get("version") or 0),
                source,
            )
        )
    return out


# ---------------------------------------------------------------- the roll-up


class Rollup:
    """The roll-up of one period over a registry and a catalogue."""

    def __init__(self, period: str, figures: Iterable[Figure], units: Units, catalogue: Catalogue) -> None:
        self.period = period
        self.units = units
        self.catalogue = catalogue
        self.start = period_bounds(period)[0]
        self.notes: list[str] = []
        self.set_aside: dict[tuple[str, str, str], list[Figure]] = defaultdict(list)
        self.ignored: list[Figure] = []
        chosen: dict[tuple[str, str, str], Figure] = {}
        weights: dict[tuple[str, str, str], Figure] = {}
        for fig in sorted(figures, key=lambda f: (f.indicator, f.unit, f.disaggregation, f.precedence())):
            key = (fig.indicator, fig.unit, fig.disaggregation)
            ind = catalogue.get(fig.indicator)
            if fig.period != period:
                weights.setdefault(key, fig)  # a year's figure, kept as a fallback weight
                continue
            if ind is not None and ind.derived:
                self.ignored.append(fig)
                continue
            if key in chosen:
                self.set_aside[key].append(fig)
            else:
                chosen[key] = fig
        self.chosen = chosen
        self.year_figures = weights
        self._placed: dict[str, list[str]] = {}

    # ------------------------------------------------------------ hierarchy

    def effective(self, unit: str) -> str:
        """The unit that answers for `unit` in this period (its successor once it is merged away)."""
        return self.units.successor(unit, self.start) if unit in self.units else unit

    def chain(self, unit: str) -> list[str]:
        """`unit` (as it stands in this period) and every unit above it, through successors."""
        if unit not in self._placed:
            out: list[str] = []
            current = self.effective(unit)
            while current and current not in out:
                out.append(current)
                registered = self.units.get(current)
                current = self.effective(registered.parent) if registered and registered.parent else ""
            self._placed[unit] = out
        return self._placed[unit]

    # ------------------------------------------------------------ cells

    def cells(self) -> list[tuple[Indicator | None, Cell]]:
        """Every (indicator, cell) of the period: plain indicators first, then derived ones."""
        by_indicator: dict[str, list[Figure]] = defaultdict(list)
        for fig in self.chosen.values():
            by_indicator[fig.indicator].append(fig)
        out: list[tuple[Indicator | None, Cell]] = []
        plain: dict[str, dict[tuple[str, str], Cell]] = {}
        for code in sorted(by_indicator):
            ind = self.catalogue.get(code)
            plain[code] = self._aggregate(ind, code, by_indicator[code])
            out.extend((ind, cell) for cell in plain[code].values())
        for ind in self.catalogue:
            if ind.derived:
                out.extend((ind, cell) for cell in self._derive(ind, plain))
        return out

    def _aggregate(self, ind: Indicator | None, code: str, figures: list[Figure]) -> dict[tuple[str, str], Cell]:
        rule = ind.aggregation if ind is not None else "none"
        groups: dict[tuple[str, str], list[Figure]] = defaultdict(list)
        for fig in figures:
            places = self.chain(fig.unit) if rule != "none" else [self.effective(fig.unit)]
            for place in places:
                groups[(place, fig.disaggregation)].append(fig)
        cells: dict[tuple[str, str], Cell] = {}
        for (place, disagg), group in groups.items():
            cell = Cell(code, place, disagg, None, sorted(group, key=lambda f: (f.unit, f.origin, f.agency)))
            if ind is None:
                cell.notes.append(f"{code} is not in the indicator catalogue: shown where reported, not rolled up")
            if rule == "weighted_avg" and ind is not None:
                cell.value = self._weighted(ind, cell)
            else:
                cell.value = _combine(rule, [f.value for f in group])
            if cell.value is not None and ind is not None and rule in COMPUTED:
                cell.value = _round(cell.value, ind.decimals)
            cells[(place, disagg)] = cell
        return cells

    def _weight_of(self, ind: Indicator, fig: Figure) -> Decimal | None:
        for disagg in dict.fromkeys((fig.disaggregation, "")):
            key = (ind.weight, fig.unit, disagg)
            found = self.chosen.get(key) or self.year_figures.get(key)
            if found is not None:
                return found.value
        return None

    def _weighted(self, ind: Indicator, cell: Cell) -> Decimal | None:
        total = weights = Decimal(0)
        unweighted = []
        for fig in cell.figures:
            weight = self._weight_of(ind, fig)
            if weight is None:
                unweighted.append(fig.unit)
                continue
            total += fig.value * weight
            weights += weight
        if unweighted:
            cell.notes.append(f"no {ind.weight} figure to weigh {', '.join(sorted(set(unweighted)))}: left out")
        if weights == 0:
            cell.notes.append(f"the weights ({ind.weight}) add up to nothing: no value")
            return None
        return total / weights

    def _derive(self, ind: Indicator, plain: Mapping[str, Mapping[tuple[str, str], Cell]]) -> list[Cell]:
        places = sorted({key for code in (*ind.numerator, *ind.denominator) for key in plain.get(code, {})})
        cells = []
        for place, disagg in places:
            num, num_figures = _sum_terms(ind.numerator, plain, place, disagg)
            den, den_figures = _sum_terms(ind.denominator, plain, place, disagg)
            if den is None and disagg:
                den, den_figures = _sum_terms(ind.denominator, plain, place, "")
            cell = Cell(ind.code, place, disagg, None, [*num_figures, *den_figures])
            if den is None:
                cell.notes.append(f"no denominator ({'+'.join(ind.denominator)}) for this unit: no value")
            elif den == 0:
                cell.notes.append(f"the denominator ({'+'.join(ind.denominator)}) is zero: no value")
            elif num is None:
                cell.notes.append(f"no numerator ({'+'.join(ind.numerator)}) value for this unit: no value")
            else:
                cell.value = _round(num / den * ind.factor, ind.decimals)
            cells.append(cell)
        return cells


def _sum_terms(
    codes: Iterable[str], plain: Mapping[str, Mapping[tuple[str, str], Cell]], place: str, disagg: str
) -> tuple[Decimal | None, list[Figure]]:
    total: Decimal | None = None
    figures: list[Figure] = []
    for code in codes:
        cell = plain.get(code, {}).get((place, disagg))
        if cell is not None and cell.value is not None:
            total = (total or Decimal(0)) + cell.value
            figures.extend(cell.figures)
    return total, figures


def _combine(rule: str, values: list[Decimal]) -> Decimal | None:
    if not values:
        return None
    if rule == "avg":
        return sum(values, Decimal(0)) / len(values)
    if rule == "min":
        return min(values)
    if rule == "max":
        return max(values)
    if rule == "none" and len(values) == 1:
        return values[0]
    return sum(values, Decimal(0))  # sum, and "none" with several figures for one unit (merged into it)


def _round(value: Decimal, decimals: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


# ---------------------------------------------------------------- rows out


def rollup(
    store: Any,
    period: str,
    *,
    unit: str | None = None,
    agency: str | None = None,
    units: Units | None = None,
    catalogue: Catalogue | None = None,
    extra: Iterable[Mapping[str, Any]] | None = None,
    only: Callable[[str, str, str], bool] | None = None,
) -> list[dict[str, Any]]:
    """The rolled-up rows of `period` (optionally for `unit` and the units below it), sources kept.

    `extra` replaces the feedback-derived rows (tests and callers that have them already).
    `only(unit, indicator, period)` keeps the reported values it accepts (approved data,
    `approval.Approved`); counts derived from feedback are not a unit's submission and stay.
    """
    units = units if units is not None else Units.from_store(store)
    catalogue = catalogue if catalogue is not None else Catalogue.from_store(store)
    periods = {period, period[:4]}
    figures = [f for f in collect(store, periods, agency) if only is None or only(f.unit, f.indicator, f.period)]
    feedback_rows = list(extra) if extra is not None else feedback_values(store, period)
    figures += [f for f in figures_from_rows(feedback_rows) if f.period in periods and (agency is None or f.agency == agency)]
    # The year's figures are only weights: keep those of weighting indicators.
    weighting = {i.weight for i in catalogue if i.weight}
    figures = [f for f in figures if f.period == period or f.indicator in weighting]
    result = Rollup(period, figures, units, catalogue)
    return rows_of(result, unit)


def rows_of(result: Rollup, unit: str | None = None) -> list[dict[str, Any]]:
    units = result.units
    wanted: set[str] | None = None
    if unit is not None:
        wanted = {unit, *units.descendants(unit)}
    order = _hierarchy_order(units)
    rows = []
    for ind, cell in result.cells():
        if wanted is not None and cell.unit not in wanted:
            continue
        rows.append(_row(result, ind, cell))
    rows.sort(key=lambda r: (r["indicator"], order.get(r["unit"], (len(order), r["unit"])), r["disaggregation"]))
    return rows


def _hierarchy_order(units: Units) -> dict[str, tuple[int, str]]:
    """Top-down, depth-first position of every registered unit (so a unit precedes its children)."""
    order: dict[str, tuple[int, str]] = {}
    tops = [u.code for u in units if not u.parent or u.parent not in units]
    for top in tops:
        for code in [top, *units.descendants(top)]:
            order.setdefault(code, (len(order), code))
    return order


def _row(result: Rollup, ind: Indicator | None, cell: Cell) -> dict[str, Any]:
    registered = result.units.get(cell.unit)
    sources = [f.described(indicator=f.indicator) if ind is not None and ind.derived else f.described() for f in cell.figures]
    set_aside = []
    reported_units = {f.unit for f in cell.figures}
    for fig in cell.figures:
        for other in result.set_aside.get((fig.indicator, fig.unit, fig.disaggregation), []):
            set_aside.append(other.described(indicator=other.indicator) if ind is not None and ind.derived else other.described())
    for fig in result.ignored:
        if (
            ind is not None
            and fig.indicator == ind.code
            and cell.unit in result.chain(fig.unit)
            and fig.disaggregation == cell.disaggregation
        ):
            set_aside.append(fig.described(reason="derived indicators are computed, never reported"))
    merged = sorted({f.unit for f in cell.figures if result.effective(f.unit) != f.unit})
    notes = list(cell.notes)
    if merged:
        notes.append(f"{', '.join(merged)} merged into {', '.join(sorted({result.effective(u) for u in merged}))} before {result.period}")
    return {
        "indicator": cell.indicator,
        "name": ind.name if ind else "",
        "measure": ind.measure if ind else "",
        "aggregation": ind.aggregation if ind else "",
        "definition_version": ind.version if ind else 0,
        "unit": cell.unit,
        "unit_name": registered.name if registered else "",
        "level": registered.level if registered else "",
        "period": result.period,
        "disaggregation": cell.disaggregation,
        "value": number(cell.value) if cell.value is not None else None,
        "exact_value": format(cell.value, "f") if cell.value is not None else "",
        "reported_units": len(reported_units),
        "sources": sources,
        "set_aside": set_aside,
        "notes": notes,
    }
