"""The soak's faults, chosen at random from one seed: SIGKILL and restart, links cut, blocked and
slowed, a full disk, a child restored from an older backup (bench/soak.py). Each fault is
recorded with what is needed to say afterwards how long the federation took to recover."""

from __future__ import annotations

import random
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from _soak_world import (
    PROVINCE,
    SELF_WRITTEN,
    SELF_WRITTEN_ARGS,
    STORE_FILE,
    Node,
    World,
    held,
    held_in,
    ids_in_files,
    lienthong,
    now,
    query_store,
    waiting_files,
    waiting_in,
    wall,
)

# The suite's helpers, one copy for the tests and the soak (_soak_world put the repository on sys.path).
from tests.fault_helpers import events, log_size
from tests.helpers import fill_disk


@dataclass
class LeftBehind:
    """What a node held only on the disk its restore replaced, measured when it was stopped.

    `candidates`: its own records (and those of the files still in its inbox) that neither the
    backup nor its parent held then: taken out of what the soak expects, and put back at the end
    for those its parent held after all (a batch committed as the node died) — those must come
    back down to it. `acked`: its own records its parent had acknowledged: the parent must hold
    every one of them (acknowledgement only after a durable commit)."""

    node: Node
    candidates: set[bytes]
    acked: set[bytes]
    untaken_files: int


@dataclass
class Episode:
    """One fault: what, where, when it ended (wall time), and whose log shows the recovery."""

    kind: str  # kill | cut | block | delay | disk_full | restore
    node: str
    start: float
    end: float = 0.0
    marks: dict[str, int] = field(default_factory=dict)  # node id -> log offset when the fault ended
    recovered_s: float | None = None
    note: str = ""


