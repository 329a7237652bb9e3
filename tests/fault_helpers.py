"""Helpers for the fault-injection tests: cheap progress probes, the exact
exactly-once check (full record sets, not counts) and log reading."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .helpers import STORE_FILE, WAIT_SCALE, NodeProcess, changelog_duplicates, versions, wait_until

Versions = set[tuple[bytes, int]]


def _query(node_dir: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """A read on a (possibly running) node's store, without opening a `Store`."""
    conn = sqlite3.connect(node_dir / STORE_FILE, timeout=30)
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def count(node_dir: Path, origin: str | None = None) -> int:
    """How many records a node holds (optionally only one origin's): a fast progress probe."""
    if origin is None:
        return int(_query(node_dir, "SELECT count(*) FROM records")[0][0])
    return int(_query(node_dir, "SELECT count(*) FROM records WHERE origin = ?", (origin,))[0][0])


def head(node_dir: Path) -> int:
    return int(_query(node_dir, "SELECT coalesce(max(seq), 0) FROM changelog")[0][0])


def applied(parent: Path, child: str) -> int:
    """The child's change-log sequence the parent durably applied (0 if unknown)."""
    rows = _query(parent, "SELECT applied FROM children WHERE child = ?", (child,))
    return int(rows[0][0]) if rows else 0


def own(*nodes: Path) -> Versions:
    """The union of what each node wrote itself: what its ancestors must hold exactly."""
    out: Versions = set()
    for node in nodes:
        out |= versions(node, origin=node.name)
    return out


def latest(*sets: Versions) -> Versions:
    """Keep only the newest version of each record id (what a node stores)."""
    best: dict[bytes, int] = {}
    for s in sets:
        for rid, version in s:
            if version > best.get(rid, 0):
                best[rid] = version
    return set(best.items())


def check_alive(procs: Iterable[NodeProcess]) -> None:
    """Fail at once (with the logs) if a node process died that the test did not stop."""
    procs = list(procs)
    dead = [p for p in procs if p.proc is not None and p.proc.poll() is not None]
    if dead:
        names = ", ".join(f"{p.dir.name} (exit {p.proc.returncode})" for p in dead if p.proc is not None)
        raise AssertionError(f"node process died: {names}\n{log_excerpt(procs)}")


def wait_alive(predicate: Callable[[], Any], procs: Iterable[NodeProcess], timeout: float = 30, what: str = "condition") -> Any:
    """`wait_until`, failing at once if one of `procs` died meanwhile."""
    procs = list(procs)

    def probe() -> Any:
        check_alive(procs)
        return predicate()

    return wait_until(probe, timeout=timeout, what=what)


def _progress(read: Callable[[], int], low: int, high: int, procs: Iterable[NodeProcess], timeout: float, what: str) -> int:
    procs = list(procs)

    def probe() -> int:
        check_alive(procs)
        n = read()
        if n >= high:
            raise AssertionError(f"{what} got to {n} records before the fault could be injected (< {high})")
        return n if n >= low else 0

    return int(wait_until(probe, timeout=timeout, interval=0.02, what=what))


def progress_between(
    node_dir: Path, origin: str, low: int, high: int, procs: Iterable[NodeProcess] = (), timeout: float = 60, what: str = ""
) -> int:
    """Wait until `node_dir` holds at least `low` and fewer than `high` of `origin`'s
    records (a stream caught mid-flight). Fails if the stream got past `high` first."""
    return _progress(lambda: count(node_dir, origin), low, high, procs, timeout, what or f"{low}..{high} records of {origin}")


def progress_total(node_dir: Path, low: int, high: int, procs: Iterable[NodeProcess] = (), timeout: float = 60, what: str = "") -> int:
    """Like `progress_between`, over all records of `node_dir`."""
    return _progress(lambda: count(node_dir), low, high, procs, timeout, what or f"{low}..{high} records at {node_dir.name}")


def diff(actual: Versions, expected: Versions) -> str:
    missing, extra = expected - actual, actual - expected
    stale = {rid for rid, _ in missing} & {rid for rid, _ in extra}
    return (
        f"{len(actual)} held, {len(expected)} expected: {len(missing)} missing, {len(extra)} unexpected "
        f"({len(stale)} of them the same record at another version); e.g. missing {sorted(missing)[:3]}"
    )


