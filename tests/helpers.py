"""Test helpers: real node processes, bounded waits, a cuttable TCP proxy.

Every process a test starts goes through `NodeProcess`, which registers it: the autouse
fixture in conftest.py stops it (SIGTERM, then SIGKILL after a bounded wait) even when the test
fails, and shows the tail of its log in the failure report. Each process carries
`SESSION_MARK` in its environment, so the session's safety net (`kill_leftovers`) finds exactly
this test process's leftovers, never another run's.

No test chooses a port: nodes listen on port 0 and report the port they bound (their run lock,
the same source as `status --json`'s `node.port`); `bound_port` reads it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lienthong.node.runtime import running_info
from lienthong.sync import records
from lienthong.sync.store import Store

STORE_FILE = "lienthong.db"
SESSION_MARK = "LIENTHONG_TEST_SESSION"
SESSION_ID = uuid.uuid4().hex  # one per pytest process (each xdist worker has its own)
LOG_TAIL = 60  # lines of each node's log shown when a test fails
# Deadlines are written for an idle machine. On a loaded one (CI, two xdist workers, other jobs)
# everything takes longer, and a bounded wait returns as soon as its condition holds anyway, so
# every deadline is stretched by this factor: a slow machine waits longer, a broken test still fails.
WAIT_SCALE = float(os.environ.get("LIENTHONG_TEST_WAIT_SCALE", "4"))
STOP_WAIT = 10.0 * WAIT_SCALE  # seconds a SIGTERMed process gets before SIGKILL


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds (times `WAIT_SCALE`)."""
    timeout *= WAIT_SCALE
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last value: {last!r})")


