"""One contract, two transports: every scenario runs over the in-memory pair and over real mTLS gRPC.

The first tests hold the `Stream` seam itself (sync/stream.py) to its docstring; the rest drive
whole replication sessions (`Uplink` on the child, `ChildSession` on the parent) and must come
out the same whichever transport carries them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from lienthong.sync import records
from lienthong.sync.blobs import BLOBS, CHUNK, Blobs
from lienthong.sync.clock import HybridClock, wall_ms
from lienthong.sync.downstream import Downstream
from lienthong.sync.errors import HandshakeRefused, ProtocolError, ReplicationError
from lienthong.sync.files import FileLimits, Files
from lienthong.sync.store import Store
from lienthong.sync.stream import Peer, Stream
from lienthong.sync.upstream import Upstream
from lienthong.sync.wire import replication_pb2 as wire

from .helpers import STORE_FILE, changelog_duplicates
from .transports import PARENT, GrpcLink, Link, MemoryLink, parent, until, uplink

CHILD = "86-28894"


@pytest.fixture(params=["memory", "grpc"])
def link(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Link]:
    """The transport under test: in memory, or mTLS gRPC on loopback with a CA made for the test."""
    if request.param == "memory":
        yield MemoryLink()
    else:
        yield GrpcLink(tmp_path, request.getfixturevalue("ca_dir"))


def indicator(i: int, unit: str = CHILD) -> dict[str, object]:
    return {"kind": "indicator", "indicator": f"I.{i}", "unit": unit, "period": "2026-10", "value": i}


def definition(code: str) -> dict[str, object]:
    return {"kind": "definition", "type": "indicator", "code": code, "fields": {"name": code}}


def write(store: Store, rows: list[dict[str, object]], clock: HybridClock | None = None) -> None:
    store.write_local([records.build(store.node_id, row) for row in rows], clock or HybridClock())


# ------------------------------------------------------------------ the Stream seam itself


def test_messages_arrive_in_order_each_once_and_a_returning_handler_ends_the_stream(link: Link) -> None:
    """What the child sends arrives in order, once; the parent's answers too; a handler that returns ends the stream cleanly (None)."""
    seen: list[int] = []
    peers: list[Peer] = []

    async def echo(peer: Peer, address: str, stream: Stream) -> None:
        peers.append(peer)
        while (message := await stream.recv()) is not None:
            seen.append(message.hello.head)
            await stream.send(wire.Down(welcome=wire.Welcome(applied=message.hello.head)))
            if message.hello.head == 199:
                return

    async def main() -> None:
        async with link.serving(echo, lambda *a: None), link.connect(CHILD)() as stream:

            async def sender() -> None:
                for i in range(200):
                    await stream.send(wire.Up(hello=wire.Hello(head=i)))

            task = asyncio.create_task(sender())
            answers = []
            while (reply := await asyncio.wait_for(stream.recv(), 30)) is not None:
                answers.append(reply.welcome.applied)
            await task
        assert seen == list(range(200)) and answers == list(range(200))
        assert [p.node_id for p in peers] == [CHILD]

    asyncio.run(main())


@pytest.mark.parametrize(
    ("raised", "expected"), [(HandshakeRefused("no entry"), HandshakeRefused), (ProtocolError("bad message"), ProtocolError)]
)
def test_a_handlers_error_reaches_the_child_as_the_same_kind(link: Link, raised: Exception, expected: type[Exception]) -> None:
    """A parent that refuses the child (or drops it for a protocol error) makes the child's stream raise that kind of error, with its reason."""

    async def refuse(peer: Peer, address: str, stream: Stream) -> None:
        await stream.recv()
        raise raised

    async def main() -> None:
        reported: list[str] = []
        async with link.serving(refuse, lambda address, kind, exc: reported.append(kind)), link.connect(CHILD)() as stream:
            await stream.send(wire.Up(hello=wire.Hello()))
            with pytest.raises(expected, match=str(raised)):
                await asyncio.wait_for(stream.recv(), 30)
        assert reported == ["refused" if expected is HandshakeRefused else "protocol"]

    asyncio.run(main())


