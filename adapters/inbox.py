"""Watched inbox folders: each complete file is handed to the pipeline exactly once.

A node's `inbox/` holds one folder per agency (the folder name is the agency
code). A file is taken only when it is complete:

- renamed into the folder (the usual "write `x.tmp`, rename to `x.csv`"): at once;
- written in place: when its writer closed it (inotify IN_CLOSE_WRITE) and its size
  and modification time then stay the same for `CLOSE_SETTLE` seconds. A file that
  was written (IN_MODIFY) and not closed yet is NOT taken however long its writer
  pauses (short of `UNCLOSED_SETTLE`, for a close event lost in an inotify overflow);
- with no close event to go by (network shares in polling mode, files found by a
  rescan or at start-up): when its size and modification time stayed the same for
  `settle` seconds.

In every case a file that some process still holds open for writing, as far as
/proc shows (`open_for_writing`; other users' processes are invisible without
privileges, so it is a second check, never the only one), waits; and the pipeline
itself checks the file's identity against the descriptor it read from before it
commits and before it moves it (intake.py, held.py): a file that changed under it
raises `FileChanged`, nothing is kept, and the file is looked at again here.

A file dropped in the root itself (not in an agency folder) is refused, never ignored: it
moves to the root's `rejected/` with a receipt naming the agency folders it belongs in.

Files present at start-up are taken; a periodic rescan catches lost events; an
inbox in polling mode is watched by snapshots (SMB/NFS shares where inotify does
not work). Hidden, `.tmp`, `.part` and `~$` files are ignored, and so are the
`archive/` and `rejected/` folders inside each inbox (kept inside the watched tree
so watchdog pairs the moves; see MEASUREMENTS.md). One worker thread takes files
in order; a file that never finishes writing never blocks the others.
"""

from __future__ import annotations

import errno
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.api import BaseObserver
from watchdog.observers.inotify import InotifyObserver
from watchdog.observers.polling import PollingObserver

from lienthong.sync.errors import StoreError

from .held import FileChanged, display_name
from .inbox_names import ARCHIVE, REJECTED, agency_folders, ignored, is_attachment, iter_candidates
from .intake import Inbox

CLOSE_SETTLE = 0.2
UNCLOSED_SETTLE = 60.0  # written, never closed, unchanged this long and no writer visible: taken anyway
TICK = 0.05

log = structlog.get_logger("lienthong.inbox")


@dataclass
class _Candidate:
    inbox: Inbox
    ready: bool  # renamed into place: complete now
    size: int = -1
    mtime: int = -1
    stable_since: float = 0.0
    settle: float = 0.0


