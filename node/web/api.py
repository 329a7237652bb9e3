"""The read API, `/api/v1/…` (JSON): what every console page is built on, and how other provincial
systems integrate. Field names are stable (docs/api.md; the OpenAPI description is served at
/api/v1/openapi.json). Every answer comes from the store's read tables (sync/read_tables.py).

Lists are paginated (`limit` 1–1000, default 100; `offset`) and answer
`{"items": [...], "total": N, "limit": L, "offset": O}`. Filters: `unit` (with `subtree=true`,
the units below it too), `period`, `agency`, and per list its own. An account scoped to units or
agencies sees only those (the scope is applied in every query); asking outside the scope is a 403.
Errors are `{"error": {"code", "message", "hint"}}` with a 4xx status.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from lienthong.sync import approval, indicator_sets, read_tables, records
from lienthong.sync import completeness as comp
from lienthong.sync.indicator_sets import IndicatorSets
from lienthong.sync.schedule import Schedules, bounds, today_in_vietnam
from lienthong.sync.store import Store
from lienthong.sync.units import Units

# What a request asks and may see, re-exported: the pages and routes speak of `api.Query`, `api.Scope`, `api.ApiError`.
from .request import SUBTREE
from .request import ApiError as ApiError
from .request import Query as Query
from .request import Scope as Scope

CACHE_SIZE = 16
STALE_SECONDS = 60.0  # how old a roll-up may be while its successor is computed
_cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_cache_lock = threading.Lock()
# One thread recomputes stale values (one thread: one store connection, one roll-up at a time).
_refresher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="console-refresh")
FEEDBACK_STATES = ("received", "assigned", "accepted", "in_progress", "resolved", "closed", "reopened", "returned")


@dataclass
class _Entry:
    token: str  # the read tables' checkpoint the value was computed at
    at: float  # when it was computed (time.monotonic)
    value: Any
    refreshing: bool = False


def cached(store: Store, key: tuple[Any, ...], compute: Callable[[], Any], stale_for: float = 0.0) -> Any:
    """`compute()`, remembered until the store changes: each value carries the read tables'
    checkpoint (the change-log sequence they include), which every write moves. For what is
    costly and asked often (a period's roll-up, record counts); callers must not mutate the value.

    `stale_for`: a value computed less than this many seconds ago is answered even after the store
    changed, while one worker thread computes the new one (a province takes records all day; a
    roll-up of a million values takes seconds, so it is recomputed in the background)."""
    token = _token(store)
    full = (str(store.path), *key)
    with _cache_lock:
        entry = _cache.get(full)
        if entry is not None:
            _cache.move_to_end(full)
            if entry.token == token:
                return entry.value
            if time.monotonic() - entry.at < stale_for:
                if not entry.refreshing:
                    entry.refreshing = True
                    _refresher.submit(_refresh, store, full, compute)
                return entry.value
    value = compute()
    _remember(full, _Entry(token, time.monotonic(), value))
    return value


def _token(store: Store) -> str:
    row = store.reader().execute("SELECT value FROM meta WHERE key = ?", (read_tables.CHECKPOINT,)).fetchone()
    return str(row[0]) if row else ""


def _refresh(store: Store, full: tuple[Any, ...], compute: Callable[[], Any]) -> None:
    try:
        token = _token(store)
        _remember(full, _Entry(token, time.monotonic(), compute()))
    except Exception:
        with _cache_lock:
            entry = _cache.get(full)
            if entry is not None:
                entry.refreshing = False  # the next request computes it in full


def _remember(full: tuple[Any, ...], entry: _Entry) -> None:
    with _cache_lock:
        _cache[full] = entry
        _cache.move_to_end(full)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)


def _units_filter(store: Store, q: Query, scope: Scope, column: str = "unit") -> tuple[str, list[Any]]:
    unit = q.text("unit")
    if not unit:
        return "1", []
    scope.check_unit(unit)
    if q.flag("subtree"):
        codes = [code for (code,) in store.reader().execute(SUBTREE, (json.dumps([unit]),))]
        return f"{column} IN (SELECT value FROM json_each(?))", [json.dumps(codes)]
    return f"{column} = ?", [unit]


def _agency_filter(q: Query, scope: Scope, column: str = "agency") -> tuple[str, list[Any]]:
    agency = q.text("agency")
    if not agency:
        return "1", []
    scope.check_agency(agency)
    return f"{column} = ?", [agency]


def _page(store: Store, select: str, table: str, where: list[tuple[str, list[Any]]], order: str, q: Query) -> dict[str, Any]:
    limit, offset = q.page()
    conditions = " AND ".join(w for w, _ in where)
    args = [a for _, wargs in where for a in wargs]
    db = store.reader()
    total = db.execute(f"SELECT count(*) FROM {table} WHERE {conditions}", args).fetchone()[0]
    # Two steps: sort only the row ids (narrow rows), then read the page's rows whole.
    rowids = [
        r for (r,) in db.execute(f"SELECT rowid FROM {table} WHERE {conditions} ORDER BY {order} LIMIT ? OFFSET ?", [*args, limit, offset])
    ]
    cur = db.execute(
        f"SELECT rowid AS _rowid, {select} FROM {table} WHERE rowid IN (SELECT value FROM json_each(?))", (json.dumps(rowids),)
    )
    cols = [d[0] for d in cur.description]
    found = {row[0]: _plain(dict(zip(cols[1:], row[1:], strict=True))) for row in cur.fetchall()}
    return {"items": [found[r] for r in rowids if r in found], "total": total, "limit": limit, "offset": offset}


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    for key, value in row.items():
        if isinstance(value, bytes):
            row[key] = value.hex()
    return row


# ---------------------------------------------------------------- the endpoints (blocking: called in a worker thread)


def indicators(store: Store, q: Query, scope: Scope) -> dict[str, Any]:
    where = [scope.where(), _units_filter(store, q, scope), _agency_filter(q, scope)]
    if period := q.period():
        where.append(("period = ?", [period]))
    if indicator := q.text("indicator"):
        where.append(("indicator = ?", [indicator]))
    select = "record_id AS id, indicator, unit, period, disaggregation, agency, origin, value, value_number, comment, follow_up, version"
    return _page(store, select, "indicator_values", where, "period, indicator, unit, disaggregation, record_id", q)


def reports(store: Store, q: Query, scope: Scope) -> dict[str, Any]:
    where = [scope.where(), _units_filter(store, q, scope), _agency_filter(q, scope)]
    if period := q.period():
        where.append(("period = ?", [period]))
    if report_type := q.text("report_type"):
        where.append(("report_type = ?", [report_type]))
    select = (
        "record_id AS id, report_type, unit, period, agency, origin, title, summary, signed_by, source_id, submitted_at, "
        "first_submitted_at, version, files"
    )
    page = _page(store, select, "reports", where, "period DESC, report_type, unit, record_id", q)
    for item in page["items"]:
        item["files"] = [
            {"name": n, "sha256": s, "size": z}
            for n, s, z in store.reader().execute(
                "SELECT name, sha256, size FROM report_files WHERE record_id = ? ORDER BY position", (bytes.fromhex(item["id"]),)
            )
        ]
    return page


def feedback_list(store: Store, q: Query, scope: Scope, now: float) -> dict[str, Any]:
    where = [scope.where(("unit", "responsible")), _agency_filter(q, scope)]
    if unit := q.text("unit"):
        scope.check_unit(unit)
        where.append(("responsible = ?", [unit]))
    if state := q.choice("state", FEEDBACK_STATES):
        where.append(("state = ?", [state]))
    if category := q.text("category"):
        where.append(("category = ?", [category]))
    if q.flag("open"):
        where.append(("is_open = 1", []))
    if q.flag("overdue"):
        where.append(("is_open = 1 AND due_ts < ?", [now]))
    select = (
        "record_id AS id, source_id, origin, agency, unit, category, category_name, description, address, received_at, state, "
        f"assignee, responsible, suggested_unit, due_at, due_rule, (is_open = 1 AND due_ts < {float(now)!r}) AS overdue, handled_at, "
        "on_time, result, rating, events, ignored_events"
    )
    # Overdue first (most overdue first), then open by deadline, then the rest newest first.
    order = (
        f"(is_open = 1 AND due_ts < {float(now)!r}) DESC, is_open DESC, CASE WHEN is_open = 1 THEN due_ts ELSE -received_ts END, record_id"
    )
    page = _page(store, select, "feedback_items", where, order, q)
    for item in page["items"]:
        item["overdue"] = bool(item["overdue"])
        item["on_time"] = None if item["on_time"] is None else bool(item["on_time"])
    return page


def feedback_counts(store: Store, scope: Scope, now: float) -> dict[str, Any]:
    cond, args = scope.where(("unit", "responsible"))
    db = store.reader()
    # Each count on its own index (state; is_open, due_ts): no pass over the items' text.
    states = dict(db.execute(f"SELECT state, count(*) FROM feedback_items WHERE {cond} GROUP BY state", args).fetchall())
    open_ = db.execute(f"SELECT count(*) FROM feedback_items WHERE is_open = 1 AND {cond}", args).fetchone()[0]
    overdue = db.execute(f"SELECT count(*) FROM feedback_items WHERE is_open = 1 AND due_ts < ? AND {cond}", [now, *args]).fetchone()[0]
    return {"open": open_, "overdue": overdue, "states": states}


def item_row(store: Store, ref: str, scope: Scope) -> bytes:
    """The record id of the item `ref` names (record id hex or ticket id), inside the scope."""
    ref = records.nfc(ref.strip())
    cond, args = scope.where(("unit", "responsible"))
    db = store.reader()
    rows = db.execute(f"SELECT record_id FROM feedback_items WHERE source_id = ? AND {cond}", [ref, *args]).fetchall()
    if not rows and re.fullmatch(r"[0-9a-fA-F]{32}", ref):
        rows = db.execute(f"SELECT record_id FROM feedback_items WHERE record_id = ? AND {cond}", [bytes.fromhex(ref), *args]).fetchall()
    if not rows:
        raise ApiError(404, "not_found", f"no feedback item {ref!r} here", "list them at /api/v1/feedback")
    if len(rows) > 1:
        raise ApiError(409, "ambiguous", f"{ref!r} names {len(rows)} feedback items", "give the record id instead")
    return bytes(rows[0][0])


def files(store: Store, q: Query, scope: Scope) -> dict[str, Any]:
    if scope.units is not None:
        scope.require_whole_node("the inbox")
    where = [scope.where(()), _agency_filter(q, scope)]
    if status := q.choice("status", ("success", "warning", "error")):
        where.append(("status = ?", [status]))
    select = "sha256, name, agency, adapter, status, imported, updated, unchanged, refused, at, receipt"
    page = _page(store, select, "files", where, "at DESC, sha256", q)
    for item in page["items"]:
        item["at"] = dt.datetime.fromtimestamp(item["at"], dt.UTC).isoformat(timespec="seconds")
        try:
            receipt = json.loads(item.pop("receipt") or "{}")
        except json.JSONDecodeError:
            receipt = {}
        # The receipt's refused rows (adapters/intake.py `receipt`): line, field, code, message (vi), message_en.
        refused: Any = receipt.get("conflicts", []) if isinstance(receipt, dict) else []
        item["refused_rows"] = [r for r in refused[:200] if isinstance(r, dict)] if isinstance(refused, list) else []
    return page


def units(store: Store, q: Query, scope: Scope) -> dict[str, Any]:
    where = [scope.where(("code",), None) if scope.units is not None else ("1", [])]
    if parent := q.text("parent"):
        where.append(("parent = ?", [parent]))
    if level := q.text("level"):
        where.append(("level = ?", [level]))
    return _page(store, "code, name, level, parent, valid_from, valid_to, successor, depth", "units", where, "depth, code", q)


def completeness(
    store: Store, q: Query, scope: Scope, definitions: list[records.Envelope] | None = None, approved_only_default: bool = False
) -> dict[str, Any]:
    """Completeness and timeliness of a period, judged as `lienthong reports completeness` judges it
    (indicator sets included, under `indicator_sets`). `definitions`: the definition envelopes,
    when the caller asks for several periods. `approved_only=true|false` (default: the node's
    `approval.count_only_approved`) counts only approved data."""
    period = q.period(required=True)
    try:
        bounds(period)
    except Exception:
        raise ApiError(400, "bad_parameter", f"period {period!r} is not a report period", "e.g. period=2026-10") from None
    if scope.agencies is not None and scope.units is None:
        scope.require_whole_node("report completeness")
    if definitions is None:
        definitions = list(store.iter_records(records.DEFINITION))
    registry = Units.from_envelopes(definitions)
    schedules = Schedules.from_envelopes(definitions)
    sets = IndicatorSets.from_envelopes(definitions)
    within = sorted(scope.units) if scope.units is not None else None
    unit = q.text("unit")
    if unit:
        scope.check_unit(unit)
        below = {unit, *registry.descendants(unit)}
        within = sorted(below if within is None else below & set(within))
    today = today_in_vietnam()
    report_type, level = q.text("report_type") or None, q.text("level") or None
    approved_only = q.flag("approved_only") if "approved_only" in q.params else approved_only_default

    def judge() -> dict[str, Any]:
        subs = submissions(store, within, period)
        states = approval.states(store.reader(), within)
        result = comp.completeness(
            registry,
            list(schedules),
            subs,
            period,
            today=today,
            report_type=report_type,
            level=level,
            within=within,
            approvals=states,
            approved_only=approved_only,
        )
        data = result.to_dict()
        data["approved_only"] = approved_only
        if len(sets) and not report_type:
            judged = indicator_sets.completeness(
                store.reader(),
                registry,
                sets,
                period,
                today=today,
                level=level,
                within=within,
                approvals=states,
                approved_only=approved_only,
            ).to_dict()
            data["indicator_sets"] = {"units": judged["units"], "levels": judged["levels"]}
        return data

    # Judged once per store change and day (pending turns missing when the due day passes).
    key = ("completeness", period, report_type, level, today, approved_only, None if within is None else tuple(within))
    judged: dict[str, Any] = cached(store, key, judge)
    return judged


def submissions(store: Store, units: list[str] | None, period: str | None = None) -> dict[tuple[str, str, str], comp.Submission]:
    """The first submission of each report (of `period`, if given), judged on its witnessed time
    (`completeness.submissions`: the same judgement as the CLI's)."""
    return comp.submissions(store, units, period)


def rollup_rows(
    store: Store,
    q: Query,
    scope: Scope,
    *,
    totals_only: bool = False,
    indicator: str | None = None,
    units: set[str] | None = None,
    page: tuple[int, int] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """The period's indicator roll-up (as `lienthong query indicators --rollup`), from the read tables;
    computed once per store change (`cached`), then filtered to the unit asked, the scope and (with
    `totals_only`) the rows without a breakdown, of one `indicator`, of some `units`. Only the rows
    kept are decoded. Returns the rows (of `page` = (limit, offset), if given) and how many there are in all."""
    period = q.period(required=True)
    agency = q.text("agency") or None
    if agency:
        scope.check_agency(agency)
    elif scope.agencies is not None:
        raise ApiError(400, "missing_parameter", "an agency-scoped account must name its agency", "add agency=…")
    unit = q.text("unit") or None
    if unit:
        scope.check_unit(unit)
    kept: list[tuple[str, str, str, str]] = cached(store, ("rollup", period, agency), lambda: _rollup(store, period, agency), STALE_SECONDS)
    below = {code for (code,) in store.reader().execute(SUBTREE, (json.dumps([unit]),))} if unit else None
    chosen = [
        text
        for row_unit, row_indicator, disaggregation, text in kept
        if (below is None or row_unit in below)
        and (scope.units is None or row_unit in scope.units)
        and (units is None or row_unit in units)
        and (indicator is None or row_indicator == indicator)
        and (not totals_only or not disaggregation)
    ]
    if page is not None:
        limit, offset = page
        return [json.loads(text) for text in chosen[offset : offset + limit]], len(chosen)
    return [json.loads(text) for text in chosen], len(chosen)


def _rollup(store: Store, period: str, agency: str | None) -> list[tuple[str, str, str, str]]:
    """The roll-up's rows as (unit, indicator, disaggregation, JSON text): kept so, a cached roll-up of a
    province (tens of thousands of rows) is a few objects the garbage collector never walks, not
    hundreds of thousands of dicts and lists that made every collection pause the console."""
    from lienthong.sync import rollup as ru
    from lienthong.sync.catalogue import Catalogue

    definitions = list(store.iter_records(records.DEFINITION))
    registry, catalogue = Units.from_envelopes(definitions), Catalogue.from_envelopes(definitions)
    periods = sorted({period, period[:4]})
    cond, args = ("agency = ?", [agency]) if agency else ("1", [])
    rows = store.reader().execute(
        "SELECT indicator, unit, period, disaggregation, value, origin, agency, version FROM indicator_values "
        f"WHERE period IN (SELECT value FROM json_each(?)) AND {cond}",
        [json.dumps(periods), *args],
    )
    cols = ["indicator", "unit", "period", "disaggregation", "value", "origin", "agency", "version"]
    figures = ru.figures_from_rows((dict(zip(cols, r, strict=True)) for r in rows), source=ru.FROM_REPORT)
    figures += feedback_figures(store, period, agency)
    weighting = {i.weight for i in catalogue if i.weight}
    figures = [f for f in figures if f.period == period or f.indicator in weighting]
    rolled = ru.rows_of(ru.Rollup(period, figures, registry, catalogue))
    return [(r["unit"], r["indicator"], r["disaggregation"], json.dumps(r, ensure_ascii=False)) for r in rolled]


def feedback_figures(store: Store, period: str, agency: str | None) -> list[Any]:
    """KTXH.PA.01 / PA.02 per responsible unit for a month, counted from `feedback_items` (the
    same counts as `feedback.derived_values`, which folds every item)."""
    from lienthong.sync import feedback as fb
    from lienthong.sync import rollup as ru

    if not fb.MONTH.match(period) or agency:
        return []
    rows = []
    for unit, received, on_time in store.reader().execute(
        "SELECT responsible, count(*), coalesce(sum(on_time = 1), 0) FROM feedback_items WHERE substr(received_at, 1, 7) = ? "
        "GROUP BY responsible",
        (period,),
    ):
        for indicator, value in ((fb.RECEIVED_INDICATOR, received), (fb.ON_TIME_INDICATOR, on_time)):
            rows.append({"indicator": indicator, "unit": unit, "period": period, "value": value, "origin": store.node_id})
    return ru.figures_from_rows(rows)


def indicator_series(store: Store, indicator: str, unit: str, periods: list[str], scope: Scope) -> list[tuple[str, float | None]]:
    """The rolled-up value of one indicator at `unit` for each of `periods` (for the indicators
    page's chart): the roll-up of each period over that indicator's own figures and its terms."""
    scope.check_unit(unit)
    series: list[tuple[str, float | None]] = cached(
        store, ("series", indicator, unit, tuple(periods)), lambda: _series(store, indicator, unit, periods), STALE_SECONDS
    )
    return series


def _series(store: Store, indicator: str, unit: str, periods: list[str]) -> list[tuple[str, float | None]]:
    from lienthong.sync import rollup as ru
    from lienthong.sync.catalogue import Catalogue

    definitions = list(store.iter_records(records.DEFINITION))
    registry, catalogue = Units.from_envelopes(definitions), Catalogue.from_envelopes(definitions)
    wanted = {indicator}
    for ind in catalogue:
        if ind.code == indicator:
            wanted |= {ind.weight, *ind.numerator, *ind.denominator} - {""}
    out: list[tuple[str, float | None]] = []
    cols = ["indicator", "unit", "period", "disaggregation", "value", "origin", "agency", "version"]
    for period in periods:
        rows = store.reader().execute(
            "SELECT indicator, unit, period, disaggregation, value, origin, agency, version FROM indicator_values "
            "WHERE period IN (?, ?) AND indicator IN (SELECT value FROM json_each(?))",
            (period, period[:4], json.dumps(sorted(wanted))),
        )
        figures = ru.figures_from_rows((dict(zip(cols, r, strict=True)) for r in rows), source=ru.FROM_REPORT)
        figures = [f for f in figures if f.period == period or f.indicator != indicator]
        cells = [r for r in ru.rows_of(ru.Rollup(period, figures, registry, catalogue), unit) if r["unit"] == unit]
        value = next((r["value"] for r in cells if r["indicator"] == indicator and not r["disaggregation"]), None)
        out.append((period, value))
    return out


def record_counts(store: Store) -> dict[str, int]:
    """Records held per kind, as `Store.counts` says, without scanning the records table: the big
    kinds are counted in their read tables, definitions and seals by the records' kind index
    (once per store change)."""
    counts: dict[str, int] = cached(store, ("counts",), lambda: _record_counts(store))
    return counts


def _record_counts(store: Store) -> dict[str, int]:
    db = store.reader()
    out = {name: 0 for name in records.KIND_NAMES.values()}
    for kind, table in (
        ("indicator", "indicator_values"),
        ("report", "reports"),
        ("feedback", "feedback_items"),
        ("feedback_event", "feedback_events"),
    ):
        out[kind] = int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    for code in (int(records.DEFINITION), int(records.SEAL), int(records.DISPUTE)):
        row = db.execute("SELECT count(*) FROM records WHERE kind = ? AND deleted = 0", (code,)).fetchone()
        out[records.KIND_NAMES[code]] = int(row[0])
    return out
