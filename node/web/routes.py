"""The console's URLs: the read API (`/api/v1/…`), logging in and out, the feedback and approval actions and
the OpenAPI description. Each handler checks the account's role, builds its scope and runs the
blocking query (`api.py`) in a worker thread."""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from lienthong.sync import records
from lienthong.sync.errors import LienthongError

from . import api, openapi
from .accounts import Account
from .context import CONSOLE
from .sessions import COOKIE

UPDATE_STATUSES = ("assigned", "accepted", "in_progress", "resolved", "closed", "reopened", "returned", "satisfaction")


def _console(request: web.Request) -> Any:
    return request.app[CONSOLE]


def _account(request: web.Request) -> Account:
    return request["account"]  # type: ignore[no-any-return]


async def _read(request: web.Request, work: Callable[[Any, api.Query, api.Scope], Any], role: str = "viewer") -> web.Response:
    console, account = _console(request), _account(request)
    if not account.may(role):
        raise api.ApiError(403, "forbidden", f"this needs the {role} role", "ask an admin of this node")

    def run() -> Any:
        console.store.fresh_read_tables()  # the read tables follow the records in the background: catch up first
        return work(console.store, api.Query(request.query), api.Scope.of(console.store, account))

    return web.json_response(await asyncio.to_thread(run), dumps=_dumps)


def _dumps(data: Any) -> str:
    import json

    return json.dumps(data, ensure_ascii=False)


async def indicators(request: web.Request) -> web.Response:
    return await _read(request, api.indicators)


