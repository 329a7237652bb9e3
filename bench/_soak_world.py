"""The soak's federation: nodes made with the `lienthong` CLI, their processes, the relays on
every link, the data written at every tier, and the record sets read back (bench/soak.py).

Three tiers on loopback: a province, `middles` middle-tier nodes under it and `communes`
communes spread over them. Every child reaches its parent through its own relay (the test
suite's `TcpProxy`, which asks the parent's run lock for its port at each connection), so a
link can be cut, blocked or slowed, and a parent restarted on another port stays reachable.
Node logs are written outside the node directories (a full disk must not stop the log).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the suite's process and relay helpers are reused as they are

from click.testing import CliRunner  # noqa: E402

from lienthong.node.cli import cli as lienthong_cli  # noqa: E402
from lienthong.sync import records  # noqa: E402
from tests.helpers import NodeProcess, TcpProxy, bound_port, can_mount, mount_tmpfs, unmount  # noqa: E402

STORE_FILE = "lienthong.db"
PROVINCE = "86"
AGENCY, FEEDBACK_AGENCY = "thongke", "1022"
ROWS_PER_FILE = 40
Versions = dict[bytes, int]  # record id -> version


def lienthong(*args: str) -> str:
    """An operator's command, run in this process (a subprocess costs a second of start-up)."""
    result = CliRunner().invoke(lienthong_cli, list(args))
    if result.exit_code != 0:
        raise RuntimeError(f"lienthong {' '.join(args)} exited {result.exit_code}: {result.exception!r}\n{result.output}")
    return result.output


@dataclass
class Node:
    """One node of the federation: its directory, process, parent and the relay to it."""

    id: str
    dir: Path
    proc: NodeProcess
    parent: Node | None = None
    link: TcpProxy | None = None  # this node's relay to its parent
    children: list[Node] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)  # held while the node is being restored
    peak_rss_kb: int = 0
    rss_kb: int = 0

    def ancestors(self) -> list[Node]:
        out, n = [], self.parent
        while n is not None:
            out.append(n)
            n = n.parent
        return out

    def subtree(self) -> list[Node]:
        out = [self]
        for c in self.children:
            out += c.subtree()
        return out

    def sample_rss(self) -> None:
        pid = self.proc.proc.pid if self.proc.proc is not None and self.proc.alive() else None
        if pid is None:
            return
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.rss_kb = int(line.split()[1])
                    self.peak_rss_kb = max(self.peak_rss_kb, self.rss_kb)


class World:
    """The nodes, their relays and where everything lives."""

    def __init__(self, root: Path, middles: int, communes: int, disk_mb: int) -> None:
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.ca = root / "ca"
        self.relays: list[TcpProxy] = []
        self.mounted: Path | None = None
        lienthong("ca", "init", str(self.ca))
        self.province = self._make(PROVINCE, None)
        mids = [self._make(f"{PROVINCE}-10{i + 1}", self.province, listen=True) for i in range(middles)]
        self.disk_node = mids[-1] if can_mount() else None
        if self.disk_node is not None:  # made again on its own small disk
            self._mount(self.disk_node, disk_mb)
        for j in range(communes):
            mid = mids[j % middles]
            self._make(f"{mid.id}.{j // middles + 1:02d}", mid)
        self.nodes = self.province.subtree()

    def _make(self, node_id: str, parent: Node | None, listen: bool = False) -> Node:
        node_dir = self.root / node_id
        args = ["init", "--dir", str(node_dir), "--id", node_id, "--ca", str(self.ca)]
        link = None
        if parent is None:
            args += ["--mode", "provincial", "--listen", "127.0.0.1:0"]
        else:
            link = TcpProxy(lambda d=parent.dir: bound_port(d))
            self.relays.append(link)
            args += ["--mode", "district", "--parent", f"127.0.0.1:{link.port}", "--parent-id", parent.id]
            if listen:
                args += ["--listen", "127.0.0.1:0"]
        lienthong(*args)
        configure(node_dir)
        for agency in (AGENCY, FEEDBACK_AGENCY):
            (node_dir / "inbox" / agency).mkdir(parents=True, exist_ok=True)
        node = Node(node_id, node_dir, NodeProcess(node_dir, log_name=str(self.logs / f"{node_id}.log")), parent, link)
        if parent is not None:
            parent.children.append(node)
        return node

    def _mount(self, node: Node, size_mb: int) -> None:
        """Move `node`'s directory onto a tmpfs of `size_mb` MB (a disk that really fills)."""
        keep = node.dir.with_name(node.dir.name + ".init")
        node.dir.rename(keep)
        node.dir.mkdir(mode=0o700)
        mount_tmpfs(node.dir, f"{size_mb}m")
        self.mounted = node.dir
        subprocess.run(["cp", "-a", f"{keep}/.", str(node.dir)], check=True)
        shutil.rmtree(keep)

    def start(self) -> None:
        for node in self.nodes:
            node.proc.start()

    def stop(self) -> None:
        """Stop every node: SIGTERM to all at once, SIGKILL after a bounded wait."""
        for node in self.nodes:
            if node.proc.alive() and node.proc.proc is not None:
                node.proc.proc.terminate()
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.proc.stop(timeout=30)

    def close(self) -> None:
        """Stop every node, close the relays, unmount the small disk."""
        self.stop()
        for relay in self.relays:
            relay.close()
        if self.mounted is not None:
            unmount(self.mounted)
            self.mounted = None


