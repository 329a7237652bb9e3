"""Watched folders with real watchdog observers on real folders: every complete file
is taken exactly once, with a receipt, whatever the writer does."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lienthong.adapters.base import ParseContext, Row
from lienthong.adapters.fake import FakeAdapter
from lienthong.adapters.inbox import InboxWatcher
from lienthong.adapters.intake import Inbox, Limits, take
from lienthong.adapters.registry import Registry
from lienthong.node.intake import StoreSink
from lienthong.sync.clock import HybridClock
from lienthong.sync.store import Store

from .helpers import wait_until


class Harness:
    def __init__(self, tmp: Path, configured: dict[str, Inbox] | None = None, settle: float = 2.0) -> None:
        self.root = tmp / "inbox"
        (self.root / "thongke").mkdir(parents=True)
        self.store = Store.create(tmp / "node.db", "86-28894")
        self.sink = StoreSink(self.store, HybridClock(), tmp, ["86-28894"])
        self.registry = Registry(extra=[FakeAdapter()])
        self.receipts: list[dict] = []
        self.watcher = InboxWatcher(self.root, configured or {}, self.handle, settle=settle, rescan=1.0)

    def handle(self, path: Path, inbox: Inbox) -> None:
        self.receipts.append(take(path, inbox, self.registry, self.sink, "86-28894", Limits(max_file_bytes=10_000_000)))

    def indicators(self) -> int:
        return self.store.counts()["indicator"]

    def files(self) -> int:
        return self.store.file_totals()["files"]


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    harness.watcher.start()
    yield harness
    harness.watcher.stop()
    harness.store.close()


def lines(n: int, start: int = 0) -> str:
    return "".join(f"86-28894;KTXH.{i};2026-10;{i}\n" for i in range(start, start + n))


def drop(folder: Path, name: str, text: str) -> Path:
    """The agency's usual way: write a temporary name, then rename into place."""
    tmp = folder / f"{name}.part"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, folder / name)
    return folder / name


def test_renamed_file_is_taken_with_receipt_beside_it(h: Harness) -> None:
    """A file renamed into the inbox is committed, archived by date, with its receipt beside it."""
    drop(h.root / "thongke", "a.fake", lines(5) + "bad line\n")
    wait_until(lambda: h.files() == 1, timeout=10, what="the file to be taken")
    wait_until(lambda: not (h.root / "thongke" / "a.fake").exists(), timeout=5, what="the file to move")
    archived = list((h.root / "thongke" / "archive").glob("*/a.fake"))
    assert len(archived) == 1
    receipt = json.loads(Path(str(archived[0]) + ".receipt.json").read_text())
    assert receipt["status"] == "WARNING" and receipt["agency"] == "thongke" and receipt["adapter"] == "fake"
    assert receipt["importCount"] == {"imported": 5, "updated": 0, "unchanged": 0, "refused": 1}
    assert receipt["conflicts"][0]["line"] == 6 and receipt["conflicts"][0]["message"] and receipt["conflicts"][0]["message_en"]
    assert h.indicators() == 5


def test_file_written_slowly_in_pieces_is_taken_once_complete(h: Harness) -> None:
    """A file written in place with pauses is taken only after the writer finished: all rows, one transaction."""
    path = h.root / "thongke" / "slow.fake"
    with path.open("w", encoding="utf-8") as f:
        for piece in range(5):
            f.write(lines(20, start=piece * 20))
            f.flush()
            time.sleep(0.3)
            assert h.files() == 0, "taken before the writer finished"
    wait_until(lambda: h.files() == 1, timeout=10, what="the file to be taken")
    assert h.indicators() == 100


def test_thousand_files_dropped_at_once_are_each_taken_once(h: Harness) -> None:
    """1,000 files renamed in back to back: 1,000 receipts, 1,000 records, nothing twice."""
    staging = h.root.parent / "staging"
    staging.mkdir()
    for i in range(1000):
        (staging / f"f{i:04d}.fake").write_text(lines(1, start=i))
    for i in range(1000):
        os.replace(staging / f"f{i:04d}.fake", h.root / "thongke" / f"f{i:04d}.fake")
    wait_until(lambda: h.files() == 1000, timeout=120, what="all 1,000 files")
    wait_until(h.watcher.idle, timeout=30, what="the watcher to settle")
    assert h.indicators() == 1000
    assert len(list((h.root / "thongke" / "archive").glob("*/*.fake"))) == 1000
    assert len(h.receipts) == 1000