class Faults:
    def __init__(self, world: World, rng: random.Random, duration: float, written: dict[str, set[bytes]]) -> None:
        self.world = world
        self.written = written  # the writer's record ids per origin: what the restore drops comes out of it
        self.left_behind: LeftBehind | None = None
        self.rng = rng
        self.duration = duration
        self.episodes: list[Episode] = []
        self.undo: list[tuple[float, Episode, object]] = []  # (monotonic due, episode, what to undo)
        self.backup: tuple[Node, Path, float] | None = None
        self.restored = False
        self.disk_episodes = 0
        self.unexpected_exits: list[str] = []
        self._ballast: Path | None = None
        self.halted = threading.Event()
        self._t0 = time.monotonic()

    # ------------------------------------------------------------ the loop

    def run(self) -> None:
        """Inject faults until `stop()`: one every 1–4 s, each undone after its own time."""
        restore_target = self.rng.choice([n for n in self.world.nodes if not n.children])
        self._t0 = time.monotonic()
        while not self.halted.is_set():
            self._undo_due()
            self._restart_dead()
            elapsed = time.monotonic() - self._t0
            if self.backup is None and elapsed > self.duration * 0.2:
                self._take_backup(restore_target)
            elif self.backup is not None and not self.restored and elapsed > self.duration * 0.5:
                self._restore()
            elif self.world.disk_node is not None and self._ballast is None and self._disk_due(elapsed):
                self._fill_disk()
            elif elapsed > self.duration * 0.4 and not any(e.kind == "kill" and e.node == PROVINCE for e in self.episodes):
                self._kill(self.world.province)  # the province at least once, whatever the dice say
            else:
                self._random_fault()
            self.halted.wait(self.rng.uniform(1.0, 4.0))

    def stop(self) -> None:
        """Stop injecting and undo every fault still in force (links open, disk freed, nodes running)."""
        self.halted.set()
        for _, episode, undo in self.undo:
            self._finish(episode, undo)
        self.undo.clear()
        self._restart_dead()

    def _disk_due(self, elapsed: float) -> bool:
        """The first disk-full episode at a third of the run, then now and then."""
        return (self.disk_episodes == 0 and elapsed > self.duration / 3) or (self.disk_episodes > 0 and self.rng.random() < 0.05)

    def _random_fault(self) -> None:
        roll = self.rng.random()
        if roll < 0.35:
            self._kill(self.rng.choice(self.world.nodes))
        elif roll < 0.7:
            self._cut(self.rng.choice([n for n in self.world.nodes if n.link is not None]))
        else:
            self._delay(self.rng.choice([n for n in self.world.nodes if n.link is not None]))

    def _undo_due(self) -> None:
        due, later = [u for u in self.undo if u[0] <= time.monotonic()], [u for u in self.undo if u[0] > time.monotonic()]
        self.undo = later
        for _, episode, undo in due:
            self._finish(episode, undo)

    def _finish(self, episode: Episode, undo: object) -> None:
        if callable(undo):
            undo()
        episode.end = now()
        episode.marks = {n.id: log_size(n.proc) for n in self.world.nodes}

    def _restart_dead(self) -> None:
        """A node that died by itself (not killed here) is noted and started again."""
        for node in self.world.nodes:
            if node.proc.proc is not None and not node.proc.alive() and not node.lock.locked():
                self.unexpected_exits.append(f"{node.id} exited {node.proc.proc.returncode} at +{time.monotonic() - self._t0:.0f} s")
                node.proc.start()

    # ------------------------------------------------------------ the faults

    def _kill(self, node: Node) -> None:
        if not node.lock.acquire(blocking=False):
            return
        try:
            episode = Episode("kill", node.id, now())
            if node.proc.alive():
                node.proc.kill()
            time.sleep(self.rng.uniform(0.1, 2.0))
            node.proc.start()
            self._finish(episode, None)
            self.episodes.append(episode)
        finally:
            node.lock.release()

    def _cut(self, node: Node) -> None:
        """Reset the node's link to its parent; half the time keep it shut for 1–6 s."""
        assert node.link is not None
        link = node.link
        if link.blocked:
            return
        episode = Episode("cut", node.id, now())
        self.episodes.append(episode)
        if self.rng.random() < 0.5:
            episode.kind = "block"
            link.blocked = True
            link.cut()

            def reopen() -> None:
                link.blocked = False

            self.undo.append((time.monotonic() + self.rng.uniform(1.0, 6.0), episode, reopen))
        else:
            link.cut()
            self._finish(episode, None)

    def _delay(self, node: Node) -> None:
        """Hold every chunk on the node's link 20–200 ms for 3–10 s."""
        assert node.link is not None
        link = node.link
        if link.delay:
            return
        episode = Episode("delay", node.id, now())
        link.delay = self.rng.uniform(0.02, 0.2)
        episode.note = f"{link.delay * 1000:.0f} ms"
        self.episodes.append(episode)

        def fast() -> None:
            link.delay = 0.0

        self.undo.append((time.monotonic() + self.rng.uniform(3.0, 10.0), episode, fast))

    def _fill_disk(self) -> None:
        """Fill the small disk of `world.disk_node` to the last byte for 5–15 s, then free it."""
        node = self.world.disk_node
        assert node is not None
        ballast = fill_disk(node.dir / "ballast")
        self._ballast = ballast
        self.disk_episodes += 1
        episode = Episode("disk_full", node.id, now())
        self.episodes.append(episode)

        def free() -> None:
            ballast.unlink(missing_ok=True)
            self._ballast = None

        self.undo.append((time.monotonic() + self.rng.uniform(5.0, 15.0), episode, free))

    def _take_backup(self, node: Node) -> None:
        dest = self.world.root / f"{node.id}.backup.tar"
        lienthong("backup", "--dir", str(node.dir), str(dest))
        self.backup = (node, dest, now())

    def _restore(self) -> None:
        """Stop the node (SIGKILL), put its directory aside, restore the older backup, run it."""
        assert self.backup is not None
        node, archive, taken = self.backup
        with node.lock:
            episode = Episode("restore", node.id, now(), note=f"backup {now() - taken:.0f} s old")
            node.proc.kill()
            aside = node.dir.with_name(node.dir.name + ".before-restore")
            node.dir.rename(aside)
            lienthong("restore", "--dir", str(node.dir), str(archive))
            self.left_behind = self._left_behind(node, aside)
            self.written[node.id] -= self.left_behind.candidates
            shutil.rmtree(aside)
            node.proc.start()
            self._finish(episode, None)
            self.episodes.append(episode)
        self.restored = True

    def _left_behind(self, node: Node, aside: Path) -> LeftBehind:
        """Measure what the stopped node held that the restored copy and its parent do not."""
        assert node.parent is not None
        store = aside / STORE_FILE
        own = set(held_in(store, node.id))
        untaken = waiting_in(aside)
        (acked,) = query_store(store, "SELECT acked FROM uplink")[0]
        sql = f"SELECT DISTINCT id FROM changelog c JOIN records r ON r.rid = c.rid WHERE seq <= ? AND up = 1 AND origin = ? AND {SELF_WRITTEN}"
        acked_ids = {rid for (rid,) in query_store(store, sql, (acked, node.id, *SELF_WRITTEN_ARGS))}
        restored = set(held(node, node.id))
        candidates = (own | ids_in_files(node.id, untaken)) - restored - set(held(node.parent, node.id))
        return LeftBehind(node, candidates, acked_ids, len(untaken))

    def settle_left_behind(self) -> tuple[int, set[bytes]]:
        """At the end, on stopped stores: what the restore legitimately dropped (in no store now and
        not written again), after putting back what the parent held after all; and the records the
        parent had acknowledged but does not hold (a defect). Returns (dropped, acked but missing)."""
        lb = self.left_behind
        if lb is None:
            return 0, set()
        assert lb.node.parent is not None
        parent_has = set(held(lb.node.parent, lb.node.id))
        self.written[lb.node.id] |= lb.candidates & parent_has
        return len(lb.candidates - self.written[lb.node.id]), lb.acked - parent_has

    # ------------------------------------------------------------ recovery

    def measure_recovery(self) -> None:
        """From the logs: seconds from the end of each fault until the links it broke were up again
        (a new session logged by each child concerned), or until a full disk's waiting files were taken."""
        by_id = {n.id: n for n in self.world.nodes}
        for episode in self.episodes:
            if not episode.end or episode.kind == "delay":
                continue
            node = by_id[episode.node]
            if episode.kind == "disk_full":
                continue  # measured live (see `watch_disk`)
            # The sessions to wait for: the node's own uplink and every child's uplink to it.
            concerned = ([node] if node.parent is not None else []) + (node.children if episode.kind in ("kill", "restore") else [])
            times = []
            for child in concerned:
                ups = [e for e in events(child.proc, "link.up", episode.marks.get(child.id, 0)) if "down_applied" in e]
                if not ups:
                    break
                times.append(wall(ups[0]) - episode.end)
            else:
                episode.recovered_s = max(times, default=0.0)

    def watch_disk(self) -> None:
        """After each disk-full episode: seconds until every file waiting in the node's inbox was taken."""
        node = self.world.disk_node
        if node is None:
            return
        seen: set[int] = set()
        while not self.halted.is_set():
            for i, episode in enumerate(self.episodes):
                if episode.kind == "disk_full" and episode.end and i not in seen:
                    seen.add(i)
                    waiting = set(waiting_files(node))
                    while waiting and not self.halted.is_set():
                        waiting = {p for p in waiting if p.exists()}
                        time.sleep(0.2)
                    episode.recovered_s = now() - episode.end if not waiting else None
                    episode.note = "until the files waiting in its inbox were taken"
            self.halted.wait(0.5)
