"""The console's HTTP server: aiohttp on the node's own asyncio loop (`lienthong run` starts it
beside the gRPC server), serving the read API, the pages, /metrics and /healthz.

Who may ask what:

- A node without accounts answers on loopback only, read-only, as an unscoped viewer.
- With accounts, everything but /healthz, /metrics and the login page needs a session cookie
  (`sessions.py`); writes need the session's CSRF token and the operator role.
- A non-loopback `[web] listen` needs `[web] tls_cert`/`tls_key` and at least one account:
  the node refuses to start the console otherwise (`check_exposure`).

Errors are JSON for /api/ (`api.ApiError`), pages for the rest; an unexpected exception is
logged and answered 500 without its traceback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from lienthong.config.settings import Settings
from lienthong.sync.errors import ConfigError
from lienthong.sync.store import Store

from ..trust.audit import AuditLog
from . import api, health, metrics, pages, routes
from .accounts import ANONYMOUS, Account, Accounts
from .context import CONSOLE, Console
from .sessions import COOKIE, Sessions

log = structlog.get_logger("lienthong.web")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC = ("/healthz", "/login", "/static/")
# /metrics names every child and counts every kind of record: Prometheus scrapes it without a
# session from the node's own machine (loopback); from elsewhere it needs an unscoped account.
SCRAPE = "/metrics"


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def check_exposure(settings: Settings, accounts: Accounts) -> ssl.SSLContext | None:
    """The TLS context to serve with, or None (plain HTTP); refuses a non-loopback listen without
    TLS or without accounts."""
    web_settings = settings.web
    host, _ = split_listen(web_settings.listen)
    context = None
    if web_settings.tls_cert or web_settings.tls_key:
        if not (web_settings.tls_cert and web_settings.tls_key):
            raise ConfigError("web.tls_cert and web.tls_key go together", "set both, or neither")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(web_settings.tls_cert, web_settings.tls_key)
    if not is_loopback(host):
        if context is None:
            raise ConfigError(
                f"web.listen: {web_settings.listen} is not a loopback address, and the console is served without TLS",
                "set web.tls_cert and web.tls_key, or listen on 127.0.0.1",
            )
        if not accounts.any():
            raise ConfigError(
                f"web.listen: {web_settings.listen} is not a loopback address, and this node has no console accounts",
                "add one with `lienthong user add --dir DIR NAME --role admin`, or listen on 127.0.0.1",
            )
    return context


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except api.ApiError as exc:
        if request.path.startswith("/api/"):
            return web.json_response(exc.to_dict(), status=exc.status)
        return await routes.error_page(request, exc)
    except web.HTTPException as exc:
        if request.path.startswith("/api/") and exc.status >= 400:
            return web.json_response(
                {"error": {"code": exc.reason.lower().replace(" ", "_"), "message": exc.reason, "hint": ""}}, status=exc.status
            )
        raise
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.error("web.error", path=request.path, error=repr(exc))
        failure = api.ApiError(500, "internal", "the node could not answer this request", "look at the node's log")
        if request.path.startswith("/api/"):
            return web.json_response(failure.to_dict(), status=500)
        return await routes.error_page(request, failure)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Who asks: the session's account, or (a node without accounts, on loopback) the anonymous viewer."""
    console = request.app[CONSOLE]
    if request.path.startswith(PUBLIC) or (request.path == SCRAPE and is_loopback(request.remote or "")):
        return await handler(request)
    if not await asyncio.to_thread(console.accounts.any):
        peer = request.remote or ""
        if not is_loopback(peer):
            raise api.ApiError(
                403,
                "loopback_only",
                "this console has no accounts and answers on loopback only",
                "add an account with `lienthong user add`",
            )
        if request.method not in ("GET", "HEAD"):
            raise api.ApiError(
                403, "read_only", "this console has no accounts and is read-only", "add an account with `lienthong user add`"
            )
        request["account"] = ANONYMOUS
        return await handler(request)
    cookie = request.cookies.get(COOKIE)
    name = console.sessions.account_name(cookie)
    account = await asyncio.to_thread(console.accounts.get, name) if name else None
    if account is None or account.disabled:
        if request.path.startswith("/api/"):
            raise api.ApiError(401, "login_required", "log in first", "POST /login with name and password, then send the session cookie")
        raise web.HTTPFound(f"/login?next={request.path_qs}")
    if request.method not in ("GET", "HEAD"):
        token = request.headers.get("X-CSRF-Token")
        if token is None and request.content_type == "application/x-www-form-urlencoded":
            token = (await request.post()).get("_csrf")  # type: ignore[assignment]
        if not console.sessions.csrf_ok(cookie, token if isinstance(token, str) else None):
            raise api.ApiError(403, "csrf", "this form is stale or did not come from this console", "reload the page and try again")
    if request.path == SCRAPE and account.scoped:
        raise api.ApiError(
            403, "outside_scope", "/metrics shows the whole node", "scrape it from the node's machine, or log in with an unscoped account"
        )
    request["account"] = account
    request["csrf"] = console.sessions.csrf(cookie or "")
    return await handler(request)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:")
    return response


def account_of(request: web.Request) -> Account:
    return request["account"]  # type: ignore[no-any-return]


def build(console: Console) -> web.Application:
    app = web.Application(middlewares=[security_headers, errors, authenticate], client_max_size=1024 * 1024)
    app[CONSOLE] = console
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/metrics", metrics.metrics)
    routes.add(app)
    pages.add(app)
    return app


async def serve(console: Console) -> tuple[web.AppRunner, int, str]:
    """Start the console on `[web] listen`; returns the runner, the port bound and the URL."""
    context = check_exposure(console.settings, console.accounts)
    host, port = split_listen(console.settings.web.listen)
    runner = web.AppRunner(build(console), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=context, reuse_address=True)
    await site.start()
    server: Any = site._server  # aiohttp exposes the bound sockets only here
    bound = server.sockets[0].getsockname()[1] if server is not None and server.sockets else port
    scheme = "https" if context else "http"
    shown = f"[{host}]" if ":" in host else host
    return runner, bound, f"{scheme}://{shown}:{bound}/"


async def start_for_node(node: Any, store: Store, audit_log: AuditLog, changes: Any) -> web.AppRunner | None:
    """Start the console of a running node (`runtime.Node`) on `[web] listen`. A port already taken
    is logged and the node goes on without its console (replication must not stop for it); a
    non-loopback address without TLS or accounts refuses to start the node (ConfigError)."""
    listen = node.settings.web.listen
    console = Console(node.dir, node.settings, store, audit_log, Accounts(node.dir), Sessions(node.dir))
    console.runtime.update(port=node.port, notify=changes.notify)
    try:
        runner, node.web_port, url = await serve(console)
    except OSError as exc:
        node.log.error("web.unavailable", listen=listen, error=str(exc), hint="set [web] listen to a free port (0: any)")
        return None
    console.runtime["web_port"] = node.web_port
    node.log.info("web.listening", listen=listen, web_port=node.web_port, url=url)
    return runner
