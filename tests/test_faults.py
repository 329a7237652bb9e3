"""Faults at any point lose nothing and duplicate nothing (DESIGN §4).

Every test injects a real fault into real node processes on loopback TCP
(SIGKILL, connection resets, a restore from backup, restarts in a random order)
and ends by comparing full record sets — the province holds exactly the union
of what the nodes below it wrote — and by checking that no node logged a record
version twice. Counts are only used as progress probes to time the faults.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import time
from pathlib import Path

import pytest

from lienthong.sync import records

from .conftest import MakeNode, listen_address
from .fault_helpers import (
    applied,
    assert_exactly_once,
    count,
    events,
    head,
    latest,
    log_size,
    own,
    progress_between,
    progress_total,
    stop_all,
    terminate,
    versions_where,
    wait_alive,
    wait_caught_up,
    wait_converged,
    wait_exited,
    wait_links_up,
)
from .helpers import STORE_FILE, NodeProcess, cli, fill, indicator_rows, relay, running, status, versions, wait_until, write_jsonl

pytestmark = pytest.mark.slow


def child_status(parent: Path, child: str) -> dict:
    return next(c for c in status(parent)["children"] if c["id"] == child)


# ---------------------------------------------------------------- 1. child SIGKILLed mid-stream


def test_child_killed_mid_stream_resumes_exactly_once(make_node: MakeNode) -> None:
    """A child SIGKILLed while streaming a large backlog resumes from the province's checkpoint: nothing lost, nothing twice."""
    province = make_node("86")
    child = make_node("86-28894", parent=listen_address(province))
    total = 80_000
    fill(child, indicator_rows(child.name, total, agency="thongke"))
    expected = own(child)
    assert len(expected) == total

    pp, cp = NodeProcess(province), NodeProcess(child)
    with running(pp, cp):
        progress_between(province, child.name, 5_000, total - 20_000, [pp, cp], what="the province to have applied part of the backlog")
        cp.kill()
        held = versions(province)
        assert held < expected, "the province holds records the child never wrote, or the kill came after the stream ended"
        checkpoint = applied(province, child.name)
        assert checkpoint > 0
        mark = log_size(cp)
        cp.start()
        wait_converged(province, expected, [pp, cp])
        wait_caught_up([child], [pp, cp])
        # It resumed from the province's durable checkpoint, not from the start.
        ups = events(cp, "link.up", mark)
        assert ups, "the restarted child never logged link.up"
        assert checkpoint <= ups[0]["resume_from"] < total
        stop_all([pp, cp])
    assert_exactly_once(province, expected, [province, child])


# ---------------------------------------------------------------- 2. province SIGKILLed mid-batch


def test_province_killed_mid_batch_resumes_exactly_once(make_node: MakeNode) -> None:
    """The province SIGKILLed mid-batch, three times, keeps data and checkpoints atomic: nothing lost, nothing twice."""
    province = make_node("86")
    address = listen_address(province)
    kids = [make_node("86-28894", parent=address), make_node("86-29077", parent=address)]
    per_child = 40_000
    for kid in kids:
        fill(kid, indicator_rows(kid.name, per_child, agency="thongke"))
    expected = own(*kids)
    total = len(expected)
    assert total == 2 * per_child

    pp = NodeProcess(province)
    procs = [pp, *(NodeProcess(k) for k in kids)]
    with running(*procs):
        for low in (8_000, 28_000, 48_000):
            progress_total(province, low, total - 8_000, procs, what=f"the province to apply at least {low} records")
            pp.kill()
            held = versions(province)
            assert held < expected, "the province holds stray records, or the kill came after the stream ended"
            # A torn batch rolled back with its checkpoint: each child's checkpoint covers exactly
            # the records stored (each of its change-log entries is one new record here).
            for kid in kids:
                assert applied(province, kid.name) == count(province, kid.name), f"checkpoint and data of {kid.name} disagree"
            pp.start()
        wait_converged(province, expected, procs)
        wait_caught_up(kids, procs)
        assert len(events(pp, "node.running")) == 4  # started once, restarted three times
        stop_all(procs)
    assert_exactly_once(province, expected, [province, *kids])


# ---------------------------------------------------------------- 3. link cut both ways mid-batch


