"""Keeping the read tables (read_tables.py) in step in the background, off the apply path.

A running node writes records in group commits (a child's batch, an agency file, what the
parent sends down); the read tables are not kept inside those transactions. `keep_up` wakes
when the store changes (`Changes`), lets a burst of commits gather for up to `interval`
seconds, and catches the tables up from their checkpoint in short transactions of their own
(`Store.catch_up_read_tables`). Readers do not wait for it: each catches up before it reads
(`Store.fresh_read_tables`), so the lag is never shown, and the work a reader finds left is at
most one interval of writes. A crash loses nothing: the checkpoint commits with the rows it
covers, and the next pass (at the next start at the latest) resumes from it.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from .errors import StoreError
from .replication import Changes
from .store import Store

log = structlog.get_logger("lienthong.sync")

# At most one catch-up per this many seconds while writes keep coming: a stream's commits are
# taken into the tables in a few large transactions rather than one small one per batch.
INTERVAL = 1.0
# Writes by another process (the CLI's `ingest`) signal no `Changes`: polled this often.
POLL = 5.0


async def keep_up(store: Store, changes: Changes, interval: float = INTERVAL, poll: float = POLL) -> None:
    """Run until cancelled: catch the read tables up now, then after each burst of changes."""
    while True:
        started = time.monotonic()
        await catch_up(store)
        await changes.wait(poll)
        rest = interval - (time.monotonic() - started)
        if rest > 0:
            await asyncio.sleep(rest)


async def catch_up(store: Store) -> int:
    """One catch-up pass in a worker thread; a store that cannot be written now (a full disk) is
    logged and tried again on the next pass. Returns how many change-log entries were read."""
    try:
        return await asyncio.to_thread(store.catch_up_read_tables)
    except StoreError as exc:
        log.error("read_tables.catch_up_failed", error=exc.message, hint=exc.hint)
        return 0
