"""/healthz: 200 when the node is healthy, else 503 with the reasons as JSON.

`check` is the one function that decides; it calls the existing logic of `lienthong health`
(node/healthcheck.py: the node's own gRPC health service over mTLS) and checks that the store
answers. A fuller check (store writable, parent accepts, parent reached within
[health] max_silence) replaces `check` alone: nothing else here needs to change.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from lienthong.sync.errors import LienthongError

from .context import CONSOLE


def check(console: Any) -> list[str]:
    """The reasons the node is unhealthy (empty: healthy). Blocking."""
    from ..healthcheck import check as grpc_check
    from ..runtime import tls_paths

    reasons = []
    try:
        console.store.reader().execute("SELECT 1 FROM meta LIMIT 1").fetchone()
    except Exception as exc:
        reasons.append(f"the store does not answer: {exc}")
    port = console.runtime.get("port")
    if port:
        settings = console.settings
        try:
            grpc_check(f"127.0.0.1:{port}", tls_paths(console.node_dir, settings).load(), settings.node.id, 3.0)
        except LienthongError as exc:
            reasons.append(exc.message)
    return reasons


async def healthz(request: web.Request) -> web.Response:
    reasons = await asyncio.to_thread(check, request.app[CONSOLE])
    return web.json_response({"healthy": not reasons, "reasons": reasons}, status=503 if reasons else 200)
