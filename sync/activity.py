"""The figures of the IOC's monthly or quarterly activity report (báo cáo hoạt động), from the data.

`figures` computes, for a period (a month 2026-10 or a quarter 2026Q4) and the units a report
covers (a unit and every unit below it), every number the drafted report prints; the
document (node/report_document.py) only lays them out, and `lienthong report draft --format
json` prints exactly this, so the document's numbers are the JSON's.

    feedback        items received in the period (the day their `received_at` states), per
                    category and per responsible unit: received, handled (resolved or closed,
                    whenever), handled on time, handled late, still open, and overdue (open
                    and past the deadline at `as_of`)
    completeness    the report schedules of the period's type (sync/completeness.py, as
                    `lienthong reports completeness` judges them): rates per level, and the
                    late and missing units named
    indicators      the headline indicators: the rolled-up value at the report's unit
                    (sync/rollup.py, no disaggregation) this period and the previous one, the
                    change and the change in percent
    refused         data refused in the period (Vietnam days): agency files refused whole
                    and rows refused (the ingest ledger), records refused from child nodes
                    (quarantine) and records of this node its parent refused, per reason
    security        audit entries dated in the period, per action and node (the caller
                    gives them: the node's own log and the copies its children sent up), and
                    the nodes whose copied audit chain does not hold together
    satisfaction    sync/satisfaction.py's summary

Read-only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from . import completeness as completeness_mod
from . import feedback as fb
from . import rollup as rollup_mod
from . import satisfaction
from .catalogue import Catalogue
from .schedule import VIETNAM, Schedules, bounds, period_type, shift
from .store import Store
from .units import Units

MAX_INDICATORS = 30  # headline rows when the caller names none
COUNTS = ("received", "handled", "on_time", "late", "open", "overdue")


@dataclass(frozen=True)
class Scope:
    """What a report covers: its unit (None: everything the node holds) and the units under it."""

    unit: str | None
    within: frozenset[str] | None

    @classmethod
    def of(cls, units: Units, unit: str | None) -> Scope:
        if unit is None:
            return cls(None, None)
        return cls(unit, frozenset({unit, *units.descendants(unit)}))

    def holds(self, code: str) -> bool:
        return self.within is None or code in self.within


def figures(
    store: Store,
    period: str,
    *,
    unit: str | None,
    as_of: dt.datetime,
    audit_entries: Sequence[Mapping[str, Any]] = (),
    audit_problems: Sequence[Mapping[str, Any]] = (),
    indicators: Sequence[str] = (),
) -> dict[str, Any]:
    """Every figure of the report for `period` (canonical: 2026-10 or 2026Q4)."""
    units = Units.from_store(store)
    scope = Scope.of(units, unit)
    folded = fb.load(store)
    start, end = bounds(period)
    names = {u.code: u.name for u in units}
    return {
        "period": period,
        "period_type": period_type(period),
        "from": start.isoformat(),
        "to": end.isoformat(),
        "previous_period": shift(period, -1),
        "as_of": as_of.astimezone(VIETNAM).isoformat(timespec="seconds"),
        "node": store.node_id,
        "unit": unit,
        "unit_name": names.get(unit or "", ""),
        "feedback": feedback_figures(folded.items, period, scope, as_of, names),
        "completeness": completeness_figures(store, units, period, scope, as_of.astimezone(VIETNAM).date()),
        "indicators": indicator_figures(store, units, period, unit, indicators),
        "refused": refused_figures(store, period),
        "security": security_figures(audit_entries, audit_problems, period),
        "satisfaction": satisfaction.summarise(
            [*satisfaction.feedback_answers(folded.items, period), *satisfaction.survey_answers(store.reader(), period)],
            period,
            within=scope.within,
            unit_names=names,
            category_names=satisfaction.category_names(folded.items),
        ),
    }


# ---------------------------------------------------------------- feedback


def _counts(items: Iterable[fb.Item], as_of: dt.datetime) -> dict[str, int]:
    out = dict.fromkeys(COUNTS, 0)
    for i in items:
        out["received"] += 1
        on_time = i.on_time()
        out["handled"] += not i.is_open
        out["on_time"] += on_time is True
        out["late"] += on_time is False
        out["open"] += i.is_open
        out["overdue"] += i.overdue(as_of)
    return out


def feedback_figures(items: Iterable[fb.Item], period: str, scope: Scope, as_of: dt.datetime, names: Mapping[str, str]) -> dict[str, Any]:
    months = set(satisfaction.months_of(period))
    held = [i for i in items if i.received_at[:7] in months and (scope.holds(i.responsible) or scope.holds(i.unit))]
    by_category: dict[str, list[fb.Item]] = {}
    by_unit: dict[str, list[fb.Item]] = {}
    for i in held:
        by_category.setdefault(i.category, []).append(i)
        by_unit.setdefault(i.responsible, []).append(i)
    total = _counts(held, as_of)
    return {
        "total": {**total, "on_time_pct": _pct(total["on_time"], total["handled"])},
        "categories": [
            {"category": c, "category_name": next((i.category_name for i in g if i.category_name), ""), **_counts(g, as_of)}
            for c, g in sorted(by_category.items())
        ],
        "units": [{"unit": u, "unit_name": names.get(u, ""), **_counts(g, as_of)} for u, g in sorted(by_unit.items())],
    }


def _pct(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


# ---------------------------------------------------------------- completeness


def completeness_figures(store: Store, units: Units, period: str, scope: Scope, today: dt.date) -> dict[str, Any]:
    schedules = Schedules.from_store(store)
    subs = completeness_mod.submissions(store, scope.within)
    result = completeness_mod.completeness(units, schedules.items, subs, period, today=today, within=scope.within).to_dict()
    named = [
        {k: r[k] for k in ("unit", "unit_name", "level", "report_type", "report_name", "due", "status", "submitted_at")}
        for r in result["reports"]
        if r["status"] in (completeness_mod.LATE, completeness_mod.MISSING)
    ]
    return {
        "schedules": len([s for s in schedules.items if s.period_type == period_type(period)]),
        "levels": result["levels"],
        "report_types": result["report_types"],
        "late": [r for r in named if r["status"] == completeness_mod.LATE],
        "missing": [r for r in named if r["status"] == completeness_mod.MISSING],
    }


# ---------------------------------------------------------------- headline indicators


def indicator_figures(store: Store, units: Units, period: str, unit: str | None, wanted: Sequence[str]) -> dict[str, Any]:
    """The rolled-up values at `unit` (None: every top unit's) for the period and the one before."""
    catalogue = Catalogue.from_store(store)
    previous = shift(period, -1)
    now_rows = _values(rollup_mod.rollup(store, period, unit=unit, units=units, catalogue=catalogue), unit, units)
    before = _values(rollup_mod.rollup(store, previous, unit=unit, units=units, catalogue=catalogue), unit, units)
    keys = sorted(set(now_rows) | set(before)) if not wanted else [(code, u) for code in wanted for u in _tops(now_rows, before, unit)]
    omitted = max(0, len(keys) - MAX_INDICATORS) if not wanted else 0
    rows = []
    for key in keys[: MAX_INDICATORS if not wanted else None]:
        row, prior = now_rows.get(key), before.get(key)
        ind = catalogue.get(key[0])
        value = Decimal(row["exact_value"]) if row else None
        old = Decimal(prior["exact_value"]) if prior else None
        change = value - old if value is not None and old is not None else None
        rows.append(
            {
                "indicator": key[0],
                "name": ind.name if ind else (row or prior or {}).get("name", ""),
                "measure": ind.measure if ind else "",
                "unit": key[1],
                "value": rollup_mod.number(value) if value is not None else None,
                "previous": rollup_mod.number(old) if old is not None else None,
                "change": rollup_mod.number(change) if change is not None else None,
                "change_pct": round(float(100 * change / old), 1) if change is not None and old else None,
            }
        )
    return {"previous_period": previous, "rows": rows, "omitted": omitted}


def _values(rows: Iterable[Mapping[str, Any]], unit: str | None, units: Units) -> dict[tuple[str, str], Mapping[str, Any]]:
    out = {}
    for row in rows:
        if row["disaggregation"] or row["value"] is None:
            continue
        top = row["unit"] == unit if unit is not None else not (units.get(row["unit"]) and units.ancestors(row["unit"]))
        if top:
            out[(row["indicator"], row["unit"])] = row
    return out


def _tops(now_rows: Mapping[tuple[str, str], Any], before: Mapping[tuple[str, str], Any], unit: str | None) -> list[str]:
    return [unit] if unit is not None else sorted({u for _, u in [*now_rows, *before]})


# ---------------------------------------------------------------- refused data


def _window(period: str) -> tuple[float, float]:
    """The period's first and last instant in Vietnam, as Unix seconds [start, end)."""
    start, end = bounds(period)
    first = dt.datetime.combine(start, dt.time(), VIETNAM)
    after = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), VIETNAM)
    return first.timestamp(), after.timestamp()


