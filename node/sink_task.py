"""The PostgreSQL sink inside `lienthong run`: its own thread, steps with backoff, its state.

The thread reads the store through its own read-only connection and writes only to
PostgreSQL, so the node's writer (replication, the inbox) never waits for it. A step that
fails (PostgreSQL stopped or refusing, the network lost, its disk full) is retried after
1, 2, 4 … 60 seconds; nothing is lost, since the checkpoint stays in PostgreSQL with the rows
it covers (node/pg_sink.py). After every step the thread writes `sink.json` in the node
directory: `status`, `health`, `/metrics` and `lienthong sink status` read it (`state_of`).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from lienthong.config.settings import PostgresSinkSettings, Settings
from lienthong.sync.errors import ConfigError

from . import pg_sink

STATE_FILE = "sink.json"
IDLE = 1.0  # seconds between looks at the store when PostgreSQL is in step
MAX_BACKOFF = 60.0
WARN_LAG = 100_000  # change-log entries behind before health warns


def password(config: PostgresSinkSettings) -> str | None:
    """The password from `password_file` or `password_env`; None leaves it to libpq."""
    if config.password_file:
        try:
            return Path(config.password_file).read_text(encoding="utf-8").strip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"sink.postgres.password_file {config.password_file} cannot be read: {exc.strerror}",
                "write the PostgreSQL password in that file (one line), readable by the node's user",
            ) from None
    if config.password_env:
        if config.password_env not in os.environ:
            raise ConfigError(
                f"sink.postgres.password_env names {config.password_env}, which is not set",
                f"set {config.password_env} in the node's environment",
            )
        return os.environ[config.password_env]
    return None


def connect(config: PostgresSinkSettings) -> Any:
    import psycopg  # only a node with a sink loads the PostgreSQL driver

    # Keepalives: a network lost mid-step is noticed in about half a minute, not hours.
    return psycopg.connect(
        config.dsn,
        password=password(config),
        autocommit=True,
        connect_timeout=10,
        keepalives=1,
        keepalives_idle=10,
        keepalives_interval=5,
        keepalives_count=3,
        application_name="lienthong sink",
    )


# What an error's SQLSTATE means to the operator, said before PostgreSQL's own words (which name
# a file under pg_tblspc/… and may not say which disk).
_MEANINGS = {
    "53100": "PostgreSQL's disk is full",  # disk_full: the tables' tablespace (or the server's data) has no room
    "53200": "PostgreSQL is out of memory",
    "57P01": "PostgreSQL is shutting down",  # admin_shutdown: the connection was closed by a stop
}


def one_line(exc: BaseException) -> str:
    """An error from psycopg or the network as one readable line."""
    if isinstance(exc, ConfigError):
        return exc.message
    lines = [" ".join(line.split()) for line in str(exc).splitlines() if line.strip()]
    text = "; ".join(dict.fromkeys(lines)) or type(exc).__name__
    meaning = _MEANINGS.get(getattr(exc, "sqlstate", None) or "")
    return (f"{meaning}: {text}" if meaning else text)[:300]


def write_state(node_dir: Path, state: dict[str, Any]) -> None:
    path = node_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def state_of(node_dir: Path, settings: Settings, head: int | None = None) -> dict[str, Any] | None:
    """The sink as `status` shows it (None when the node has none): what the running node
    wrote last, with the lag against the store's change-log head `head`."""
    if not settings.sink.postgres.dsn:
        return None
    try:
        saved = json.loads((node_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        saved = {}
    position = saved.get("position")
    lag = None if head is None or position is None else max(0, head - int(position))
    out = {
        "configured": True,
        "state": saved.get("state", "not started"),
        "position": position,
        "lag": lag,
        "rows": saved.get("rows", 0),
        "last_success": saved.get("last_success"),
        "last_error": saved.get("last_error"),
        "last_error_at": saved.get("last_error_at"),
        "warning": None,
    }
    if out["state"] == "retrying":
        out["warning"] = f"the PostgreSQL sink cannot write: {out['last_error']}"
    elif lag is not None and lag > WARN_LAG:
        out["warning"] = f"the PostgreSQL sink is {lag:,} change-log entries behind"
    return out


def describe(state: dict[str, object] | None) -> str:
    """One line about the sink, for `sink status` and `status`."""
    if state is None:
        return "PostgreSQL sink: not configured ([sink.postgres] dsn)"
    line = f"PostgreSQL sink: {state['state']}, position {state['position']}, lag {state['lag']} change-log entries"
    if state["last_success"]:
        line += f", last step {state['last_success']}"
    if state["state"] == "retrying":
        line += f"; last error ({state['last_error_at']}): {state['last_error']}"
    return line


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class SinkThread(threading.Thread):
    """Steps until stopped; never raises (every failure is logged, kept in sink.json, retried)."""

    def __init__(self, node_dir: Path, store_path: Path, settings: Settings, log: Any) -> None:
        super().__init__(name="postgres-sink", daemon=True)
        self.node_dir, self.store_path, self.config, self.log = node_dir, store_path, settings.sink.postgres, log
        self.stopping = threading.Event()
        self.state: dict[str, Any] = {"state": "starting", "rows": 0, "last_error": None, "last_error_at": None, "last_success": None}
        try:
            old = json.loads((node_dir / STATE_FILE).read_text())
            self.state.update({k: old.get(k) for k in ("position", "last_error", "last_error_at", "last_success")})
        except (OSError, ValueError):
            pass

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        backoff = 1.0
        pg = sq = None
        while not self.stopping.is_set():
            try:
                if pg is None or pg.closed:
                    pg = connect(self.config)
                if sq is None:
                    sq = pg_sink.open_store(self.store_path)
                done = pg_sink.step(pg, sq, self.config.batch)
                backoff = 1.0
                self._saved(done)
                if done.position >= done.head:
                    self.stopping.wait(IDLE)
            except Exception as exc:  # PostgreSQL, network, disk: retried, never fatal to the node
                message = one_line(exc)
                if message != self.state.get("last_error") or self.state.get("state") != "retrying":
                    self.log.warning("sink.error", error=message, retry_in=backoff)
                self.state.update(state="retrying", last_error=message, last_error_at=_iso(time.time()))
                self._write()
                if pg is not None:
                    pg.close()
                pg = None
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
        if pg is not None:
            pg.close()
        if sq is not None:
            sq.close()

    def _saved(self, done: pg_sink.Step) -> None:
        if self.state.get("state") == "retrying":
            self.log.info("sink.recovered", position=done.position)
        if done.rows or done.full:
            self.log.info("sink.step", position=done.position, head=done.head, rows=done.rows, full=done.full)
        self.state.update(state="ok", position=done.position, last_success=_iso(time.time()))
        self.state["rows"] = int(self.state.get("rows") or 0) + done.rows
        self._write()

    def _write(self) -> None:
        try:
            write_state(self.node_dir, self.state)
        except OSError as exc:
            self.log.warning("sink.state_unwritable", error=str(exc))


async def run(node_dir: Path, store_path: Path, settings: Settings, log: Any) -> None:
    """The sink as one of `lienthong run`'s tasks: starts the thread, stops it when cancelled."""
    thread = SinkThread(node_dir, store_path, settings, log)
    thread.start()
    try:
        await asyncio.Event().wait()  # until the node stops (cancelled)
    finally:
        thread.stop()
        await asyncio.to_thread(thread.join, 15)
