"""The read tables' schema (read_tables.py keeps them up to date; docs/analytics.md names every
column): made empty with their checkpoint at 0 by a schema migration, and filled by `catch_up`
from the whole change log.
"""

from __future__ import annotations

import sqlite3

from .sqlite import execute_script

# Meta key: the last change-log entry the read tables hold (committed with the rows it covers).
CHECKPOINT = "read_tables_seq"

TABLES = """
CREATE TABLE indicator_values (
    rid            INTEGER PRIMARY KEY,  -- records.rid: insert-ordered, so rows append (no random-key B-tree)
    record_id      BLOB NOT NULL,
    indicator      TEXT NOT NULL,
    unit           TEXT NOT NULL,
    period         TEXT NOT NULL,
    disaggregation TEXT NOT NULL,
    agency         TEXT NOT NULL,
    origin         TEXT NOT NULL,
    value          TEXT NOT NULL,
    value_number   REAL,
    comment        TEXT NOT NULL,
    follow_up      INTEGER NOT NULL,
    version        INTEGER NOT NULL,
    period_type    TEXT NOT NULL,        -- monthly, quarterly, sixmonthly, yearly, weekly, daily ('' for none of them)
    approval_state TEXT,                 -- filled when approvals exist; NULL until then
    first_received_at TEXT NOT NULL,     -- when this node's tables first took the value (UTC)
    changed_at     TEXT NOT NULL         -- when its current version was written (the version's clock, UTC)
);
CREATE INDEX indicator_values_by_period ON indicator_values(period, indicator, unit);
CREATE INDEX indicator_values_by_unit ON indicator_values(unit, period);
CREATE TABLE reports (
    record_id          BLOB PRIMARY KEY,
    report_type        TEXT NOT NULL,
    unit               TEXT NOT NULL,
    period             TEXT NOT NULL,
    agency             TEXT NOT NULL,
    origin             TEXT NOT NULL,
    title              TEXT NOT NULL,
    summary            TEXT NOT NULL,
    signed_by          TEXT NOT NULL,
    source_id          TEXT NOT NULL,
    submitted_at       TEXT NOT NULL,
    first_submitted_at TEXT NOT NULL,
    version            INTEGER NOT NULL,
    first_version      INTEGER NOT NULL,
    files              INTEGER NOT NULL
);
CREATE INDEX reports_by_period ON reports(period, report_type, unit);
CREATE INDEX reports_by_unit ON reports(unit, period);
CREATE INDEX reports_by_agency ON reports(agency, period);
CREATE TABLE report_files (
    record_id BLOB NOT NULL,
    position  INTEGER NOT NULL,
    name      TEXT NOT NULL,
    sha256    TEXT NOT NULL,
    size      INTEGER NOT NULL,
    PRIMARY KEY (record_id, position)
);
CREATE INDEX report_files_by_sha256 ON report_files(sha256);
CREATE TABLE feedback_items (
    record_id      BLOB PRIMARY KEY,
    source_id      TEXT NOT NULL,
    origin         TEXT NOT NULL,
    agency         TEXT NOT NULL,
    unit           TEXT NOT NULL,
    category       TEXT NOT NULL,
    category_name  TEXT NOT NULL,
    description    TEXT NOT NULL,
    address        TEXT NOT NULL,
    received_at    TEXT NOT NULL,
    received_ts    REAL NOT NULL,
    due_at         TEXT NOT NULL,
    due_ts         REAL NOT NULL,
    due_rule       TEXT NOT NULL,
    state          TEXT NOT NULL,
    is_open        INTEGER NOT NULL,
    assignee       TEXT NOT NULL,
    responsible    TEXT NOT NULL,
    suggested_unit TEXT NOT NULL,
    result         TEXT NOT NULL,
    rating         INTEGER,
    handled_at     TEXT NOT NULL,
    on_time        INTEGER,
    events         INTEGER NOT NULL,
    ignored_events INTEGER NOT NULL
);
CREATE INDEX feedback_items_open_due ON feedback_items(is_open, due_ts);
CREATE INDEX feedback_items_by_responsible ON feedback_items(responsible, is_open, due_ts);
CREATE INDEX feedback_items_by_unit ON feedback_items(unit);
CREATE INDEX feedback_items_by_agency ON feedback_items(agency, is_open);
CREATE INDEX feedback_items_by_source_id ON feedback_items(source_id);
CREATE INDEX feedback_items_by_received ON feedback_items(received_ts);
CREATE INDEX feedback_items_by_state ON feedback_items(state);
CREATE TABLE feedback_events (
    record_id       BLOB PRIMARY KEY,
    item_id         BLOB NOT NULL,
    feedback        TEXT NOT NULL,
    feedback_origin TEXT NOT NULL,
    agency          TEXT NOT NULL,
    status          TEXT NOT NULL,
    at              TEXT NOT NULL,
    unit            TEXT NOT NULL,
    assigned_unit   TEXT NOT NULL,
    note            TEXT NOT NULL,
    rating          INTEGER,
    origin          TEXT NOT NULL,
    version         INTEGER NOT NULL
);
CREATE INDEX feedback_events_by_item ON feedback_events(item_id);
CREATE INDEX feedback_events_by_ticket ON feedback_events(feedback);
CREATE TABLE units (
    code       TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    level      TEXT NOT NULL,
    parent     TEXT NOT NULL,
    valid_from TEXT,
    valid_to   TEXT,
    successor  TEXT NOT NULL,
    depth      INTEGER NOT NULL,
    path       TEXT NOT NULL   -- codes from the top down to this unit, '/'-separated
);
CREATE VIEW IF NOT EXISTS indicator_values_by_unit_path AS
    SELECT v.*, u.level AS unit_level, u.path AS unit_path, u.name AS unit_name
    FROM indicator_values v LEFT JOIN units u ON u.code = v.unit;
CREATE INDEX units_by_parent ON units(parent);
"""


def create(db: sqlite3.Connection) -> None:
    """Make the read tables (schema migration 7); `catch_up` fills them from the whole change log."""
    execute_script(db, TABLES)
    db.execute("INSERT OR REPLACE INTO meta VALUES (?, '0')", (CHECKPOINT,))


def recreate(db: sqlite3.Connection) -> None:
    """Drop the read tables and make them again as this version defines them, empty with their
    checkpoint at 0 (schema migration 8: columns for analytics); `catch_up` refills them."""
    db.execute("DROP VIEW IF EXISTS indicator_values_by_unit_path")
    for table in ("indicator_values", "reports", "report_files", "feedback_items", "feedback_events", "units"):
        db.execute(f"DROP TABLE IF EXISTS {table}")
    create(db)
