"""What a node writes itself: new versions of its records under its clock, each batch sealed and
chained to its previous seal, and the ingest ledger entry that commits with a file's records.

Called by the store (`Store.write_local`, `write_again`, `file_transaction`) inside its write
transaction. A record whose content equals the stored one is counted unchanged and not
rewritten: dropping a file twice creates no new versions and no traffic.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import clock, privacy, provenance, records
from .errors import StoreError
from .records import Envelope, Keyed
from .records_table import UPSERT, VIA_LOCAL, row
from .versions import carry_first_versions, existing_versions

if TYPE_CHECKING:
    from .store import Store

# Meta key set by `lienthong restore`: the store takes no local write until its parent has sent
# back what it had sent before the backup was made (its value: the parent's queue head to reach).
RESTORING = "restoring"

# A file's entry in the ingest ledger: its records' counts and its receipt (or its refusal's).
LEDGER_ENTRY = (
    "INSERT OR REPLACE INTO files(sha256, name, agency, adapter, status, imported, updated, unchanged, refused, at, receipt) "
    "VALUES (:sha256, :name, :agency, :adapter, :status, :imported, :updated, :unchanged, :refused, :at, :receipt)"
)

# A local write replacing this node's own version that carries a future time.
REPAIR = """
UPDATE records SET kind = ?, unit = ?, agency = ?, version = ?, deleted = ?, chash = ?, via = ?, envelope = ?
WHERE id = ? AND origin = ?
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
        write_keyed(self._store, self._db, keyed, self._hlc, self.summary)


def write_keyed(
    store: Store, db: sqlite3.Connection, keyed: Sequence[Keyed], hlc: clock.HybridClock, summary: WriteSummary, *, again: bool = False
) -> None:
    """Write `keyed` as new versions (`again`: even when the content is unchanged, to send
    a record once more under a fresh version and seal)."""
    if db.execute("SELECT 1 FROM meta WHERE key = ?", (RESTORING,)).fetchone() is not None:
        # Its seals must continue the chain its parent holds, not fork it: write after the take-back.
        raise StoreError(
            "this node was restored from a backup and is taking back from its parent what it had sent; "
            "it writes nothing new until that is done",
            "run it with its parent reachable and wait (`lienthong status`); agency files wait in the inbox meanwhile",
        )
    # Another process (the CLI, the node) may have written since our clock was seeded.
    latest = db.execute("SELECT version FROM changelog ORDER BY seq DESC LIMIT 1").fetchone()
    hlc.observe(latest[0] if latest else 0)
    existing = existing_versions(db, [k.id for k in keyed])
    existing_before = {rid: version for rid, (version, _) in existing.items()}
    signer = store.signer
    seal_id = provenance.new_seal_id() if signer else b""
    origin = store.node_id
    content_hash_of = records.content_hash_of
    envelopes: dict[bytes, tuple[Envelope, bytes]] = {}
    imported = updated = unchanged = 0
    version = hlc.reserve(len(keyed))  # one version per record, in order, as hlc.now() each would give
    # Once per row of a file: names bound locally, counts kept in locals.
    for item in keyed:
        rid = item.id
        chash = content_hash_of(item.unit, item.agency, item.deleted, item.body)
        before = existing.get(rid)
        if before is not None and before[1] == chash and not again:
            unchanged += 1
            version += 1
            continue
        env = item.envelope(origin, version, seal_id)
        version += 1
        if before is not None or rid in envelopes:
            updated += 1
        else:
            imported += 1
        existing[rid] = (env.version, chash)
        if signer and item.kind == records.FEEDBACK:
            privacy.commit(env, signer.pseudonyms)  # after the content hash: re-ingest stays 'unchanged'
        envelopes[rid] = (env, chash)
    summary.imported += imported
    summary.updated += updated
    summary.unchanged += unchanged
    if not envelopes:
        return
    if store.write_guard is not None and not again:
        store.write_guard(db, [k for k in keyed if k.id in envelopes])
    carry_first_versions(db, [env for env, _ in envelopes.values()], existing_before)
    rows = []
    repairs = []
    entries = []
    for env, chash in envelopes.values():
        raw = env.SerializeToString()
        stored_version = existing_before.get(env.id)
        if stored_version is not None and stored_version >= env.version:
            # The stored version is from a clock that ran ahead (the clock no longer seeds from
            # it): this write replaces it, or the new content would be silently dropped.
            repairs.append((env.kind, env.unit, env.agency, env.version, env.deleted, chash, VIA_LOCAL, raw, env.id, origin))
        else:
            rows.append(row(env, chash, VIA_LOCAL, raw))
        if signer:
            entries.append((env.id, env.version, provenance.record_hash(raw, env.kind)))
    if signer:
        # The seal goes first: in the change log, every receiver meets it before the records it signs.
        seal = _seal(store, db, seal_id, entries, hlc.now())
        db.execute(UPSERT, row(seal, b"", VIA_LOCAL, seal.SerializeToString()))
    db.executemany(UPSERT, rows)
    db.executemany(REPAIR, repairs)
    store.router.route(db, list(envelopes))


def _seal(store: Store, db: sqlite3.Connection, seal_id: bytes, entries: list[tuple[bytes, int, bytes]], version: int) -> Envelope:
    """The store's node's next seal over `entries`, chained to its previous one (kept in meta)."""
    assert store.signer is not None
    state = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('seal_seq', 'seal_head', 'epoch')").fetchall())
    seq = int(state.get("seal_seq", "0")) + 1
    seal = store.signer.seal(seal_id, seq, bytes.fromhex(state.get("seal_head", "")), version, state.get("epoch", ""), entries)
    db.executemany(
        "INSERT OR REPLACE INTO meta VALUES (?, ?)",
        [("seal_seq", str(seq)), ("seal_head", provenance.seal_hash(seal.body).hex())],
    )
    return seal
