"""Whether a node is healthy, and why not: the one judgement `lienthong health`, the Docker
HEALTHCHECK and the console's `/healthz` share.

`assess(node_dir, settings)` returns `(healthy, reasons, details)`. A node is healthy when

- it runs (it holds its run lock);
- its store can be written: a small write is committed (the meta key `health_probe`), and the
  disk holding it has room (`[store] min_free_mb`);
- its certificate has not expired;
- when it listens: its replication server answers the gRPC health check over mTLS, with the
  node's own certificate, as a child would reach it;
- when it has a parent: the parent did not refuse it at its last handshake (a revoked or
  unknown certificate, the wrong parent), and it reached the parent within
  `[health] max_silence` seconds. A link that is up counts as reached now; otherwise the
  silence runs from the last contact, or from the node's start when it never reached it.

A PostgreSQL sink that cannot write, or is far behind, is a warning (`details["warnings"]`),
not a reason: the node itself is healthy.

Each failed condition adds one sentence to `reasons`; `details` holds what was measured (JSON-able,
stable names). Blocking: call it from a worker thread inside a running event loop.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from lienthong.config.settings import Settings
from lienthong.sync.clock import MAX_SKEW_MS
from lienthong.sync.errors import LienthongError
from lienthong.sync.store import Store
from lienthong.sync.upstream import Upstream

from . import sink_task
from .disk import disk_state
from .runtime import STORE_FILE, running_info, tls_paths
from .status import clock_warning
from .trust.tls import certificate_summary

PROBE_KEY = "health_probe"

Health = tuple[bool, list[str], dict[str, Any]]


def _iso(ts: float | None) -> str | None:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds") if ts else None


def _seconds(value: float) -> str:
    value = int(value)
    if value >= 7200:
        return f"{value / 3600:.1f} hours"
    if value >= 120:
        return f"{value // 60} minutes"
    return f"{value} s"


def assess(node_dir: Path, settings: Settings, *, now: float | None = None, timeout: float = 3.0, probe_server: bool = True) -> Health:
    """The node's health, from its directory and configuration (see the module docstring).
    `probe_server=False` skips the gRPC health check (a caller inside the node process)."""
    now = time.time() if now is None else now
    reasons: list[str] = []
    info = running_info(node_dir)
    details: dict[str, Any] = {
        "node": settings.node.id,
        "running": info is not None,
        "checked_at": _iso(now),
    }
    if info is None:
        reasons.append(f"the node in {node_dir} is not running")
    store = _store(node_dir, settings.store.min_free_mb, now, timeout, reasons, details)
    try:
        _certificate(node_dir, settings, now, reasons, details)
        if info is not None and info.get("port") and probe_server:
            _server(node_dir, settings, int(info["port"]), timeout, reasons, details)
        if settings.parent.address and store is not None:
            _parent(store, settings, info, now, reasons, details)
        if settings.sink.postgres.dsn:
            # The PostgreSQL sink is a warning, never a failure: replication and the inbox go on without it.
            details["sink"] = sink_task.state_of(node_dir, settings, store.head() if store is not None else None)
            details["warnings"] = [details["sink"]["warning"]] if details["sink"]["warning"] else []
    finally:
        if store is not None:
            store.close()
    return not reasons, reasons, details


def _store(node_dir: Path, min_free_mb: int, now: float, timeout: float, reasons: list[str], details: dict[str, Any]) -> Store | None:
    out: dict[str, Any] = {"writable": False, "free_bytes": None}
    details["store"] = out
    store = None
    try:
        store = Store.open(node_dir / STORE_FILE)
        # Wait for the node's writer at most `timeout` (a store locked longer is not writable now).
        store.db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        store.set_meta(PROBE_KEY, _iso(now) or "")
        out["writable"] = True
    except LienthongError as exc:
        reasons.append(f"the store cannot be written: {exc.message}")
    except Exception as exc:  # sqlite3.Error, OSError: whatever stops the write is the reason
        reasons.append(f"the store cannot be written: {exc}")
    try:
        disk = disk_state(node_dir / STORE_FILE, min_free_mb)
        out["free_bytes"] = disk["free_bytes"]
        if disk["problem"]:
            reasons.append(disk["problem"])
    except OSError as exc:
        reasons.append(f"the free space of {node_dir} cannot be read: {exc.strerror}")
    return store


def _certificate(node_dir: Path, settings: Settings, now: float, reasons: list[str], details: dict[str, Any]) -> None:
    path = tls_paths(node_dir, settings).cert
    try:
        summary = certificate_summary(path)
    except (OSError, ValueError) as exc:
        reasons.append(f"this node's certificate {path} cannot be read: {exc}")
        details["certificate"] = None
        return
    details["certificate"] = summary
    if dt.datetime.fromisoformat(summary["not_after"]).timestamp() < now:
        reasons.append(f"this node's certificate expired on {summary['not_after'][:10]}")


def _server(node_dir: Path, settings: Settings, port: int, timeout: float, reasons: list[str], details: dict[str, Any]) -> None:
    from .healthcheck import check  # grpc: only when the node listens

    details["server"] = {"port": port, "answered": False}
    try:
        check(f"127.0.0.1:{port}", tls_paths(node_dir, settings).load(), settings.node.id, timeout)
        details["server"]["answered"] = True
    except LienthongError as exc:
        reasons.append(exc.message)


def _parent(store: Store, settings: Settings, info: dict[str, Any] | None, now: float, reasons: list[str], details: dict[str, Any]) -> None:
    up = Upstream(store)
    state = up.uplink_state()
    refusal = up.refusal()
    connected = bool(info is not None and state["connected"])
    last_contact = state["last_contact"] or None
    max_silence = settings.health.max_silence
    if connected:
        silence = 0.0
    elif last_contact:
        silence = max(now - last_contact, 0.0)
    elif info is not None and info.get("started"):
        silence = max(now - float(info["started"]), 0.0)
    else:
        silence = None
    details["parent"] = {
        "address": settings.parent.address,
        "id": state["parent_id"] or None,
        "connected": connected,
        "last_contact": _iso(last_contact),
        "silence_s": None if silence is None else round(silence),
        "max_silence_s": max_silence,
        "refused": refusal["reason"] if refusal else None,
        "refused_at": _iso(refusal.get("at")) if refusal else None,
        # This node's clock minus its parent's at the last handshake (positive: ahead).
        "clock_offset_s": None if state["clock_offset_ms"] is None else round(-state["clock_offset_ms"] / 1000),
    }
    offset_ms = None if state["clock_offset_ms"] is None else -state["clock_offset_ms"]
    if offset_ms is not None and abs(offset_ms) > MAX_SKEW_MS:
        reasons.append(clock_warning("this node's clock", offset_ms, "its parent's") or "")
    if refusal is not None and not connected:
        reasons.append(f"the parent refuses this node: {refusal['reason']}")
    if silence is None:
        reasons.append(f"this node has never reached its parent at {settings.parent.address}")
    elif silence > max_silence:
        since = f"since {_iso(last_contact)}" if last_contact else "since the node started"
        reasons.append(
            f"this node has not reached its parent at {settings.parent.address} {since} ({_seconds(silence)}; "
            f"health.max_silence is {_seconds(max_silence)})"
        )