async def rollup(request: web.Request) -> web.StreamResponse:
    console, account = _console(request), _account(request)
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "csv", "dhis2"):
        raise api.ApiError(400, "bad_parameter", f"format must be json, csv or dhis2 (got {fmt!r})", "e.g. format=csv")

    paged = fmt == "json" and "download" not in request.query
    page = api.Query(request.query).page() if paged else None

    def run() -> tuple[list[dict[str, Any]], int]:
        console.store.fresh_read_tables()
        return api.rollup_rows(console.store, api.Query(request.query), api.Scope.of(console.store, account), page=page)

    rows, total = await asyncio.to_thread(run)
    if page is not None:
        limit, offset = page
        return web.json_response({"items": rows, "total": total, "limit": limit, "offset": offset}, dumps=_dumps)
    from ..query_cmd import _render

    text = _render("json" if fmt == "json" else fmt, "indicators", rows, True)
    period = request.query.get("period", "")
    ext = {"json": "json", "csv": "csv", "dhis2": "json"}[fmt]
    name = f"chi-tieu-{period}{'-dhis2' if fmt == 'dhis2' else ''}.{ext}"
    return web.Response(
        text=text,
        content_type="text/csv" if fmt == "csv" else "application/json",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def reports(request: web.Request) -> web.Response:
    return await _read(request, api.reports)


async def completeness(request: web.Request) -> web.Response:
    default = _console(request).settings.approval.count_only_approved
    return await _read(request, lambda store, q, scope: api.completeness(store, q, scope, approved_only_default=default))


async def feedback_list(request: web.Request) -> web.Response:
    return await _read(request, lambda store, q, scope: api.feedback_list(store, q, scope, time.time()))


async def feedback_counts(request: web.Request) -> web.Response:
    return await _read(request, lambda store, q, scope: api.feedback_counts(store, scope, time.time()))


async def feedback_item(request: web.Request) -> web.Response:
    ref = request.match_info["item"]

    def work(store: Any, q: api.Query, scope: api.Scope) -> dict[str, Any]:
        return item_detail(store, api.item_row(store, ref, scope))

    return await _read(request, work)


def item_detail(store: Any, record_id: bytes) -> dict[str, Any]:
    """One item folded with its full history (as `lienthong feedback show --json`)."""
    from lienthong.sync import feedback as fb
    from lienthong.sync.units import Units

    db = store.reader()
    (raw,) = db.execute("SELECT envelope FROM records WHERE id = ?", (record_id,)).fetchone()
    events = [
        fb.Event.from_envelope(records.Envelope.FromString(e))
        for (e,) in db.execute(
            "SELECT r.envelope FROM feedback_events f JOIN records r ON r.id = f.record_id WHERE f.item_id = ? AND r.deleted = 0",
            (record_id,),
        )
    ]
    definitions = list(store.iter_records(records.DEFINITION))
    registry = Units.from_envelopes(definitions)
    due_days = fb._due_days(store)
    item = fb.fold(fb.item_from_envelope(records.Envelope.FromString(raw), due_days), events, registry.ancestors)
    return item.to_dict(dt.datetime.now(dt.UTC), history=True)


async def feedback_event(request: web.Request) -> web.Response:
    """Assign, reassign or update an item (operators): the CLI's rules, audited with the account's name."""
    console, account = _console(request), _account(request)
    if not account.may("operator"):
        raise api.ApiError(403, "forbidden", "updating feedback needs the operator role", "ask an admin of this node")
    form: Any = await request.json() if request.content_type == "application/json" else await request.post()
    status = str(form.get("status", "")).strip()
    if status not in UPDATE_STATUSES:
        raise api.ApiError(
            400, "bad_parameter", f"status must be one of {', '.join(UPDATE_STATUSES)} (got {status!r})", "e.g. status=accepted"
        )
    unit = records.nfc(str(form.get("unit", "")).strip())
    note = str(form.get("note", "") or form.get("result", "")).strip()
    rating_text = str(form.get("rating", "") or "").strip()
    rating = int(rating_text) if rating_text.isdigit() else None
    if status == "assigned" and not unit:
        raise api.ApiError(400, "missing_parameter", "an assignment names the unit", "add unit=…")
    if status == "resolved" and not note:
        raise api.ApiError(400, "missing_parameter", "a resolution needs its result", "add result=…")
    if status == "satisfaction" and rating not in (1, 2, 3, 4, 5):
        raise api.ApiError(400, "bad_parameter", "a satisfaction survey needs a rating from 1 to 5", "add rating=4")
    ref = request.match_info["item"]
    at = dt.datetime.now().astimezone().isoformat(timespec="milliseconds")

    def run() -> dict[str, Any]:
        from ..feedback_cmd import record_event

        console.store.fresh_read_tables()
        scope = api.Scope.of(console.store, account)
        record_id = api.item_row(console.store, ref, scope)
        if unit:
            scope.check_unit(unit)
        try:
            item, after, written = record_event(
                console.store, console.settings, record_id.hex(), status, at=at, note=note, unit=unit, rating=rating
            )
        except LienthongError as exc:
            raise api.ApiError(409, "refused", exc.message, exc.hint) from None
        details = {"status": status, "state": after.state, **({"unit": unit} if unit else {}), **({"note": note} if note else {})}
        console.audit_append(f"feedback.{status}", item.source_id, details, actor=f"web:{account.name}")
        return {"id": item.id, "source_id": item.source_id, "status": status, "state": after.state, "written": written}

    result = await asyncio.to_thread(run)
    console.runtime.get("notify", lambda: None)()  # wake the uplink and the children's streams
    if request.content_type != "application/json" and "next" in request.query:
        raise web.HTTPSeeOther(request.query["next"] if request.query["next"].startswith("/") else "/")
    return web.json_response(result, dumps=_dumps)


APPROVAL_ACTIONS = ("approve", "accept", "return", "unapprove", "unaccept")


async def approval_step(request: web.Request) -> web.Response:
    """Approve, accept, return, un-approve or un-accept a unit's data set for a period (operators):
    `lienthong approve`'s rules (node/approve_cmd.py `take_step`), recorded with the account's name."""
    console, account = _console(request), _account(request)
    if not account.may("operator"):
        raise api.ApiError(403, "forbidden", "approving data needs the operator role", "ask an admin of this node")
    form: Any = await request.json() if request.content_type == "application/json" else await request.post()
    fields = {k: records.nfc(str(form.get(k, "") or "").strip()) for k in ("unit", "dataset", "period", "action", "reason")}
    if fields["action"] not in APPROVAL_ACTIONS:
        raise api.ApiError(
            400, "bad_parameter", f"action must be one of {', '.join(APPROVAL_ACTIONS)} (got {fields['action']!r})", "e.g. action=approve"
        )
    for name in ("unit", "dataset", "period"):
        if not fields[name]:
            raise api.ApiError(400, "missing_parameter", f"{name} is required", f"add {name}=…")
    if not records.PERIOD.match(fields["period"]):
        raise api.ApiError(400, "bad_parameter", f"period is not a period (got {fields['period']!r})", "write it as 2026-10")

    def run() -> dict[str, str]:
        from ..approve_cmd import take_step

        api.Scope.of(console.store, account).check_unit(fields["unit"])
        try:
            done = take_step(
                console.store,
                console.settings,
                period=fields["period"],
                dataset=fields["dataset"],
                unit=fields["unit"],
                give_back=fields["action"] == "return",
                unapprove=fields["action"] in ("unapprove", "unaccept"),
                reason=fields["reason"],
                by=account.name,
                asked=fields["action"],
            )
        except LienthongError as exc:
            raise api.ApiError(409, "refused", exc.message, exc.hint) from None
        subject = f"{done['unit']} {done['dataset']} {done['period']}"
        details = {"reason": done["reason"], "by": done["by"], "state": done["state"]}
        console.audit_append(f"approval.{done['action']}", subject, details, actor=f"web:{account.name}")
        return done

    result = await asyncio.to_thread(run)
    console.runtime.get("notify", lambda: None)()  # wake the uplink and the children's streams
    if request.content_type != "application/json" and "next" in request.query:
        target = request.query["next"]
        raise web.HTTPSeeOther(target if target.startswith("/") and not target.startswith("//") else "/")
    return web.json_response(result, dumps=_dumps)


async def files(request: web.Request) -> web.Response:
    return await _read(request, api.files)


async def units(request: web.Request) -> web.Response:
    return await _read(request, api.units)


async def node(request: web.Request) -> web.Response:
    from .overview import overview

    console = _console(request)
    return await _read(request, lambda store, q, scope: overview(console, scope, time.time()))


async def audit(request: web.Request) -> web.Response:
    console, account = _console(request), _account(request)
    if not account.may("admin") or account.scoped:
        raise api.ApiError(403, "forbidden", "the audit log needs an unscoped admin account", "ask an admin of this node")
    q = api.Query(request.query)
    limit, offset = q.page()

    def run() -> dict[str, Any]:
        if console.audit is None:
            return {"items": [], "total": 0, "limit": limit, "offset": offset}
        head, _ = console.audit.head()
        top = head - offset
        entries = console.audit.entries(since_seq=max(top - limit, 0), limit=limit)
        items = [
            {"seq": e.seq, "time": e.time, "actor": e.actor, "action": e.action, "subject": e.subject, "details": e.details}
            for e in reversed(entries)
            if e.seq <= top
        ]
        return {"items": items, "total": head, "limit": limit, "offset": offset}

    return web.json_response(await asyncio.to_thread(run), dumps=_dumps)


async def me(request: web.Request) -> web.Response:
    account = _account(request)
    return web.json_response({**account.to_dict(), "csrf": request.get("csrf", "")}, dumps=_dumps)


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(openapi.DOCUMENT, dumps=_dumps)


# ---------------------------------------------------------------- logging in and out


async def login(request: web.Request) -> web.StreamResponse:
    console = _console(request)
    if request.method == "GET":
        return web.Response(text=LOGIN_FORM.format(next=html.escape(request.query.get("next", "/"))), content_type="text/html")
    form = await request.post()
    name, password = str(form.get("name", "")), str(form.get("password", ""))
    peer = request.remote or ""
    blocked, first = console.guard.blocked(peer)
    if blocked:
        if first:
            await asyncio.to_thread(console.audit_append, "web.login_blocked", name, {"peer": peer}, f"web:{name}")
        raise api.ApiError(429, "too_many_attempts", "too many failed logins from this address", "wait five minutes and try again")
    account = await asyncio.to_thread(console.accounts.authenticate, name, password)
    if account is None:
        await asyncio.sleep(console.guard.limit.delay)
        console.guard.failed(peer)
        await asyncio.to_thread(console.audit_append, "web.login_refused", name, {"peer": peer}, f"web:{name}")
        raise api.ApiError(401, "bad_login", "wrong name or password, or the account is disabled", "try again, or ask an admin")
    await asyncio.to_thread(console.audit_append, "web.login", name, {"peer": peer}, f"web:{name}")
    cookie = console.sessions.issue(account.name)
    target = str(form.get("next", "/") or "/")
    response = web.HTTPSeeOther(target if target.startswith("/") and not target.startswith("//") else "/")
    secure = bool(console.settings.web.tls_cert)
    response.set_cookie(COOKIE, cookie, httponly=True, samesite="Strict", secure=secure, max_age=int(console.sessions.lifetime), path="/")
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


LOGIN_FORM = """<!doctype html><html lang="vi"><meta charset="utf-8"><title>Đăng nhập — lienthong</title>
<form method="post" action="/login"><input type="hidden" name="next" value="{next}">
<label>Tài khoản <input name="name" autocomplete="username" required></label>
<label>Mật khẩu <input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Đăng nhập</button></form></html>"""


async def error_page(request: web.Request, exc: api.ApiError) -> web.Response:
    text = f"<!doctype html><meta charset=utf-8><h1>{exc.status}</h1><p>{html.escape(exc.message)}</p><p>{html.escape(exc.hint)}</p>"
    return web.Response(text=text, status=exc.status, content_type="text/html")


def add(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/node", node)
    r.add_get("/api/v1/me", me)
    r.add_get("/api/v1/units", units)
    r.add_get("/api/v1/indicators", indicators)
    r.add_get("/api/v1/indicators/rollup", rollup)
    r.add_get("/api/v1/reports", reports)
    r.add_get("/api/v1/completeness", completeness)
    r.add_get("/api/v1/feedback", feedback_list)
    r.add_get("/api/v1/feedback/counts", feedback_counts)
    r.add_get("/api/v1/feedback/{item}", feedback_item)
    r.add_post("/api/v1/feedback/{item}/events", feedback_event)
    r.add_post("/api/v1/approvals", approval_step)
    r.add_get("/api/v1/files", files)
    r.add_get("/api/v1/audit", audit)
    r.add_get("/api/v1/openapi.json", openapi_json)
    r.add_route("*", "/login", login)
    r.add_post("/logout", logout)
