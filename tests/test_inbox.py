"""Watched folders with real watchdog observers on real folders: every complete file
is taken exactly once, with a receipt, whatever the writer does."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

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
