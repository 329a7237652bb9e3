"""The node's store: one SQLite file (WAL) holding records, the change log and
replication checkpoints.

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
import dataclasses
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils
from google.protobuf.message import DecodeError

from . import clock, provenance, records, sqlite
from .errors import ProtocolError, StoreError
from .records import Envelope, Keyed
from .schema import MIGRATIONS
from .sqlite import transaction

CACHE_KIB = 128 * 1024
NODE_DEFINITION = "node"  # a registered node and its parent, published by the province
VIA_LOCAL = ""
VIA_PARENT = "^"


UPSERT = """
INSERT INTO records(id, kind, origin, unit, agency, version, deleted, chash, via, envelope)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(id) DO UPDATE SET
    kind = excluded.kind, unit = excluded.unit, agency = excluded.agency,
    version = excluded.version, deleted = excluded.deleted, chash = excluded.chash,
    via = excluded.via, envelope = excluded.envelope
WHERE excluded.version > records.version AND excluded.origin = records.origin
"""


@dataclass
class WriteSummary:
    """What a local write did, counted like a DHIS2 import summary."""

    imported: int = 0
    updated: int = 0
    unchanged: int = 0


class FileWriter:
    """Writes one file's records inside its transaction (see `Store.file_transaction`)."""

    def __init__(self, store: Store, db: sqlite3.Connection, hlc: clock.HybridClock) -> None:
        self._store = store
        self._db = db
        self._hlc = hlc
        self.summary = WriteSummary()
        self.ledger: dict[str, Any] | None = None

    def write(self, keyed: Sequence[Keyed]) -> None:
        self._store._write_keyed(self._db, keyed, self._hlc, self.summary)


@dataclass(frozen=True)
class Refusal:
    """A record refused by the receiving node, with a machine code and a reason."""

    id: bytes
    version: int
    code: str
    reason: str


@dataclass(frozen=True)
class InBatch:
    """A batch received from a child: it covers the child's log (after, last]."""

    after: int
    last: int
    fingerprint: bytes
    raws: Sequence[bytes]


# A decoded and verified batch: (rows to store, refusals, quarantine rows).
Prepared = tuple[list[tuple[Any, ...]], list[Refusal], list[tuple[Any, ...]]]


@dataclass(frozen=True)
class ChildState:
    epoch: str
    applied: int
    fingerprint: bytes
    known: bool


@dataclass(frozen=True)
class OutBatch:
    """A batch to send: it covers log sequences (after, last] and carries the
    envelopes among them that the receiver needs."""

    after: int
    last: int
    envelopes: list[bytes]
    fingerprint: bytes
    # The envelopes among them that are citizen feedback (personal data may need redacting).
    feedback: list[bytes] = dataclasses.field(default_factory=list)


