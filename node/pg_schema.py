"""The `lienthong` schema in PostgreSQL: the read tables' twins, the sink's checkpoint, the
completeness snapshot and the dashboards' views (docs/analytics.md).

The tables mirror the store's read tables (sync/read_tables.py) column for column, their
types mapped (INTEGER → bigint, REAL → double precision, TEXT → text, BLOB → bytea), so a row
in PostgreSQL equals the row in SQLite. `lienthong.schema_version` holds SCHEMA_VERSION;
`ensure` creates the schema when it is missing and remakes it (the sink then loads everything
again) when it was made by another version or its tables' columns differ from the store's.
"""

from __future__ import annotations

import sqlite3
from typing import Any

SCHEMA = "lienthong"
SCHEMA_VERSION = 1

# Each mirrored read table and the column that names its rows (deleted and copied again by it).
KEYS = {
    "indicator_values": "rid",
    "reports": "record_id",
    "report_files": "record_id",
    "feedback_items": "record_id",
    "feedback_events": "record_id",
    "units": "code",
}
PRIMARY = {"report_files": "record_id, position"}
# Secondary indexes, by table (name, columns): dropped during a whole load, made again after it.
INDEXES = {
    "indicator_values": [("indicator_values_by_series", "indicator, unit, period")],
    "feedback_items": [("feedback_items_by_responsible", "responsible, category")],
    "feedback_events": [("feedback_events_by_item", "item_id")],
}
_TYPES = {"INTEGER": "bigint", "REAL": "double precision", "TEXT": "text", "BLOB": "bytea"}

STATE = """
CREATE TABLE lienthong.schema_version (version integer NOT NULL);
CREATE TABLE lienthong.sink_state (
    id                 integer PRIMARY KEY CHECK (id = 1),
    node_id            text NOT NULL,      -- the node whose store these rows come from
    epoch              text NOT NULL,      -- its change log's epoch (a restored store has a new one)
    position           bigint NOT NULL,    -- the change-log sequence the rows include
    completeness_as_of date,               -- the day the completeness snapshot was judged on
    updated_at         timestamptz NOT NULL DEFAULT now()
);
-- Each expected report (unit × report type × period) judged as of `as_of` (docs/analytics.md).
CREATE TABLE lienthong.completeness (
    unit         text NOT NULL,
    unit_level   text NOT NULL,
    report_type  text NOT NULL,
    report_name  text NOT NULL,
    period       text NOT NULL,
    period_type  text NOT NULL,
    due          date NOT NULL,
    status       text NOT NULL,            -- on_time | late | missing | pending
    submitted_at text,
    recorded_at  text,
    origin       text,
    as_of        date NOT NULL,
    PRIMARY KEY (unit, report_type, period)
);
"""

# The dashboards' views: what Metabase, Superset or Grafana are pointed at.
VIEWS = r"""
CREATE VIEW lienthong.completeness_by_level_month AS
SELECT c.unit_level AS level, to_char(c.due, 'YYYY-MM') AS due_month, c.period, c.period_type, c.report_type,
       count(*) AS expected,
       count(*) FILTER (WHERE c.status IN ('on_time', 'late')) AS submitted,
       count(*) FILTER (WHERE c.status = 'on_time') AS on_time,
       round(100.0 * count(*) FILTER (WHERE c.status IN ('on_time', 'late')) / count(*), 1) AS completeness_pct,
       round(100.0 * count(*) FILTER (WHERE c.status = 'on_time') / count(*), 1) AS timeliness_pct
FROM lienthong.completeness c
GROUP BY 1, 2, 3, 4, 5;

CREATE VIEW lienthong.feedback_on_time AS
SELECT f.responsible AS unit, u.name AS unit_name, u.level AS unit_level, f.category, f.category_name,
       count(*) AS items,
       count(*) FILTER (WHERE f.is_open = 0) AS handled,
       count(*) FILTER (WHERE f.on_time = 1) AS handled_on_time,
       count(*) FILTER (WHERE f.is_open = 1) AS open,
       count(*) FILTER (WHERE f.is_open = 1 AND f.due_ts < extract(epoch FROM now())) AS overdue,
       round(100.0 * count(*) FILTER (WHERE f.on_time = 1) / nullif(count(*) FILTER (WHERE f.is_open = 0), 0), 1) AS on_time_pct
FROM lienthong.feedback_items f LEFT JOIN lienthong.units u ON u.code = f.responsible
GROUP BY 1, 2, 3, 4, 5;

CREATE VIEW lienthong.indicator_series AS
SELECT v.indicator, v.unit, u.name AS unit_name, u.level AS unit_level, u.path AS unit_path,
       v.period, v.period_type,
       CASE v.period_type
           WHEN 'monthly' THEN to_date(v.period || '-01', 'YYYY-MM-DD')
           WHEN 'daily' THEN to_date(v.period, 'YYYY-MM-DD')
           WHEN 'yearly' THEN make_date(v.period::int, 1, 1)
           WHEN 'quarterly' THEN make_date(left(v.period, 4)::int, 3 * right(v.period, 1)::int - 2, 1)
           WHEN 'sixmonthly' THEN make_date(left(v.period, 4)::int, 6 * right(v.period, 1)::int - 5, 1)
           WHEN 'weekly' THEN to_date(left(v.period, 4) || '-' || right(v.period, 2) || '-1', 'IYYY-IW-ID')
       END AS period_start,
       v.disaggregation, v.value, v.value_number, v.agency, v.origin, v.changed_at
FROM lienthong.indicator_values v LEFT JOIN lienthong.units u ON u.code = v.unit;
"""