def test_link_cut_both_ways_mid_batch_resumes_exactly_once(make_node: MakeNode) -> None:
    """Connections reset both ways mid-batch, five times, lose and duplicate nothing; status shows the link down, then up."""
    province = make_node("86")
    proxy = relay(province)
    try:
        child = make_node("86-28894", parent=f"127.0.0.1:{proxy.port}")
        # Small batches, so that every cut lands in the middle of the stream, not after its end.
        config = child / "lienthong.toml"
        config.write_text(config.read_text().replace("batch_size = 4000", "batch_size = 500"))
        total = 60_000
        fill(child, indicator_rows(child.name, total, agency="thongke"))
        expected = own(child)

        pp, cp = NodeProcess(province), NodeProcess(child)
        cuts = 5
        with running(pp, cp):
            last = 0
            for i in range(cuts):
                # Each cut comes after a new session started and the stream moved on: a live session.
                # (Batches in flight when a link is cut may still land, so progress alone is no proof.)
                wait_alive(lambda i=i: len(events(cp, "link.up")) >= i + 1, [pp, cp], what=f"session {i + 1} to start")
                progress_between(province, child.name, last + 3_000, total - 5_000, [pp, cp], what=f"batches in flight before cut {i + 1}")
                if i == cuts - 1:
                    # The last cut keeps the link down long enough to see it in `status` on both sides.
                    proxy.blocked = True
                    proxy.cut()
                    both = [pp, cp]
                    wait_alive(lambda: status(child)["parent"]["connected"] is False, both, what="the child to show the link down")
                    wait_alive(lambda: not child_status(province, child.name)["connected"], both, what="the province to show it down")
                    assert count(province, child.name) < total
                    proxy.blocked = False
                    wait_alive(lambda: status(child)["parent"]["connected"] is True, both, what="the child to show the link up again")
                    wait_alive(lambda: child_status(province, child.name)["connected"], both, what="the province to show it up again")
                else:
                    proxy.cut()
                last = count(province, child.name)
            wait_converged(province, expected, [pp, cp])
            wait_caught_up([child], [pp, cp])
            assert status(child)["parent"]["connected"] is True
            # Every cut broke a live session: one session per cut, plus the first.
            assert len(events(cp, "link.up")) >= cuts + 1
            stop_all([pp, cp])
        assert_exactly_once(province, expected, [province, child])
    finally:
        proxy.close()


# ---------------------------------------------------------------- 4. child restored from an older backup


def test_child_restored_from_backup_changes_epoch_and_resends(make_node: MakeNode, tmp_path: Path) -> None:
    """A child restored from an older backup, its log sequences reused by other records, gets a new epoch; the province keeps both eras."""
    province = make_node("86")
    child = make_node("86-28894", parent=listen_address(province))
    fill(child, indicator_rows(child.name, 10_000, agency="thongke"))
    pp, cp = NodeProcess(province), NodeProcess(child)
    backup = tmp_path / "child-backup.db"
    with running(pp, cp):
        wait_converged(province, own(child), [pp, cp])
        cli("backup", "--dir", str(child), str(backup), "--store-only")  # online, while the child runs
        # What the copy holds (the child may take more from its parent — the province's registry — meanwhile).
        with contextlib.closing(sqlite3.connect(f"file:{backup}?mode=ro", uri=True)) as copy:
            backed_up = int(copy.execute("SELECT coalesce(max(seq), 0) FROM changelog").fetchone()[0])
        # More records after the backup, synced to the province.
        cli(
            "ingest",
            "--dir",
            str(child),
            str(write_jsonl(tmp_path / "after.jsonl", indicator_rows(child.name, 10_000, start=10_000, agency="thongke"))),
        )
        era1 = own(child)
        assert len(era1) == 20_000
        wait_converged(province, era1, [pp, cp])
        wait_caught_up([child], [pp, cp])
        old_epoch = status(child)["node"]["epoch"]
        assert child_status(province, child.name)["epoch"] == old_epoch
        # The running child copies its audit entries into its log by itself, every few seconds: its
        # head may move after the wait above, so wait for one moment the province holds all of it.
        wait_until(lambda: applied(province, child.name) == head(child), timeout=30, what="the province to apply the child's whole log")
        assert cp.stop() == 0
        checkpoint = applied(province, child.name)
        assert backed_up < checkpoint <= head(child)

        # Restore the older backup and write different records over the same log sequences:
        # new records, and new versions of records the backup holds.
        for suffix in ("", "-wal", "-shm"):
            Path(str(child / STORE_FILE) + suffix).unlink(missing_ok=True)
        os.replace(backup, child / STORE_FILE)
        assert head(child) == backed_up < checkpoint
        fill(child, indicator_rows(child.name, 12_000, indicator="KTXH.MOI", agency="thongke"))
        changed = indicator_rows(child.name, 1_000, start=0, agency="thongke")
        for row in changed:
            row["value"] = row["value"] + 1_000_000
        fill(child, changed)
        assert head(child) > checkpoint, "the new records must reuse the sequence the province's checkpoint names"
        era2 = own(child)
        assert not era2 <= era1
        expected = latest(era1, era2)
        assert len(expected) == 20_000 + 12_000

        mark = log_size(cp)
        cp.start()
        wait_converged(province, expected, [pp, cp])
        wait_caught_up([child], [pp, cp])
        new_epoch = status(child)["node"]["epoch"]
        assert new_epoch != old_epoch
        wait_until(
            lambda: child_status(province, child.name)["epoch"] == new_epoch, timeout=30, what="the province to record the new epoch"
        )
        assert events(cp, "link.epoch_changed", mark), "the child did not detect the restore"
        wait_until(lambda: versions(child, origin=child.name) == expected, timeout=60, what="the child to get back what it lacked")
        stop_all([pp, cp])
    assert_exactly_once(province, expected, [province, child])
    # The child gets back what it had sent before the restore and its copy lacked: it holds what
    # the province holds of it (the latest version of each record), not only its restored era.
    assert versions(child, origin=child.name) == expected


