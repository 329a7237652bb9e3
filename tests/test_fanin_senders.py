"""A province with many children: a store change wakes every child's down sender and file
fetcher, and only those with something new may query the store (issue #16, fan-in to 1,000
children)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import structlog

from lienthong.sync import records
from lienthong.sync.batch import OutBatch
from lienthong.sync.blobs import Blobs
from lienthong.sync.clock import HybridClock
from lienthong.sync.downstream import Downstream
from lienthong.sync.file_transfer import FILE_POLL, FilePeer, FileWatch
from lienthong.sync.files import Files, Want
from lienthong.sync.replication import Changes, QueueHead, Tuning, WindowedSender
from lienthong.sync.store import Store

from .transports import GrpcLink, parent, uplink

CHILDREN = [f"86-3{i:04d}" for i in range(40)]


def feedback(unit: str) -> dict[str, Any]:
    return {
        "kind": "feedback",
        "source_id": "1022-0042",
        "unit": unit,
        "agency": "1022",
        "category": "GT-01",
        "description": "Ổ gà lớn trên đường tỉnh 885",
        "received_at": "2026-11-20T07:42:10+07:00",
    }


async def until(check: Any, what: str) -> None:
    for _ in range(2000):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"not within 10 s: {what}")


def test_store_changes_wake_only_the_senders_whose_queue_grew(tmp_path: Path) -> None:
    store = Store.create(tmp_path / "province.db", "86")
    down = Downstream(store)
    for child in CHILDREN:
        down.register_child(child, "127.0.0.1:1")
    fetched: dict[str, int] = dict.fromkeys(CHILDREN, 0)
    sent: dict[str, list[OutBatch]] = {child: [] for child in CHILDREN}

    async def main() -> None:
        changes, tuning = Changes(), Tuning(poll_interval=30.0)  # only store changes wake the senders here
        head = QueueHead(down.queue_head, changes, tuning.poll_interval)
        senders = []
        for child in CHILDREN:

            def fetch(seq: int, limit: int, child: str = child) -> OutBatch | None:
                fetched[child] += 1
                return down.down_after(child, seq, limit)

            async def send(batch: OutBatch, child: str = child) -> None:
                sent[child].append(batch)

            senders.append(WindowedSender(fetch, send, 0, tuning, changes, head))
        tasks = [asyncio.create_task(s.run()) for s in senders]
        try:
            await until(lambda: all(fetched.values()), "every sender's first fetch")
            for i in range(5):  # what each group commit of any child does
                changes.notify()
                # Either the shared head was read again (and the senders may skip their fetch)
                # or every sender fetched again.
                await until(
                    lambda i=i: head.current_generation == changes.generation or min(fetched.values()) >= i + 2,
                    "the senders woken",
                )
                for _ in range(50):
                    await asyncio.sleep(0)
            item = records.build("86", feedback(CHILDREN[7]))
            await asyncio.to_thread(store.write_local, [item], HybridClock(store.latest_version()))
            changes.notify()
            await until(lambda: bool(sent[CHILDREN[7]]), "the item sent down to its child")
            # The queue grew: every sender looks once more (on a loaded machine, not all of them by the
            # time the item reached its child; stopped then, some had fetched once and the count was short).
            await until(lambda: min(fetched.values()) >= 2, "every sender's look after the queue grew")
            for _ in range(50):
                await asyncio.sleep(0)  # a sender that would look a third time does it now
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        assert [e for b in sent[CHILDREN[7]] for e in b.envelopes][-1] == store.envelope(item.id)
        assert not any(sent[c] for c in CHILDREN if c != CHILDREN[7])

    asyncio.run(main())
    store.close()
    # One empty fetch each at the start and one when the queue (of any child) grew; the five
    # changes that added nothing to it cost no query (before: every change, every sender).
    assert all(n == 2 for c, n in fetched.items() if c != CHILDREN[7]), fetched


def test_store_changes_wake_only_the_file_fetchers_that_have_a_file_to_fetch(tmp_path: Path) -> None:
    """Every batch a child sends changes the province's store. Each stream's file fetcher looked
    at the change log and asked the store for a file to fetch at every such change: with 1,000
    children idle on files, 2,000 queries a batch. Now one scan serves all streams, and only the
    fetcher whose peer holds a newly named file asks the store again."""
    store = Store.create(tmp_path / "province.db", "86")
    down = Downstream(store)
    for child in CHILDREN:
        down.register_child(child, "127.0.0.1:1")
    counts = {"scan": 0, **dict.fromkeys(CHILDREN, 0)}

    class CountedFiles(Files):
        def scan(self) -> list[dict[str, Any]]:
            counts["scan"] += 1
            return super().scan()

        def next_wanted(self, source: str) -> Want | None:
            counts[source] += 1
            return super().next_wanted(source)

    files = CountedFiles(store, Blobs(tmp_path / "blobs"))
    asked: dict[str, list[Any]] = {child: [] for child in CHILDREN}
    polls = [0]
    report = {
        "kind": "report",
        "report_type": "BC-IOC-THANG",
        "period": "2026-11",
        "title": "Báo cáo tháng 11",
        "submitted_at": "2026-11-30T16:00:00+07:00",
        "attachments": [{"name": "bao-cao.pdf", "sha256": "ab" * 32, "size": 1000}],
    }

    async def main() -> None:
        changes = Changes()
        started = time.monotonic()
        watch = FileWatch(files, changes, structlog.get_logger("test"))
        peers = []
        for child in CHILDREN:

            async def send(which: str, message: Any, child: str = child) -> None:
                asked[child].append((which, message))

            peers.append(FilePeer(watch, child, send, structlog.get_logger("test")))
        tasks = [asyncio.create_task(p.run()) for p in peers]
        try:
            await until(lambda: all(counts[c] for c in CHILDREN), "every fetcher's first look")
            for _ in range(5):  # what each group commit of any child does
                changes.notify()
                for _ in range(200):
                    await asyncio.sleep(0)
            quiet = dict(counts)
            polls[0] = int((time.monotonic() - started) / FILE_POLL) + 1  # the scanner also looks every FILE_POLL
            # A child sends a report naming a file the province lacks: that child's fetcher asks for it.
            sender = CHILDREN[7]
            item = records.build(sender, {**report, "unit": sender})
            raw = item.envelope(sender, HybridClock().now()).SerializeToString()
            await asyncio.to_thread(down.apply_from_child, sender, "e" * 32, 0, 1, b"", [raw])
            changes.notify()
            await until(lambda: bool(asked[sender]), "the file asked for from its child")
            for _ in range(200):
                await asyncio.sleep(0)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        # One look each at the start; the five changes cost one scan each, no fetcher's query.
        assert all(quiet[c] == 1 for c in CHILDREN), quiet
        assert quiet["scan"] <= 1 + 5 + polls[0], quiet
        assert [(which, m.sha256, m.offset) for which, m in asked[sender]] == [("file_want", "ab" * 32, 0)]
        assert counts[sender] >= 2
        assert all(counts[c] == 1 for c in CHILDREN if c != sender), counts
        assert not any(asked[c] for c in CHILDREN if c != sender)

    asyncio.run(main())
    store.close()


def test_a_childs_handshake_costs_the_province_one_commit_and_keeps_its_clock_offset(tmp_path: Path, ca_dir: Path) -> None:
    """A province restarted under thousands of communes takes every one's handshake at once:
    each costs one fsynced transaction (who connected, from where, how far its clock is off),
    not one for the connection and another for the clock."""
    for node in ("86", "86-28894"):
        (tmp_path / node).mkdir()
    prov = Store.create(tmp_path / "86" / "lienthong.db", "86")
    child = Store.create(tmp_path / "86-28894" / "lienthong.db", "86-28894")
    statements: list[str] = []
    with prov.writing() as db:
        db.set_trace_callback(statements.append)
    link = GrpcLink(tmp_path, ca_dir)  # real mTLS gRPC on loopback, a CA made for the test
    handshake: list[str] = []

    async def main() -> None:
        async with parent(link, prov), uplink(link, child):
            await until(lambda: Downstream(prov).children() and Downstream(prov).children()[0]["connected"], "the child connected")
            await asyncio.sleep(0.5)  # anything else the handshake would write
            handshake.extend(statements)  # the link's end (the child marked disconnected) is not counted

    try:
        statements.clear()
        asyncio.run(main())
        row = prov.reader().execute("SELECT clock_offset_ms FROM children WHERE child = '86-28894'").fetchone()
        assert row[0] is not None and abs(row[0]) < 60_000, row
        commits = [s for s in handshake if s == "COMMIT"]
        assert len(commits) == 1, f"{len(commits)} commits for one handshake: {handshake}"
    finally:
        prov.close()
        child.close()