def test_leaving_connect_ends_the_parents_stream_and_a_cut_fails_both_ends(link: Link) -> None:
    """The child leaving its stream ends the handler's (recv returns None) even while the handler is busy
    when the child leaves (as a parent applying a batch is); a cut makes the child's stream raise ReplicationError."""
    outcomes: list[str] = []

    async def wait(peer: Peer, address: str, stream: Stream) -> None:
        try:
            while await stream.recv() is not None:
                await stream.send(wire.Down(welcome=wire.Welcome()))
                await asyncio.sleep(0.3)  # busy with what the child sent when the child leaves
            outcomes.append("ended")
        except asyncio.CancelledError:
            outcomes.append("cancelled")
            raise
        except ReplicationError:
            outcomes.append("failed")
            raise

    async def main() -> None:
        async with link.serving(wait, lambda *a: None):
            async with link.connect(CHILD)() as stream:
                await stream.send(wire.Up(hello=wire.Hello()))
                await asyncio.wait_for(stream.recv(), 30)
            await until(lambda: outcomes, what="the handler to end")
            assert outcomes == ["ended"]
            async with link.connect(CHILD)() as stream:
                await stream.send(wire.Up(hello=wire.Hello()))
                await asyncio.wait_for(stream.recv(), 30)
                link.cut()
                with pytest.raises(ReplicationError):
                    await asyncio.wait_for(stream.recv(), 30)
            await until(lambda: len(outcomes) == 2, what="the handler to end after the cut")
        assert outcomes[1] in ("cancelled", "failed", "ended")  # gRPC may see the reset as any of these

    asyncio.run(main())


# ------------------------------------------------------------------ replication over the seam


def new_store(tmp_path: Path, node_id: str) -> Store:
    """A node's store where the test helpers look for it (`DIR/lienthong.db`)."""
    (tmp_path / node_id).mkdir(parents=True, exist_ok=True)
    return Store.create(tmp_path / node_id / STORE_FILE, node_id)


def test_a_childs_backlog_arrives_exactly_once(link: Link, tmp_path: Path) -> None:
    """Records a child wrote while offline, then while linked, reach the parent exactly once; the child's cursor moves to its head."""

    async def main() -> None:
        prov, child = new_store(tmp_path, PARENT), new_store(tmp_path, CHILD)
        write(child, [indicator(i) for i in range(600)])
        async with parent(link, prov) as refused, uplink(link, child):
            await until(lambda: Upstream(child).pending() == 0, what="the backlog acknowledged")
            write(child, [indicator(i) for i in range(600, 620)])
            await until(lambda: Upstream(child).pending() == 0, what="the live changes acknowledged")
        assert prov.record_versions() == child.record_versions() and len(prov.record_versions()) == 620
        assert (
            Downstream(prov).children()[0]["applied"] == child.head() and Downstream(prov).children()[0]["received"] == 620 and not refused
        )
        prov.close(), child.close()

    asyncio.run(main())
    assert changelog_duplicates(tmp_path / PARENT) == 0


def test_a_resend_after_dropped_streams_duplicates_nothing(link: Link, tmp_path: Path) -> None:
    """Streams cut three times mid-backlog resume from the parent's checkpoint: every record once, none twice."""
    total = 3000

    async def main() -> None:
        prov, child = new_store(tmp_path, PARENT), new_store(tmp_path, CHILD)
        write(child, [indicator(i) for i in range(total)])
        with capture_logs() as logs:

            def sessions() -> int:
                return sum(1 for e in logs if e["event"] == "link.up" and "down_applied" in e)  # the child's side

            async with parent(link, prov), uplink(link, child):
                for cut in range(1, 4):
                    # Cut only a live session: the one after the previous cut must be up first
                    # (on a loaded machine the records wanted may already be in before it is).
                    await until(lambda cut=cut: sessions() >= cut, what=f"session {cut} up")
                    low = cut * 400
                    held = await until(
                        lambda low=low: (n := len(prov.record_versions())) >= low and n, what=f"{low} records before cut {cut}"
                    )
                    assert held < total, f"the backlog was through before cut {cut}: nothing to resend"
                    link.cut()
                await until(lambda: Upstream(child).pending() == 0, what="every entry acknowledged after the cuts")
        sessions = [e for e in logs if e["event"] == "link.up" and "down_applied" in e]  # the child's side
        assert len(sessions) >= 4, "each cut should have broken a live session"
        assert prov.record_versions() == child.record_versions() and len(prov.record_versions()) == total
        prov.close(), child.close()

    asyncio.run(main())
    assert changelog_duplicates(tmp_path / PARENT) == 0 and changelog_duplicates(tmp_path / CHILD) == 0


