"""The node's store: one SQLite file (WAL) holding records, the change log and
replication checkpoints. This module is the file itself (open, migrate, meta,
epoch), its transactions, the file ledger, and reads. What the node writes itself (versions,
seals, a file's records) is in `local_write.py`, the `records` table's upsert in
`records_table.py`; the two sides of a link live in `upstream.py` (the child's) and
`downstream.py` (the parent's), what the parent queues for which child in `routing.py`, the
check that the files are still the ones opened in `store_files.py`, and the versions a write is
compared with in `versions.py`.

Invariants this module keeps (DESIGN §3–§4):

- Every write of a record version appends to `changelog` in the same
  transaction. Triggers on `records` do it, so no code path can forget.
- A version is applied only if it is newer than the stored one and comes from
  the record's own origin (single writer): applying a batch twice changes nothing.
- A peer's checkpoint is written in the same transaction as the data it covers.
- `records.rid` is an insert-ordered surrogate key; the random 16-byte record id
  lives in a secondary unique index, so inserts append to the main B-tree
  (MEASUREMENTS: ~4x faster than random primary keys).
- The change log has an epoch, minted when the database is created; a child
  restored from a backup mints a new one and is resent from the start.

Threading: one writer connection behind a lock; each reading thread gets its
own connection. Methods are blocking; the replication engine calls them from
worker threads.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlite_utils

from . import clock, provenance, read_tables, records, sqlite
from .errors import StoreError
from .local_write import LEDGER_ENTRY, RESTORING, FileWriter, WriteSummary, write_keyed
from .records import Envelope, Keyed
from .records_table import UPSERT, VIA_LOCAL, VIA_PARENT
from .routing import Router
from .schema import MIGRATIONS
from .sqlite import transaction
from .store_files import FileGuard

# Re-exported: the names other modules import from the store.
__all__ = ["RESTORING", "UPSERT", "VIA_LOCAL", "VIA_PARENT", "FileWriter", "Store", "WriteSummary"]

CACHE_KIB = 128 * 1024
# The writer's page cache while it takes a file (`file_transaction`): a file of a million rows then
# holds 32 MiB of pages, not 128 (1,000,000-row CSV: peak 120 MB instead of 221 MB), at the price of
# some index pages written to the WAL mid-transaction (measured: 0–7 % longer at that size).
FILE_CACHE_KIB = 32 * 1024
# Change-log entries the read tables take per transaction when catching up (`catch_up_read_tables`):
# large enough that index pages are written once per many rows, small enough that the writer lock
# is held for well under a second (about 0.1 s of decoding per 10,000 indicator values).
READ_TABLES_STEP = 10_000


class Store:
    """A node's SQLite store. Create with `Store.create`, open with `Store.open`."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._w = conn
        self._files = FileGuard(path)
        # The writer's page cache is bounded (128 MiB): a large group commit keeps the
        # random-key id index in memory instead of spilling pages to the WAL mid-transaction.
        conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self._wlock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self.db = sqlite_utils.Database(conn)
        self.node_id = self.meta("node_id")
        self.router = Router(self.node_id)
        # Provenance (see provenance.py): a node seals what it writes and verifies what it
        # receives. The node installs both when it opens its store (`node.runtime.open_store`);
        # a bare store (tools, unit tests) writes unsealed records and checks nothing.
        self.signer: provenance.Signer | None = None
        self.verifier: provenance.Verifier | None = None
        # What a local write must pass before it is stored (the node installs `approval.check_unlocked`:
        # approved data is not changed); called inside the write transaction with the changed records.
        self.write_guard: Callable[[sqlite3.Connection, Sequence[Keyed]], None] | None = None

    # ------------------------------------------------------------ lifecycle

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: an acknowledged batch survives a power cut, not only a crash.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    @classmethod
    def create(cls, path: Path, node_id: str) -> Store:
        if path.exists():
            raise StoreError(f"a store already exists at {path}", "use a new node directory, or `lienthong run` this one")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".creating")
        tmp.unlink(missing_ok=True)
        # 0600 from the first byte: citizens' data. SQLite gives the WAL and SHM the same mode.
        os.close(os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        conn = cls._connect(tmp)
        cls._migrate(conn, path)
        conn.execute("INSERT INTO meta VALUES ('node_id', ?), ('epoch', ?), ('created', ?)", (node_id, new_epoch(), str(time.time())))
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        for suffix in ("-wal", "-shm"):
            Path(str(tmp) + suffix).unlink(missing_ok=True)
        tmp.rename(path)
        return cls.open(path)

    @classmethod
    def open(cls, path: Path) -> Store:
        if not path.exists():
            raise StoreError(f"no store at {path}", "create the node first with `lienthong init`")
        conn: sqlite3.Connection | None = None
        try:
            conn = cls._connect(path)
            cls._migrate(conn, path)
            return cls(path, conn)  # its first read (the node's id) can meet a damaged file too
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            raise StoreError(f"the store at {path} cannot be opened: {exc}", "restore it from a backup") from None

    def read_tables_lag(self, head: int | None = None) -> int:
        """How many change-log entries the read tables are behind the head (or `head`): one cheap query each side."""
        row = self.reader().execute("SELECT value FROM meta WHERE key = ?", (read_tables.CHECKPOINT,)).fetchone()
        return 0 if row is None else max(0, (self.head() if head is None else head) - int(row[0]))

    def catch_up_read_tables(self, step: int = READ_TABLES_STEP, between: Callable[[], None] | None = None) -> int:
        """Bring the read tables up to the change log's head as it is now, in transactions of at
        most `step` entries (the writer lock is let go between them, so a stream's commits
        interleave; what they add meanwhile is the next call's), calling `between` after each
        that leaves more to do. Returns how many entries were read; no write transaction when
        the tables are in step."""
        seen = 0
        try:
            target = self.head()
            while self.read_tables_lag(target):
                if seen and between is not None:
                    between()
                with self.writing() as db:
                    done = read_tables.catch_up(db, step)
                if not done:
                    break
                seen += done
        except sqlite3.DatabaseError as exc:  # its reads meet what its writes would (a deleted WAL): in words
            if type(exc) not in (sqlite3.DatabaseError, sqlite3.OperationalError):
                raise  # a constraint the code broke (IntegrityError): a bug, not the disk (as in writing())
            raise self.explain(exc) from None
        return seen

    def fresh_read_tables(self) -> bool:
        """Catch the read tables up before reading them (what readers call: nothing shown is older
        than the records). False when they cannot be written now (a full disk, a damaged file): the
        reader then shows them as they are, up to the last catch-up."""
        try:
            self.catch_up_read_tables()
        except StoreError:
            return False
        return True

    @staticmethod
    def _migrate(conn: sqlite3.Connection, path: Path) -> None:
        sqlite.migrate(conn, MIGRATIONS, f"the store at {path}")

    def close(self) -> None:
        """Close the store. Other threads' read connections are not closed under them (one may be
        in the middle of a query — closing it then crashes SQLite): each is closed when its thread
        lets go of this store. The writer is closed once no transaction runs."""
        self._closed = True
        with self._readers_lock:
            mine = getattr(self._local, "conn", None)
            if mine is not None:
                mine.close()
                self._local.conn = None
            self._readers.clear()
        with self._wlock:
            self._w.close()

    def reader(self) -> sqlite3.Connection:
        """This thread's read-only connection (opened on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise StoreError(f"the store at {self.path} is closed", "this is a bug in lienthong")
            conn = self._connect(self.path)
            conn.execute("PRAGMA query_only=1")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    @contextlib.contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        """The writer connection, inside one BEGIN IMMEDIATE transaction (one writer at a time).

        Before each transaction the database and its WAL must still be the files this store
        opened: a file deleted or replaced under a running node would take commits that no
        one can read back. A full disk or a damaged file is a StoreError in words."""
        with self._wlock:
            self._files.check()
            try:
                with transaction(self._w):
                    yield self._w
            except sqlite3.OperationalError as exc:
                raise self.explain(exc) from None
            except sqlite3.DatabaseError as exc:
                if type(exc) is not sqlite3.DatabaseError:
                    raise  # a constraint the code broke (IntegrityError): a bug, not the disk
                raise self.explain(exc) from None

    def explain(self, exc: sqlite3.DatabaseError) -> StoreError:
        """A SQLite failure met anywhere, in one sentence (see store_files.py)."""
        return self._files.explain(exc)

    def backup(self, dest: Path) -> None:
        """Online backup to `dest` (SQLite's backup API; the node may be running)."""
        target = sqlite3.connect(dest)
        try:
            with self._wlock:
                self._w.backup(target)
        finally:
            target.close()

    # ------------------------------------------------------------ metadata

    def meta(self, key: str, default: str = "") -> str:
        row = self.reader().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def restoring(self) -> bool:
        """Whether this store was restored from a backup and still takes back what it had sent (RESTORING)."""
        return self.reader().execute("SELECT 1 FROM meta WHERE key = ?", (RESTORING,)).fetchone() is not None

    def delete_meta(self, key: str) -> None:
        with self.writing() as db:
            db.execute("DELETE FROM meta WHERE key = ?", (key,))

    def set_meta(self, key: str, value: str) -> None:
        with self.writing() as db:
            db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    @property
    def epoch(self) -> str:
        return self.meta("epoch")

    def mint_epoch(self) -> str:
        """Start a new change-log epoch: the parent will take everything again."""
        epoch = new_epoch()
        with self.writing() as db:
            db.execute("UPDATE meta SET value = ? WHERE key = 'epoch'", (epoch,))
            db.execute("UPDATE uplink SET acked = 0")
        return epoch

    def max_version(self) -> int:
        """The highest version stored (a full scan: call it at start-up only)."""
        return int(self.reader().execute("SELECT coalesce(max(version), 0) FROM records").fetchone()[0])

    def latest_version(self) -> int:
        """The version of the latest change-log entry (cheap)."""
        row = self.reader().execute("SELECT version FROM changelog ORDER BY seq DESC LIMIT 1").fetchone()
        return int(row[0]) if row else 0

    def head(self) -> int:
        return int(self.reader().execute("SELECT coalesce(max(seq), 0) FROM changelog").fetchone()[0])

    def fingerprint_at(self, seq: int) -> bytes:
        """Fingerprint of change-log entry `seq` (empty for 0 or a missing entry)."""
        if seq == 0:
            return b""
        row = (
            self.reader()
            .execute("SELECT r.id, c.version FROM changelog c JOIN records r ON r.rid = c.rid WHERE c.seq = ?", (seq,))
            .fetchone()
        )
        return records.fingerprint(row[0], row[1]) if row else b""

    # ------------------------------------------------------------ local writes

    def write_local(self, keyed: Sequence[Keyed], hlc: clock.HybridClock) -> WriteSummary:
        """Store records written on this node, in one transaction.

        A record whose content equals the stored one is counted unchanged and not
        rewritten (re-dropping a file creates no new versions and no traffic).
        """
        summary = WriteSummary()
        with self.writing() as db:
            write_keyed(self, db, keyed, hlc, summary)
        return summary

    def write_again(self, ids: Sequence[bytes], hlc: clock.HybridClock) -> int:
        """Write this node's own records `ids` once more, unchanged, under fresh versions and a new
        seal: what a parent refused for a reason this node has since corrected (its clock, its
        certificate) goes up again. Returns how many were rewritten."""
        with self.writing() as db:
            keyed = []
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for raw in db.execute(
                    f"SELECT envelope FROM records WHERE via = ? AND kind != ? AND id IN ({marks})", (VIA_LOCAL, records.SEAL, *chunk)
                ):
                    env = Envelope.FromString(raw[0])
                    keyed.append(Keyed(env.id, env.kind, env.unit, env.agency, records.plain_body(env), env.deleted))
            write_keyed(self, db, keyed, hlc, WriteSummary(), again=True)
        return len(keyed)

    # ------------------------------------------------------------ file ingest ledger

    @contextlib.contextmanager
    def file_transaction(self, hlc: clock.HybridClock) -> Iterator[FileWriter]:
        """One file, one transaction: its records and its ledger row commit together.

        Write records with `writer.write(chunk)` (any number of chunks: memory stays
        flat), set `writer.ledger`, and leave the block; an exception rolls all back.
        """
        with self.writing() as db:
            db.execute(f"PRAGMA cache_size=-{FILE_CACHE_KIB}")  # memory flat in the file's size
            try:
                writer = FileWriter(self, db, hlc)
                yield writer
                if writer.ledger is None:
                    raise StoreError("a file transaction ended without its ledger entry", "this is a bug in lienthong")
                db.execute(LEDGER_ENTRY, writer.ledger)
            finally:
                db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")

    def record_refused_file(self, ledger: dict[str, Any]) -> None:
        """Keep the receipt of a file refused whole (nothing of it was stored)."""
        with self.writing() as db:
            db.execute(LEDGER_ENTRY, ledger)

    def ingested(self, sha256: str) -> dict[str, Any] | None:
        """The ledger entry of a file content already committed, or None."""
        cur = self.reader().execute("SELECT * FROM files WHERE sha256 = ? AND status != 'error'", (sha256,))
        row = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], row, strict=True)) if row else None

    def recent_files(self, limit: int = 10) -> list[dict[str, Any]]:
        cur = self.reader().execute(
            "SELECT name, agency, adapter, status, imported, updated, unchanged, refused, at FROM files ORDER BY at DESC LIMIT ?", (limit,)
        )
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def file_totals(self) -> dict[str, int]:
        row = self.reader().execute("SELECT count(*), coalesce(sum(status = 'error'), 0), coalesce(sum(refused), 0) FROM files").fetchone()
        return {"files": row[0], "files_refused": row[1], "rows_refused": row[2]}

    def envelope(self, record_id: bytes) -> bytes | None:
        """The stored envelope of one record, or None."""
        row = self.reader().execute("SELECT envelope FROM records WHERE id = ?", (record_id,)).fetchone()
        return row[0] if row else None

    def witnessed_at(self, seal_id: bytes) -> float | None:
        """When this node stored a seal a child sent (Unix seconds), or None (not from a child,
        or stored before witnessing began)."""
        row = self.reader().execute("SELECT at_ms FROM seal_witness WHERE id = ?", (seal_id,)).fetchone()
        return row[0] / 1000 if row else None

    def mark_all_disconnected(self) -> None:
        with self.writing() as db:
            db.execute("UPDATE children SET connected = 0")
            db.execute("UPDATE uplink SET connected = 0")

    # ------------------------------------------------------------ reading

    def iter_records(self, kind: int | None = None, unit: str | None = None, include_deleted: bool = False) -> Iterator[Envelope]:
        sql, args = "SELECT envelope FROM records WHERE 1 = 1", list[object]()
        if kind is not None:
            sql, args = sql + " AND kind = ?", [*args, kind]
        if unit is not None:
            sql, args = sql + " AND unit = ?", [*args, unit]
        if not include_deleted:
            sql += " AND deleted = 0"
        for (raw,) in self.reader().execute(sql + " ORDER BY rid", args):
            yield Envelope.FromString(raw)

    def definition_marker(self) -> tuple[int, int]:
        """(count, highest version) of definition records: it changes whenever any definition
        does. Cheap (index on kind; definitions are few)."""
        row = (
            self.reader()
            .execute("SELECT count(*), coalesce(max(version), 0) FROM records WHERE kind = ?", (records.DEFINITION,))
            .fetchone()
        )
        return row[0], row[1]

    def counts(self) -> dict[str, int]:
        out = {name: 0 for name in records.KIND_NAMES.values()}
        for kind, n in self.reader().execute("SELECT kind, count(*) FROM records WHERE deleted = 0 GROUP BY kind"):
            out[records.KIND_NAMES.get(kind, str(kind))] = n
        return out

    def record_versions(self) -> set[tuple[bytes, int]]:
        """Every stored (id, version): what tests and tools compare across nodes."""
        return set(self.reader().execute("SELECT id, version FROM records").fetchall())


def new_epoch() -> str:
    return uuid.uuid4().hex