def log_excerpt(procs: Iterable[NodeProcess], lines: int = 15) -> str:
    """The last warnings and errors of each node's log (and the tail of a dead one's), for failure messages."""
    out = []
    for p in procs:
        text = p.log().splitlines()
        bad = [line for line in text if '"level": "warning"' in line or '"level": "error"' in line]
        tail = text[-6:] if not p.alive() else []
        out.append(f"--- {p.dir.name} (alive={p.alive()}):\n" + "\n".join(line[:400] for line in [*bad[-lines:], "...", *tail]))
    return "\n".join(out)


def wait_converged(node: Path, expected: Versions, procs: Iterable[NodeProcess], timeout: float = 90) -> None:
    """Wait until `node` holds exactly `expected`; on timeout say what differs and show the logs."""
    procs = list(procs)

    def done() -> bool:
        check_alive(procs)
        return versions(node) == expected

    try:
        wait_until(done, timeout=timeout, interval=0.25, what=f"{node.name} to hold exactly the expected records")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{node.name}: {diff(versions(node), expected)}\n{log_excerpt(procs)}") from None


def pending(node_dir: Path) -> int:
    """Own change-log entries the parent has not acknowledged (what `status` shows as pending)."""
    sql = "SELECT count(*) FROM changelog WHERE up = 1 AND seq > (SELECT acked FROM uplink)"
    return int(_query(node_dir, sql)[0][0])


def wait_caught_up(children: Iterable[Path], procs: Iterable[NodeProcess] = (), timeout: float = 60) -> None:
    """Wait until every child's parent acknowledged all of its change log (nothing pending)."""
    procs = list(procs)

    def done(child: Path) -> bool:
        check_alive(procs)
        return pending(child) == 0

    for child in children:
        wait_until(lambda c=child: done(c), timeout=timeout, interval=0.1, what=f"{child.name}: nothing pending")


def wait_links_up(procs: Iterable[NodeProcess], since: dict[Path, int], timeout: float = 60) -> None:
    """Wait until each (child) process logged its uplink's `link.up` after byte offset
    `since[dir]` of its log: a fresh session (the store's `connected` flag may be stale
    after a SIGKILL)."""
    procs = list(procs)
    for p in procs:

        def up(p: NodeProcess = p) -> bool:
            check_alive(procs)
            return any("down_applied" in e for e in events(p, "link.up", since.get(p.dir, 0)))  # the uplink's, not a child's

        wait_until(up, timeout=timeout, interval=0.1, what=f"{p.dir.name}: a new session with its parent")


def assert_exactly_once(node: Path, expected: Versions, every: Iterable[Path]) -> None:
    """Zero lost, zero duplicated: the full record set matches and no node logged a version twice."""
    actual = versions(node)
    assert actual == expected, f"{node.name}: {diff(actual, expected)}"
    dups = {n.name: changelog_duplicates(n) for n in every}
    assert all(v == 0 for v in dups.values()), f"duplicate change-log entries (a version applied twice): {dups}"


def events(proc: NodeProcess, event: str, since: int = 0) -> list[dict[str, Any]]:
    """The node's JSON log entries named `event`, from byte offset `since` of its log."""
    text = proc.log_path.read_bytes()[since:].decode(errors="replace") if proc.log_path.exists() else ""
    out = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("event") == event:
                out.append(entry)
    return out


def log_size(proc: NodeProcess) -> int:
    return proc.log_path.stat().st_size if proc.log_path.exists() else 0


def versions_where(node_dir: Path, where: str, args: tuple[Any, ...] = ()) -> Versions:
    """(record id, version) of a node's records matching an SQL condition on `records`."""
    return set(_query(node_dir, f"SELECT id, version FROM records WHERE {where}", args))


def terminate(proc: NodeProcess) -> None:
    """SIGTERM without waiting (several nodes can then shut down at once)."""
    assert proc.proc is not None
    if proc.proc.poll() is None:
        proc.proc.send_signal(signal.SIGTERM)


def wait_exited(procs: Iterable[NodeProcess], timeout: float = 30) -> None:
    """Wait for processes sent SIGTERM to exit, and require a clean exit."""
    for p in procs:
        assert p.proc is not None
        code = p.proc.wait(timeout=timeout * WAIT_SCALE)
        assert code == 0, f"{p.dir.name} exited {code} on SIGTERM:\n{p.log()[-3000:]}"


def stop_all(procs: Iterable[NodeProcess]) -> None:
    """Stop every node gracefully at the same time (a parent's shutdown can take its grace period)."""
    procs = list(procs)
    for p in procs:
        terminate(p)
    wait_exited(procs)