def test_same_content_dropped_twice_is_reported_unchanged(h: Harness) -> None:
    """Re-dropping the same content commits nothing new and says so in the receipt."""
    drop(h.root / "thongke", "a.fake", lines(3))
    wait_until(lambda: len(h.receipts) == 1, timeout=10, what="the first file")
    head = h.store.head()
    drop(h.root / "thongke", "a.fake", lines(3))
    wait_until(lambda: len(h.receipts) == 2, timeout=10, what="the second file")
    second = h.receipts[1]
    assert second["status"] == "SUCCESS" and second["importCount"] == {"imported": 0, "updated": 0, "unchanged": 3, "refused": 0}
    assert "already taken" in second["description_en"] and second["description"]
    assert h.store.head() == head and h.files() == 1
    assert len(list((h.root / "thongke" / "archive").glob("*/a*.fake.receipt.json"))) == 2


def test_ignored_names_are_never_taken(h: Harness) -> None:
    """Partial uploads, temporary files, Office lock files and hidden files stay untouched."""
    folder = h.root / "thongke"
    for name in ("x.fake.tmp", "x.fake.part", "~$x.fake", ".x.fake"):
        (folder / name).write_text(lines(1))
    drop(folder, "real.fake", lines(1))
    wait_until(lambda: h.files() == 1, timeout=10, what="the real file")
    time.sleep(1.2)  # one rescan period passes
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == [".x.fake", "x.fake.part", "x.fake.tmp", "~$x.fake"]


def test_an_adapter_that_raises_is_isolated(h: Harness) -> None:
    """A crashing adapter refuses its file with the reason and keeps serving the next files."""
    drop(h.root / "thongke", "boom.fake", lines(2) + "RAISE\n")
    drop(h.root / "thongke", "after.fake", lines(2, start=10))
    wait_until(lambda: len(h.receipts) == 2, timeout=10, what="both files")
    boom = next(r for r in h.receipts if r["file"] == "boom.fake")
    assert boom["status"] == "ERROR" and boom["error_code"] == "adapter_failed" and "RuntimeError" in boom["description_en"]
    assert (h.root / "thongke" / "rejected" / "boom.fake").exists()
    assert (h.root / "thongke" / "rejected" / "boom.fake.receipt.json").exists()
    assert h.indicators() == 2  # only the second file's rows: the failed file left nothing behind


def test_unfinished_file_does_not_block_others(h: Harness) -> None:
    """A file still being written (for longer than files keep arriving) never holds up the others."""
    growing = (h.root / "thongke" / "growing.fake").open("w", encoding="utf-8")
    stop = threading.Event()

    def keep_writing() -> None:
        i = 0
        while not stop.wait(0.2):
            growing.write(lines(1, start=1000 + i))
            growing.flush()
            i += 1

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        for i in range(5):
            drop(h.root / "thongke", f"ok{i}.fake", lines(1, start=i))
        wait_until(lambda: h.files() == 5, timeout=10, what="the complete files")
        assert (h.root / "thongke" / "growing.fake").exists()
    finally:
        stop.set()
        writer.join()
        growing.close()


def test_files_present_at_start_and_symlinks(tmp_path: Path) -> None:
    """Files already in the inbox are taken at start-up; a symlink is refused, not followed."""
    harness = Harness(tmp_path, settle=0.3)
    (harness.root / "thongke" / "early.fake").write_text(lines(2))
    secret = tmp_path / "secret.fake"
    secret.write_text(lines(1, start=50))
    (harness.root / "thongke" / "link.fake").symlink_to(secret)
    harness.watcher.start()
    try:
        wait_until(lambda: len(harness.receipts) == 2, timeout=10, what="both files")
        link = next(r for r in harness.receipts if r["file"] == "link.fake")
        assert link["status"] == "ERROR" and link["error_code"] == "symlink"
        assert harness.indicators() == 2 and secret.exists()
    finally:
        harness.watcher.stop()
        harness.store.close()


