"""Faults at any point lose nothing and duplicate nothing (DESIGN §4).

Every test injects a real fault into real node processes on loopback TCP
(SIGKILL, connection resets, a restore from backup, restarts in a random order)
and ends by comparing full record sets — the province holds exactly the union
of what the nodes below it wrote — and by checking that no node logged a record
version twice. Counts are only used as progress probes to time the faults.
"""

from __future__ import annotations

import os
import random
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
    versions_where,
    wait_caught_up,
    wait_converged,
)
from .helpers import STORE_FILE, NodeProcess, TcpProxy, cli, fill, indicator_rows, running, status, versions, wait_until, write_jsonl

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
        progress_between(province, child.name, 5_000, total - 20_000, what="the province to have applied part of the backlog")
        cp.kill()
        held = versions(province)
        assert held < expected, "the province holds records the child never wrote, or the kill came after the stream ended"
        checkpoint = applied(province, child.name)
        assert checkpoint > 0
        mark = log_size(cp)
        cp.start()
        wait_converged(province, expected, [pp, cp])
        wait_caught_up([child])
        # It resumed from the province's durable checkpoint, not from the start.
        ups = events(cp, "link.up", mark)
        assert ups, "the restarted child never logged link.up"
        assert checkpoint <= ups[0]["resume_from"] < total
    assert_exactly_once(province, expected, [province, child])


# ---------------------------------------------------------------- 2. province SIGKILLed mid-batch


def test_province_killed_mid_batch_resumes_exactly_once(make_node: MakeNode) -> None:
    """The province SIGKILLed while applying children's batches (three times) keeps data and checkpoints atomic: nothing lost, nothing twice."""
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
            progress_total(province, low, total - 8_000, what=f"the province to apply at least {low} records")
            pp.kill()
            held = versions(province)
            assert held < expected, "the province holds stray records, or the kill came after the stream ended"
            # A torn batch rolled back with its checkpoint: each child's checkpoint covers exactly
            # the records stored (each of its change-log entries is one new record here).
            for kid in kids:
                assert applied(province, kid.name) == count(province, kid.name), f"checkpoint and data of {kid.name} disagree"
            pp.start()
        wait_converged(province, expected, procs)
        wait_caught_up(kids)
        assert len(events(pp, "node.running")) == 4  # started once, restarted three times
    assert_exactly_once(province, expected, [province, *kids])


# ---------------------------------------------------------------- 3. link cut both ways mid-batch


def test_link_cut_both_ways_mid_batch_resumes_exactly_once(make_node: MakeNode) -> None:
    """Connections reset in both directions mid-batch, five times, lose and duplicate nothing; status shows the link down, then up."""
    province = make_node("86")
    proxy = TcpProxy(int(listen_address(province).rsplit(":", 1)[1]))
    try:
        child = make_node("86-28894", parent=f"127.0.0.1:{proxy.port}")
        total = 100_000
        fill(child, indicator_rows(child.name, total, agency="thongke"))
        expected = own(child)

        pp, cp = NodeProcess(province), NodeProcess(child)
        cuts = 5
        with running(pp, cp):
            wait_until(lambda: status(child)["parent"]["connected"], timeout=30, what="the child's link up")
            for i in range(cuts):
                low = (i + 1) * 12_000
                progress_between(province, child.name, low, total - 10_000, what=f"batches in flight before cut {i + 1}")
                if i == 0:
                    # Keep the link down long enough to see it in `status` on both sides.
                    proxy.blocked = True
                    proxy.cut()
                    wait_until(lambda: status(child)["parent"]["connected"] is False, timeout=30, what="the child to show the link down")
                    wait_until(
                        lambda: child_status(province, child.name)["connected"] is False,
                        timeout=30,
                        what="the province to show the child down",
                    )
                    assert count(province, child.name) < total
                    proxy.blocked = False
                    wait_until(lambda: status(child)["parent"]["connected"] is True, timeout=30, what="the child to show the link up again")
                    wait_until(
                        lambda: child_status(province, child.name)["connected"] is True,
                        timeout=30,
                        what="the province to show the child up again",
                    )
                else:
                    proxy.cut()
            wait_converged(province, expected, [pp, cp])
            wait_caught_up([child])
            assert status(child)["parent"]["connected"] is True
            # Every cut broke a live session: one session per cut, plus the first.
            assert len(events(cp, "link.up")) >= cuts + 1
        assert_exactly_once(province, expected, [province, child])
    finally:
        proxy.close()


# ---------------------------------------------------------------- 4. child restored from an older backup


