"""A chaos soak: 20 real `lienthong run` nodes over 3 tiers, data at every tier, faults at random.

A province, 3 middle-tier nodes and 16 communes on loopback, every link through a relay. For
`--minutes` M, files are dropped into inboxes at every tier (indicator values and new versions of
them; citizen feedback at the province, which travels down; status events from the communes that
received it, which travel back up) while, at random from `--seed`: any node (the province too) is
SIGKILLed and restarted, links are cut, shut for a while or slowed, one middle node's disk (a
small tmpfs; root only) is filled to the last byte and freed, and one commune is restored from a
backup taken earlier. Then the faults stop, the federation is given `--settle` seconds to converge,
every node is stopped, and every node's full record set is compared with what was written and
with what each of its ancestors holds. Prints the faults, recovery times, peak RSS per node and
`lost = 0, duplicated = 0`, or the first difference; exits 1 on a difference.

    .venv/bin/python bench/soak.py [--minutes 30] [--seed N] [--communes 16] [--middles 3]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import code_under_test, command_line, loadavg, save_result
from _soak_faults import Faults
from _soak_world import (
    PROVINCE,
    World,
    Writer,
    digest,
    duplicates,
    held,
    query,
    rejected_files,
    waiting_files,
)


class Difference(Exception):
    """What the federation holds is not what was written."""


def soak(
    root: Path, minutes: float, seed: int, middles: int = 3, communes: int = 16, settle: float = 300, out: Any = print
) -> dict[str, Any]:
    """Run the soak in `root`; return its figures. Raises `Difference` (after stopping every node)
    at the first record lost or duplicated. Every process and relay is stopped before it returns."""
    rng = random.Random(seed)
    duration = minutes * 60
    out(f"soak: seed {seed}, {minutes:g} min, 1 province + {middles} middle + {communes} communes, in {root}")
    out(f"load average before: {loadavg()}")
    t_setup = time.monotonic()
    world = World(root, middles, communes, disk_mb=max(64, int(24 * minutes)))
    if world.disk_node is None:
        out("disk-full episodes: skipped (mounting a small tmpfs needs root)")
    writer = Writer(world, rng)
    faults = Faults(world, random.Random(rng.random()), duration, writer.written)
    threads: list[threading.Thread] = []
    try:
        world.start()
        for node in world.nodes:
            node.proc.port() if node.children else None
        out(f"{len(world.nodes)} nodes running after {time.monotonic() - t_setup:.0f} s")
        stop = threading.Event()

        def write() -> None:
            while not stop.is_set():
                writer.tick()
                stop.wait(0.5)

        threads = [threading.Thread(target=write, daemon=True), threading.Thread(target=faults.run, daemon=True)]
        threads.append(threading.Thread(target=faults.watch_disk, daemon=True))
        for t in threads:
            t.start()
        t0 = time.monotonic()
        while time.monotonic() - t0 < duration:
            for node in world.nodes:
                node.sample_rss()
            time.sleep(min(5.0, max(0.1, duration - (time.monotonic() - t0))))
            if not all(t.is_alive() for t in threads):
                raise RuntimeError("a soak thread died (see above)")
        stop.set()
        faults.stop()
        for t in threads:
            t.join(timeout=60)
        out(f"faults stopped after {time.monotonic() - t0:.0f} s; load average {loadavg()}; waiting for convergence")
        converged = settle_down(world, writer, settle)
        for node in world.nodes:
            node.sample_rss()
        world.stop()
        faults.measure_recovery()
        result = report(world, writer, faults, converged, out)
        result["seed"] = seed
        return result
    finally:
        faults.halted.set()
        world.close()


def settle_down(world: World, writer: Writer, timeout: float) -> float | None:
    """Wait (bounded) until every inbox is empty, every answer written and every node's holdings stop
    changing and agree with its ancestors'. Returns the seconds it took, or None on timeout."""
    t0 = time.monotonic()
    last: Any = None
    while time.monotonic() - t0 < timeout:
        writer.answers()  # items that arrive late are still answered
        if not writer.awaiting and not any(waiting_files(n) for n in world.nodes):
            now = {n.id: digest(n) for n in world.nodes}
            if now == last and agree(world, now):
                return time.monotonic() - t0
            last = now
        time.sleep(2.0)
    waiting = {n.id: len(waiting_files(n)) for n in world.nodes if waiting_files(n)}
    behind = [
        f"{n.id} at {a.id}"
        for n in world.nodes
        for a in n.ancestors()
        if (last or {}).get(a.id, {}).get(n.id) != (last or {}).get(n.id, {}).get(n.id)
    ]
    print(
        f"not converged: files waiting {waiting}, {len(writer.awaiting)} items not yet at their unit "
        f"{sorted({n.id for n, _, _ in writer.awaiting})}, ancestors behind: {behind}"
    )
    return None


