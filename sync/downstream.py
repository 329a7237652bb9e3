"""The parent's side of its links to children: registering a child, checking and
applying what it sends (with its checkpoint, in one transaction), quarantine,
which origins and units belong to which child's subtree, and reading each
child's downward queue.

Exactly-once effect from at-least-once delivery: a batch at or below a child's
stored checkpoint is acknowledged without being applied again; a refused record
is quarantined and still moves the checkpoint, so one bad record never pins the
stream (DESIGN §4).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from . import admission, records
from .admission import Prepared
from .batch import InBatch, OutBatch, Refusal
from .errors import ProtocolError
from .records import Envelope
from .store import UPSERT, Store, existing_versions


@dataclass(frozen=True)
class ChildState:
    """What this node durably holds of a child's change log."""

    epoch: str
    applied: int
    fingerprint: bytes
    known: bool


class Downstream:
    """The parent's side of its children's links, over `store`. One per node process: it
    caches which child owns which origin and unit. Blocking methods; the engine calls
    them from worker threads."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._origin_owner: dict[str, str] = {}
        self._tree: dict[str, str] = {}
        self._tree_marker: tuple[int, int] = (-1, -1)
        self._unit_owner: dict[str, str] = {}

    def child_state(self, child: str) -> ChildState:
        row = self.store.reader().execute("SELECT epoch, applied, fingerprint FROM children WHERE child = ?", (child,)).fetchone()
        if row is None:
            return ChildState("", 0, b"", False)
        return ChildState(row[0] or "", row[1], row[2] or b"", True)

    def register_child(self, child: str, address: str) -> None:
        """First contact with a child: remember it and queue what it must receive."""
        now = time.time()
        with self.store.writing() as db:
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
        with self.store.writing() as db:
            db.execute(f"UPDATE children SET {assignments} WHERE child = ?", (*values.values(), child))

    def apply_from_child(
        self, child: str, epoch: str, after: int, last: int, last_fingerprint: bytes, raws: Sequence[bytes]
    ) -> list[Refusal]:
        """Apply one batch from a child and its checkpoint in one transaction (see `apply_batches`)."""
        return self.apply_batches(child, epoch, [InBatch(after, last, last_fingerprint, raws)])[0]

    def prepare(self, child: str, raws: Sequence[bytes]) -> Prepared:
        """Decode, shape-check and verify one batch from `child` (no lock, no write): what
        `apply_batches` takes as `prepared`, so that this can run ahead on another thread."""
        return admission.prepare(child, raws, time.time(), self.store.verifier)

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
            prepared = [admission.prepare(child, batch.raws, now, self.store.verifier) for batch in batches]
        results: list[list[Refusal]] = []
        rows: list[tuple[Any, ...]] = []
        quarantined: list[tuple[Any, ...]] = []
        units: set[str] = set()
        refused = 0
        with self._dropping_claims_on_error(), self.store.writing() as db:
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
        stored = existing_versions(db, [r[0] for r in rows])
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
                if body.type == records.NODE_DEFINITION:
                    tree[body.code] = str(json.loads(body.json or "{}").get("parent") or "")
            self._tree, self._tree_marker = tree, marker
        return self._tree

    def _claim_origin(self, db: sqlite3.Connection, child: str, origin: str) -> bool:
        """Whether `child` may send records of `origin`: the origin itself or one of its descendants.

        Descendants come from the node registry the province publishes (certificates
        issued with their parent). An origin the registry does not know is claimed by
        the first child that sends its records."""
        if origin == self.store.node_id:
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
            if unit == self.store.node_id:
                continue  # this node's own unit never belongs to a child's subtree
            row = db.execute("SELECT child FROM child_units WHERE unit = ?", (unit,)).fetchone()
            if row is None:
                db.execute("INSERT INTO child_units VALUES (?, ?)", (unit, child))
                claimed = True
            self._unit_owner[unit] = row[0] if row else child
        if claimed:
            self.store.router.queue_feedback_for(db, child)  # once for all the units just claimed

    def down_after(self, child: str, seq: int, limit: int) -> OutBatch | None:
        """The next batch of `child`'s downward queue after `seq`, or None. Each record's seal
        rides in the batch just before it, so the child can verify what it receives."""
        rows = (
            self.store.reader()
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
                seal = self.store.envelope(seal_id)
                if seal is not None:
                    envelopes.append(seal)
            envelopes.append(raw)
        return OutBatch(after=seq, last=last, envelopes=envelopes, fingerprint=records.fingerprint(last_id, last))

    def down_fingerprint(self, child: str, seq: int) -> bytes:
        """Fingerprint of `child`'s downward entry `seq` (empty if there is none)."""
        row = (
            self.store.reader()
            .execute("SELECT r.id FROM downqueue d JOIN records r ON r.rid = d.rid WHERE d.child = ? AND d.seq = ?", (child, seq))
            .fetchone()
        )
        return records.fingerprint(row[0], seq) if row else b""

    def children(self) -> list[dict[str, Any]]:
        cur = self.store.reader().execute(
            "SELECT c.*, (SELECT count(*) FROM downqueue d WHERE d.child = c.child) AS queued FROM children c ORDER BY c.child"
        )
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def quarantine(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = (
            self.store.reader()
            .execute("SELECT child, id, version, code, reason, at FROM quarantine ORDER BY at DESC LIMIT ?", (limit,))
            .fetchall()
        )
        return [{"child": c, "id": i.hex(), "version": v, "code": code, "reason": r, "at": at} for c, i, v, code, r, at in rows]
