"""Shared helpers for the lienthong benchmarks (not part of the product).

Everything here drives the product from outside: the `lienthong` CLI for
creating CAs and nodes and for running them, and the library (`Store`,
`records.build`) only to pre-fill stores quickly.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lienthong.node.trust.tls import NodeTlsPaths
from lienthong.sync import clock, records
from lienthong.sync.provenance import Signer, signing_key_path
from lienthong.sync.store import Store

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
VENV_BIN = Path(sys.executable).parent
LIENTHONG = str(VENV_BIN / "lienthong")
RESULTS = BENCH_DIR / "results"
STORE_FILE = "lienthong.db"
CHUNK = 10_000
PROVINCE_ID = "P86"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cache_compiled_modules() -> None:
    """Let this run, and every process it starts, keep compiled modules (.pyc) as an installed node
    does (pip compiles them at install). With PYTHONDONTWRITEBYTECODE set, each `lienthong` process
    a benchmark starts compiles its ~120 modules again: ≈ 0.2 s of CPU per process, charged to the
    figure being measured."""
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
        sys.dont_write_bytecode = False
        print("bench: PYTHONDONTWRITEBYTECODE is unset for this run: its processes keep compiled modules, as installed ones do")


cache_compiled_modules()


def code_under_test() -> str:
    """Which lienthong code this run imports (and the node processes it starts)."""
    import lienthong.sync.store as store_module

    where = Path(store_module.__file__).resolve().parent.parent
    if where == REPO:
        try:
            rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--", "sync", "node", "config", "adapters"], cwd=REPO, capture_output=True, text=True
            ).stdout.strip()
        except OSError:
            return str(where)
        return f"working tree {where} at {rev}" + (" with uncommitted changes in sync/node/config/adapters" if dirty else "")
    return f"snapshot {where}"


def command_line() -> str:
    """The exact command that is running, to print beside the figures."""
    cmd = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    pythonpath = os.environ.get("PYTHONPATH")
    return f"PYTHONPATH={shlex.quote(pythonpath)} {cmd}" if pythonpath else cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, cwd: Path | None = None) -> str:
    """Run a `lienthong` subcommand; raise with its output if it fails."""
    proc = subprocess.run([LIENTHONG, *args], capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        raise RuntimeError(f"lienthong {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def make_ca(root: Path) -> Path:
    ca = root / "ca"
    cli("ca", "init", str(ca))
    return ca


def init_province(root: Path, ca: Path, port: int, node_id: str = PROVINCE_ID) -> Path:
    d = root / "province"
    cli("init", "--dir", str(d), "--mode", "provincial", "--id", node_id, "--listen", f"127.0.0.1:{port}", "--ca", str(ca))
    return d


def init_district(root: Path, ca: Path, node_id: str, parent_port: int, parent_id: str = PROVINCE_ID) -> Path:
    d = root / f"child-{node_id}"
    cli(
        "init",
        "--dir",
        str(d),
        "--mode",
        "district",
        "--id",
        node_id,
        "--parent",
        f"127.0.0.1:{parent_port}",
        "--parent-id",
        parent_id,
        "--ca",
        str(ca),
    )
    return d


def set_replication(node_dir: Path, **values: Any) -> None:
    """Change [replication] settings in a node's lienthong.toml (batch_size, window, ...)."""
    import tomlkit

    path = node_dir / "lienthong.toml"
    doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    for key, value in values.items():
        if value is not None:
            doc["replication"][key] = value  # type: ignore[index]
    path.write_text(tomlkit.dumps(doc), encoding="utf-8")


# ---------------------------------------------------------------- records