def columns(sq: sqlite3.Connection, table: str) -> list[tuple[str, str, bool]]:
    """(name, PostgreSQL type, not null) of a read table, from the store's own definition."""
    return [
        (name, _TYPES.get(kind.upper(), "text"), bool(notnull))
        for _, name, kind, notnull, _, _ in sq.execute(f"PRAGMA table_info({table})")
    ]


def names(sq: sqlite3.Connection, table: str) -> str:
    return ", ".join(name for name, _, _ in columns(sq, table))


def _table_ddl(sq: sqlite3.Connection, table: str) -> str:
    cols = [f"{name} {kind}{' NOT NULL' if notnull else ''}" for name, kind, notnull in columns(sq, table)]
    return f"CREATE TABLE {SCHEMA}.{table} ({', '.join(cols)})"


def drop_indexes(pg: Any) -> None:
    """Before a whole load: a table's rows go in several times faster with no index to keep."""
    for table in KEYS:
        pg.execute(f"ALTER TABLE {SCHEMA}.{table} DROP CONSTRAINT IF EXISTS {table}_pkey")
        for name, _ in INDEXES.get(table, []):
            pg.execute(f"DROP INDEX IF EXISTS {SCHEMA}.{name}")


def make_indexes(pg: Any) -> None:
    for table in KEYS:
        pg.execute(f"ALTER TABLE {SCHEMA}.{table} ADD CONSTRAINT {table}_pkey PRIMARY KEY ({PRIMARY.get(table, KEYS[table])})")
        for name, cols in INDEXES.get(table, []):
            pg.execute(f"CREATE INDEX {name} ON {SCHEMA}.{table} ({cols})")


def version(pg: Any) -> int | None:
    """The schema version the database holds, None when it has no `lienthong` schema."""
    if pg.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (SCHEMA,)).fetchone() is None:
        return None
    if pg.execute("SELECT to_regclass('lienthong.schema_version')").fetchone()[0] is None:
        return None
    row = pg.execute("SELECT version FROM lienthong.schema_version").fetchone()
    return None if row is None else int(row[0])


def ensure(pg: Any, sq: sqlite3.Connection) -> bool:
    """Make the schema when missing or of another version (inside the caller's transaction).
    Returns whether it was made (everything must then be loaded)."""
    if version(pg) == SCHEMA_VERSION and _same_columns(pg, sq):
        return False
    create(pg, sq)
    return True


def _same_columns(pg: Any, sq: sqlite3.Connection) -> bool:
    """Whether PostgreSQL's tables have the store's read tables' columns (a newer lienthong may
    add one: the schema is then made again and loaded whole)."""
    held: dict[str, list[str]] = {}
    for table, column in pg.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s ORDER BY table_name, ordinal_position",
        (SCHEMA,),
    ):
        held.setdefault(table, []).append(column)
    return all(held.get(table) == [name for name, _, _ in columns(sq, table)] for table in KEYS)


def create(pg: Any, sq: sqlite3.Connection) -> None:
    pg.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    pg.execute(f"CREATE SCHEMA {SCHEMA}")
    pg.execute(STATE)
    for table in KEYS:
        pg.execute(_table_ddl(sq, table))
    make_indexes(pg)
    pg.execute(VIEWS)
    pg.execute("INSERT INTO lienthong.schema_version VALUES (%s)", (SCHEMA_VERSION,))
