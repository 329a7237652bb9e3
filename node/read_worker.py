"""The read tables' upkeep in a process of its own, on another core than the apply path.

A running node starts `python -m lienthong.node.read_worker STORE` and writes a byte to its
stdin after commits; the worker catches the read tables up (`read_upkeep.follow`: the same
loop, bursts gathered for up to a second) in short transactions of its own. It exits when its
stdin closes: when the node stops, and when the node dies (SIGKILL closes the pipe too), so it
never outlives the node by more than one pass (it runs in a session of its own, so Ctrl+C in a
terminal stops the node, which then closes the pipe). What it cannot do (a full disk) comes back as
JSON lines on its stdout that the node logs as its own events. A worker that dies is started
again after a pause; readers never see its lag either way, since each catches the tables up
itself before reading (`Store.fresh_read_tables`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import sys
from pathlib import Path
from typing import Any

from lienthong.sync import read_upkeep
from lienthong.sync.errors import LienthongError, StoreError
from lienthong.sync.replication import Changes
from lienthong.sync.store import Store

RESTART_PAUSE = 5.0  # seconds before a worker that died is started again
STOP_WAIT = 10.0  # seconds a stopping worker gets to finish its pass before it is killed


async def keep_up(path: Path, changes: Changes, log: Any) -> None:
    """Run until cancelled: a worker process following the store at `path`, woken by `changes`."""
    while True:
        # A session of its own: Ctrl+C in a terminal reaches the node's process group, not the
        # worker (it printed a KeyboardInterrupt traceback); the node ends it by closing the pipe.
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "lienthong.node.read_worker",
            str(path),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        assert worker.stdin is not None and worker.stdout is not None
        relay = asyncio.create_task(_relay(worker.stdout, log))
        try:
            seen = changes.generation
            while worker.returncode is None:
                await changes.wait(read_upkeep.POLL)
                if changes.generation != seen:
                    seen = changes.generation
                    worker.stdin.write(b".")
                    await worker.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the worker died: said below, and started again
        finally:
            worker.stdin.close()
            try:
                await asyncio.wait_for(worker.wait(), STOP_WAIT)
            except TimeoutError:
                worker.kill()
                await worker.wait()
            await relay
        log.warning("read_tables.worker_exited", code=worker.returncode, hint="started again; readers catch the tables up themselves")
        await asyncio.sleep(RESTART_PAUSE)


async def _relay(lines: asyncio.StreamReader, log: Any) -> None:
    while line := await lines.readline():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            log.error(event.pop("event"), **event)


def _wake(timeout: float) -> bool:
    """Wait up to `timeout` for the node's signal; False once the node is gone (stdin closed)."""
    ready, _, _ = select.select([0], [], [], timeout)
    return not ready or bool(os.read(0, 4096))


def _writing() -> bool:
    """Whether the node signalled a commit that this worker has not yet taken as a wake."""
    ready, _, _ = select.select([0], [], [], 0)
    return bool(ready)


def _said(exc: StoreError) -> None:
    print(json.dumps({"event": "read_tables.catch_up_failed", "error": exc.message, "hint": exc.hint}), flush=True)


def main(argv: list[str]) -> int:
    try:
        store = Store.open(Path(argv[0]))
    except LienthongError as exc:
        print(json.dumps({"event": "read_tables.worker_failed", "error": exc.message, "hint": exc.hint}), flush=True)
        return 1
    try:
        read_upkeep.follow(store, _wake, _said, writing=_writing)
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
