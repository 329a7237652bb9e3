"""Which files (attachments) this node holds, lacks and may give: the store's side of file transfer.

A record names a file by the SHA-256 and size its origin sealed (a report's attachments, a
request answer's data files). Every tier that holds such a record fetches the file from the
peer it got the record from (pull, see docs/files.md): the parent (`source` '^') or the child
that sent it up. `scan` follows the change log and notes, for each record naming files, which
files it names (`blob_refs`: what a peer may ask this node for) and which of them are missing
here (`blob_wants`). Size limits are applied when a file is first wanted: a file larger than
`max_file_bytes`, or one that would take an origin's files past `max_node_bytes`, is refused
with the reason shown in `status` and the log, and never fetched.

Blocking methods; the engine calls them from worker threads.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import records
from .blobs import Blobs, valid
from .store import VIA_LOCAL, VIA_PARENT, Store

SCAN_STEP = 20_000  # change-log entries looked at per transaction
# A file the sender does not hold yet is asked again after this, doubling, at most RETRY_MAX
# (sooner when the sender says it arrived: FileReady).
RETRY_MISSING = 2.0
RETRY_MAX = 600.0
WANTED, DONE, REFUSED = "wanted", "done", "refused"


@dataclass(frozen=True)
class FileLimits:
    max_file_bytes: int = 2 * 1024**3
    max_node_bytes: int = 50 * 1024**3


@dataclass(frozen=True)
class Want:
    sha256: str
    size: int
    name: str
    origin: str


class Files:
    """The files named by this node's records, over `store` and its `blobs/` folder."""

    def __init__(self, store: Store, blobs: Blobs, limits: FileLimits | None = None) -> None:
        self.store = store
        self.blobs = blobs
        self.limits = limits or FileLimits()
        self._scanning = threading.Lock()
        self._scanned = -1
        self._cursor = 0
        # Per source, a value that changes after each commit that may give it a file to fetch now (a
        # want noted, a retry brought forward): an idle fetcher asks the store again only then or at
        # its soonest retry, not at every record that arrives (1,000 streams idle at a province).
        self._wants: dict[str, int] = {}
        self._bumps = itertools.count(1)  # next() is atomic: two threads bumping never give one value
        self.wants_changes = 0  # the last value given to any source
        # Called in the event loop with the SHA-256 of each file that arrived whole (FileReady).
        self.arrived: set[Callable[[str], None]] = set()

    # ------------------------------------------------------------ following the change log

    def scan(self) -> list[dict[str, Any]]:
        """Note the files named by records written or received since the last scan; returns
        the files refused by a size limit (to be logged)."""
        refused: list[dict[str, Any]] = []
        with self._scanning:
            head = self.store.head()
            if head == self._scanned:
                return refused
            cursor = max(self._cursor, int(self.store.meta("files_scanned", "0") or 0))
            while cursor < head:
                upto = min(cursor + SCAN_STEP, head)
                rows = (
                    self.store.reader()
                    .execute(
                        "SELECT r.rid, r.via, r.origin, r.envelope FROM changelog c JOIN records r ON r.rid = c.rid "
                        "WHERE c.seq > ? AND c.seq <= ? AND r.kind = ? AND r.deleted = 0",
                        (cursor, upto, records.REPORT),
                    )
                    .fetchall()
                )
                named = [(rid, via, origin, a) for rid, via, origin, raw in rows for a in _attachments(raw)]
                if named:  # a range naming no file is not written down: scanning it again is harmless
                    refused += self._note(named, upto)
                cursor = upto
            self._cursor = cursor
            self._scanned = head
        return refused

    def _note(self, named: list[tuple[int, str, str, Any]], upto: int) -> list[dict[str, Any]]:
        """Note which records name which files, and the files to fetch, up to change-log entry `upto`."""
        refused: list[dict[str, Any]] = []
        wanted: set[str] = set()
        with self.store.writing() as db:
            for rid, via, origin, a in named:
                sha = a.sha256.lower()
                db.execute("INSERT OR IGNORE INTO blob_refs VALUES (?, ?)", (sha, rid))
                if via == VIA_LOCAL or self.blobs.has(sha) or db.execute("SELECT 1 FROM blob_wants WHERE sha256 = ?", (sha,)).fetchone():
                    continue
                problem = self._limit_problem(db, origin, a.name, a.size)
                db.execute(
                    "INSERT INTO blob_wants(sha256, size, name, origin, source, state, error, since) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (sha, a.size, a.name, origin, via, REFUSED if problem else WANTED, problem, time.time()),
                )
                if problem:
                    refused.append({"sha256": sha, "name": a.name, "origin": origin, "size": a.size, "reason": problem})
                else:
                    wanted.add(via)
            db.execute("INSERT INTO meta VALUES ('files_scanned', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (str(upto),))
        self._bump(wanted)
        return refused

    def _limit_problem(self, db: Any, origin: str, name: str, size: int) -> str:
        mb = 1024 * 1024
        if size > self.limits.max_file_bytes:
            return (
                f"the file {name} of {origin} is {size / mb:,.1f} MB, over this node's limit of "
                f"{self.limits.max_file_bytes / mb:,.0f} MB a file ([files] max_file_mb)"
            )
        held = db.execute("SELECT coalesce(sum(size), 0) FROM blob_wants WHERE origin = ? AND state != ?", (origin, REFUSED)).fetchone()[0]
        if held + size > self.limits.max_node_bytes:
            return (
                f"the file {name} would take the files of {origin} here to {(held + size) / mb:,.1f} MB, over this node's "
                f"limit of {self.limits.max_node_bytes / mb:,.0f} MB a node ([files] max_node_mb)"
            )
        return ""

    # ------------------------------------------------------------ fetching

    def wants_version(self, source: str) -> int:
        """Changes after every commit that may give `source`'s fetcher a file to fetch now: read it
        before asking `due`, and ask again once it differs."""
        return self._wants.get(source, 0)

    def _bump(self, sources: set[str]) -> None:
        for source in sources:
            self._wants[source] = self.wants_changes = next(self._bumps)

    def due(self, source: str) -> tuple[Want | None, float | None]:
        """The file to fetch next from `source` (`next_wanted`), else None and when the soonest
        wanted file from it is due again (None: nothing is wanted from it)."""
        want = self.next_wanted(source)
        if want is not None:
            return want, None
        row = (
            self.store.reader().execute("SELECT min(next_try) FROM blob_wants WHERE source = ? AND state = ?", (source, WANTED)).fetchone()
        )
        return None, row[0]

    def next_wanted(self, source: str) -> Want | None:
        """The file to fetch next from `source`: the one due longest (a file being fetched stays first)."""
        row = (
            self.store.reader()
            .execute(
                "SELECT sha256, size, name, origin FROM blob_wants WHERE source = ? AND state = ? AND next_try <= ? "
                "ORDER BY next_try, since LIMIT 1",
                (source, WANTED, time.time()),
            )
            .fetchone()
        )
        return Want(*row) if row else None

    def retry_now(self, source: str | None = None, sha256: str | None = None) -> None:
        """Ask again at once: every file from `source` (a new session), or one file (it arrived there).
        A session's start writes only when a file from its source waits for a retry: thousands of
        children reconnecting at once must not cost a commit each for nothing."""
        if sha256 is None and not self._waiting_retry(source):
            self._bump({source} if source is not None else set())
            return
        with self.store.writing() as db:
            if sha256 is not None:
                sql = "UPDATE blob_wants SET next_try = 0 WHERE sha256 = ? AND state = ? RETURNING source"
                sources = {row[0] for row in db.execute(sql, (sha256, WANTED)).fetchall()}
            else:
                db.execute("UPDATE blob_wants SET next_try = 0 WHERE source = ? AND state = ?", (source, WANTED))
                sources = {source} if source is not None else set()
        self._bump(sources)

    def _waiting_retry(self, source: str | None) -> bool:
        """Whether a file wanted from `source` waits for its next try."""
        sql = "SELECT 1 FROM blob_wants WHERE source = ? AND state = ? AND next_try > 0 LIMIT 1"
        return self.store.reader().execute(sql, (source, WANTED)).fetchone() is not None

    def later(self, sha256: str, error: str, first: float = RETRY_MISSING) -> None:
        """Not now (the sender lacks it, refused it, or it did not verify): ask again after a growing pause."""
        with self.store.writing() as db:
            db.execute(
                "UPDATE blob_wants SET attempts = attempts + 1, error = ?, next_try = ? + min(? * (1 << min(attempts, 12)), ?) "
                "WHERE sha256 = ?",
                (error, time.time(), first, RETRY_MAX, sha256),
            )

    def done(self, sha256: str) -> None:
        with self.store.writing() as db:
            db.execute("UPDATE blob_wants SET state = ?, error = '', done_at = ? WHERE sha256 = ?", (DONE, time.time(), sha256))

    # ------------------------------------------------------------ serving

    def may_give(self, sha256: str, peer: str) -> bool:
        """Whether `peer` may have this file: a record it holds or is sent names it. The parent
        ('^') may have the files of what went up; a child those of what is queued down to it."""
        if not valid(sha256):
            return False
        for attempt in range(2):
            if peer == VIA_PARENT:
                sql = "SELECT 1 FROM blob_refs b JOIN records r ON r.rid = b.rid WHERE b.sha256 = ? AND r.via != ? LIMIT 1"
            else:
                sql = "SELECT 1 FROM blob_refs b JOIN downqueue d ON d.rid = b.rid WHERE b.sha256 = ? AND d.child = ? LIMIT 1"
            args = (sha256, VIA_PARENT if peer == VIA_PARENT else peer)
            if self.store.reader().execute(sql, args).fetchone():
                return True
            if attempt == 0:
                self.scan()  # the record naming it may have been written since the last scan
        return False

    # ------------------------------------------------------------ what `status` and queries show

    def pending(self) -> dict[str, Any]:
        """Files still to arrive, from the parent and from the children, and files refused."""
        out: dict[str, Any] = {
            "from_parent": {"files": 0, "bytes": 0, "received": 0},
            "from_children": {"files": 0, "bytes": 0, "received": 0},
            "refused": [],
        }
        reader = self.store.reader()
        for sha, size, source in reader.execute("SELECT sha256, size, source FROM blob_wants WHERE state = ?", (WANTED,)):
            side = out["from_parent" if source == VIA_PARENT else "from_children"]
            side["files"] += 1
            side["bytes"] += size
            side["received"] += self.blobs.received(sha)
        for sha, name, origin, size, error in reader.execute(
            "SELECT sha256, name, origin, size, error FROM blob_wants WHERE state = ? ORDER BY since DESC LIMIT 20", (REFUSED,)
        ):
            out["refused"].append({"sha256": sha, "name": name, "origin": origin, "size": size, "reason": error})
        last = reader.execute("SELECT error FROM blob_wants WHERE state = ? AND error != '' ORDER BY next_try DESC LIMIT 1", (WANTED,))
        row = last.fetchone()
        out["last_error"] = row[0] if row else ""
        return out


def _attachments(raw: bytes) -> list[Any]:
    """The attachments a report envelope names by a valid SHA-256."""
    return [a for a in records.body_of(records.Envelope.FromString(raw)).attachments if valid(a.sha256.lower())]