def test_the_parents_downward_queue_reaches_the_child(link: Link, tmp_path: Path) -> None:
    """Definitions the parent writes, before and during the session, reach the child in full; its down cursor follows."""

    async def main() -> None:
        prov, child = new_store(tmp_path, PARENT), new_store(tmp_path, CHILD)
        clock = HybridClock()
        write(prov, [definition(f"D.{i}") for i in range(120)], clock)
        async with parent(link, prov), uplink(link, child):
            await until(lambda: child.counts()["definition"] == 120, what="the queued definitions")
            write(prov, [definition(f"E.{i}") for i in range(30)], clock)
            await until(lambda: child.counts()["definition"] == 150, what="definitions written during the session")
            await until(lambda: Upstream(child).down_cursor()[1] == prov.head(), what="the child's down cursor at the parent's head")
        assert {v for v in prov.record_versions()} == child.record_versions()
        prov.close(), child.close()

    asyncio.run(main())
    assert changelog_duplicates(tmp_path / CHILD) == 0


def test_a_refused_record_is_acknowledged_as_refused_and_does_not_pin_the_cursor(link: Link, tmp_path: Path) -> None:
    """A record the parent refuses comes back as refused (shown at the child, quarantined at the parent); later records still flow."""

    async def main() -> None:
        prov, child = new_store(tmp_path, PARENT), new_store(tmp_path, CHILD)
        skewed = HybridClock(wall=lambda: wall_ms() + 3 * 24 * 3600 * 1000)  # the commune server's clock is 3 days ahead
        write(child, [indicator(1)], skewed)
        async with parent(link, prov), uplink(link, child):
            await until(lambda: Upstream(child).refused_count() == 1, what="the refusal at the child")
            write(child, [indicator(i) for i in range(2, 40)])
            await until(lambda: Upstream(child).pending() == 0, what="the cursor past the refused record")
        assert len(prov.record_versions()) == 38
        refused = Upstream(child).refused()[0]
        assert refused["code"] == "clock_skew" and "clock" in refused["reason"]
        assert [q["code"] for q in Downstream(prov).quarantine()] == ["clock_skew"] and Downstream(prov).children()[0]["rejected"] == 1
        prov.close(), child.close()

    asyncio.run(main())


def test_a_child_restored_from_an_older_copy_changes_epoch_and_resyncs(link: Link, tmp_path: Path) -> None:
    """A child restored from a backup the parent is ahead of mints a new epoch and sends everything again; nothing is lost."""

    async def main() -> None:
        prov, child = new_store(tmp_path, PARENT), new_store(tmp_path, CHILD)
        clock = HybridClock()
        write(child, [indicator(i) for i in range(100)], clock)
        async with parent(link, prov):
            async with uplink(link, child):
                await until(lambda: Upstream(child).pending() == 0, what="the first records")
                child.backup(tmp_path / "backup.db")
                write(child, [indicator(i) for i in range(100, 150)], clock)
                await until(lambda: Upstream(child).pending() == 0, what="the records the backup misses")
            lost = child.record_versions()
            old_epoch = child.epoch
            child.close()
            # The disk is lost; the backup comes back on a new one.
            (tmp_path / "restored").mkdir()
            shutil.copy(tmp_path / "backup.db", tmp_path / "restored" / STORE_FILE)
            child = Store.open(tmp_path / "restored" / STORE_FILE)
            write(child, [indicator(i) for i in range(200, 220)], clock)
            with capture_logs() as logs:
                async with uplink(link, child):
                    await until(lambda: Upstream(child).pending() == 0 and child.epoch != old_epoch, what="the resync under a new epoch")
        assert any(e["event"] == "link.epoch_changed" for e in logs)
        assert Downstream(prov).children()[0]["epoch"] == child.epoch
        assert child.record_versions() <= prov.record_versions() == lost | child.record_versions()
        prov.close(), child.close()

    asyncio.run(main())


