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
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from . import admission, disputes, feedback, records, sharing
from .admission import Prepared
from .approval import authority_problem as approval_authority
from .batch import InBatch, OutBatch, Refusal
from .errors import HandshakeRefused, ProtocolError
from .records import Envelope
from .store import UPSERT, Store
from .subtree import Subtrees
from .versions import existing_versions

# Refused records kept per child: whole up to QUARANTINE_KEEP, then without their bytes;
# past QUARANTINE_LIMIT the child's stream is refused.
QUARANTINE_KEEP = 1_000
QUARANTINE_LIMIT = 100_000


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

    def __init__(self, store: Store, reported_to: Iterable[str] = ()) -> None:
        self.store = store
        # Units of this node that its children may report figures about (a health station about
        # its commune): a subordinate node's own units, by its operator's configuration. Such
        # figures coexist with the node's own under their origin; they never replace them.
        self.reported_to = frozenset(reported_to)
        self._cached: tuple[tuple[int, ...], Subtrees] | None = None
        self._claimed = False  # an origin was first claimed in the running transaction

    def child_state(self, child: str) -> ChildState:
        row = self.store.reader().execute("SELECT epoch, applied, fingerprint FROM children WHERE child = ?", (child,)).fetchone()
        if row is None:
            return ChildState("", 0, b"", False)
        return ChildState(row[0] or "", row[1], row[2] or b"", True)

    def register_child(self, child: str, address: str, clock_offset_ms: int | None = None) -> None:
        """A child connected: remember it, with how far its clock is from ours, in one
        transaction (a province restarted under thousands of communes takes each one's
        handshake in one commit); at first contact, queue what it must receive."""
        now = time.time()
        with self.store.writing() as db:
            known = db.execute("SELECT 1 FROM children WHERE child = ?", (child,)).fetchone()
            if known:
                db.execute(
                    "UPDATE children SET connected = 1, address = ?, last_contact = ?, clock_offset_ms = ? WHERE child = ?",
                    (address, now, clock_offset_ms, child),
                )
                return
            db.execute(
                "INSERT INTO children(child, epoch, applied, connected, address, first_seen, last_contact, clock_offset_ms) "
                "VALUES (?, '', 0, 1, ?, ?, ?, ?)",
                (child, address, now, now, clock_offset_ms),
            )
            db.execute(
                "INSERT INTO downqueue(child, rid) SELECT ?, rid FROM records WHERE kind = ? AND instr(envelope, ?) = 0 ORDER BY rid",
                (child, records.DEFINITION, sharing.SHARE_MARK),  # shares go only where they are shared (routing.py)
            )
            # Feedback for its units may have waited here for it (assigned before it first connected).
            self.store.router.queue_feedback_for(db, child)

    def resend_to_restored(self, child: str, epoch: str) -> int:
        """The child came back with a new change-log epoch: its store was restored from a copy
        (or replaced) and may lack what it wrote after that copy was made. Queue down to it
        everything this node holds that came up from it (applying is idempotent and
        version-guarded: what it still has changes nothing), and take its new epoch now, so
        a reconnect before its first batch does not queue it all again. Returns how many."""
        with self.store.writing() as db:
            db.execute("UPDATE children SET epoch = ?, applied = 0, fingerprint = x'' WHERE child = ?", (epoch, child))
            cursor = db.execute(
                "INSERT INTO downqueue(child, rid) SELECT ?, rid FROM records WHERE via = ? ORDER BY rid",
                (child, child),
            )
            return cursor.rowcount

    def down_head(self, child: str) -> int:
        """The last sequence of the downward queue held for `child` (0 when none)."""
        row = self.store.reader().execute("SELECT max(seq) FROM downqueue WHERE child = ?", (child,)).fetchone()
        return int(row[0] or 0)

    def queue_head(self) -> int:
        """The last sequence of the downward queue over all children (0 when empty)."""
        row = self.store.reader().execute("SELECT max(seq) FROM downqueue").fetchone()
        return int(row[0] or 0)

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
        refused = 0
        assignees: dict[bytes, str] | None = None  # computed once per group commit, when an event needs it
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
                subtrees = self._subtrees(db)
                arriving = {x[0]: x[9] for x in batch_rows if x[1] == records.DISPUTE}  # threads opened in this batch
                for r in batch_rows:
                    problem = self._authority_problem(subtrees, child, r, denied, self.reported_to)
                    if problem is None and r[1] == records.DISPUTE:
                        problem = disputes.thread_problem(db, Envelope.FromString(r[9]), arriving)
                    if problem is None and r[1] == records.APPROVAL:
                        problem = approval_authority(subtrees, Envelope.FromString(r[9]))
                    if problem is None and r[1] == records.FEEDBACK_EVENT:
                        if assignees is None:
                            assignees = self._assignees(db, subtrees, prepared)
                        problem = self._event_problem(subtrees, child, r, assignees)
                    if problem is None:
                        rows.append(r)
                    else:
                        refusals.append(Refusal(r[0], r[5], *problem))
                        batch_quarantined.append((child, r[0], r[5], *problem, now, r[9]))
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
            # Records shared down by the province (sharing.py) go on to the units they are shared with.
            self.store.router.route_shared(db, [r[0] for r in rows])
            # Dispute acts from below go on down to the other party's subtree (an opener's question, an origin's answer).
            self.store.router.route(db, [r[0] for r in rows if r[1] == records.DISPUTE])
            if self._claimed:
                # Records of nodes first seen through this child: feedback for their units goes to it now.
                self.store.router.queue_feedback_for(db, child)
                self._claimed = False
            self._quarantine(db, child, quarantined)
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

    @staticmethod
    def _quarantine(db: sqlite3.Connection, child: str, rows: list[tuple[Any, ...]]) -> None:
        """Keep refused records, bounded per child: the first QUARANTINE_KEEP whole, the rest
        without their bytes (code and reason only); past QUARANTINE_LIMIT the child is refused
        until an operator looks (one child must not fill the province's disk)."""
        if not rows:
            return
        held = int(db.execute("SELECT count(*) FROM quarantine WHERE child = ?", (child,)).fetchone()[0])
        if held + len(rows) > QUARANTINE_LIMIT:
            raise HandshakeRefused(
                f"node {child} has sent more than {QUARANTINE_LIMIT:,} records this node refused; it is not taken until that is looked at",
                f"see the refusals with `lienthong status --dir DIR` at {child}, correct them there, and clear the quarantine at this node",
            )
        room = max(QUARANTINE_KEEP - held, 0)
        kept = [r if i < room else (*r[:6], b"") for i, r in enumerate(rows)]
        db.executemany("INSERT OR REPLACE INTO quarantine VALUES (?, ?, ?, ?, ?, ?, ?)", kept)

    @contextlib.contextmanager
    def _dropping_claims_on_error(self) -> Iterator[None]:
        """The subtree snapshot cached in memory is updated inside the applying transaction:
        if it rolls back, forget it (it is read again from the committed tables)."""
        try:
            yield
        except BaseException:
            self._cached = None
            self._claimed = False
            raise

    def _subtrees(self, db: sqlite3.Connection) -> Subtrees:
        """Who answers for what, reloaded when definitions, children or relayed origins changed."""
        marker = Subtrees.marker(db)
        if self._cached is None or self._cached[0] != marker:
            self._cached = (marker, Subtrees.load(db, self.store.node_id))
        return self._cached[1]

    def _claim_origin(self, db: sqlite3.Connection, child: str, origin: str) -> bool:
        """Whether `child` may send records of `origin`: the child itself or a node in its subtree.

        The subtree is what the province's node definitions say. An origin that no
        definition names and this node has never seen (a node below a middle tier
        whose registry the province does not publish) is remembered as relayed by
        the first child that sends its records: its seals prove who wrote them."""
        if origin == self.store.node_id:
            return False
        subtrees = self._subtrees(db)
        if origin == child:
            return True
        if subtrees.known(origin):
            return subtrees.child_for_node(origin) == child
        db.execute("INSERT INTO child_origins VALUES (?, ?)", (origin, child))
        subtrees.relay(origin, child)
        self._cached = (Subtrees.marker(db), subtrees)
        self._claimed = True
        return True

    @staticmethod
    def _authority_problem(
        subtrees: Subtrees, child: str, row: admission.Row, denied: set[str], reported_to: frozenset[str] = frozenset()
    ) -> tuple[str, str] | None:
        """Why `child` may not write this row, or None: its origin or its unit lies outside the child's subtree."""
        origin, unit, kind = row[2], row[3], row[1]
        if origin in denied:
            return "unauthorized_origin", f"node {child} may not send records whose origin is {origin}"
        if kind in records.ORIGIN_ONLY or unit in reported_to:
            return None  # a seal or an audit entry speaks for its origin only, checked above
        node = subtrees.node_of_unit(unit)
        if not node:
            return (
                "unknown_unit",
                f"unit {unit} is not in the province's unit definitions; the record is sent again once the province defines it",
            )
        if subtrees.child_for_node(node) != child:
            return "foreign_unit", f"unit {unit} belongs to node {node}, outside the subtree of node {child}"
        return None

    @staticmethod
    def _assignees(db: sqlite3.Connection, subtrees: Subtrees, prepared: Sequence[Prepared]) -> dict[bytes, str]:
        """For the feedback items that handler events in these batches name (accepted, in progress,
        resolved, returned) and that this node holds: the unit answerable for each now (the fold of
        its events held here). One pass over the events for the whole group commit."""
        tickets: dict[bytes, str] = {}
        for batch_rows, _, _ in prepared:
            for r in batch_rows:
                if r[1] == records.FEEDBACK_EVENT:
                    env = Envelope.FromString(r[9])
                    body = records.body_of(env)
                    if body.status in feedback.ASSIGNEES_ONLY:
                        tickets[records.event_item_id(env)] = body.feedback
        items: dict[bytes, Envelope] = {}
        ids = list(tickets)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for (raw,) in db.execute(f"SELECT envelope FROM records WHERE kind = ? AND id IN ({marks})", (records.FEEDBACK, *chunk)):
                env = Envelope.FromString(raw)
                items[env.id] = env
        if not items:
            return {}
        if len(items) <= 20:  # a few items: only the events that mention their tickets
            raws = [
                raw
                for ticket in {tickets[i] for i in items}
                for (raw,) in db.execute(
                    "SELECT envelope FROM records WHERE kind = ? AND instr(envelope, ?) > 0", (records.FEEDBACK_EVENT, ticket.encode())
                )
            ]
        else:
            raws = [raw for (raw,) in db.execute("SELECT envelope FROM records WHERE kind = ?", (records.FEEDBACK_EVENT,))]
        events: dict[bytes, dict[bytes, feedback.Event]] = {i: {} for i in items}
        for raw in raws:
            env = Envelope.FromString(raw)
            item_id = records.event_item_id(env)
            if item_id in events:
                events[item_id][env.id] = feedback.Event.from_envelope(env)
        return {
            i: feedback.fold(feedback.item_from_envelope(env), events[i].values(), subtrees.units.ancestors).responsible
            for i, env in items.items()
        }

    @staticmethod
    def _event_problem(subtrees: Subtrees, child: str, row: admission.Row, assignees: dict[bytes, str]) -> tuple[str, str] | None:
        """Why a feedback event from `child` may not be taken, or None: what only the handling unit
        may do (accept, progress, resolve, return) comes from the subtree of the item's current
        assignee. An event whose item is not held here is left to the fold where the item is."""
        env = Envelope.FromString(row[9])
        responsible = assignees.get(records.event_item_id(env))
        if responsible is None or subtrees.child_for_unit(responsible) == child:
            return None
        body = records.body_of(env)
        return (
            "not_assignee",
            f"feedback {body.feedback} is assigned to {responsible}, outside the subtree of node {child}: "
            f"only its assignee or a unit above it may mark it {body.status}",
        )

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