class InboxWatcher:
    """Finds complete files in the inboxes and calls `handle(path, inbox)` for each, one at a time."""

    def __init__(
        self,
        root: Path,
        configured: dict[str, Inbox],
        handle: Callable[[Path, Inbox], None],
        settle: float = 2.0,
        rescan: float = 30.0,
    ) -> None:
        self.root = root
        self.configured = configured
        self.handle = handle
        self.settle = settle
        self.rescan = rescan
        self._inboxes: dict[Path, Inbox] = {}
        self._pending: dict[Path, _Candidate] = {}
        self._busy: set[Path] = set()
        self._stuck: dict[Path, tuple[int, int]] = {}  # files that failed: not retried until they change
        self._writing: set[Path] = set()  # IN_MODIFY seen and no IN_CLOSE_WRITE since: still being written
        self._queue: queue.Queue[tuple[Path, Inbox] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._observers: list[BaseObserver] = []
        self._threads: list[threading.Thread] = []
        self._watched: set[Path] = set()
        self._discover_lock = threading.Lock()
        self.taken = 0

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._discover()
        handler = _Handler(self, inotify=True)
        inotify = _inotify()
        inotify.schedule(handler, str(self.root), recursive=True)
        self._watched.add(self.root)
        self._observers.append(inotify)
        for inbox in self._inboxes.values():
            self._watch(inbox)
        for observer in self._observers:
            observer.start()
        self._threads = [
            threading.Thread(target=self._tick, name="inbox-ticker", daemon=True),
            threading.Thread(target=self._work, name="inbox-worker", daemon=True),
        ]
        for t in self._threads:
            t.start()
        self._scan()
        log.info("inbox.watching", inboxes=sorted(i.agency for i in self._inboxes.values() if i.agency), root=str(self.root))

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._queue.put(None)
        for observer in self._observers:
            observer.stop()
        for observer in self._observers:
            observer.join(timeout)
        for t in self._threads:
            t.join(timeout)

    def _watch(self, inbox: Inbox) -> None:
        if inbox.path in self._watched:
            return
        if inbox.poll_seconds > 0:
            observer: BaseObserver = PollingObserver(timeout=inbox.poll_seconds)
        elif inbox.path.is_relative_to(self.root):
            return  # the recursive inotify watch on the root covers it
        else:
            observer = _inotify()
        inbox.path.mkdir(parents=True, exist_ok=True)
        handler: FileSystemEventHandler = _Handler(self, inotify=not isinstance(observer, PollingObserver))
        observer.schedule(handler, str(inbox.path), recursive=False)
        self._observers.append(observer)
        self._watched.add(inbox.path)
        if self._threads:  # started already: a folder created while running
            observer.start()

    # ------------------------------------------------------------ finding files

    def _discover(self) -> None:
        """Each folder under the root is an agency inbox; configured inboxes may live elsewhere."""
        with self._discover_lock:
            self._discover_locked()

    def _discover_locked(self) -> None:
        # A file in the root itself belongs to no agency: it is taken only to be refused, its
        # receipt saying which folder to put it in (intake.take, `no_agency`).
        found: dict[Path, Inbox] = {self.root: Inbox(agency="", path=self.root, root=True)}
        for name in agency_folders(self.root):
            found[self.root / name] = Inbox(agency=name, path=self.root / name)
        for agency, inbox in self.configured.items():
            path = inbox.path if inbox.path != Path() else self.root / agency
            found.pop(self.root / agency, None)
            found[path] = replace(inbox, path=path)
        with self._lock:
            new = [inbox for path, inbox in found.items() if path not in self._inboxes]
            self._inboxes = found
        if self._threads:
            for inbox in new:
                self._watch(inbox)

    def inbox_of(self, path: Path) -> Inbox | None:
        """The inbox a file sits directly in (None for archive/, rejected/ and anything else)."""
        return self._inboxes.get(path.parent)

    def note(self, path: Path, renamed: bool, closed: bool = False, written: bool = False) -> None:
        """An event for `path`: `renamed` into place (complete), `closed` by a writer (IN_CLOSE_WRITE),
        `written` (IN_MODIFY: open for writing until a close says otherwise), or only seen."""
        if ignored(path.name) or is_attachment(path.name):
            return
        if path.parent == self.root and path.is_dir():
            self._discover()
            return
        inbox = self.inbox_of(path)
        if inbox is None:
            return
        with self._lock:
            if written:
                self._writing.add(path)
            elif renamed or closed:
                self._writing.discard(path)
            if path in self._busy:
                return
            c = self._pending.get(path)
            settle = 0.0 if renamed else CLOSE_SETTLE if closed else self.settle
            if c is None:
                self._pending[path] = _Candidate(inbox, renamed, settle=settle, stable_since=time.monotonic())
            else:
                c.ready = c.ready or renamed
                c.settle = min(c.settle, settle)
            if renamed:
                self._enqueue_locked(path)

    def _scan(self) -> None:
        self._discover()
        for path, inbox in list(self._inboxes.items()):
            for file in iter_candidates(path):
                with self._lock:
                    if file not in self._pending and file not in self._busy:
                        self._pending[file] = _Candidate(inbox, False, settle=self.settle, stable_since=time.monotonic())

    def _enqueue_locked(self, path: Path) -> None:
        c = self._pending.pop(path, None)
        if c is not None and path not in self._busy:
            self._busy.add(path)
            self._queue.put((path, c.inbox))

    def forget(self, path: Path) -> None:
        """The file left the folder (deleted, moved out)."""
        with self._lock:
            self._writing.discard(path)

    def _tick(self) -> None:
        last_scan = time.monotonic()
        while not self._stop.wait(TICK):
            now = time.monotonic()
            if now - last_scan >= self.rescan:
                self._scan()
                last_scan = now
            due: list[Path] = []
            with self._lock:
                for path, c in list(self._pending.items()):
                    try:
                        st = path.lstat()
                    except FileNotFoundError:
                        del self._pending[path]
                        self._writing.discard(path)
                        continue
                    signature = (st.st_size, st.st_mtime_ns)
                    if self._stuck.get(path) == signature:
                        del self._pending[path]
                        continue
                    if (c.size, c.mtime) != signature:
                        c.size, c.mtime, c.stable_since = st.st_size, st.st_mtime_ns, now
                        if not c.ready:
                            continue
                    if path in self._writing and now - c.stable_since < UNCLOSED_SETTLE:
                        continue  # written and not closed: its writer may only be pausing
                    if c.ready or now - c.stable_since >= c.settle:
                        due.append(path)
            if not due:
                continue
            writers = open_for_writing(due)  # reads /proc: outside the lock
            with self._lock:
                for path in due:
                    pending = self._pending.get(path)
                    if pending is None:
                        continue
                    c = pending
                    if path in writers:  # still open for writing somewhere: settle again from now
                        c.ready, c.settle, c.stable_since = False, max(c.settle, CLOSE_SETTLE), now
                        continue
                    self._enqueue_locked(path)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._stop.is_set():
                return
            path, inbox = item
            again = False
            try:
                if path.exists() or path.is_symlink():
                    self.handle(path, inbox)
                    self.taken += 1
                    again = path.exists() or path.is_symlink()  # another file took the name meanwhile
            except FileChanged as exc:
                log.info("inbox.file_changed", agency=inbox.agency, file=display_name(path.name), reason=str(exc))
                again = True
            except StoreError as exc:
                # The node's disk or store failed (full disk): the file is untouched and is taken
                # again at the next rescan, once the operator has made room.
                log.error("inbox.store_failed", agency=inbox.agency, file=display_name(path.name), error=exc.message, hint=exc.hint)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    self._set_aside(path, inbox)
                else:  # the receipt or the archive met a full disk: like the store's, taken again at the next rescan
                    error = f"the disk holding {path.parent} is full: the file was not finished"
                    log.error(
                        "inbox.store_failed", agency=inbox.agency, file=display_name(path.name), error=error, hint="free space on that disk"
                    )
            except Exception:
                self._set_aside(path, inbox)
            finally:
                with self._lock:
                    self._busy.discard(path)
                    if again and path not in self._pending:  # events that came while it was read were not kept
                        self._pending[path] = _Candidate(inbox, False, settle=self.settle, stable_since=time.monotonic())

    def _set_aside(self, path: Path, inbox: Inbox) -> None:
        """A file that failed for no known reason: logged, and left alone until it changes."""
        log.exception("inbox.file_failed", agency=inbox.agency, file=display_name(path.name))
        try:
            st = path.lstat()
            self._stuck[path] = (st.st_size, st.st_mtime_ns)
        except OSError:
            pass

    def idle(self) -> bool:
        """Nothing pending, queued or being taken (for tests and the demo)."""
        with self._lock:
            return not self._pending and not self._busy and self._queue.empty()


_FLAGS = re.compile(rb"^flags:\s*([0-7]+)", re.MULTILINE)


def open_for_writing(paths: list[Path]) -> set[Path]:
    """Which of `paths` a process holds open for writing, as far as /proc shows.

    Only processes this one may inspect are seen (the same user, or all with CAP_SYS_PTRACE):
    a second check beside inotify's close events and the settle time, never the only one."""
    wanted: dict[bytes, Path] = {}
    for path in paths:
        try:
            wanted[os.path.join(os.path.realpath(os.fsencode(path.parent)), os.fsencode(path.name))] = path
        except OSError:
            continue
    found: set[Path] = set()
    try:
        pids = [pid for pid in os.listdir(b"/proc") if pid.isdigit()]
    except OSError:
        return found
    for pid in pids:
        fd_dir = b"/proc/" + pid + b"/fd/"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                open_path = wanted.get(os.readlink(fd_dir + fd))
                if open_path is None or open_path in found:
                    continue
                path = open_path
                with open(b"/proc/" + pid + b"/fdinfo/" + fd, "rb") as info:
                    flags = _FLAGS.search(info.read())
            except OSError:
                continue
            if flags is not None and int(flags.group(1), 8) & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
                found.add(path)
    return found


def _empty(path: Path) -> bool:
    try:
        return path.lstat().st_size == 0
    except OSError:
        return False


def _inotify() -> BaseObserver:
    # Full events: a file renamed in from outside the watched tree (the agency's
    # staging folder) arrives as a move, so it is taken at once, not after settling.
    return InotifyObserver(generate_full_events=True)


class _Handler(FileSystemEventHandler):
    """Turns watchdog events into `note`s. `inotify`: modified means written by an open writer and a
    close event will follow; from a polling observer (snapshots) it only means the file changed."""

    def __init__(self, watcher: InboxWatcher, inotify: bool) -> None:
        self.w = watcher
        self.inotify = inotify

    def on_created(self, event: FileSystemEvent) -> None:
        path = Path(os.fsdecode(event.src_path))
        if event.is_directory:
            if path.parent == self.w.root and path.name not in (ARCHIVE, REJECTED):
                self.w._discover()
            return
        # Created by open(O_CREAT) (still empty): being written until its writer closes it, like
        # IN_MODIFY. A hard link made into the folder (no open, no close event to come) is not empty.
        self.w.note(path, renamed=False, written=self.inotify and _empty(path))

    def on_modified(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self.w.note(Path(os.fsdecode(event.src_path)), renamed=False, written=self.inotify)

    def on_deleted(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self.w.forget(Path(os.fsdecode(event.src_path)))

    def on_closed(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self.w.note(Path(os.fsdecode(event.src_path)), renamed=False, closed=True)

    def on_moved(self, event: FileSystemEvent) -> None:
        self.w.forget(Path(os.fsdecode(event.src_path)))
        if not event.dest_path:
            return  # moved out of the watched tree
        dest = Path(os.fsdecode(event.dest_path))
        if event.is_directory:
            if dest.parent == self.w.root:
                self.w._discover()
            return
        self.w.note(dest, renamed=True)