def test_child_restored_from_backup_changes_epoch_and_resends(make_node: MakeNode, tmp_path: Path) -> None:
    """A child restored from an older backup, whose log sequences are then reused by different records, starts a new epoch and the province ends with both eras."""
    province = make_node("86")
    child = make_node("86-28894", parent=listen_address(province))
    fill(child, indicator_rows(child.name, 10_000, agency="thongke"))
    pp, cp = NodeProcess(province), NodeProcess(child)
    backup = tmp_path / "child-backup.db"
    with running(pp, cp):
        wait_converged(province, own(child), [pp, cp])
        cli("backup", "--dir", str(child), str(backup))  # online, while the child runs
        backed_up = head(child)
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
        wait_caught_up([child])
        old_epoch = status(child)["node"]["epoch"]
        assert child_status(province, child.name)["epoch"] == old_epoch
        checkpoint = applied(province, child.name)
        assert checkpoint == head(child) > backed_up
        cp.stop()

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
        wait_caught_up([child])
        new_epoch = status(child)["node"]["epoch"]
        assert new_epoch != old_epoch
        wait_until(
            lambda: child_status(province, child.name)["epoch"] == new_epoch, timeout=30, what="the province to record the new epoch"
        )
        assert events(cp, "link.epoch_changed", mark), "the child did not detect the restore"
    assert_exactly_once(province, expected, [province, child])
    # The child itself holds only its restored era, plus what it wrote since.
    assert versions(child, origin=child.name) == era2


# ---------------------------------------------------------------- 5. everything restarted in a random order


def test_everything_restarted_in_random_order_converges_exactly_once(make_node: MakeNode, tmp_path: Path) -> None:
    """Province, two children and a grandchild stopped or SIGKILLed and restarted in a random order, with ingests in between, converge exactly once, up and down."""
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

    procs = [NodeProcess(n) for n in nodes]
    rounds = 3
    with running(*procs):
        for r in range(rounds):
            # Ingest while everything runs: new records and new versions of earlier ones.
            for node in rng.sample(nodes, len(nodes)):
                rows = indicator_rows(node.name, 3_000, start=rng.randrange(0, 8_000), agency="thongke")
                for row in rows:
                    row["value"] = row["value"] + (r + 1) * 1_000_000
                cli("ingest", "--dir", str(node), str(write_jsonl(tmp_path / f"{node.name}-{r}.jsonl", rows)))
            down = [
                {"kind": "definition", "type": "indicator", "code": f"KTXH.R{r}", "fields": {"name": f"Chỉ tiêu {r}"}},
                *(
                    {
                        "kind": "feedback",
                        "source_id": f"1022-{r}-{unit}",
                        "unit": unit,
                        "agency": "1022",
                        "category": "GT-01",
                        "description": "Ổ gà lớn trên đường tỉnh 885",
                        "received_at": "2026-11-20T07:42:10+07:00",
                    }
                    for unit in (commune.name, station.name)
                ),
            ]
            cli("ingest", "--dir", str(province), str(write_jsonl(tmp_path / f"down-{r}.jsonl", down)))
            time.sleep(rng.uniform(0.0, 0.5))  # let batches get mid-flight; the bounded waits come below
            # Restart everything in a random order while batches are in flight: stop each
            # (SIGTERM or SIGKILL), then start each, in two independent random orders.
            for p in rng.sample(procs, len(procs)):
                if rng.random() < 0.5:
                    p.kill()
                else:
                    p.stop()
                wait_until(lambda p=p: not p.alive(), timeout=20, what=f"{p.dir.name} to stop")
            for p in rng.sample(procs, len(procs)):
                p.start()
        expected = own(*nodes)
        wait_converged(province, expected, procs, timeout=120)
        wait_caught_up([commune, other, station], timeout=60)

        # Downward: definitions reach every node, feedback only its unit's subtree.
        definitions = versions_where(province, "origin = ? AND kind = ?", ("86", records.DEFINITION))
        fb_commune = versions_where(province, "origin = ? AND kind = ? AND unit = ?", ("86", records.FEEDBACK, commune.name))
        fb_station = versions_where(province, "origin = ? AND kind = ? AND unit = ?", ("86", records.FEEDBACK, station.name))
        assert len(definitions) == rounds and len(fb_commune) == rounds and len(fb_station) == rounds
        want_down = {commune: definitions | fb_commune | fb_station, other: definitions, station: definitions | fb_station}
        for node, want in want_down.items():
            wait_until(
                lambda n=node, w=want: versions(n, origin="86") == w, timeout=60, what=f"{node.name} to hold what the province sent down"
            )
    assert_exactly_once(province, expected, nodes)
    # The middle tier forwarded its child's records and holds them exactly.
    assert versions_where(commune, "origin = ?", (station.name,)) == versions(station, origin=station.name)