class Store:
    """A node's SQLite store. Create with `Store.create`, open with `Store.open`."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._w = conn
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
        self._origin_owner: dict[str, str] = {}
        self._tree: dict[str, str] = {}
        self._tree_marker: tuple[int, int] = (-1, -1)
        self._unit_owner: dict[str, str] = {}
        # Provenance (see provenance.py): a node seals what it writes and verifies what it
        # receives. The node installs both when it opens its store (`node.runtime.open_store`);
        # a bare store (tools, unit tests) writes unsealed records and checks nothing.
        self.signer: provenance.Signer | None = None
        self.verifier: provenance.Verifier | None = None

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
        try:
            conn = cls._connect(path)
            cls._migrate(conn, path)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"the store at {path} cannot be opened: {exc}", "restore it from a backup") from None
        return cls(path, conn)

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

    def _r(self) -> sqlite3.Connection:
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
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._wlock, transaction(self._w):
            yield self._w

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
        row = self._r().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as db:
            db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    @property
    def epoch(self) -> str:
        return self.meta("epoch")

    def mint_epoch(self) -> str:
        """Start a new change-log epoch: the parent will take everything again."""
        epoch = new_epoch()
        with self._write() as db:
            db.execute("UPDATE meta SET value = ? WHERE key = 'epoch'", (epoch,))
            db.execute("UPDATE uplink SET acked = 0")
        return epoch

    def max_version(self) -> int:
        """The highest version stored (a full scan: call it at start-up only)."""
        return self._r().execute("SELECT coalesce(max(version), 0) FROM records").fetchone()[0]

    def latest_version(self) -> int:
        """The version of the latest change-log entry (cheap)."""
        row = self._r().execute("SELECT version FROM changelog ORDER BY seq DESC LIMIT 1").fetchone()
        return row[0] if row else 0

    def head(self) -> int:
        return self._r().execute("SELECT coalesce(max(seq), 0) FROM changelog").fetchone()[0]

    def fingerprint_at(self, seq: int) -> bytes:
        """Fingerprint of change-log entry `seq` (empty for 0 or a missing entry)."""
        if seq == 0:
            return b""
        row = (
            self._r().execute("SELECT r.id, c.version FROM changelog c JOIN records r ON r.rid = c.rid WHERE c.seq = ?", (seq,)).fetchone()
        )
        return records.fingerprint(row[0], row[1]) if row else b""

    # ------------------------------------------------------------ local writes

    def write_local(self, keyed: Sequence[Keyed], hlc: clock.HybridClock) -> WriteSummary:
        """Store records written on this node, in one transaction.

        A record whose content equals the stored one is counted unchanged and not
        rewritten (re-dropping a file creates no new versions and no traffic).
        """
        summary = WriteSummary()
        with self._write() as db:
            self._write_keyed(db, keyed, hlc, summary)
        return summary

    def _write_keyed(self, db: sqlite3.Connection, keyed: Sequence[Keyed], hlc: clock.HybridClock, summary: WriteSummary) -> None:
        # Another process (the CLI, the node) may have written since our clock was seeded.
        latest = db.execute("SELECT version FROM changelog ORDER BY seq DESC LIMIT 1").fetchone()
        hlc.observe(latest[0] if latest else 0)
        existing = self._existing(db, [k.id for k in keyed])
        seal_id = provenance.new_seal_id() if self.signer else b""
        envelopes: dict[bytes, tuple[Envelope, bytes]] = {}
        for item in keyed:
            env = item.envelope(self.node_id, hlc.now())
            chash = records.content_hash(env)
            before = existing.get(item.id)
            if before is not None and before[1] == chash:
                summary.unchanged += 1
                continue
            if item.id in envelopes or before is not None:
                summary.updated += 1
            else:
                summary.imported += 1
            existing[item.id] = (env.version, chash)
            env.seal = seal_id
            envelopes[item.id] = (env, chash)
        if not envelopes:
            return
        rows = []
        entries = []
        for env, chash in envelopes.values():
            raw = env.SerializeToString()
            rows.append(_row(env, chash, VIA_LOCAL, raw))
            if self.signer:
                entries.append((env.id, env.version, provenance.record_hash(raw, env.kind, self.signer.redact)))
        if self.signer:
            # The seal goes first: in the change log, every receiver meets it before the records it signs.
            seal = self._seal(db, seal_id, entries, hlc.now())
            db.execute(UPSERT, _row(seal, b"", VIA_LOCAL, seal.SerializeToString()))
        db.executemany(UPSERT, rows)
        self._route_down(db, list(envelopes))

    def _seal(self, db: sqlite3.Connection, seal_id: bytes, entries: list[tuple[bytes, int, bytes]], version: int) -> Envelope:
        """This node's next seal over `entries`, chained to its previous one (kept in meta)."""
        assert self.signer is not None
        state = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('seal_seq', 'seal_head', 'epoch')").fetchall())
        seq = int(state.get("seal_seq", "0")) + 1
        seal = self.signer.seal(seal_id, seq, bytes.fromhex(state.get("seal_head", "")), version, state.get("epoch", ""), entries)
        db.executemany(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)",
            [("seal_seq", str(seq)), ("seal_head", provenance.seal_hash(seal.body).hex())],
        )
        return seal

    # ------------------------------------------------------------ file ingest ledger

    @contextlib.contextmanager
    def file_transaction(self, hlc: clock.HybridClock) -> Iterator[FileWriter]:
        """One file, one transaction: its records and its ledger row commit together.

        Write records with `writer.write(chunk)` (any number of chunks: memory stays
        flat), set `writer.ledger`, and leave the block; an exception rolls all back.
        """
        with self._write() as db:
            writer = FileWriter(self, db, hlc)
            yield writer
            if writer.ledger is None:
                raise StoreError("a file transaction ended without its ledger entry", "this is a bug in lienthong")
            db.execute(
                "INSERT OR REPLACE INTO files(sha256, name, agency, adapter, status, imported, updated, unchanged, refused, at, receipt) "
                "VALUES (:sha256, :name, :agency, :adapter, :status, :imported, :updated, :unchanged, :refused, :at, :receipt)",
                writer.ledger,
            )

    def record_refused_file(self, ledger: dict[str, Any]) -> None:
        """Keep the receipt of a file refused whole (nothing of it was stored)."""
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO files(sha256, name, agency, adapter, status, imported, updated, unchanged, refused, at, receipt) "
                "VALUES (:sha256, :name, :agency, :adapter, :status, :imported, :updated, :unchanged, :refused, :at, :receipt)",
                ledger,
            )

    def ingested(self, sha256: str) -> dict[str, Any] | None:
        """The ledger entry of a file content already committed, or None."""
        cur = self._r().execute("SELECT * FROM files WHERE sha256 = ? AND status != 'error'", (sha256,))
        row = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], row, strict=True)) if row else None

    def recent_files(self, limit: int = 10) -> list[dict[str, Any]]:
        cur = self._r().execute(
            "SELECT name, agency, adapter, status, imported, updated, unchanged, refused, at FROM files ORDER BY at DESC LIMIT ?", (limit,)
        )
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def file_totals(self) -> dict[str, int]:
        row = self._r().execute("SELECT count(*), coalesce(sum(status = 'error'), 0), coalesce(sum(refused), 0) FROM files").fetchone()
        return {"files": row[0], "files_refused": row[1], "rows_refused": row[2]}

    @staticmethod
    def _existing(db: sqlite3.Connection, ids: Sequence[bytes]) -> dict[bytes, tuple[int, bytes]]:
        found: dict[bytes, tuple[int, bytes]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for rid, version, chash in db.execute(f"SELECT id, version, chash FROM records WHERE id IN ({marks})", chunk):
                found[rid] = (version, chash)
        return found

    # ------------------------------------------------------------ upward replication (child side)

    def changes_after(self, seq: int, limit: int) -> OutBatch | None:
        """The next batch of change-log entries after `seq` to send up, or None.

        Entries received from the parent, and entries superseded by a later
        version of the same record, are covered by the batch but carry nothing:
        the parent has them already, or will get the later version.
        """
        rows = (
            self._r()
            .execute(
                "SELECT c.seq, c.up, c.version, r.version, r.id, r.envelope, r.kind FROM changelog c "
                "JOIN records r ON r.rid = c.rid WHERE c.seq > ? ORDER BY c.seq LIMIT ?",
                (seq, limit),
            )
            .fetchall()
        )
        if not rows:
            return None
        last = rows[-1]
        return OutBatch(
            after=seq,
            last=last[0],
            envelopes=[env for _, up, logged, current, _, env, _ in rows if up and logged == current],
            fingerprint=records.fingerprint(last[4], last[2]),
            feedback=[env for _, up, logged, current, _, env, kind in rows if up and logged == current and kind == records.FEEDBACK],
        )

    def pending(self) -> int:
        """Own change-log entries the parent has not acknowledged."""
        acked = self._r().execute("SELECT acked FROM uplink").fetchone()[0]
        return self._r().execute("SELECT count(*) FROM changelog WHERE seq > ? AND up = 1", (acked,)).fetchone()[0]

    def uplink_state(self) -> dict[str, Any]:
        row = self._r().execute("SELECT * FROM uplink").fetchone()
        cols = [d[0] for d in self._r().execute("SELECT * FROM uplink").description]
        return dict(zip(cols, row, strict=True))

    def record_acks(self, acked: int, acked_records: int, sent: int, refusals: Sequence[Refusal]) -> None:
        """Persist what the parent acknowledged and what it refused."""
        now = time.time()
        with self._write() as db:
            db.execute(
                "UPDATE uplink SET acked = max(acked, ?), acked_records = acked_records + ?, sent = sent + ?, last_contact = ?",
                (acked, acked_records, sent, now),
            )
            db.executemany(
                "INSERT OR REPLACE INTO refused VALUES (?, ?, ?, ?, ?)",
                [(r.id, r.version, r.code, r.reason, now) for r in refusals],
            )

    def reparent(self, parent_id: str) -> int:
        """Forget the old parent's cursors (this node moves to a new parent): the next session
        starts from the beginning of this node's change log, and the new parent's downward
        queue from its start. Records received from the old parent stay. Returns how many
        change-log entries will go up."""
        with self._write() as db:
            db.execute(
                "UPDATE uplink SET parent_id = ?, address = '', connected = 0, acked = 0, "
                "down_epoch = '', down_applied = 0, down_fingerprint = x''",
                (parent_id,),
            )
            return int(db.execute("SELECT count(*) FROM changelog WHERE up = 1").fetchone()[0])

    def set_uplink(self, **values: Any) -> None:
        assignments = ", ".join(f"{name} = ?" for name in values)
        with self._write() as db:
            db.execute(f"UPDATE uplink SET {assignments}", tuple(values.values()))

    def refused(self, limit: int = 20) -> list[dict[str, Any]]:
        """Records of ours the parent refused and that no newer version replaced."""
        rows = (
            self._r()
            .execute(
                "SELECT f.id, f.version, f.code, f.reason, f.at, r.unit, r.kind FROM refused f "
                "JOIN records r ON r.id = f.id AND r.version = f.version ORDER BY f.at DESC LIMIT ?",
                (limit,),
            )
            .fetchall()
        )
        return [
            {"id": i.hex(), "version": v, "code": c, "reason": why, "at": at, "unit": u, "kind": records.KIND_NAMES.get(k, "")}
            for i, v, c, why, at, u, k in rows
        ]

    def refused_count(self) -> int:
        return self._r().execute("SELECT count(*) FROM refused f JOIN records r ON r.id = f.id AND r.version = f.version").fetchone()[0]

    # ------------------------------------------------------------ downward replication (child side)

    def apply_from_parent(
        self, parent_epoch: str, after: int, last: int, raws: Sequence[bytes], fingerprint: bytes = b""
    ) -> tuple[int, list[Refusal]]:
        """Verify and apply a batch of the parent's downward queue and move our cursor, atomically.

        Returns how many records were stored and the ones refused (bad or missing
        signature, a definition not signed by the province): those are kept in
        quarantine here and the cursor still moves. A batch already applied is a no-op.
        """
        now = time.time()
        rows, refusals, quarantined = _prepare(VIA_PARENT, raws, now, self.verifier)
        with self._write() as db:
            epoch, applied = db.execute("SELECT down_epoch, down_applied FROM uplink").fetchone()
            if epoch != parent_epoch:
                applied = 0
            if last <= applied:
                return 0, []
            if after != applied:
                raise ProtocolError(f"the parent sent down {after}..{last} but we hold {applied}", "it reconnects by itself")
            db.executemany(UPSERT, rows)
            db.executemany("INSERT OR REPLACE INTO quarantine VALUES (?, ?, ?, ?, ?, ?, ?)", quarantined)
            self._route_down(db, [r[0] for r in rows])
            db.execute(
                "UPDATE uplink SET down_epoch = ?, down_applied = ?, down_fingerprint = ?, received = received + ?, last_contact = ?",
                (parent_epoch, last, fingerprint, len(rows), now),
            )
        return len(rows), refusals

    def down_cursor(self) -> tuple[str, int, bytes]:
        """The parent epoch, sequence and fingerprint of what we applied of its queue."""
        row = self._r().execute("SELECT down_epoch, down_applied, down_fingerprint FROM uplink").fetchone()
        return row[0] or "", row[1], row[2] or b""

    # ------------------------------------------------------------ parent side

    def child_state(self, child: str) -> ChildState:
        row = self._r().execute("SELECT epoch, applied, fingerprint FROM children WHERE child = ?", (child,)).fetchone()
        if row is None:
            return ChildState("", 0, b"", False)
        return ChildState(row[0] or "", row[1], row[2] or b"", True)

    def register_child(self, child: str, address: str) -> None:
        """First contact with a child: remember it and queue what it must receive."""
        now = time.time()
        with self._write() as db:
            known = db.execute("SELECT 1 FROM children WHERE child = ?", (child,)).fetchone()
            if known:
                db.execute("UPDATE children SET connected = 1, address = ?, last_contact = ? WHERE child = ?", (address, now, child))
                return
            db.execute(
                "INSERT INTO children(child, epoch, applied, connected, address, first_seen, last_contact) VALUES (?, '', 0, 1, ?, ?, ?)",
                (child, address, now, now),
            )
            self._claim_units(db, child, [child])
            self._claim_origin(db, child, child)
            db.execute(
                "INSERT INTO downqueue(child, rid) SELECT ?, rid FROM records WHERE kind = ? ORDER BY rid",
                (child, records.DEFINITION),
            )

    def set_child(self, child: str, **values: Any) -> None:
        assignments = ", ".join(f"{name} = ?" for name in values)
        with self._write() as db:
            db.execute(f"UPDATE children SET {assignments} WHERE child = ?", (*values.values(), child))

    def apply_from_child(
        self, child: str, epoch: str, after: int, last: int, last_fingerprint: bytes, raws: Sequence[bytes]
    ) -> list[Refusal]:
        """Apply one batch from a child and its checkpoint in one transaction (see `apply_batches`)."""
        return self.apply_batches(child, epoch, [InBatch(after, last, last_fingerprint, raws)])[0]

    def prepare(self, child: str, raws: Sequence[bytes]) -> Prepared:
        """Decode, shape-check and verify one batch from `child` (no lock, no write): what
        `apply_batches` takes as `prepared`, so that this can run ahead on another thread."""
        return _prepare(child, raws, time.time(), self.verifier)

    def apply_batches(
        self, child: str, epoch: str, batches: Sequence[InBatch], prepared: Sequence[Prepared] | None = None
    ) -> list[list[Refusal]]:
        """Apply consecutive batches from a child, and its checkpoint, in ONE transaction.

        Group commit: the child streams several batches ahead; applying all that
        have arrived in one transaction makes one fsync and one pass over the id
        index instead of one each. Idempotent: a batch at or below the stored
        checkpoint is acknowledged without being applied again. Refused records are
        quarantined and the batch still moves the checkpoint: one bad record never
        pins the stream. Returns each batch's refusals.
        """
        now = time.time()
        if prepared is None:
            prepared = [_prepare(child, batch.raws, now, self.verifier) for batch in batches]
        results: list[list[Refusal]] = []
        rows: list[tuple[Any, ...]] = []
        quarantined: list[tuple[Any, ...]] = []
        units: set[str] = set()
        refused = 0
        with self._dropping_claims_on_error(), self._write() as db:
            row = db.execute("SELECT epoch, applied, fingerprint FROM children WHERE child = ?", (child,)).fetchone()
            if row is None:
                raise ProtocolError(f"child {child} sent a batch before its handshake", "it reconnects by itself")
            applied, fingerprint = (row[1], row[2]) if row[0] == epoch else (0, b"")
            for batch, (batch_rows, refusals, batch_quarantined) in zip(batches, prepared, strict=True):
                if batch.last <= applied:
                    results.append([])
                    continue
                if batch.after != applied:
                    raise ProtocolError(
                        f"child {child} sent {batch.after}..{batch.last} but {applied} is applied", "it reconnects by itself"
                    )
                denied = {origin for origin in {r[2] for r in batch_rows} if not self._claim_origin(db, child, origin)}
                for r in batch_rows:
                    if r[2] in denied:
                        reason = f"node {child} may not send records whose origin is {r[2]}"
                        refusals.append(Refusal(r[0], r[5], "unauthorized_origin", reason))
                        batch_quarantined.append((child, r[0], r[5], "unauthorized_origin", reason, now, r[9]))
                    else:
                        rows.append(r)
                        units.add(r[3])
                quarantined += batch_quarantined
                refused += len(refusals)
                results.append(refusals)
                applied, fingerprint = batch.last, batch.fingerprint
            cursor = db.executemany(UPSERT, rows)
            stale = 0
            if cursor.rowcount < len(rows):
                # Some versions were not newer than what is stored: a resend (the same
                # version, harmless) or a replay of an older version, refused and audited.
                stale = self._refuse_stale(db, child, rows, prepared, results, quarantined, now)
            self._claim_units(db, child, units - self._unit_owner.keys())
            db.executemany("INSERT OR REPLACE INTO quarantine VALUES (?, ?, ?, ?, ?, ?, ?)", quarantined)
            db.execute(
                "UPDATE children SET epoch = ?, applied = ?, fingerprint = ?, received = received + ?, "
                "rejected = rejected + ?, last_contact = ? WHERE child = ?",
                (epoch, applied, fingerprint, len(rows) - stale, refused + stale, now, child),
            )
        return results

    def _refuse_stale(
        self,
        db: sqlite3.Connection,
        child: str,
        rows: list[tuple[Any, ...]],
        prepared: Sequence[Prepared],
        results: list[list[Refusal]],
        quarantined: list[tuple[Any, ...]],
        now: float,
    ) -> int:
        """Refuse the rows older than what is stored (after the upsert left them alone); returns how many."""
        stale = 0
        batch_of = {r[0]: i for i, (batch_rows, _, _) in enumerate(prepared) for r in batch_rows}
        stored = self._existing(db, [r[0] for r in rows])
        for r in rows:
            current = stored.get(r[0])
            if current is not None and current[0] > r[5]:
                reason = f"version {r[5]} is older than the stored version {current[0]}: an old version replayed"
                refusal = Refusal(r[0], r[5], "stale_version", reason)
                index = batch_of.get(r[0], len(results) - 1)
                if index < len(results):
                    results[index].append(refusal)
                quarantined.append((child, r[0], r[5], "stale_version", reason, now, r[9]))
                stale += 1
        return stale

    @contextlib.contextmanager
    def _dropping_claims_on_error(self) -> Iterator[None]:
        """The origin and unit claims cached in memory are made inside the applying transaction:
        if it rolls back, forget them (they are read again from the committed tables)."""
        try:
            yield
        except BaseException:
            self._origin_owner.clear()
            self._unit_owner.clear()
            raise

    def _node_tree(self, db: sqlite3.Connection) -> dict[str, str]:
        """node id -> parent id, from the `node` definitions the province publishes from its
        CA registry (reloaded when any definition changed)."""
        marker = db.execute("SELECT count(*), coalesce(max(version), 0) FROM records WHERE kind = ?", (records.DEFINITION,)).fetchone()
        if marker != self._tree_marker:
            tree: dict[str, str] = {}
            for (raw,) in db.execute("SELECT envelope FROM records WHERE kind = ? AND deleted = 0", (records.DEFINITION,)):
                body = records.body_of(Envelope.FromString(raw))
                if body.type == NODE_DEFINITION:
                    tree[body.code] = str(json.loads(body.json or "{}").get("parent") or "")
            self._tree, self._tree_marker = tree, marker
        return self._tree

    def _claim_origin(self, db: sqlite3.Connection, child: str, origin: str) -> bool:
        """Whether `child` may send records of `origin`: the origin itself or one of its descendants.

        Descendants come from the node registry the province publishes (certificates
        issued with their parent). An origin the registry does not know is claimed by
        the first child that sends its records."""
        if origin == self.node_id:
            return False
        tree = self._node_tree(db)
        if origin in tree:
            node, seen = origin, set()
            while node and node not in seen:
                if node == child:
                    return True
                seen.add(node)
                node = tree.get(node, "")
            return False
        owner = self._origin_owner.get(origin)
        if owner is None:
            row = db.execute("SELECT child FROM child_origins WHERE origin = ?", (origin,)).fetchone()
            owner = row[0] if row else child
            if row is None:
                db.execute("INSERT INTO child_origins VALUES (?, ?)", (origin, child))
            self._origin_owner[origin] = owner
        return owner == child

    def _claim_units(self, db: sqlite3.Connection, child: str, units: Iterable[str]) -> None:
        """Learn that `units` lie in `child`'s subtree, and queue down what they must receive."""
        claimed = False
        for unit in units:
            if unit == self.node_id:
                continue  # this node's own unit never belongs to a child's subtree
            row = db.execute("SELECT child FROM child_units WHERE unit = ?", (unit,)).fetchone()
            if row is None:
                db.execute("INSERT INTO child_units VALUES (?, ?)", (unit, child))
                claimed = True
            self._unit_owner[unit] = row[0] if row else child
        if claimed:
            self._queue_feedback_for(db, child)  # once for all the units just claimed

    def _queue_feedback_for(self, db: sqlite3.Connection, child: str) -> None:
        """A child claimed a unit: queue the feedback it must now hold — items of its units, their
        events, and items assigned to its units before it first connected, with their history."""
        from . import feedback  # it imports this module

        rows = db.execute(
            "SELECT rid, kind, unit, via, envelope FROM records WHERE kind IN (?, ?) AND via != ? ORDER BY rid",
            (records.FEEDBACK, records.FEEDBACK_EVENT, child),
        ).fetchall()
        queued = {rid for (rid,) in db.execute("SELECT rid FROM downqueue WHERE child = ?", (child,))}
        wanted = sorted({rid for target, rid in feedback.down_routes(db, rows, self) if target == child} - queued)
        db.executemany("INSERT INTO downqueue(child, rid) VALUES (?, ?)", [(child, rid) for rid in wanted])

    def _route_down(self, db: sqlite3.Connection, ids: Sequence[bytes]) -> None:
        """Queue newly written records for the children that must receive them:
        definitions to every child; feedback and its events to the child whose
        subtree holds the unit (through the unit registry for a unit no child has
        named yet), an event also to its item's child, and a reassignment to the new
        unit's child with the item's whole history (`feedback.down_routes`)."""
        if not ids:
            return
        children = [c for (c,) in db.execute("SELECT child FROM children")]
        if not children:
            return
        queue: list[tuple[str, int]] = []
        feedback_rows: list[tuple[int, int, str, str, bytes]] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for rid, kind, unit, via, raw in db.execute(
                f"SELECT r.rid, r.kind, r.unit, r.via, CASE WHEN r.kind = ? THEN NULL ELSE r.envelope END FROM records r "
                f"WHERE r.id IN ({marks}) AND (r.kind = ? OR r.kind IN (?, ?))",
                (records.DEFINITION, *chunk, records.DEFINITION, records.FEEDBACK, records.FEEDBACK_EVENT),
            ):
                if kind == records.DEFINITION:
                    queue.extend((c, rid) for c in children if c != via)
                else:
                    feedback_rows.append((rid, kind, unit, via, raw))
        if feedback_rows:
            from . import feedback  # it imports this module

            queue.extend(feedback.down_routes(db, feedback_rows, self))
        queue = list(dict.fromkeys(queue))  # a record queued twice for one child is sent once
        db.executemany("INSERT INTO downqueue(child, rid) VALUES (?, ?)", sorted(queue, key=lambda q: q[1]))

    def down_after(self, child: str, seq: int, limit: int) -> OutBatch | None:
        """The next batch of `child`'s downward queue after `seq`, or None. Each record's seal
        rides in the batch just before it, so the child can verify what it receives."""
        rows = (
            self._r()
            .execute(
                "SELECT d.seq, r.id, r.envelope FROM downqueue d JOIN records r ON r.rid = d.rid "
                "WHERE d.child = ? AND d.seq > ? ORDER BY d.seq LIMIT ?",
                (child, seq, limit),
            )
            .fetchall()
        )
        if not rows:
            return None
        last, last_id, _ = rows[-1]
        envelopes: list[bytes] = []
        sealed: set[bytes] = set()
        for _, _, raw in rows:
            seal_id = Envelope.FromString(raw).seal
            if seal_id and seal_id not in sealed:
                sealed.add(seal_id)
                seal = self.envelope(seal_id)
                if seal is not None:
                    envelopes.append(seal)
            envelopes.append(raw)
        return OutBatch(after=seq, last=last, envelopes=envelopes, fingerprint=records.fingerprint(last_id, last))

    def envelope(self, record_id: bytes) -> bytes | None:
        """The stored envelope of one record, or None."""
        row = self._r().execute("SELECT envelope FROM records WHERE id = ?", (record_id,)).fetchone()
        return row[0] if row else None

    def down_fingerprint(self, child: str, seq: int) -> bytes:
        """Fingerprint of `child`'s downward entry `seq` (empty if there is none)."""
        row = (
            self._r()
            .execute("SELECT r.id FROM downqueue d JOIN records r ON r.rid = d.rid WHERE d.child = ? AND d.seq = ?", (child, seq))
            .fetchone()
        )
        return records.fingerprint(row[0], seq) if row else b""

    def children(self) -> list[dict[str, Any]]:
        cur = self._r().execute(
            "SELECT c.*, (SELECT count(*) FROM downqueue d WHERE d.child = c.child) AS queued FROM children c ORDER BY c.child"
        )
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def quarantine(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = (
            self._r().execute("SELECT child, id, version, code, reason, at FROM quarantine ORDER BY at DESC LIMIT ?", (limit,)).fetchall()
        )
        return [{"child": c, "id": i.hex(), "version": v, "code": code, "reason": r, "at": at} for c, i, v, code, r, at in rows]

    def mark_all_disconnected(self) -> None:
        with self._write() as db:
            db.execute("UPDATE children SET connected = 0")
            db.execute("UPDATE uplink SET connected = 0")

    # ------------------------------------------------------------ reading

    def iter_records(self, kind: int | None = None, unit: str | None = None, include_deleted: bool = False) -> Iterator[Envelope]:
        sql, args = "SELECT envelope FROM records WHERE 1 = 1", []
        if kind is not None:
            sql, args = sql + " AND kind = ?", [*args, kind]
        if unit is not None:
            sql, args = sql + " AND unit = ?", [*args, unit]
        if not include_deleted:
            sql += " AND deleted = 0"
        for (raw,) in self._r().execute(sql + " ORDER BY rid", args):
            yield Envelope.FromString(raw)

    def definition_marker(self) -> tuple[int, int]:
        """(count, highest version) of definition records: it changes whenever any definition
        does. Cheap (index on kind; definitions are few)."""
        row = self._r().execute("SELECT count(*), coalesce(max(version), 0) FROM records WHERE kind = ?", (records.DEFINITION,)).fetchone()
        return row[0], row[1]

    def counts(self) -> dict[str, int]:
        out = {name: 0 for name in records.KIND_NAMES.values()}
        for kind, n in self._r().execute("SELECT kind, count(*) FROM records WHERE deleted = 0 GROUP BY kind"):
            out[records.KIND_NAMES.get(kind, str(kind))] = n
        return out

    def record_versions(self) -> set[tuple[bytes, int]]:
        """Every stored (id, version): what tests and tools compare across nodes."""
        return set(self._r().execute("SELECT id, version FROM records").fetchall())


def new_epoch() -> str:
    return uuid.uuid4().hex


def _row(env: Envelope, chash: bytes, via: str, raw: bytes) -> tuple[Any, ...]:
    return (env.id, env.kind, env.origin, env.unit, env.agency, env.version, env.deleted, chash, via, raw)


def _prepare(child: str, raws: Sequence[bytes], now: float, verifier: provenance.Verifier | None) -> Prepared:
    """Decode, shape-check and verify a batch outside the write lock: (rows, refusals, quarantine rows)."""
    parse = Envelope.FromString
    check = verifier.check if verifier is not None else None
    rows: list[tuple[Any, ...]] = []
    refusals: list[Refusal] = []
    quarantined: list[tuple[Any, ...]] = []
    for raw in raws:
        try:
            env = parse(raw)
        except DecodeError:
            refusals.append(Refusal(b"", 0, "malformed", "the record is not a valid lienthong envelope"))
            continue
        problem = _shape_problem(env)
        if problem is None and check is not None:
            problem = check(env, raw)
        if problem is not None:
            refusals.append(Refusal(env.id, env.version, *problem))
            quarantined.append((child, env.id, env.version, problem[0], problem[1], now, raw))
            continue
        rows.append((env.id, env.kind, env.origin, env.unit, env.agency, env.version, env.deleted, b"", child, raw))
    return rows, refusals, quarantined


def _shape_problem(env: Envelope) -> tuple[str, str] | None:
    """Why a received envelope cannot be stored, or None."""
    if len(env.id) != records.ID_BYTES:
        return "malformed", "the record id is not 16 bytes"
    if env.kind not in records.KIND_NAMES:
        return "unknown_kind", f"record kind {env.kind} is not known to this node"
    if not records.NODE_ID.match(env.origin):
        return "malformed", "the record has no valid origin node"
    if not env.unit:
        return "malformed", "the record names no unit"
    if env.version == 0:
        return "malformed", "the record has no version"
    if clock.too_far_ahead(env.version):
        return "clock_skew", "the record's version is more than a day ahead of this node's clock; check the sender's clock"
    return None