# ---------------------------------------------------------------- 5. everything restarted in a random order


def test_everything_restarted_in_random_order_converges_exactly_once(make_node: MakeNode, tmp_path: Path) -> None:
    """Province, two children and a grandchild restarted (SIGTERM or SIGKILL) in a random order amid ingests converge exactly once."""
    seed = int(os.environ.get("LIENTHONG_FAULT_SEED", "20261123"))
    rng = random.Random(seed)
    province = make_node("86")
    address = listen_address(province)
    commune = make_node("86-28894", parent=address, listen=True)
    other = make_node("86-29077", parent=address)
    station = make_node("86-28894.tyt", parent=listen_address(commune))
    nodes = [province, commune, other, station]
    for node in nodes:
        fill(node, indicator_rows(node.name, 5_000, agency="thongke"))

    procs = {node: NodeProcess(node) for node in nodes}
    children = [procs[n] for n in nodes[1:]]
    rounds = 3
    marks: dict[Path, int] = {}
    with running(*procs.values()):
        for r in range(rounds):
            wait_links_up(children, marks)
            # Ingest while everything runs: new records and new versions of earlier ones,
            # and, at the province, records that travel down.
            for node in rng.sample(nodes, len(nodes)):
                rows = indicator_rows(node.name, 3_000, start=rng.randrange(0, 8_000), agency="thongke")
                for row in rows:
                    row["value"] = row["value"] + (r + 1) * 1_000_000
                fill(node, rows)
            fill(province, down_rows(r, [commune.name, station.name]))
            time.sleep(rng.uniform(0.05, 0.4))  # let batches get mid-flight; bounded waits follow
            # Restart everything while batches are in flight: stop each (SIGTERM or SIGKILL),
            # then start each, in two independent random orders; an operator ingests into
            # one stopped node in between.
            terminated = []
            for node in rng.sample(nodes, len(nodes)):
                if rng.random() < 0.5:
                    procs[node].kill()
                else:
                    terminate(procs[node])
                    terminated.append(procs[node])
                time.sleep(rng.uniform(0.0, 0.2))
            wait_exited(terminated)
            offline = rng.choice(nodes)
            rows = indicator_rows(offline.name, 1_000, start=20_000 + 1_000 * r, agency="thongke")
            cli("ingest", "--dir", str(offline), str(write_jsonl(tmp_path / f"offline-{r}.jsonl", rows)))
            marks = {node: log_size(procs[node]) for node in nodes}
            for node in rng.sample(nodes, len(nodes)):
                procs[node].start()
        wait_links_up(children, marks)
        expected = own(*nodes)
        wait_converged(province, expected, procs.values(), timeout=120)
        wait_caught_up([commune, other, station], procs.values())

        # Downward: definitions reach every node, feedback only its unit's subtree.
        definitions = versions_where(province, "origin = ? AND kind = ?", ("86", records.DEFINITION))
        fb_commune = versions_where(province, "origin = ? AND kind = ? AND unit = ?", ("86", records.FEEDBACK, commune.name))
        fb_station = versions_where(province, "origin = ? AND kind = ? AND unit = ?", ("86", records.FEEDBACK, station.name))
        assert len(definitions) == rounds and len(fb_commune) == rounds and len(fb_station) == rounds
        want_down = {commune: definitions | fb_commune | fb_station, other: definitions, station: definitions | fb_station}
        for node, want in want_down.items():
            wait_until(lambda n=node, w=want: versions(n, origin="86") == w, timeout=60, what=f"{node.name} to hold what was sent down")
        stop_all(procs.values())
    assert_exactly_once(province, expected, nodes)
    # The middle tier forwarded its child's records and holds them exactly.
    assert versions(commune, origin=station.name, seals=True) == versions(station, origin=station.name, seals=True)


def down_rows(r: int, units: list[str]) -> list[dict]:
    """Records the province sends down: a definition (a type the intake checks ignore,
    so it refuses no later rows) and a feedback ticket for each of `units`."""
    rows: list[dict] = [{"kind": "definition", "type": "feedback_category", "code": f"GT-R{r}", "fields": {"name": f"Giao thông {r}"}}]
    for unit in units:
        rows.append(
            {
                "kind": "feedback",
                "source_id": f"1022-{r}-{unit}",
                "unit": unit,
                "agency": "1022",
                "category": "GT-01",
                "description": "Ổ gà lớn trên đường tỉnh 885",
                "received_at": "2026-11-20T07:42:10+07:00",
            }
        )
    return rows