def test_polling_inbox_takes_files_without_inotify(tmp_path: Path) -> None:
    """An inbox in polling mode (a network share) outside the node directory is watched by snapshots."""
    share = tmp_path / "share"
    share.mkdir()
    harness = Harness(tmp_path, {"soyte": Inbox("soyte", share, poll_seconds=0.2)}, settle=0.3)
    harness.watcher.start()
    try:
        drop(share, "p.fake", lines(4))
        wait_until(lambda: harness.files() == 1, timeout=10, what="the polled file")
        assert harness.receipts[0]["agency"] == "soyte" and (share / "archive").exists()
    finally:
        harness.watcher.stop()
        harness.store.close()


def test_new_agency_folder_is_watched(h: Harness) -> None:
    """A folder created in inbox/ while the node runs becomes an agency inbox."""
    (h.root / "giaoduc").mkdir()
    time.sleep(0.3)
    drop(h.root / "giaoduc", "g.fake", lines(1))
    wait_until(lambda: h.files() == 1, timeout=10, what="the new inbox's file")
    assert h.receipts[0]["agency"] == "giaoduc"


# ---------------------------------------------------------------- what is taken is what was read (issue #11)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def archived_receipts(folder: Path) -> list[tuple[bytes, dict]]:
    """(content of the archived file, its receipt) for every file archived under `folder`."""
    out = []
    for receipt in sorted((folder / "archive").glob("*/*.receipt.json")):
        out.append((Path(str(receipt)[: -len(".receipt.json")]).read_bytes(), json.loads(receipt.read_text(encoding="utf-8"))))
    return out


class ReplacedWhileRead(FakeAdapter):
    """The fake adapter, with a seam at the exact moment the race needs: once it has read the whole
    file (and before the pipeline commits), `after_read` runs once (the test swaps the file there)."""

    def __init__(self, after_read: Callable[[], None]) -> None:
        self.after_read: Callable[[], None] | None = after_read

    def parse(self, path: Path, context: ParseContext) -> Iterator[Row]:
        yield from super().parse(path, context)
        hook, self.after_read = self.after_read, None
        if hook is not None:
            hook()


def test_file_replaced_by_rename_while_read_is_read_again(h: Harness) -> None:
    """A file replaced (atomic rename) after it was read but before commit is not archived under the old
    file's receipt: the old read is rolled back and the new file is read, with its own hash and rows."""
    folder = h.root / "thongke"
    old, new = lines(3).encode(), lines(5, start=100).encode()

    def replace() -> None:
        staged = h.root.parent / "v2.fake"
        staged.write_bytes(new)
        os.replace(staged, folder / "a.fake")

    h.registry = Registry(extra=[ReplacedWhileRead(replace)])
    drop(folder, "a.fake", old.decode())
    wait_until(lambda: not (folder / "a.fake").exists() and h.watcher.idle(), timeout=15, what="the file to be taken")
    taken = archived_receipts(folder)
    assert taken, "nothing archived"
    for content, receipt in taken:  # every archived file is exactly what its receipt says was read
        assert receipt["sha256"] == sha256(content), (content, receipt)
        assert receipt["importCount"]["imported"] + receipt["importCount"]["unchanged"] == content.count(b"\n")
    assert new in [content for content, _ in taken], "the new version's rows were never read"
    assert h.indicators() == 5 + (3 if old in [c for c, _ in taken] else 0)


