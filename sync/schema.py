"""The store's schema, as numbered migrations (`PRAGMA user_version`).

A migration only ever adds; a store opened by an older lienthong than the one
that wrote it is refused (`SchemaTooNew`). See `store.py` for the invariants the
triggers keep.
"""

from __future__ import annotations

import sqlite3

import sqlite_utils

from . import read_tables_schema
from .records import REPORT, SEAL
from .sqlite import Migration, execute_script

SCHEMA_VERSION = 8


def _migration_1(conn: sqlite3.Connection) -> None:
    db = sqlite_utils.Database(conn)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    execute_script(
        conn,
        """
        CREATE TABLE records (
            rid      INTEGER PRIMARY KEY,     -- insert-ordered surrogate key
            id       BLOB NOT NULL UNIQUE,    -- deterministic record id (16 bytes)
            kind     INTEGER NOT NULL,
            origin   TEXT NOT NULL,
            unit     TEXT NOT NULL,
            agency   TEXT NOT NULL,
            version  INTEGER NOT NULL,
            deleted  INTEGER NOT NULL,
            chash    BLOB NOT NULL,           -- content hash, for 'unchanged' on re-ingest
            via      TEXT NOT NULL,           -- '' local, '^' from the parent, else the child id
            envelope BLOB NOT NULL            -- the envelope exactly as received or written
        );
        CREATE INDEX records_by_kind_unit ON records(kind, unit);
        -- Append-only change log: one entry per stored record version.
        -- `up` is 0 for versions received from the parent (never sent back up).
        CREATE TABLE changelog (
            seq     INTEGER PRIMARY KEY,
            rid     INTEGER NOT NULL,
            version INTEGER NOT NULL,
            up      INTEGER NOT NULL
        );
        CREATE TRIGGER records_logged_insert AFTER INSERT ON records BEGIN
            INSERT INTO changelog(rid, version, up) VALUES (new.rid, new.version, new.via != '^');
        END;
        CREATE TRIGGER records_logged_update AFTER UPDATE OF version ON records BEGIN
            INSERT INTO changelog(rid, version, up) VALUES (new.rid, new.version, new.via != '^');
        END;
        CREATE TRIGGER changelog_append_only_update BEFORE UPDATE ON changelog BEGIN
            SELECT RAISE(ABORT, 'the change log is append-only');
        END;
        CREATE TRIGGER changelog_append_only_delete BEFORE DELETE ON changelog BEGIN
            SELECT RAISE(ABORT, 'the change log is append-only');
        END;
        -- The parent's queue of records to send down, one entry per child and record.
        CREATE TABLE downqueue (
            seq   INTEGER PRIMARY KEY,
            child TEXT NOT NULL,
            rid   INTEGER NOT NULL
        );
        CREATE INDEX downqueue_by_child ON downqueue(child, seq);
        """,
    )
    db.table("children").create(
        {
            "child": str,
            "epoch": str,  # the child's change-log epoch the checkpoint belongs to
            "applied": int,  # last child change-log sequence durably applied here
            "fingerprint": bytes,  # fingerprint of the child's entry at `applied`
            "received": int,  # records received from the child (all sessions)
            "rejected": int,  # records refused and quarantined
            "connected": int,
            "address": str,
            "first_seen": float,
            "last_contact": float,
            "last_error": str,
        },
        pk="child",
        not_null={"child", "applied", "received", "rejected", "connected"},
        defaults={"applied": 0, "received": 0, "rejected": 0, "connected": 0, "epoch": ""},
    )
    db.table("uplink").create(
        {
            "one": int,
            "parent_id": str,
            "address": str,
            "down_epoch": str,  # the parent's epoch our downward cursor belongs to
            "down_applied": int,  # last downward-queue sequence applied here
            "down_fingerprint": bytes,  # fingerprint of the entry at down_applied
            "acked": int,  # last own change-log sequence the parent acknowledged
            "sent": int,  # records sent up (all sessions)
            "acked_records": int,  # records acknowledged by the parent (all sessions)
            "received": int,  # records received from the parent
            "connected": int,
            "last_contact": float,
            "last_error": str,
        },
        pk="one",
        defaults={"down_applied": 0, "acked": 0, "sent": 0, "acked_records": 0, "received": 0, "connected": 0},
    )
    db.table("uplink").insert({"one": 1, "down_epoch": "", "parent_id": "", "address": ""})
    # Which child's subtree holds a unit / an origin node (learned from what children send).
    db.table("child_units").create({"unit": str, "child": str}, pk="unit")
    db.table("child_origins").create({"origin": str, "child": str}, pk="origin")
    # Records this node refused from a child, kept for the operator and the child.
    db.table("quarantine").create(
        {"child": str, "id": bytes, "version": int, "code": str, "reason": str, "at": float, "envelope": bytes},
        pk=("child", "id", "version"),
    )
    # Records of ours that the parent refused; shown by `status` until superseded.
    db.table("refused").create(
        {"id": bytes, "version": int, "code": str, "reason": str, "at": float},
        pk=("id", "version"),
    )


def _migration_2(conn: sqlite3.Connection) -> None:
    db = sqlite_utils.Database(conn)
    # The ingest ledger: one row per file content ever committed, with its receipt,
    # written in the same transaction as the file's records.
    db.table("files").create(
        {
            "sha256": str,
            "name": str,
            "agency": str,
            "adapter": str,
            "status": str,  # success | warning | error
            "imported": int,
            "updated": int,
            "unchanged": int,
            "refused": int,
            "at": float,
            "receipt": str,  # the receipt JSON
        },
        pk="sha256",
    )
    db.table("files").create_index(["at"])