def test_a_child_presenting_the_parents_own_identity_is_refused_with_the_reason(link: Link, tmp_path: Path) -> None:
    """The parent refuses a peer with its own identity; the child logs the refusal with the parent's reason and sends nothing."""

    async def main() -> None:
        prov, imposter = new_store(tmp_path, PARENT), new_store(tmp_path / "imposter", PARENT)
        write(imposter, [indicator(1, PARENT)])
        with capture_logs() as logs:
            async with parent(link, prov) as refused, uplink(link, imposter):
                await until(lambda: any(e["event"] == "link.refused" for e in logs), what="the refusal at the child")
        refusal = next(e for e in logs if e["event"] == "link.refused" and "hint" in e)
        assert "own identity" in refusal["error"] and refused and refused[0][0] == "refused"
        assert prov.record_versions() == set() and Upstream(imposter).pending() == 1
        prov.close(), imposter.close()

    asyncio.run(main())


# ------------------------------------------------------------------ files on the stream (docs/files.md)


def put_blob(store: Store, data: bytes) -> str:
    """Keep `data` as a blob of the node that holds `store`, as ingestion does; returns its SHA-256."""
    sha = hashlib.sha256(data).hexdigest()
    path = store.path.parent / BLOBS / sha[:2] / sha
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return sha


def report_with(sha: str, size: int, unit: str = CHILD, period: str = "2026-10", name: str = "baocao.pdf") -> dict[str, object]:
    return {
        "kind": "report",
        "report_type": "BC-THANG",
        "unit": unit,
        "period": period,
        "title": "Báo cáo tháng",
        "submitted_at": "2026-11-05T09:00:00+07:00",
        "attachments": [{"name": name, "sha256": sha, "size": size}],
    }


def blob_bytes(store: Store, sha: str) -> bytes | None:
    path = store.path.parent / BLOBS / sha[:2] / sha
    return path.read_bytes() if path.exists() else None


def want_state(store: Store, sha: str) -> tuple[str, int, str] | None:
    row = store.reader().execute("SELECT state, attempts, error FROM blob_wants WHERE sha256 = ?", (sha,)).fetchone()
    return tuple(row) if row else None


class PausingBlobs(Blobs):
    """A sender's disk that stops at given offsets until the test lets it go on (to cut the link
    there, mid-file, whatever the transport's speed)."""

    def __init__(self, root: Path, offsets: list[int]) -> None:
        super().__init__(root)
        self.gates = {offset: threading.Event() for offset in offsets}
        self.paused_at = -1
        self.reads: list[int] = []

    def read(self, sha256: str, offset: int, length: int) -> tuple[bytes, int]:
        self.reads.append(offset)
        gate = self.gates.get(offset)
        if gate is not None and not gate.is_set():
            self.paused_at = offset
            gate.wait(60)
        return super().read(sha256, offset, length)


