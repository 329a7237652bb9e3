"""The console's pages, rendered on the server (jinja2, templates/), Vietnamese by default and
English with `?lang=en` (remembered in a cookie). Each page is built on the read API's functions
(`api.py`, the same scope), so a page shows exactly what /api/v1 answers. No JavaScript is needed:
the unit tree is <details>, the chart is an SVG drawn here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from lienthong.sync import approval, records
from lienthong.sync.schedule import Schedules, containing, period_type, shift, today_in_vietnam

from . import api
from .accounts import Account
from .context import CONSOLE
from .i18n import LANGS, translator
from .overview import overview
from .routes import APPROVAL_ACTIONS

TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
)
STATUS_CLASSES = ("on_time", "late", "missing", "pending")


def _lang(request: web.Request) -> str:
    asked = request.query.get("lang")
    if asked in LANGS:
        return asked
    kept = request.cookies.get("lang")
    return kept if kept in LANGS else "vi"


async def _render(request: web.Request, template: str, page: str, work: Callable[[Any, api.Scope], dict[str, Any]]) -> web.Response:
    console = request.app[CONSOLE]
    account: Account = request["account"]
    lang = _lang(request)

    def run() -> dict[str, Any]:
        console.store.fresh_read_tables()  # the read tables follow the records in the background: catch up first
        return work(console, api.Scope.of(console.store, account))

    data = await asyncio.to_thread(run)
    text = TEMPLATES.get_template(template).render(
        t=translator(lang),
        lang=lang,
        page=page,
        account=account,
        csrf=request.get("csrf", ""),
        node=console.settings.node,
        path=request.path,
        query=dict(request.query),
        **data,
    )
    response = web.Response(text=text, content_type="text/html", charset="utf-8")
    if request.query.get("lang") in LANGS:
        response.set_cookie("lang", lang, samesite="Strict", httponly=True, path="/")
    return response


def _q(request: web.Request, **extra: str) -> api.Query:
    return api.Query({**request.query, **extra})


# ---------------------------------------------------------------- Tổng quan / Overview


async def overview_page(request: web.Request) -> web.Response:
    def work(console: Any, scope: api.Scope) -> dict[str, Any]:
        data = overview(console, scope, time.time())
        data["counts"] = api.feedback_counts(console.store, scope, time.time())
        return {"o": data}

    return await _render(request, "overview.html", "overview", work)


# ---------------------------------------------------------------- Báo cáo / Reports


async def reports_page(request: web.Request) -> web.Response:
    def work(console: Any, scope: api.Scope) -> dict[str, Any]:
        store = console.store
        definitions = list(store.iter_records(records.DEFINITION))
        schedules = Schedules.from_envelopes(definitions)
        types = sorted({(s.report_type, s.name, s.period_type) for s in schedules})
        chosen = request.query.get("report_type") or (types[0][0] if types else "")
        kind = next((k for t, _, k in types if t == chosen), "monthly")
        last = request.query.get("period") or shift(containing(today_in_vietnam(), kind), -1)
        if period_type(last) != kind:
            raise api.ApiError(400, "bad_parameter", f"period {last!r} is not a {kind} period", "choose a period from the list")
        periods = [shift(last, -n) for n in range(5, -1, -1)]
        grid: dict[str, dict[str, str]] = {}
        names: dict[str, str] = {}
        levels: list[dict[str, Any]] = []
        for period in periods:
            result = api.completeness(store, _q(request, period=period, report_type=chosen), scope, definitions)
            for item in result["reports"]:
                grid.setdefault(item["unit"], {})[period] = item["status"]
                names[item["unit"]] = item["unit_name"]
            if period == last:
                levels = result["levels"]
        return {
            "types": types,
            "chosen": chosen,
            "periods": periods,
            "last": last,
            "grid": sorted(grid.items()),
            "names": names,
            "levels": levels,
            "statuses": STATUS_CLASSES,
        }

    return await _render(request, "reports.html", "reports", work)


async def report_cell_page(request: web.Request) -> web.Response:
    def work(console: Any, scope: api.Scope) -> dict[str, Any]:
        unit, period, report_type = (request.query.get(k, "") for k in ("unit", "period", "report_type"))
        found = api.reports(console.store, _q(request), scope)["items"]
        step = approval.approvals(console.store.reader(), [unit]).get((unit, report_type, period))
        return {
            "unit": unit,
            "period": period,
            "report_type": report_type,
            "items": found,
            "approval": step.to_dict() if step else {"state": approval.SUBMITTED, "last_step": None},
            "approval_actions": APPROVAL_ACTIONS,
            "here": request.path_qs,
        }

    return await _render(request, "report_cell.html", "reports", work)


# ---------------------------------------------------------------- Phản ánh / Feedback


async def feedback_page(request: web.Request) -> web.Response:
    def work(console: Any, scope: api.Scope) -> dict[str, Any]:
        now = time.time()
        return {
            "items": api.feedback_list(console.store, _q(request), scope, now),
            "counts": api.feedback_counts(console.store, scope, now),
            "states": api.FEEDBACK_STATES,
        }

    return await _render(request, "feedback.html", "feedback", work)


async def feedback_item_page(request: web.Request) -> web.Response:
    from .routes import UPDATE_STATUSES, item_detail

    ref = request.match_info["item"]

    def work(console: Any, scope: api.Scope) -> dict[str, Any]:
        item = item_detail(console.store, api.item_row(console.store, ref, scope))
        units = [code for (code,) in console.store.reader().execute("SELECT code FROM units ORDER BY code")]
        if scope.units is not None:
            units = [u for u in units if u in scope.units]
        return {"item": item, "statuses": UPDATE_STATUSES, "units": units}

    return await _render(request, "feedback_item.html", "feedback", work)


# ---------------------------------------------------------------- Chỉ tiêu / Indicators


async def indicators_page(request: web.Request) -> web.Response:
    def work(console: Any, scope: api.Scope) -> dict[str, Any]:
        store = console.store
        period = request.query.get("period") or shift(containing(today_in_vietnam(), "monthly"), -1)
        query = _q(request, period=period)
        parents = dict(store.reader().execute("SELECT code, parent FROM units").fetchall())
        # The chosen indicator's whole tree, and every indicator's figures at the tree's top units
        # (a province has thousands of unit × indicator cells: only those shown are decoded).
        chosen = request.query.get("indicator", "")
        if not chosen:
            first, _ = api.rollup_rows(store, query, scope, totals_only=True, page=(1, 0))
            chosen = first[0]["indicator"] if first else ""
        rows, _ = api.rollup_rows(store, query, scope, totals_only=True, indicator=chosen) if chosen else ([], 0)
        tree = _tree(rows, parents)
        roots = {node["row"]["unit"] for node in tree}
        by_indicator: dict[str, list[dict[str, Any]]] = {}
        for row in api.rollup_rows(store, query, scope, totals_only=True, units=roots)[0] if roots else []:
            by_indicator.setdefault(row["indicator"], []).append(row)
        top = tree[0]["row"]["unit"] if tree else ""
        series = api.indicator_series(store, chosen, top, [shift(period, -n) for n in range(11, -1, -1)], scope) if top else []
        return {
            "period": period,
            "summary": sorted(by_indicator.items()),
            "tree": tree,
            "names": {code: items[0]["name"] for code, items in by_indicator.items()},
            "chosen": chosen,
            "top": top,
            "chart": _chart(series),
        }

    return await _render(request, "indicators.html", "indicators", work)


def _tree(rows: list[dict[str, Any]], parents: dict[str, str]) -> list[dict[str, Any]]:
    """Rows as a forest by the unit hierarchy (a row's parent is the nearest ancestor with a row)."""
    nodes: dict[str, dict[str, Any]] = {r["unit"]: {"row": r, "children": []} for r in rows}
    roots: list[dict[str, Any]] = []
    for unit, node in nodes.items():
        parent = parents.get(unit, "")
        while parent and parent not in nodes:
            parent = parents.get(parent, "")
        (nodes[parent]["children"] if parent else roots).append(node)
    return roots


def _chart(series: list[tuple[str, float | None]]) -> dict[str, Any]:
    """An SVG line chart's points (640 x 200) for a series of (period, value)."""
    values = [v for _, v in series if v is not None]
    if not values:
        return {"points": "", "labels": [], "max": None}
    high = max(values) or 1.0
    step = 600 / max(len(series) - 1, 1)
    points = " ".join(f"{20 + i * step:.0f},{180 - (v / high) * 160:.0f}" for i, (_, v) in enumerate(series) if v is not None)
    labels = [
        {"x": round(20 + i * step), "y": None if v is None else round(180 - (v / high) * 160), "period": p, "value": v}
        for i, (p, v) in enumerate(series)
    ]
    return {"points": points, "labels": labels, "max": high}


# ---------------------------------------------------------------- Tệp / Inbox, An ninh / Security


async def inbox_page(request: web.Request) -> web.Response:
    def work(console: Any, scope: api.Scope) -> dict[str, Any]:
        return {"files": api.files(console.store, _q(request, limit=request.query.get("limit", "50")), scope)}

    return await _render(request, "inbox.html", "inbox", work)


async def security_page(request: web.Request) -> web.Response:
    account: Account = request["account"]
    if not account.may("admin") or account.scoped:
        raise api.ApiError(403, "forbidden", "the security page needs an unscoped admin account", "ask an admin of this node")

    def work(console: Any, scope: api.Scope) -> dict[str, Any]:
        audit = console.audit
        if audit is None:
            return {"entries": [], "verified": None, "refused": [], "revocations": []}
        head, _ = audit.head()
        entries = list(reversed(audit.entries(since_seq=max(head - 200, 0))))
        result = audit.verify()
        rows = [
            {"seq": e.seq, "time": e.time, "actor": e.actor, "action": e.action, "subject": e.subject, "details": e.details}
            for e in entries
        ]
        return {
            "entries": rows[:100],
            "refused": [e for e in rows if e["action"].startswith("connection.refused") or "refused" in e["action"]][:20],
            "revocations": [e for e in rows if "revoke" in e["action"]][:20],
            "verified": {"ok": result.ok, "checked": result.checked, "bad_seq": result.bad_seq, "reason": result.reason},
        }

    return await _render(request, "security.html", "security", work)


def add(app: web.Application) -> None:
    r = app.router
    r.add_get("/", overview_page)
    r.add_get("/reports", reports_page)
    r.add_get("/reports/cell", report_cell_page)
    r.add_get("/feedback", feedback_page)
    r.add_get("/feedback/{item}", feedback_item_page)
    r.add_get("/indicators", indicators_page)
    r.add_get("/inbox", inbox_page)
    r.add_get("/security", security_page)