def refused_figures(store: Store, period: str) -> dict[str, Any]:
    lo, hi = _window(period)
    db = store.reader()
    agencies = [
        {"agency": agency or "", "files": files, "files_refused": whole, "rows_refused": rows}
        for agency, files, whole, rows in db.execute(
            "SELECT agency, count(*), coalesce(sum(status = 'error'), 0), coalesce(sum(refused), 0) FROM files "
            "WHERE at >= ? AND at < ? GROUP BY agency ORDER BY agency",
            (lo, hi),
        )
    ]
    from_children = [
        {"child": child, "code": code, "records": n}
        for child, code, n in db.execute(
            "SELECT child, code, count(*) FROM quarantine WHERE at >= ? AND at < ? GROUP BY child, code ORDER BY child, code", (lo, hi)
        )
    ]
    by_parent = [
        {"code": code, "records": n}
        for code, n in db.execute("SELECT code, count(*) FROM refused WHERE at >= ? AND at < ? GROUP BY code ORDER BY code", (lo, hi))
    ]
    return {
        "files": sum(a["files"] for a in agencies),
        "files_refused": sum(a["files_refused"] for a in agencies),
        "rows_refused": sum(a["rows_refused"] for a in agencies),
        "records_refused_from_children": sum(c["records"] for c in from_children),
        "records_refused_by_parent": sum(p["records"] for p in by_parent),
        "agencies": agencies,
        "children": from_children,
        "parent": by_parent,
    }