def agree(world: World, digests: dict[str, dict[str, tuple[int, int]]]) -> bool:
    """Every ancestor holds of each node's own records what the node holds (by fingerprint)."""
    for node in world.nodes:
        own = digests[node.id].get(node.id)
        if any(digests[a.id].get(node.id) != own for a in node.ancestors()):
            return False
    return True


def check(world: World, writer: Writer, faults: Faults) -> tuple[Counter[str], list[str]]:
    """The full comparison, on stopped stores. Returns counts of lost and duplicated records (and
    `dropped_by_restore`: what only the restored node's replaced disk held, which no restore can
    bring back, see `Faults.settle_left_behind`), and the differences found (the first ones), each
    naming the node and the records."""
    found: Counter[str] = Counter()
    diffs: list[str] = []
    found["dropped_by_restore"], acked_missing = faults.settle_left_behind()

    def differ(what: str, node: str, ids: set[bytes], kind: str) -> None:
        found[kind] += len(ids)
        if ids:
            diffs.append(f"{kind}: {what} at {node}: {len(ids)} records, e.g. {sorted(i.hex() for i in ids)[:3]}")

    if faults.left_behind is not None:
        lb, parent = faults.left_behind, faults.left_behind.node.parent
        assert parent is not None
        differ(f"{lb.node.id}'s records acknowledged but not held", parent.id, acked_missing, "lost")
    province = world.province
    own = {n.id: held(n, n.id) for n in world.nodes}
    for node in world.nodes:
        mine, written = own[node.id], writer.written[node.id]
        differ("written but not held by its origin", node.id, written - set(mine), "lost")
        differ("held by its origin but never written", node.id, set(mine) - written, "duplicated")
        for ancestor in node.ancestors():
            theirs = held(ancestor, node.id)
            differ(f"{node.id}'s records missing", ancestor.id, set(mine) - set(theirs), "lost")
            differ(f"{node.id}'s records it never wrote", ancestor.id, set(theirs) - set(mine), "duplicated")
            stale = {rid for rid in set(mine) & set(theirs) if mine[rid] != theirs[rid]}
            differ(f"{node.id}'s records at another version", ancestor.id, stale, "lost")
        if node is not province:  # what came down: the feedback for its subtree, at the province's versions
            down = held(node, PROVINCE)
            want = set().union(*(writer.feedback_for[n.id] for n in node.subtree()))
            differ("feedback for its subtree missing", node.id, want - set(down), "lost")
            differ("province records not for its subtree", node.id, set(down) - want, "duplicated")
            stale = {rid for rid in set(down) & set(own[PROVINCE]) if down[rid] != own[PROVINCE][rid]}
            differ("province records at another version", node.id, stale, "lost")
        # Nothing from outside its subtree, but the province's.
        inside = {n.id for n in node.subtree()} | {PROVINCE}
        strays = {o for (o,) in query(node, "SELECT DISTINCT origin FROM records")} - inside
        for origin in strays:
            differ(f"records of {origin} (outside its subtree)", node.id, set(held(node, origin)), "duplicated")
        dup = duplicates(node)
        if dup:
            found["duplicated"] += dup
            diffs.append(f"duplicated: {dup} versions applied twice in {node.id}'s change log")
        rejected = rejected_files(node)
        if rejected:
            diffs.append(f"lost: {len(rejected)} files rejected at {node.id}: {[p.name for p in rejected[:3]]}")
            found["lost"] += len(rejected)
    for what, n in writer.drop_errors.items():
        diffs.append(f"lost: {n} files an agency could not drop into the inbox at {what}")
        found["lost"] += n
    return found, diffs


