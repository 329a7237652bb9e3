"""Test helpers: real node processes, bounded waits, a cuttable TCP proxy."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lienthong.sync import records
from lienthong.sync.store import Store

STORE_FILE = "lienthong.db"


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last value: {last!r})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str, check: bool = True, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the installed `lienthong` command (as a user would) and return its result."""
    out = subprocess.run(
        [sys.executable, "-m", "lienthong.node", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if check and out.returncode != 0:
        raise AssertionError(f"lienthong {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    return out


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def indicator_rows(unit: str, count: int, start: int = 0, indicator: str = "KTXH.MAU", agency: str = "") -> list[dict[str, Any]]:
    rows = []
    for i in range(start, start + count):
        rows.append(
            {
                "kind": "indicator",
                "indicator": f"{indicator}.{i % 50:02d}",
                "unit": unit,
                "period": f"{2000 + i // 600}-{(i // 50) % 12 + 1:02d}",
                "value": i,
                "agency": agency,
            }
        )
    return rows


def fill(node_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Write canonical rows into a node's store through the library (fast path for volume), sealed
    with the node's signing key as the node itself would."""
    from lienthong.config.settings import load
    from lienthong.node.runtime import open_store
    from lienthong.sync.clock import HybridClock

    store = open_store(node_dir, load(node_dir))
    try:
        clock = HybridClock(store.max_version())
        for start in range(0, len(rows), 10_000):
            store.write_local([records.build(store.node_id, r) for r in rows[start : start + 10_000]], clock)
    finally:
        store.close()


def versions(node_dir: Path, origin: str | None = None, seals: bool = False) -> set[tuple[bytes, int]]:
    """Every (record id, version) a node holds, optionally only one origin's; seals only if asked."""
    store = Store.open(node_dir / STORE_FILE)
    try:
        sql, args = "SELECT id, version FROM records WHERE (kind != ? OR ?)", (records.SEAL, seals)
        if origin is not None:
            sql, args = sql + " AND origin = ?", (*args, origin)
        return set(store.db.execute(sql, args).fetchall())
    finally:
        store.close()


def changelog_duplicates(node_dir: Path) -> int:
    """Change-log entries beyond one per stored version: a duplicate apply shows here."""
    store = Store.open(node_dir / STORE_FILE)
    try:
        return store.db.execute(
            "SELECT count(*) FROM (SELECT rid, version, count(*) n FROM changelog GROUP BY rid, version HAVING n > 1)"
        ).fetchone()[0]
    finally:
        store.close()


def status(node_dir: Path) -> dict[str, Any]:
    return json.loads(cli("status", "--dir", str(node_dir), "--json").stdout)


class NodeProcess:
    """A real `lienthong run` process; its log goes to DIR/run.log."""

    def __init__(self, node_dir: Path, env: dict[str, str] | None = None) -> None:
        self.dir = node_dir
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = node_dir / "run.log"

    def start(self) -> NodeProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lienthong.node", "run", "--dir", str(self.dir)],
            stdout=log,
            stderr=log,
            env={**os.environ, **self.env},
        )
        log.close()
        return self

    def kill(self) -> None:
        """SIGKILL: no chance to finish anything."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM and wait for the graceful exit; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def running(*procs: NodeProcess) -> Iterator[tuple[NodeProcess, ...]]:
    for p in procs:
        p.start()
    try:
        yield procs
    finally:
        for p in procs:
            with contextlib.suppress(Exception):
                p.stop()
            if p.alive():
                p.kill()


class TcpProxy:
    """A loopback TCP proxy whose connections can be cut at any moment, both ways."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.blocked = False
        self.bytes = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.blocked:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self.bytes += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def cut(self) -> None:
        """Reset every open connection in both directions."""
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        self.cut()


def reissue(cert_pem: bytes, ca_dir: Path, not_before_days: float, not_after_days: float) -> Any:
    """The same certificate (subject, key, extensions) signed again by the CA with another
    validity, in days from now (negative: in the past), and a new serial."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from lienthong.node.trust import ca

    old = x509.load_pem_x509_certificate(cert_pem)
    ca_key, ca_cert = ca.load_ca(ca_dir)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(ca_cert.subject)
        .public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=not_before_days))
        .not_valid_after(now + dt.timedelta(days=not_after_days))
    )
    for ext in old.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    return builder.sign(ca_key, hashes.SHA256())