# ---------------------------------------------------------------- security events


def security_figures(entries: Iterable[Mapping[str, Any]], problems: Sequence[Mapping[str, Any]], period: str) -> dict[str, Any]:
    """Entries {node, time (ISO, UTC), action, details} dated in the period, per action and per node.

    `connection.refused` entries count refusals (`details.count`, else 1) besides entries."""
    lo, hi = _window(period)
    actions: dict[str, dict[str, int]] = {}
    nodes: dict[str, int] = {}
    for e in entries:
        try:
            when = dt.datetime.fromisoformat(str(e["time"]))
        except ValueError:
            continue
        if not lo <= (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp() < hi:
            continue
        details = e.get("details") if isinstance(e.get("details"), Mapping) else {}
        count = details.get("count", 1) if isinstance(details, Mapping) else 1
        row = actions.setdefault(str(e["action"]), {"entries": 0, "events": 0})
        row["entries"] += 1
        row["events"] += count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 1
        nodes[str(e["node"])] = nodes.get(str(e["node"]), 0) + 1
    return {
        "entries": sum(a["entries"] for a in actions.values()),
        "actions": [{"action": a, **c} for a, c in sorted(actions.items())],
        "nodes": [{"node": n, "entries": c} for n, c in sorted(nodes.items())],
        "chains_broken": [dict(p) for p in problems],
    }