def configure(node_dir: Path) -> None:
    """Quick reconnects and rescans, a console on port 0, and a store that may use the last MB of its disk."""
    config = node_dir / "lienthong.toml"
    text = (
        config.read_text()
        .replace("backoff_max = 30.0", "backoff_max = 2.0")
        .replace("backoff_initial = 0.5", "backoff_initial = 0.1")
        .replace('listen = "127.0.0.1:8080"', 'listen = "127.0.0.1:0"')
        .replace("rescan_seconds = 30.0", "rescan_seconds = 2.0")
        .replace("min_free_mb = 256", "min_free_mb = 1")
    )
    config.write_text(text)


# ---------------------------------------------------------------- what is written


class Writer:
    """Drops files into inboxes at every tier and remembers the id of every record they carry.

    Communes and middle nodes get indicator values (new ones and new versions of earlier ones);
    the province gets citizen feedback for communes and middle units (it travels down); a commune
    that received an item answers with status events (they travel back up).
    """

    def __init__(self, world: World, rng: random.Random) -> None:
        self.world = world
        self.rng = rng
        self.written: dict[str, set[bytes]] = {n.id: set() for n in world.nodes}  # origin -> record ids
        self.feedback_for: dict[str, set[bytes]] = {n.id: set() for n in world.nodes}  # unit -> province's item ids
        self.awaiting: list[tuple[Node, dict[str, Any], bytes]] = []  # items dispatched, not yet answered
        self.files = 0
        self.failed_drops = 0
        self.drop_errors: Counter[str] = Counter()
        self._seq = itertools.count()
        self._next: dict[str, int] = {n.id: 0 for n in world.nodes}

    def drop(self, node: Node, agency: str, rows: list[dict[str, Any]]) -> bool:
        """Write `rows` as one JSON Lines file, renamed into `node`'s inbox (False if the disk is full)."""
        name = f"soak-{next(self._seq):06d}.jsonl"
        staged = node.dir / f".{name}"
        try:
            staged.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
            os.replace(staged, node.dir / "inbox" / agency / name)
        except OSError as exc:
            with contextlib.suppress(OSError):
                staged.unlink(missing_ok=True)
            if exc.errno == errno.ENOSPC:
                self.failed_drops += 1
            else:  # not the fault injected: an inbox folder that vanished, say
                self.drop_errors[f"{node.id}: {exc.strerror} ({exc.filename2 or exc.filename})"] += 1
            return False
        self.written[node.id].update(records.build(node.id, r).id for r in rows)
        self.files += 1
        return True

    def indicators(self, node: Node) -> None:
        start = self._next[node.id]
        fresh = [indicator(node.id, i) for i in range(start, start + ROWS_PER_FILE)]
        again = [indicator(node.id, self.rng.randrange(start), revised=True) for _ in range(ROWS_PER_FILE // 4)] if start else []
        if self.drop(node, AGENCY, fresh + again):
            self._next[node.id] = start + ROWS_PER_FILE

    def feedback(self) -> None:
        targets = [n for n in self.world.nodes if n.parent is not None]
        items = []
        for node in self.rng.sample(targets, 3):
            item = {
                "kind": "feedback",
                "source_id": f"{FEEDBACK_AGENCY}-{next(self._seq):06d}",
                "unit": node.id,
                "agency": FEEDBACK_AGENCY,
                "category": "GT-01",
                "description": "Ổ gà lớn trên đường tỉnh 885",
                "received_at": "2026-11-20T07:42:10+07:00",
            }
            items.append((node, item, records.build(PROVINCE, item).id))
        if self.drop(self.world.province, FEEDBACK_AGENCY, [i for _, i, _ in items]):
            for node, item, rid in items:
                self.feedback_for[node.id].add(rid)
                self.awaiting.append((node, item, rid))

    def answers(self) -> None:
        """Items that reached their unit are accepted there (the status goes back up)."""
        still = []
        for node, item, rid in self.awaiting:
            if node.lock.locked() or not holds(node, rid):
                still.append((node, item, rid))
                continue
            event = {
                "kind": "feedback_event",
                "feedback": item["source_id"],
                "feedback_origin": PROVINCE,
                "status": "accepted",
                "at": "2026-11-20T09:00:00+07:00",
                "unit": node.id,
                "agency": FEEDBACK_AGENCY,
                "note": "Đã tiếp nhận",
            }
            if not self.drop(node, FEEDBACK_AGENCY, [event]):
                still.append((node, item, rid))
        self.awaiting = still

    def tick(self) -> None:
        """One round of writing: a file at a few random nodes, feedback at the province, answers."""
        for node in self.rng.sample(self.world.nodes, 4):
            if node.lock.acquire(blocking=False):
                try:
                    self.indicators(node)
                finally:
                    node.lock.release()
        if self.rng.random() < 0.3:
            self.feedback()
        self.answers()


def indicator(unit: str, i: int, revised: bool = False) -> dict[str, Any]:
    return {
        "kind": "indicator",
        "indicator": f"KTXH.SOAK.{i % 40:02d}",
        "unit": unit,
        "period": f"{2000 + i // 480}-{(i // 40) % 12 + 1:02d}",
        "value": i + (random.random() if revised else 0),
        "agency": AGENCY,
    }


# ---------------------------------------------------------------- reading stores


def query(node: Node, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """A read on a (possibly running) node's store, on a connection of its own."""
    return query_store(node.dir / STORE_FILE, sql, args)


def query_store(store: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """A read on the store file `store` (a node's, or one put aside), on a connection of its own."""
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=30)
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def holds(node: Node, rid: bytes) -> bool:
    try:
        return bool(query(node, "SELECT 1 FROM records WHERE id = ?", (rid,)))
    except sqlite3.Error:
        return False


# What nodes write by themselves besides seals and audit entries: the CA's home (the province)
# publishes its registry (`node` definitions) and revocation lists. A definition's body opens
# with its `type` (field 1), so SQL tells these apart without decoding them.
SELF_WRITTEN = "kind NOT IN (?, ?) AND NOT (kind = ? AND (instr(envelope, ?) > 0 OR instr(envelope, ?) > 0))"
SELF_WRITTEN_ARGS = (records.SEAL, records.AUDIT_ENTRY, records.DEFINITION, b"\x0a\x04node", b"\x0a\x0frevocation_list")


def held(node: Node, origin: str) -> Versions:
    """Every (record id, version) `node` holds of `origin`, leaving out what nodes write by
    themselves (seals, audit entries, the CA home's registry and revocation lists)."""
    return held_in(node.dir / STORE_FILE, origin)


def held_in(store: Path, origin: str) -> Versions:
    """`held` on the store file `store`."""
    rows = query_store(store, f"SELECT id, version, kind FROM records WHERE origin = ? AND {SELF_WRITTEN}", (origin, *SELF_WRITTEN_ARGS))
    return {rid: version for rid, version, _ in rows}


def digest(node: Node) -> dict[str, tuple[int, int]]:
    """A cheap fingerprint of what `node` holds per origin: (records, sum of versions), for polling."""
    sql = f"SELECT origin, count(*), sum(version % 1000003) FROM records WHERE {SELF_WRITTEN} GROUP BY origin"
    return {o: (n, s) for o, n, s in query(node, sql, SELF_WRITTEN_ARGS)}


def duplicates(node: Node) -> int:
    """Change-log entries beyond one per stored version: a version applied twice shows here."""
    sql = "SELECT count(*) FROM (SELECT rid, version, count(*) n FROM changelog GROUP BY rid, version HAVING n > 1)"
    return int(query(node, sql)[0][0])


def waiting_files(node: Node) -> list[Path]:
    """Files still in `node`'s inboxes (not yet taken)."""
    return waiting_in(node.dir)


def waiting_in(node_dir: Path) -> list[Path]:
    """Files still in the inboxes of the node directory `node_dir` (not yet taken)."""
    return [p for agency in (AGENCY, FEEDBACK_AGENCY) for p in (node_dir / "inbox" / agency).glob("*.jsonl")]


def ids_in_files(origin: str, paths: list[Path]) -> set[bytes]:
    """The ids of the records `origin` makes of the JSON Lines files `paths`."""
    return {records.build(origin, json.loads(line)).id for p in paths for line in p.read_text(encoding="utf-8").splitlines() if line}


def rejected_files(node: Node) -> list[Path]:
    return [p for agency in (AGENCY, FEEDBACK_AGENCY) for p in (node.dir / "inbox" / agency / "rejected").glob("*")]


def wall(entry: dict[str, Any]) -> float:
    """A log entry's time as a Unix timestamp."""
    from datetime import datetime

    return datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00")).timestamp()


def now() -> float:
    return time.time()