def fields_for(unit: str, i: int, pad: int = 0) -> dict[str, Any]:
    """A canonical indicator line, unique per (unit, i)."""
    f: dict[str, Any] = {
        "kind": "indicator",
        "indicator": f"KTXH.NS.{i % 97:02d}",
        "unit": unit,
        "period": f"{2000 + (i // 12) % 27}-{i % 12 + 1:02d}",
        "disaggregation": f"d{i}",
        "value": round(i * 0.25 + 12.5, 2),
    }
    if pad:
        f["comment"] = ("Ghi chú số liệu " * (pad // 16 + 1))[:pad]
    return f


def prefill(store_path: Path, n: int, pad: int = 0, chunk: int = CHUNK, start: int = 0, tls: NodeTlsPaths | None = None) -> dict[str, Any]:
    """Write `n` local records into the store at `store_path` (the node must not run), sealed
    with the node's signing key as the node itself seals them (one seal per chunk).

    `tls`: the node's TLS files (default: the node directory's tls/). Returns how long it
    took, the store's change-log head and the envelope bytes.
    """
    t0 = time.monotonic()
    tls = tls or NodeTlsPaths(
        store_path.parent / "tls" / "ca.crt", store_path.parent / "tls" / "node.crt", store_path.parent / "tls" / "node.key"
    )
    store = Store.open(store_path)
    store.signer = Signer.load(store.node_id, signing_key_path(tls.key), tls.cert, tls.ca)
    try:
        origin = store.node_id
        hlc = clock.HybridClock(store.latest_version())
        for lo in range(start, start + n, chunk):
            hi = min(lo + chunk, start + n)
            keyed = [records.build(origin, fields_for(origin, i, pad)) for i in range(lo, hi)]
            store.write_local(keyed, hlc)
        # A node made by code whose read tables follow in the background would otherwise catch
        # them up while it streams: do it now, outside the clock, as older code did in each write.
        catch_up = getattr(store, "catch_up_read_tables", None)
        if catch_up is not None:
            catch_up()
        head = store.head()
    finally:
        store.close()
    info = store_facts(store_path)
    info["prefill_s"] = time.monotonic() - t0
    info["head"] = head
    return info


def store_facts(store_path: Path) -> dict[str, Any]:
    conn = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)
    try:
        n, nbytes = conn.execute("SELECT count(*), coalesce(sum(length(envelope)), 0) FROM records").fetchone()
    finally:
        conn.close()
    return {"records": n, "envelope_bytes": nbytes, "avg_envelope_bytes": (nbytes / n) if n else 0.0}


# ---------------------------------------------------------------- processes


class NodeProc:
    """A `lienthong run --dir D` process, its log in D/run.log."""

    def __init__(
        self, node_dir: Path, env: dict[str, str] | None = None, cache_mib: int | None = None, pragmas: list[str] | None = None
    ) -> None:
        self.dir = node_dir
        self.log_path = node_dir / "run.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        # cache_mib, pragmas: run through bench/_patched_node.py (what-if: other SQLite settings)
        patches = (["--cache-mib", str(cache_mib)] if cache_mib else []) + [a for p in pragmas or [] for a in ("--pragma", p)]
        prefix = [sys.executable, str(BENCH_DIR / "_patched_node.py"), *patches] if patches else [LIENTHONG]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [*prefix, "run", "--dir", str(node_dir)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.pid = self.proc.pid
        self.hwm_kb = 0
        self.cpu_s = 0.0
        self.workers_cpu_s: dict[str, float] = {}
        self.io: dict[str, int] = {}

    def wait_listening(self, timeout: float = 30.0) -> int:
        """Wait until the node wrote its port into its lock file."""
        deadline = time.monotonic() + timeout
        lock = self.dir / "node.lock"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                info = json.loads(lock.read_text() or "{}")
                if info.get("pid") == self.pid and info.get("port"):
                    return int(info["port"])
            except (OSError, json.JSONDecodeError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.dir} did not start listening within {timeout} s; see {self.log_path}")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"node {self.dir} exited with {self.proc.returncode}:\n{tail}")

    def sample(self) -> None:
        """Record peak RSS (VmHWM) and CPU time while the process lives."""
        hwm = vm_hwm_kb(self.pid)
        if hwm:
            self.hwm_kb = max(self.hwm_kb, hwm)
        cpu = cpu_seconds(self.pid)
        if cpu:
            self.cpu_s = cpu
        for pid, name in worker_processes(self.pid).items():
            seen = cpu_seconds(pid)
            if seen:
                self.workers_cpu_s[f"{name}:{pid}"] = seen
        io = proc_io(self.pid)
        if io:
            self.io = io

    def rss_kb(self) -> int:
        return proc_status_kb(self.pid, "VmRSS")

    def stop(self, timeout: float = 20.0) -> int | None:
        self.sample()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def proc_status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def proc_io(pid: int) -> dict[str, int]:
    """/proc/PID/io: wchar = bytes passed to write()/pwrite(), write_bytes = bytes sent to disk."""
    try:
        with open(f"/proc/{pid}/io") as f:
            return {k: int(v) for k, v in (line.split(":") for line in f)}
    except (OSError, ValueError):
        return {}


def vm_hwm_kb(pid: int) -> int:
    return proc_status_kb(pid, "VmHWM")


def worker_processes(parent: int) -> dict[int, str]:
    """The node's own worker processes (the read tables' upkeep, verification, a file's
    parsing), by pid: their module's last name."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) != parent:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        module = next((a.decode() for a in argv if a.startswith(b"lienthong.")), "")
        if module:
            found[int(entry.name)] = module.rsplit(".", 1)[-1]
    return found


def workers_cpu_line(workers: dict[str, float]) -> str:
    """'read_worker 5.6 s, verify_worker 3.4 s' (one worker of a name started again is summed)."""
    total: dict[str, float] = {}
    for key, cpu in workers.items():
        name = key.split(":", 1)[0]
        total[name] = total.get(name, 0.0) + cpu
    return ", ".join(f"{name} {cpu:.2f} s" for name, cpu in sorted(total.items())) or "none"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


class ProvinceWatch:
    """Polls the province's store (read-only) for how far each child is applied."""

    def __init__(self, store_path: Path) -> None:
        self._conn = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True, timeout=30)
        self._conn.execute("PRAGMA busy_timeout=30000")

    def applied(self) -> dict[str, int]:
        return dict(self._conn.execute("SELECT child, applied FROM children").fetchall())

    def read_tables_lag(self) -> int:
        """Change-log entries the province's read tables are behind (0 when in step, or for
        code that keeps them inside each commit)."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'read_tables_seq'").fetchone()
        head = self._conn.execute("SELECT coalesce(max(seq), 0) FROM changelog").fetchone()[0]
        return 0 if row is None else max(0, head - int(row[0]))

    def close(self) -> None:
        self._conn.close()


def start_profiler(pid: int, out: Path, duration: int, rate: int = 50) -> subprocess.Popen[bytes] | None:
    """Start `py-spy record` on `pid` (raw collapsed stacks), or None if py-spy is missing.

    BENCH_PYSPY_ARGS adds options, e.g. "--native" to see SQLite's C frames (it
    pauses the process for each sample, so it slows the run more).
    """
    spy = VENV_BIN / "py-spy"
    if not spy.exists():
        print(f"(py-spy not found at {spy}; install it with {VENV_BIN / 'pip'} install py-spy)")
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    extra = os.environ.get("BENCH_PYSPY_ARGS", "").split()
    args = [str(spy), "record", "--pid", str(pid), "--rate", str(rate), "--duration", str(duration)]
    args += ["--format", "raw", "--output", str(out), *extra]
    if "--native" not in extra:
        args.append("--nonblocking")
    with open(out.with_suffix(".log"), "wb") as log:
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)


def stop_profiler(spy: subprocess.Popen[bytes]) -> None:
    """py-spy writes its output on SIGINT (not on SIGTERM)."""
    if spy.poll() is None:
        spy.send_signal(signal.SIGINT)
    try:
        spy.wait(30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()


def save_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    return path


def mb(nbytes: float) -> float:
    return nbytes / 1e6


def memory_map(pid: int) -> dict[str, Any]:
    """Where a process's resident memory is, from /proc/PID/smaps (kB): the main malloc heap
    (`[heap]`), anonymous mappings (other threads' malloc arenas, large mallocs, thread
    stacks), thread stacks the kernel names, and files (libraries); plus the thread count
    and the five largest anonymous mappings (resident kB)."""
    parts: dict[str, Any] = {"heap_kb": 0, "anon_kb": 0, "files_kb": 0, "stack_kb": 0}
    anon: list[int] = []
    try:
        with open(f"/proc/{pid}/smaps") as f:
            name = ""
            for line in f:
                head = line.split()
                if not head:
                    continue
                if not head[0].endswith(":"):
                    name = head[5] if len(head) > 5 else ""
                elif head[0] == "Rss:":
                    rss = int(head[1])
                    if name == "[heap]":
                        parts["heap_kb"] += rss
                    elif name.startswith("[stack"):
                        parts["stack_kb"] += rss
                    elif name == "":
                        parts["anon_kb"] += rss
                        anon.append(rss)
                    else:
                        parts["files_kb"] += rss
    except OSError:
        pass
    parts["anon_top_kb"] = sorted(anon, reverse=True)[:5]
    parts["threads"] = proc_status_kb(pid, "Threads")
    parts["rss_kb"] = proc_status_kb(pid, "VmRSS")
    return parts
