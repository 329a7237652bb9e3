"""The child's side of its link to the parent: which changes go up, what the parent
acknowledged and refused, the uplink's state, applying what the parent sends down,
and moving to a new parent.

Exactly-once effect: the parent's acknowledgement only moves `uplink.acked` forward;
what the parent sends down is applied together with our downward cursor in one
transaction, so a batch received twice is a no-op.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from . import admission, clock, disputes, provenance, records, sharing
from .approval import authority_problem as approval_authority
from .batch import OutBatch, Refusal
from .errors import ProtocolError
from .store import RESTORING, UPSERT, VIA_LOCAL, VIA_PARENT, Store
from .subtree import Subtrees

REFUSAL_META = "uplink_refused"  # the parent's last refusal of this node's handshake, JSON; '' once it took the link


class Upstream:
    """The child's side of the link, over `store`. Blocking methods; the engine calls them from worker threads."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # ------------------------------------------------------------ up: our change log to the parent
    # A share this node made is for the units below it: its batch covers it, but it is not sent up.

    def changes_after(self, seq: int, limit: int) -> OutBatch | None:
        """The next batch of change-log entries after `seq` to send up, or None.

        Entries received from the parent, and entries superseded by a later
        version of the same record, are covered by the batch but carry nothing:
        the parent has them already, or will get the later version.
        """
        rows = (
            self.store.reader()
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
            envelopes=[env for _, up, logged, current, _, env, kind in rows if up and logged == current and not _share(kind, env)],
            fingerprint=records.fingerprint(last[4], last[2]),
            feedback=[env for _, up, logged, current, _, env, kind in rows if up and logged == current and kind == records.FEEDBACK],
        )

    def pending(self) -> int:
        """Own change-log entries the parent has not acknowledged."""
        acked = self.store.reader().execute("SELECT acked FROM uplink").fetchone()[0]
        return int(self.store.reader().execute("SELECT count(*) FROM changelog WHERE seq > ? AND up = 1", (acked,)).fetchone()[0])

    def uplink_state(self) -> dict[str, Any]:
        row = self.store.reader().execute("SELECT * FROM uplink").fetchone()
        cols = [d[0] for d in self.store.reader().execute("SELECT * FROM uplink").description]
        return dict(zip(cols, row, strict=True))

    def record_acks(self, acked: int, acked_records: int, sent: int, refusals: Sequence[Refusal]) -> None:
        """Persist what the parent acknowledged and what it refused."""
        now = time.time()
        with self.store.writing() as db:
            db.execute(
                "UPDATE uplink SET acked = max(acked, ?), acked_records = acked_records + ?, sent = sent + ?, last_contact = ?",
                (acked, acked_records, sent, now),
            )
            db.executemany(
                "INSERT OR REPLACE INTO refused VALUES (?, ?, ?, ?, ?)",
                [(r.id, r.version, r.code, r.reason, now) for r in refusals],
            )

    def retry_refused(self, hlc: clock.HybridClock) -> int:
        """Send up again what the parent refused for a reason the sender can correct (DESIGN §8):
        a clock that ran ahead or behind, a certificate not valid when the record was sealed, a
        unit the province had not defined yet. This node's own records go again under fresh
        versions and a new seal (the clock and certificate in force now); records relayed from
        below go again as they are. A refusal that recurs is recorded again; returns how many
        records were queued."""
        with self.store.writing() as db:
            rows = db.execute(
                f"SELECT r.id, r.rid, r.version, r.via, r.kind FROM refused f JOIN records r ON r.id = f.id AND r.version = f.version "
                f"WHERE f.code IN ({','.join('?' * len(admission.CORRECTABLE))})",
                sorted(admission.CORRECTABLE),
            ).fetchall()
            if not rows:
                return 0
            own = [rid for rid, _, _, via, kind in rows if via == VIA_LOCAL and kind != records.SEAL]
            relayed = [(row_id, version) for _, row_id, version, via, kind in rows if via != VIA_LOCAL and via != VIA_PARENT]
            db.executemany("INSERT INTO changelog(rid, version, up) VALUES (?, ?, 1)", relayed)
            db.executemany("DELETE FROM refused WHERE id = ?", [(rid,) for rid, *_ in rows])
        if own:
            self.store.write_again(own, hlc)
        return len(own) + len(relayed)

    def reparent(self, parent_id: str) -> int:
        """Forget the old parent's cursors (this node moves to a new parent): the next session
        starts from the beginning of this node's change log, and the new parent's downward
        queue from its start. Records received from the old parent stay. Returns how many
        change-log entries will go up."""
        with self.store.writing() as db:
            db.execute(
                "UPDATE uplink SET parent_id = ?, address = '', connected = 0, acked = 0, "
                "down_epoch = '', down_applied = 0, down_fingerprint = x''",
                (parent_id,),
            )
            return int(db.execute("SELECT count(*) FROM changelog WHERE up = 1").fetchone()[0])

    def set_refusal(self, reason: str | None, at: float | None = None) -> None:
        """Remember that the parent refused this node at its handshake (revoked or unknown
        certificate, a wrong parent), or forget it (None: the parent took the link)."""
        value = "" if reason is None else json.dumps({"reason": reason, "at": at if at is not None else time.time()})
        self.store.set_meta(REFUSAL_META, value)

    def refusal(self) -> dict[str, Any] | None:
        """{"reason", "at"} of the parent's last refusal of this node, or None once it took the link again."""
        text = self.store.meta(REFUSAL_META)
        if not text:
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return {"reason": text, "at": None}
        return value if isinstance(value, dict) else None

    def set_uplink(self, **values: Any) -> None:
        assignments = ", ".join(f"{name} = ?" for name in values)
        with self.store.writing() as db:
            db.execute(f"UPDATE uplink SET {assignments}", tuple(values.values()))

    def refused(self, limit: int = 20) -> list[dict[str, Any]]:
        """Records of ours the parent refused and that no newer version replaced."""
        rows = (
            self.store.reader()
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
        row = (
            self.store.reader().execute("SELECT count(*) FROM refused f JOIN records r ON r.id = f.id AND r.version = f.version").fetchone()
        )
        return int(row[0])

    # ------------------------------------------------------------ down: the parent's queue to us

    def restoring_until(self, down_head: int) -> None:
        """This node was restored from a backup: it takes data again once it has applied its
        parent's downward queue up to `down_head` (what the parent had to send it back); at once
        when there is nothing to take back."""
        with self.store.writing() as db:
            if db.execute("SELECT 1 FROM meta WHERE key = ?", (RESTORING,)).fetchone() is None:
                return
            applied = db.execute("SELECT down_applied FROM uplink").fetchone()[0]
            if down_head <= applied:
                db.execute("DELETE FROM meta WHERE key = ?", (RESTORING,))
            else:
                db.execute("UPDATE meta SET value = ? WHERE key = ?", (str(down_head), RESTORING))

    def apply_from_parent(
        self, parent_epoch: str, after: int, last: int, raws: Sequence[bytes], fingerprint: bytes = b""
    ) -> tuple[int, list[Refusal]]:
        """Verify and apply a batch of the parent's downward queue and move our cursor, atomically.

        Returns how many records were stored and the ones refused (bad or missing
        signature, a definition not signed by the province): those are kept in
        quarantine here and the cursor still moves. A batch already applied is a no-op.
        """
        now = time.time()
        rows, refusals, quarantined = admission.prepare(VIA_PARENT, raws, now, self.store.verifier)
        with self.store.writing() as db:
            epoch, applied = db.execute("SELECT down_epoch, down_applied FROM uplink").fetchone()
            if epoch != parent_epoch:
                applied = 0
            if last <= applied:
                return 0, []
            if after != applied:
                raise ProtocolError(f"the parent sent down {after}..{last} but we hold {applied}", "it reconnects by itself")
            rows = self._authorized(db, rows, refusals, quarantined, now)
            db.executemany(UPSERT, rows)
            db.executemany("INSERT OR REPLACE INTO quarantine VALUES (?, ?, ?, ?, ?, ?, ?)", quarantined)
            self._take_back_own(db, rows)
            self.store.router.route(db, [r[0] for r in rows])
            # A restored node takes data again once what it had sent before is back (store.RESTORING).
            db.execute("DELETE FROM meta WHERE key = ? AND value != '' AND CAST(value AS INTEGER) <= ?", (RESTORING, last))
            db.execute(
                "UPDATE uplink SET down_epoch = ?, down_applied = ?, down_fingerprint = ?, received = received + ?, last_contact = ?",
                (parent_epoch, last, fingerprint, len(rows), now),
            )
        return len(rows), refusals

    def _authorized(
        self, db: sqlite3.Connection, rows: list[admission.Row], refusals: list[Refusal], quarantined: list[admission.Row], now: float
    ) -> list[admission.Row]:
        """The rows less what their origin may not write, whichever way it came: dispute acts that do
        not belong to the thread they name (`disputes.thread_problem`), and approval steps in a unit's
        name by a node that may not take them (`approval.authority_problem`; not even the parent)."""
        arriving = {r[0]: r[9] for r in rows if r[1] == records.DISPUTE}
        subtrees = Subtrees.load(db, self.store.node_id) if any(r[1] == records.APPROVAL for r in rows) else None
        kept = []
        for r in rows:
            problem = None
            if r[1] == records.DISPUTE:
                problem = disputes.thread_problem(db, records.Envelope.FromString(r[9]), arriving)
            elif r[1] == records.APPROVAL and subtrees is not None:
                problem = approval_authority(subtrees, records.Envelope.FromString(r[9]))
            if problem is None:
                kept.append(r)
            else:
                refusals.append(Refusal(r[0], r[5], *problem))
                quarantined.append((VIA_PARENT, r[0], r[5], *problem, now, r[9]))
        return kept

    def _take_back_own(self, db: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> None:
        """This node's own records coming back down (it was restored from a copy older than what
        its parent holds, `DownstreamLinks.resend_to_restored`) are its own writes again, and its
        next seal continues after the highest of its seals, so its chain stays whole, not forked."""
        own = [r for r in rows if r[2] == self.store.node_id]
        if not own:
            return
        for start in range(0, len(own), 500):
            chunk = [r[0] for r in own[start : start + 500]]
            marks = ",".join("?" * len(chunk))
            db.execute(f"UPDATE records SET via = ? WHERE via = ? AND id IN ({marks})", (VIA_LOCAL, VIA_PARENT, *chunk))
        bodies = [records.Envelope.FromString(r[9]).body for r in own if r[1] == records.SEAL]
        if not bodies:
            return
        seq, body = max((provenance.seal_statement(records.Seal.FromString(b))[0].seq, b) for b in bodies)  # either format
        current = db.execute("SELECT value FROM meta WHERE key = 'seal_seq'").fetchone()
        if seq > int(current[0] if current else 0):
            db.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)", [("seal_seq", str(seq)), ("seal_head", provenance.seal_hash(body).hex())]
            )

    def down_cursor(self) -> tuple[str, int, bytes]:
        """The parent epoch, sequence and fingerprint of what we applied of its queue."""
        row = self.store.reader().execute("SELECT down_epoch, down_applied, down_fingerprint FROM uplink").fetchone()
        return row[0] or "", row[1], row[2] or b""


def _share(kind: int, envelope: bytes) -> bool:
    """Whether a change-log entry is a share (sync/sharing.py): those go down only."""
    return kind == records.DEFINITION and sharing.SHARE_MARK in envelope