def _migration_3(conn: sqlite3.Connection) -> None:
    # The first submission of each report this store took. Timeliness is judged on it
    # (DHIS2 judges on the first complete registration), while `records` keeps only the
    # latest version. A withdrawal (a tombstone) forgets it: a report withdrawn and
    # submitted again counts from its new submission. One statement per execute, so the
    # migration stays inside its transaction (executescript would commit it).
    for statement in (
        # No OR IGNORE in the triggers: the outer statement's conflict clause (the store's
        # upsert) would override it; NOT EXISTS says the same and always holds.
        "CREATE TABLE report_first (id BLOB PRIMARY KEY, version INTEGER NOT NULL, envelope BLOB NOT NULL)",
        f"""CREATE TRIGGER report_first_insert AFTER INSERT ON records WHEN new.kind = {REPORT} AND new.deleted = 0 BEGIN
            INSERT INTO report_first SELECT new.id, new.version, new.envelope
            WHERE NOT EXISTS (SELECT 1 FROM report_first WHERE id = new.id);
        END""",
        f"""CREATE TRIGGER report_first_update AFTER UPDATE OF version ON records WHEN new.kind = {REPORT} BEGIN
            DELETE FROM report_first WHERE id = new.id AND new.deleted = 1;
            INSERT INTO report_first SELECT new.id, new.version, new.envelope
            WHERE new.deleted = 0 AND NOT EXISTS (SELECT 1 FROM report_first WHERE id = new.id);
        END""",
        f"INSERT OR IGNORE INTO report_first SELECT id, version, envelope FROM records WHERE kind = {REPORT} AND deleted = 0",
    ):
        conn.execute(statement)


def _migration_4(conn: sqlite3.Connection) -> None:
    # How far each peer's clock is from ours (their clock minus ours, in ms), measured at each
    # handshake: a clock days off gets records refused, so both ends show it.
    conn.execute("ALTER TABLE children ADD COLUMN clock_offset_ms INTEGER")
    conn.execute("ALTER TABLE uplink ADD COLUMN clock_offset_ms INTEGER")


def _migration_5(conn: sqlite3.Connection) -> None:
    # The parent as a witness: when this node durably stored (received and verified) each seal
    # a child sent, in Unix ms, committed with the seal itself. A revocation judges a seal by it:
    # what was witnessed before a key was compromised stays valid (revocation.Revoked).
    for statement in (
        "CREATE TABLE seal_witness (id BLOB PRIMARY KEY, at_ms INTEGER NOT NULL)",
        f"""CREATE TRIGGER seal_witnessed AFTER INSERT ON records WHEN new.kind = {SEAL} AND new.via NOT IN ('', '^') BEGIN
            INSERT INTO seal_witness SELECT new.id, CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER)
            WHERE NOT EXISTS (SELECT 1 FROM seal_witness WHERE id = new.id);
        END""",
    ):
        conn.execute(statement)


def _migration_6(conn: sqlite3.Connection) -> None:
    # Files (attachments) named by records, and the ones this node still has to fetch (see files.py).
    for statement in (
        # Which record (rid) names which file: what a peer may ask this node for.
        "CREATE TABLE blob_refs (sha256 TEXT NOT NULL, rid INTEGER NOT NULL, PRIMARY KEY (sha256, rid)) WITHOUT ROWID",
        "CREATE INDEX blob_refs_by_rid ON blob_refs(rid)",
        # Files named by records received from a peer and not held here: fetched from `source`
        # ('^' the parent, else the child) until they arrive whole and verified, or refused.
        """CREATE TABLE blob_wants (
            sha256   TEXT PRIMARY KEY,
            size     INTEGER NOT NULL,       -- as the sealed record says
            name     TEXT NOT NULL,
            origin   TEXT NOT NULL,          -- the node that wrote the record naming it
            source   TEXT NOT NULL,
            state    TEXT NOT NULL,          -- wanted | done | refused
            attempts INTEGER NOT NULL DEFAULT 0,
            next_try REAL NOT NULL DEFAULT 0,
            error    TEXT NOT NULL DEFAULT '',
            since    REAL NOT NULL,
            done_at  REAL
        )""",
        "CREATE INDEX blob_wants_by_source ON blob_wants(source, state, next_try)",
    ):
        conn.execute(statement)


def _migration_7(conn: sqlite3.Connection) -> None:
    # The read tables (read_tables.py): decoded, indexed copies of the records for the console,
    # its API and analytics. Made empty with their checkpoint at 0; `Store.open` fills them.
    read_tables_schema.create(conn)


def _migration_8(conn: sqlite3.Connection) -> None:
    # The read tables gain what analytics asks for (#13): each value's period type, when it was
    # first taken and last changed, an approval state; each unit's path. Remade empty, refilled
    # from the whole change log when the store is opened (as migration 7 fills them).
    read_tables_schema.recreate(conn)


MIGRATIONS: dict[int, Migration] = {
    1: _migration_1,
    2: _migration_2,
    3: _migration_3,
    4: _migration_4,
    5: _migration_5,
    6: _migration_6,
    7: _migration_7,
    8: _migration_8,
}