def cli(
    *args: str, check: bool = True, env: dict[str, str] | None = None, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed `lienthong` command (as a user would) and return its result.

    Past `timeout` (times `WAIT_SCALE`) the command and every process it started (a demo's nodes)
    are killed together, and the test fails with what it printed.
    """
    argv = [sys.executable, "-m", "lienthong.node", *args]
    env = {**os.environ, **(env or {}), SESSION_MARK: SESSION_ID}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True, cwd=cwd)
    try:
        stdout, stderr = proc.communicate(timeout=timeout * WAIT_SCALE)
    except BaseException as exc:  # over time, or the test itself timed out or was interrupted
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        if isinstance(exc, subprocess.TimeoutExpired):
            raise AssertionError(f"lienthong {' '.join(args)} ran over {timeout * WAIT_SCALE:.0f} s:\n{stdout}\n{stderr}") from None
        raise
    out = subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)
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
    """Every (record id, version) a node holds, optionally only one origin's; seals only if asked.
    Copies of audit-log entries, which nodes write by themselves as they run, are left out, and
    so are the seals that cover them."""
    store = Store.open(node_dir / STORE_FILE)
    try:
        sql, args = "SELECT id, version FROM records WHERE (kind != ? OR ?) AND kind != ?", (records.SEAL, seals, records.AUDIT_ENTRY)
        if origin is not None:
            sql, args = sql + " AND origin = ?", (*args, origin)
        found = set(store.db.execute(sql, args).fetchall())
        if seals:
            audit = store.db.execute("SELECT envelope FROM records WHERE kind = ?", (records.AUDIT_ENTRY,)).fetchall()
            audit_seals = {records.Envelope.FromString(raw).seal for (raw,) in audit}
            found = {(rid, version) for rid, version in found if rid not in audit_seals}
        return found
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


# The processes and relays the current test started (reset when the next test starts; conftest.py's
# autouse fixture stops them and its report hook shows their logs).
STARTED: list[NodeProcess] = []
RELAYS: list[TcpProxy] = []


def bound_port(node_dir: Path, key: str = "port") -> int | None:
    """The port a running node bound (what `status --json` shows as `node.port`), or None."""
    info = running_info(node_dir)
    port = info.get(key) if info else None
    return int(port) if port else None


class NodeProcess:
    """A real `lienthong run` process (or `argv`); its output goes to DIR/run.log (or `log_name`)."""

    def __init__(self, node_dir: Path, env: dict[str, str] | None = None, argv: list[str] | None = None, log_name: str = "run.log") -> None:
        self.dir = node_dir
        self.env = env or {}
        self.argv = argv or [sys.executable, "-m", "lienthong.node", "run", "--dir", str(node_dir)]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = node_dir / log_name

    def start(self) -> NodeProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=log, env={**os.environ, **self.env, SESSION_MARK: SESSION_ID})
        if self not in STARTED:
            STARTED.append(self)
        return self

    def kill(self) -> None:
        """SIGKILL: no chance to finish anything."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = STOP_WAIT) -> int:
        """SIGTERM and wait for the graceful exit, SIGKILL after `timeout` s; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            return self.proc.wait(timeout=10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def port(self, key: str = "port", timeout: float = 60) -> int:
        """The port this node bound, once it runs (fails at once if it died)."""

        def probe() -> int | None:
            if not self.alive():
                raise AssertionError(f"{self.dir.name} exited ({self.proc and self.proc.returncode}) before binding:\n{self.tail()}")
            return bound_port(self.dir, key)

        return int(wait_until(probe, timeout=timeout, what=f"{self.dir.name} to report its bound {key}"))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = LOG_TAIL) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


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


def stop_started() -> None:
    """Stop every process the current test started, and close its relays (the autouse fixture's teardown)."""
    for p in STARTED:
        with contextlib.suppress(Exception):
            p.stop()
    for proxy in RELAYS:
        proxy.close()
    RELAYS.clear()


def leftovers() -> list[int]:
    """Live processes started by this test process (they carry its `SESSION_MARK`)."""
    needle = f"{SESSION_MARK}={SESSION_ID}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()  # empty for a zombie: already dead
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def workers_of(pid: int, module: bytes) -> list[int]:
    """The live processes running `python -m MODULE` whose parent is `pid` (a node's worker processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and module in (entry / "cmdline").read_bytes() and _parent(entry) == pid and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def _parent(entry: Path) -> int:
    return int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    """Alive and not a zombie (a zombie waits for its parent: a killed node's init to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_leftovers(wait: float = 10.0) -> list[int]:
    """The session's safety net: SIGTERM this session's leftover processes, SIGKILL those still there after `wait` s."""
    pids = leftovers()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = set(leftovers())
            pids = [p for p in pids if p in alive]
        if not pids:
            break
    return pids


def relay(node_dir: Path) -> TcpProxy:
    """A relay held by the test on a port the kernel chose, to wherever `node_dir`'s node runs now.

    Children are given this address: it exists before the parent starts and stays valid when the
    parent restarts on another port (it asks the node's run lock on every connection).
    """
    proxy = TcpProxy(lambda: bound_port(node_dir))
    RELAYS.append(proxy)
    return proxy


class TcpProxy:
    """A loopback TCP proxy whose connections can be cut at any moment, both ways."""

    def __init__(self, target: int | Callable[[], int | None]) -> None:
        """Forward to 127.0.0.1:`target`, or to the port `target()` answers at each new connection
        (None: nothing listens now, the connection is closed as a refused one would be)."""
        self.target = target
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.blocked = False
        self.bytes = 0
        self.rate = 0  # bytes/s each way and connection when set: a slow link (0: as fast as loopback)
        self.delay = 0.0  # seconds each chunk is held before it is passed on when set: a link with latency
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
            port = self.target() if callable(self.target) else self.target
            if self.blocked or not port:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
                upstream.settimeout(None)
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
                if self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
                if self.rate:
                    time.sleep(len(data) / self.rate)
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
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread; close() alone does not
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


def can_mount() -> bool:
    """Whether this process may mount a small disk (root with `mount`)."""
    return os.geteuid() == 0 and shutil.which("mount") is not None


def mount_tmpfs(path: Path, size: str) -> None:
    """Mount a tmpfs of `size` (`8m`) on the existing folder `path` (root only): a disk that really fills."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True)


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (root only), unmounted afterwards; skips the test when not root."""
    path.mkdir(parents=True)
    if not can_mount():
        pytest.skip("mounting a small disk needs root (scripts/test.sh runs as root in CI)")
    mount_tmpfs(path, size)
    try:
        yield path
    finally:
        unmount(path)


def fill_disk(ballast: Path) -> Path:
    """Fill the disk holding `ballast` to the last byte with that one file (delete it to free the disk).
    Used by the tests and by bench/soak.py's disk-full episodes."""
    with contextlib.suppress(OSError), ballast.open("wb") as filler:
        for block in (65536, 4096, 512, 64):
            with contextlib.suppress(OSError):
                while True:
                    filler.write(b"\0" * block)
                    filler.flush()
    return ballast