def test_a_childs_file_arrives_whole_and_verified_through_cuts(link: Link, tmp_path: Path) -> None:
    """A report's 3 MB attachment (12 chunks) reaches the parent byte for byte though the link is cut
    three times mid-file; each session resumes at the chunk after the last one written."""
    data = os.urandom(3 * 1024 * 1024 + 123)
    cuts = [3 * CHUNK, 6 * CHUNK, 9 * CHUNK]

    async def main() -> None:
        prov, child = new_store(tmp_path, PARENT), new_store(tmp_path, CHILD)
        sha = put_blob(child, data)
        write(child, [report_with(sha, len(data))])
        partial = Blobs(prov.path.parent / BLOBS)
        sender = PausingBlobs(child.path.parent / BLOBS, cuts)
        try:
            with capture_logs() as logs:
                async with parent(link, prov), uplink(link, child, files=Files(child, sender)):
                    for offset in cuts:
                        await until(lambda offset=offset: sender.paused_at == offset, what=f"the sender at byte {offset}")
                        assert partial.received(sha) == offset and blob_bytes(prov, sha) is None
                        link.cut()
                        sender.gates[offset].set()
                    await until(lambda: (want_state(prov, sha) or ("",))[0] == "done", what="the whole file at the parent")
        finally:
            for gate in sender.gates.values():
                gate.set()
        assert blob_bytes(prov, sha) == data and partial.received(sha) == 0, "whole, and no partial file left behind"
        # Resumed, not restarted: each new session asked from where the last one stopped, never from 0.
        sessions = [e for e in logs if e["event"] == "link.up" and "down_applied" in e]
        assert len(sessions) >= 4 and len([e for e in logs if e["event"] == "file.received"]) == 1
        assert sender.reads.count(0) == 1 and all(sender.reads.count(offset) == 2 for offset in cuts)
        prov.close(), child.close()

    asyncio.run(main())