def report(world: World, writer: Writer, faults: Faults, converged: float | None, out: Any) -> dict[str, Any]:
    kinds = Counter(e.kind for e in faults.episodes)
    out(f"\nfiles dropped: {writer.files} ({writer.failed_drops} could not be written: disk full)")
    out(f"records written: {sum(len(v) for v in writer.written.values())} distinct ids at {len(world.nodes)} nodes")
    out(
        f"faults: {kinds['kill']} kills, {kinds['cut']} cuts, {kinds['block']} links shut, {kinds['delay']} links slowed, "
        f"{kinds['disk_full']} disk-full episodes, {kinds['restore']} restore from backup"
    )
    killed = Counter(e.node for e in faults.episodes if e.kind == "kill")
    out(f"kills per node: province {killed[PROVINCE]}, others {dict(sorted((k, v) for k, v in killed.items() if k != PROVINCE))}")
    for kind in ("kill", "cut", "block", "disk_full", "restore"):
        times = sorted(e.recovered_s for e in faults.episodes if e.kind == kind and e.recovered_s is not None)
        unmeasured = sum(1 for e in faults.episodes if e.kind == kind and e.recovered_s is None)
        if times or unmeasured:
            med = times[len(times) // 2] if times else float("nan")
            out(
                f"recovery after {kind}: median {med:.1f} s, max {max(times, default=float('nan')):.1f} s over {len(times)}"
                + (f" ({unmeasured} not seen in the logs)" if unmeasured else "")
            )
    for e in faults.episodes:
        if e.kind in ("disk_full", "restore"):
            out(f"  {e.kind} at {e.node}: recovered in {e.recovered_s if e.recovered_s is None else round(e.recovered_s, 1)} s {e.note}")
    if writer.drop_errors:
        out(f"files that could not be dropped (not the full disk): {dict(writer.drop_errors)}")
    if faults.unexpected_exits:
        out(f"nodes that exited by themselves (restarted): {faults.unexpected_exits}")
    tiers = {
        "province": [world.province],
        "middle": world.province.children,
        "commune": [c for m in world.province.children for c in m.children],
    }
    for tier, nodes in tiers.items():
        out(
            f"peak RSS {tier}: max {max(n.peak_rss_kb for n in nodes) / 1024:.0f} MB, "
            f"mean {sum(n.peak_rss_kb for n in nodes) / len(nodes) / 1024:.0f} MB over {len(nodes)}"
        )
    out("peak RSS per node (MB): " + ", ".join(f"{n.id} {n.peak_rss_kb / 1024:.0f}" for n in world.nodes))
    out(f"all {len(world.nodes)} nodes: {sum(n.rss_kb for n in world.nodes) / 1024:.0f} MB RSS at the end")
    out("converged in " + (f"{converged:.0f} s after the faults stopped" if converged is not None else "— NOT within the bound"))
    found, diffs = check(world, writer, faults)
    out(f"province holds {sum(len(v) for v in [held(world.province, n.id) for n in world.nodes])} records")
    out(f"load average after: {loadavg()}")
    out(f"command: {command_line()}\ncode: {code_under_test()}")
    lb = faults.left_behind
    if lb is not None:
        out(
            f"dropped by the restore of {lb.node.id}: {found['dropped_by_restore']} records only its replaced disk held "
            f"(written after the backup, not yet at its parent; {lb.untaken_files} files not yet taken from its inbox)"
        )
    out(f"lost = {found['lost']}, duplicated = {found['duplicated']}")
    if diffs:
        out("first difference: " + diffs[0])
        for d in diffs[1:10]:
            out("  " + d)
    return {
        "lost": found["lost"],
        "duplicated": found["duplicated"],
        "dropped_by_restore": found["dropped_by_restore"],
        "differences": diffs,
        "faults": dict(kinds),
        "converged_s": converged,
        "unexpected_exits": faults.unexpected_exits,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30, help="How long data is written and faults injected.")
    parser.add_argument("--seed", type=int, default=None, help="The random seed (default: from the clock; printed).")
    parser.add_argument("--middles", type=int, default=3)
    parser.add_argument("--communes", type=int, default=16)
    parser.add_argument("--settle", type=float, default=300, help="Seconds allowed for convergence after the faults stop.")
    parser.add_argument("--keep", action="store_true", help="Keep the node directories and logs.")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else int(time.time())
    root = Path(tempfile.mkdtemp(prefix="lienthong-soak-"))
    result = soak(root, args.minutes, seed, args.middles, args.communes, args.settle)
    print(f"saved: {save_result('soak', {**result, 'command': command_line(), 'code': code_under_test()})}")
    if args.keep or result["differences"] or result["converged_s"] is None:
        print(f"kept: {root}")
    else:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    sys.exit(1 if result["differences"] or result["converged_s"] is None else 0)


if __name__ == "__main__":
    os.umask(0o077)
    main()