def test_writer_pausing_longer_than_settle_is_taken_whole(h: Harness) -> None:
    """A writer that stops for 3 s (more than the 2 s settle time) with the file still open is not cut in
    half: the file is taken once its writer closed it, with all its rows."""
    path = h.root / "thongke" / "paused.fake"
    halfway = threading.Event()

    def write() -> None:
        with path.open("w", encoding="utf-8") as f:
            f.write(lines(10))
            f.flush()
            halfway.set()
            time.sleep(3.0)  # the writer's own pause (an agency export stalling), not a wait for the test
            f.write(lines(10, start=10))

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert halfway.wait(5)
    finally:
        writer.join()
    wait_until(lambda: h.receipts and h.watcher.idle(), timeout=15, what="the file to be taken")
    assert [r["importCount"]["imported"] for r in h.receipts] == [20], h.receipts
    [(content, receipt)] = archived_receipts(h.root / "thongke")
    assert receipt["sha256"] == sha256(content) and h.indicators() == 20


def test_file_name_that_is_not_utf8_is_taken_with_a_readable_receipt(h: Harness) -> None:
    """A file whose name has bytes that are not UTF-8 is taken and archived, its receipt naming it as `\\xNN`."""
    folder = os.fsencode(h.root / "thongke")
    staging = os.fsencode(h.root.parent) + b"/odd.part"
    Path(os.fsdecode(staging)).write_text(lines(2), encoding="utf-8")
    os.rename(staging, folder + b"/bao-cao-\xff.fake")
    wait_until(lambda: b"bao-cao-\xff.fake" not in os.listdir(folder) and h.watcher.idle(), timeout=15, what="the odd name to be taken")
    [(content, receipt)] = archived_receipts(h.root / "thongke")
    assert receipt["file"] == "bao-cao-\\xff.fake" and receipt["status"] in ("SUCCESS", "WARNING")
    assert receipt["importCount"]["imported"] == 2 and receipt["sha256"] == sha256(content) and h.indicators() == 2


class SwapsAttachmentForLink(StoreSink):
    """The node's sink, with the attacker's move at the exact moment: when the pipeline asks to store
    an attachment, the attachment's name is first swapped for a symlink to a secret file."""

    def __init__(self, *args: Any, attachment: Path, secret: Path) -> None:
        super().__init__(*args)
        self.attachment, self.secret = attachment, secret

    def store_blob(self, *args: Any) -> str:
        link = self.attachment.with_name(".link")
        link.symlink_to(self.secret)
        os.replace(link, self.attachment)
        return super().store_blob(*args)


def test_attachment_swapped_for_a_link_never_copies_the_target(tmp_path: Path) -> None:
    """An attachment swapped for a symlink (to a secret the node can read) after it was checked never gets the
    secret into a blob: attachments are opened without following links and read only through that descriptor."""
    secret = tmp_path / "shadow"
    secret.write_bytes(b"root:$6$secret-hash:19000:0:99999:7:::\n")
    harness = Harness(tmp_path)
    folder = harness.root / "vanphong"
    folder.mkdir()
    sample = Path(__file__).parent / "testdata" / "samples" / "inbox" / "vanphong"
    pdf = (sample / "bc-ioc-thang-10-2026-ba-tri.pdf").read_bytes()
    (folder / "bc-ioc-thang-10-2026-ba-tri.pdf").write_bytes(pdf)
    harness.sink = SwapsAttachmentForLink(
        harness.store, HybridClock(), tmp_path, ["86-28894"], attachment=folder / "bc-ioc-thang-10-2026-ba-tri.pdf", secret=secret
    )
    harness.watcher.start()
    try:
        drop(folder, "bc.report.json", (sample / "bc-ioc-thang-10-2026-ba-tri.report.json").read_text(encoding="utf-8"))
        wait_until(lambda: harness.receipts and harness.watcher.idle(), timeout=15, what="the report to be taken")
    finally:
        harness.watcher.stop()
        harness.store.close()
    blobs = [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()] if (tmp_path / "blobs").exists() else []
    assert all(secret.read_bytes() not in p.read_bytes() for p in blobs), "the secret was copied into a blob"
    for p in blobs:
        assert p.stat().st_mode & 0o137 == 0, f"blob {p.name} is {oct(p.stat().st_mode & 0o777)}, not 0640 or stricter"
    [receipt] = harness.receipts
    if receipt["status"] != "ERROR":  # taken: with the attachment as it was when opened
        assert [p.read_bytes() for p in blobs] == [pdf]