class GatedBlobs(Blobs):
    """A sender's disk that stops giving chunks after the first until the test opens the gate."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gate = threading.Event()
        self.reads = 0

    def read(self, sha256: str, offset: int, length: int) -> tuple[bytes, int]:
        self.reads += 1
        if self.reads > 1:
            self.gate.wait(60)
        return super().read(sha256, offset, length)


def test_records_do_not_wait_behind_a_file(link: Link, tmp_path: Path) -> None:
    """While a file's next chunk is held at its sender, records written meanwhile still reach the
    parent (the file has its own budget on the stream); the file completes once the chunk comes."""
    data = os.urandom(2 * 1024 * 1024)

    async def main() -> None:
        prov, child = new_store(tmp_path, PARENT), new_store(tmp_path, CHILD)
        sha = put_blob(child, data)
        write(child, [report_with(sha, len(data))])
        gated = GatedBlobs(child.path.parent / BLOBS)
        partial = Blobs(prov.path.parent / BLOBS)
        try:
            async with parent(link, prov), uplink(link, child, files=Files(child, gated)):
                await until(lambda: partial.received(sha) == CHUNK and gated.reads > 1, what="the first chunk, the second held")
                write(child, [indicator(i) for i in range(300)])
                await until(lambda: Upstream(child).pending() == 0, what="the records written behind the file")
                assert prov.counts()["indicator"] == 300 and blob_bytes(prov, sha) is None
                gated.gate.set()
                await until(lambda: blob_bytes(prov, sha) is not None, what="the file once its chunks flow")
        finally:
            gated.gate.set()
        assert blob_bytes(prov, sha) == data
        prov.close(), child.close()

    asyncio.run(main())


def test_a_file_failing_its_check_is_refused_and_fetched_again(link: Link, tmp_path: Path) -> None:
    """A file whose bytes do not match the sealed SHA-256 never becomes visible; once the sender holds
    the right bytes, it is fetched again from its start and arrives."""
    data = os.urandom(600_000)

    async def main() -> None:
        prov, child = new_store(tmp_path, PARENT), new_store(tmp_path, CHILD)
        sha = put_blob(child, data)
        blob = child.path.parent / BLOBS / sha[:2] / sha
        blob.write_bytes(b"X" + data[1:])  # the sender's copy went bad on its disk
        write(child, [report_with(sha, len(data))])
        async with parent(link, prov), uplink(link, child):
            await until(lambda: (s := want_state(prov, sha)) and s[1] >= 1, what="the bad copy refused")
            assert blob_bytes(prov, sha) is None and "does not match" in want_state(prov, sha)[2]
            blob.write_bytes(data)
            prov_files = Files(prov, Blobs(prov.path.parent / BLOBS))
            prov_files.retry_now(CHILD)  # skip the pause before asking again
            await until(lambda: blob_bytes(prov, sha) is not None, what="the good copy")
        assert blob_bytes(prov, sha) == data
        prov.close(), child.close()

    asyncio.run(main())


def test_a_file_named_by_a_record_sent_down_reaches_the_child(link: Link, tmp_path: Path) -> None:
    """Down too: a report queued down to a child brings its file; a file no record queued to the
    child names is refused to it."""
    data, other = os.urandom(700_000), os.urandom(1000)

    async def main() -> None:
        prov, child = new_store(tmp_path, PARENT), new_store(tmp_path, CHILD)
        sha, secret = put_blob(prov, data), put_blob(prov, other)
        write(prov, [report_with(sha, len(data), unit=PARENT), report_with(secret, len(other), unit=PARENT, period="2026-09")])
        Downstream(prov).register_child(CHILD, "test")
        rid = prov.reader().execute("SELECT rid FROM records WHERE kind = ? AND instr(envelope, ?) > 0", (records.REPORT, sha.encode()))
        with prov.writing() as db:
            db.execute("INSERT INTO downqueue(child, rid) VALUES (?, ?)", (CHILD, rid.fetchone()[0]))
        async with parent(link, prov), uplink(link, child):
            await until(lambda: blob_bytes(child, sha) is not None, what="the file at the child")
        assert blob_bytes(child, sha) == data
        files = Files(prov, Blobs(prov.path.parent / BLOBS))
        assert files.may_give(sha, CHILD) and not files.may_give(secret, CHILD) and files.may_give(secret, "^")
        assert blob_bytes(child, secret) is None
        prov.close(), child.close()

    asyncio.run(main())


def test_a_file_over_the_size_limit_is_refused_with_the_reason(link: Link, tmp_path: Path) -> None:
    """A file larger than [files] max_file_mb is never fetched; `pending` names it and why."""
    data = os.urandom(300_000)

    async def main() -> None:
        prov, child = new_store(tmp_path, PARENT), new_store(tmp_path, CHILD)
        sha = put_blob(child, data)
        write(child, [report_with(sha, len(data))])
        limited = Files(prov, Blobs(prov.path.parent / BLOBS), FileLimits(max_file_bytes=100_000))
        async with parent(link, prov, files=limited), uplink(link, child):
            await until(lambda: want_state(prov, sha), what="the file noted")
        assert want_state(prov, sha)[0] == "refused" and blob_bytes(prov, sha) is None
        refused = limited.pending()["refused"]
        assert refused[0]["sha256"] == sha and "max_file_mb" in refused[0]["reason"]
        prov.close(), child.close()

    asyncio.run(main())


def test_a_file_this_node_cannot_write_waits_while_records_flow(link: Link, tmp_path: Path) -> None:
    """The parent cannot write a file arriving (its blobs/ folder is broken): it says why, records
    still flow, and once the folder is repaired the file arrives."""
    data = os.urandom(400_000)

    async def main() -> None:
        prov, child = new_store(tmp_path, PARENT), new_store(tmp_path, CHILD)
        sha = put_blob(child, data)
        write(child, [report_with(sha, len(data))])
        broken = prov.path.parent / BLOBS / ".partial"
        broken.parent.mkdir(parents=True)
        broken.write_text("not a folder")
        with capture_logs() as logs:
            async with parent(link, prov), uplink(link, child):
                await until(lambda: any(e["event"] == "file.write_failed" for e in logs), what="the write failure logged")
                write(child, [indicator(i) for i in range(50)])
                await until(lambda: prov.counts()["indicator"] == 50, what="records behind the unwritable file")
                assert "cannot be written" in Files(prov, Blobs(broken.parent)).pending()["last_error"]
                broken.unlink()
                Files(prov, Blobs(broken.parent)).retry_now(CHILD)
                await until(lambda: blob_bytes(prov, sha) is not None, what="the file once the folder is repaired")
        assert blob_bytes(prov, sha) == data
        prov.close(), child.close()

    asyncio.run(main())
