"""Keeping the read tables (read_tables.py) in step in the background, off the apply path.

A running node writes records in group commits (a child's batch, an agency file, what the
parent sends down); the read tables are not kept inside those transactions. The upkeep wakes
when the store changes, lets a burst of commits gather for up to `interval` seconds, and
catches the tables up from their checkpoint in short transactions of their own
(`Store.catch_up_read_tables`). `follow` is that loop, run by the node's worker process
(node/read_worker.py: another core than the apply path); `catch_up` is one pass from the
node's own event loop (at its stop). Readers do not wait for it: each catches up before it reads
(`Store.fresh_read_tables`), so the lag is never shown, and the work a reader finds left is at
most one interval of writes. A crash loses nothing: the checkpoint commits with the rows it
covers, and the next pass (at the next start at the latest) resumes from it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from .errors import StoreError
from .store import Store

log = structlog.get_logger("lienthong.sync")

# At most one catch-up per this many seconds while writes keep coming: a stream's commits are
# taken into the tables in a few large transactions rather than one small one per batch.
INTERVAL = 1.0
# Writes by another process (the CLI's `ingest`) wake nobody: polled this often.
POLL = 5.0
# While the node is writing: change-log entries per catch-up transaction (about 0.1 s of the
# write lock), and the pause between them, longer than SQLite's longest sleep between tries.
STEP = 5_000
YIELD = 0.12


async def catch_up(store: Store) -> int:
    """One catch-up pass in a worker thread; a store that cannot be written now (a full disk) is
    logged and tried again on the next pass. Returns how many change-log entries were read."""
    try:
        return await asyncio.to_thread(store.catch_up_read_tables)
    except StoreError as exc:
        log.error("read_tables.catch_up_failed", error=exc.message, hint=exc.hint)
        return 0


def follow(
    store: Store,
    wake: Callable[[float], bool],
    failed: Callable[[StoreError], None],
    interval: float = INTERVAL,
    poll: float = POLL,
    writing: Callable[[], bool] = lambda: False,
) -> None:
    """Catch the read tables up now, then after each wake, until `wake` (which waits at most its
    argument in seconds) returns False: the writer is gone. A pass that cannot write (a full disk)
    is reported to `failed` and tried again on the next wake or poll.

    The records' writer comes first. The catch-up takes STEP entries a transaction and, while
    `writing()` says the node committed during this pass, pauses YIELD seconds between them:
    SQLite has one write lock and no queue for it, and a writer waiting for it sleeps between
    tries (up to 0.1 s each), so back-to-back catch-up transactions kept a child's stream
    waiting for up to 2 s."""

    def between() -> None:
        if writing():
            time.sleep(YIELD)

    while True:
        started = time.monotonic()
        try:
            store.catch_up_read_tables(STEP, between)
        except StoreError as exc:
            failed(exc)
        if not wake(poll):
            return
        rest = interval - (time.monotonic() - started)
        if rest > 0:
            time.sleep(rest)