class ReplacedAtCommit(StoreSink):
    """The node's sink, with a seam at the one moment the pre-commit check cannot see: after the
    pipeline's last look at the file, while the transaction commits, `swap` runs once."""

    def __init__(self, *args: Any, swap: Callable[[], None]) -> None:
        super().__init__(*args)
        self.swap: Callable[[], None] | None = swap

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        with super().transaction() as writer:
            yield writer
            swap, self.swap = self.swap, None
            if swap is not None:
                swap()


def test_file_replaced_between_commit_and_move_archives_what_was_read(tmp_path: Path) -> None:
    """A name renamed over after the commit: the archive gets the bytes that were read and committed (from
    the held descriptor) under their receipt, and the new file stays in the inbox for its own turn."""
    folder = tmp_path / "inbox" / "thongke"
    folder.mkdir(parents=True)
    old, new = lines(3).encode(), lines(4, start=50).encode()
    (folder / "a.fake").write_bytes(old)

    def replace() -> None:
        (tmp_path / "v2").write_bytes(new)
        os.replace(tmp_path / "v2", folder / "a.fake")

    store = Store.create(tmp_path / "node.db", "86-28894")
    try:
        sink = ReplacedAtCommit(store, HybridClock(), tmp_path, ["86-28894"], swap=replace)
        result = take(folder / "a.fake", Inbox("thongke", folder), Registry(extra=[FakeAdapter()]), sink, "86-28894")
        assert result["sha256"] == sha256(old) and result["importCount"]["imported"] == 3
        [(content, receipt)] = archived_receipts(folder)
        assert content == old and receipt["sha256"] == sha256(old)
        assert (folder / "a.fake").read_bytes() == new  # not archived under the old receipt: taken on its own later
    finally:
        store.close()


def test_fifo_in_inbox_is_refused_without_blocking(tmp_path: Path) -> None:
    """A named pipe dropped in an inbox is refused as not a regular file at once; the worker never blocks on it."""
    folder = tmp_path / "inbox" / "thongke"
    folder.mkdir(parents=True)
    os.mkfifo(folder / "pipe.fake")
    store = Store.create(tmp_path / "node.db", "86-28894")
    results: list[dict] = []
    sink = StoreSink(store, HybridClock(), tmp_path, ["86-28894"])
    worker = threading.Thread(
        target=lambda: results.append(
            take(folder / "pipe.fake", Inbox("thongke", folder), Registry(extra=[FakeAdapter()]), sink, "86-28894")
        ),
        daemon=True,
    )
    worker.start()
    worker.join(10)
    try:
        assert not worker.is_alive(), "the worker blocked opening a FIFO"
        [result] = results
        assert result["status"] == "ERROR" and result["error_code"] == "not_regular" and result["description"]
        assert (folder / "rejected" / "pipe.fake.receipt.json").exists()
    finally:
        if worker.is_alive():  # unblock the old code's open() so the test process can end
            os.close(os.open(folder / "pipe.fake", os.O_WRONLY | os.O_NONBLOCK))
        store.close()


def test_writer_pausing_in_a_polling_inbox_is_taken_whole(tmp_path: Path) -> None:
    """On a polled share there is no close event: a writer that pauses past the settle time with the file
    open (visible in /proc) still holds the file back, and it is taken whole once closed."""
    share = tmp_path / "share"
    share.mkdir()
    harness = Harness(tmp_path, {"soyte": Inbox("soyte", share, poll_seconds=0.2)}, settle=0.5)
    harness.watcher.start()
    try:
        with (share / "paused.fake").open("w", encoding="utf-8") as f:
            f.write(lines(10))
            f.flush()
            time.sleep(2.0)  # the writer's own pause, four settle times long
            f.write(lines(10, start=10))
        wait_until(lambda: harness.receipts and harness.watcher.idle(), timeout=15, what="the file to be taken")
        assert [r["importCount"]["imported"] for r in harness.receipts] == [20], harness.receipts
    finally:
        harness.watcher.stop()
        harness.store.close()
