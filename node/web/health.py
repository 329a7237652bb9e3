"""/healthz: 200 when the node is healthy, else 503 with the reasons as JSON.

`check` is the one function that decides: the same judgement as `lienthong health` and the
Docker health check (node/health.py: store writable, disk room, certificate valid, the
parent accepts this node and was reached within `[health] max_silence`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ..health import assess
from .context import CONSOLE


def check(console: Any) -> list[str]:
    """The reasons the node is unhealthy (empty: healthy): `lienthong health`'s own judgement
    (node/health.py), without its gRPC probe (this process is the server). Blocking."""
    _, reasons, _ = assess(console.node_dir, console.settings, probe_server=False)
    return reasons


async def healthz(request: web.Request) -> web.Response:
    reasons = await asyncio.to_thread(check, request.app[CONSOLE])
    return web.json_response({"healthy": not reasons, "reasons": reasons}, status=503 if reasons else 200)
