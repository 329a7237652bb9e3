"""The disk the store lives on: how full it is, said before it fills (status, log) and when it does.

A full disk never loses data (a failed write rolls back; children and inbox files are taken
again), but it stops the node taking data, so the operator must hear of it early.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from structlog.typing import FilteringBoundLogger

MB = 1024 * 1024
CHECK_EVERY_S = 15.0


def disk_state(store: Path, min_free_mb: int) -> dict[str, Any]:
    """Free and total bytes of the disk holding `store`, the store's own size, and the problem if any."""
    node_dir = store.parent
    usage = shutil.disk_usage(node_dir)
    store_bytes = sum(p.stat().st_size for p in (store, Path(f"{store}-wal")) if p.exists())
    problem = None
    if usage.free < min_free_mb * MB:
        problem = (
            f"the disk holding {node_dir} is full" if usage.free < MB else f"the disk holding {node_dir} has {usage.free // MB} MB free"
        ) + f" (store.min_free_mb = {min_free_mb}): the node stops taking data when it is full; free space on that disk"
    return {"path": str(node_dir), "free_bytes": usage.free, "total_bytes": usage.total, "store_bytes": store_bytes, "problem": problem}


async def watch(store: Path, min_free_mb: int, log: FilteringBoundLogger, also: Callable[[], object] | None = None) -> None:
    """Log once when the disk runs low (and again when it fills), once when space returns.
    `also` runs (in a worker thread) at each check: the audit log writes what it held."""
    said: str | None = None
    while True:
        if also is not None:
            await asyncio.to_thread(also)
        state = await asyncio.to_thread(disk_state, store, min_free_mb)
        level = None if state["problem"] is None else ("full" if state["free_bytes"] < MB else "low")
        if level != said:
            if level is None:
                log.info("disk.ok", free_bytes=state["free_bytes"])
            else:
                log.error("disk.low", error=state["problem"], free_bytes=state["free_bytes"], hint="free space on that disk")
            said = level
        await asyncio.sleep(CHECK_EVERY_S)
