"""One step of the PostgreSQL sink: carry what the store's read tables gained since the sink's
checkpoint into PostgreSQL, with the checkpoint, in one PostgreSQL transaction.

Exactly once: the checkpoint (`lienthong.sink_state`: the node, its change-log epoch and the
change-log position the rows include) is read under a row lock and written in the transaction
that carries the rows. A step that dies anywhere before its COMMIT (PostgreSQL stopped, the
network lost, the disk full, the node killed) leaves PostgreSQL as it was, and the next step
starts again from the same checkpoint. Rows are replaced by key (deleted, then copied with
COPY), so a row is in PostgreSQL once, as the store's read tables have it.

The rows are read from the store in one SQLite read transaction (a snapshot: the node's
writer is never waited for), up to the read tables' own checkpoint (`meta.read_tables_seq`).
For each change-log entry in the window the sink copies again the rows its record stands
for: an indicator value by its row, a report with its files, a feedback item or event with
the item's other events; a definition changes the units (copied whole) and may change
every item's deadline (feedback items copied whole). A store of another node or epoch than
the checkpoint names (a restore, a new store) is loaded whole again (`load_all`).

Completeness depends on the day it is judged: `lienthong.completeness` is a snapshot, judged
again (whole) when reports or definitions changed, and once a day.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lienthong.sync import completeness as judge
from lienthong.sync import read_tables, records
from lienthong.sync.errors import LienthongError
from lienthong.sync.records import Envelope
from lienthong.sync.schedule import Schedules, containing, shift, today_in_vietnam
from lienthong.sync.units import Units

from . import pg_schema

# Test hook: a step that has copied its rows writes this file and waits before its COMMIT (the
# fault tests kill the node there). Never set in production.
PAUSE_ENV = "LIENTHONG_SINK_PAUSE_BEFORE_COMMIT"
CHUNK = 1000  # keys per SELECT … IN (…)
PERIODS_BACK = 12  # completeness: the current period and the 11 before it, per schedule


@dataclass
class Step:
    """What one step did: the position reached, the head it saw, rows copied, whether whole."""

    position: int
    head: int
    rows: int
    full: bool


def open_store(path: Path) -> sqlite3.Connection:
    """A read-only connection to the node's store (WAL: reads never wait for the writer)."""
    sq = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    sq.execute("PRAGMA busy_timeout=10000")
    return sq


def _meta(sq: sqlite3.Connection, key: str) -> str:
    row = sq.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return "" if row is None else str(row[0])


def step(pg: Any, sq: sqlite3.Connection, batch: int, *, resync: bool = False, today: dt.date | None = None) -> Step:
    """Carry one batch (or everything, when the checkpoint names another store, or `resync`)
    into PostgreSQL and commit it with the checkpoint. `pg` is a psycopg connection."""
    today = today or today_in_vietnam()
    sq.execute("BEGIN")
    try:
        with pg.transaction():
            made = pg_schema.ensure(pg, sq)
            state = pg.execute(
                "SELECT node_id, epoch, position, completeness_as_of FROM lienthong.sink_state WHERE id = 1 FOR UPDATE"
            ).fetchone()
            node_id, epoch = _meta(sq, "node_id"), _meta(sq, "epoch")
            upto = int(_meta(sq, read_tables.CHECKPOINT) or 0)
            full = resync or made or state is None or (state[0], state[1]) != (node_id, epoch) or state[2] > upto
            if full:
                rows, position, judged = load_all(pg, sq), upto, True
            else:
                position = min(upto, state[2] + batch)
                rows, judged = _carry(pg, sq, state[2], position)
                judged = judged or state[3] != today
                if position == state[2] and not judged:
                    return Step(position, upto, 0, False)
            if judged:
                rows += _judge_completeness(pg, sq, today)
            pg.execute(
                "INSERT INTO lienthong.sink_state (id, node_id, epoch, position, completeness_as_of, updated_at) "
                "VALUES (1, %s, %s, %s, %s, now()) ON CONFLICT (id) DO UPDATE SET node_id = excluded.node_id, "
                "epoch = excluded.epoch, position = excluded.position, completeness_as_of = excluded.completeness_as_of, "
                "updated_at = excluded.updated_at",
                (node_id, epoch, position, today),
            )
            _pause_point()
        return Step(position, upto, rows, full)
    finally:
        sq.execute("ROLLBACK")


def _pause_point() -> None:
    marker = os.environ.get(PAUSE_ENV)
    if marker and not Path(marker).exists():
        Path(marker).write_text(str(os.getpid()))
        while True:  # until the test kills this process
            time.sleep(1)


def load_all(pg: Any, sq: sqlite3.Connection) -> int:
    """Replace every mirrored table with the store's rows (the first load, a resync): emptied,
    loaded with no index to keep, indexed after (grants on the tables stay)."""
    pg.execute(f"TRUNCATE {', '.join(f'lienthong.{t}' for t in pg_schema.KEYS)}")
    pg_schema.drop_indexes(pg)
    rows = sum(_copy(pg, sq, table, "", ()) for table in pg_schema.KEYS)
    pg_schema.make_indexes(pg)
    return rows


def _carry(pg: Any, sq: sqlite3.Connection, after: int, upto: int) -> tuple[int, bool]:
    """Copy again the rows the change-log entries (after, upto] stand for. Returns the rows
    copied and whether completeness must be judged again."""
    if upto <= after:
        return 0, False
    indicators: set[int] = set()
    reports: set[bytes] = set()
    items: set[bytes] = set()
    events: set[bytes] = set()
    definitions = False
    for rid, record_id, kind in sq.execute(
        "SELECT DISTINCT r.rid, r.id, r.kind FROM changelog c JOIN records r ON r.rid = c.rid WHERE c.seq > ? AND c.seq <= ?",
        (after, upto),
    ):
        if kind == records.INDICATOR:
            indicators.add(rid)
        elif kind == records.REPORT:
            reports.add(record_id)
        elif kind == records.FEEDBACK:
            items.add(record_id)
        elif kind == records.FEEDBACK_EVENT:
            events.add(record_id)
        elif kind == records.DEFINITION:
            definitions = True
    # An event's item (as the store matches it now, and as PostgreSQL had it: a withdrawn event's
    # item is folded again), and every event of each item touched.
    if events:
        items.update(
            row[0]
            for row in pg.execute("SELECT DISTINCT item_id FROM lienthong.feedback_events WHERE record_id = ANY(%s)", (sorted(events),))
        )
    items.update(_select(sq, "SELECT DISTINCT item_id FROM feedback_events WHERE record_id IN ({})", events))
    events.update(_select(sq, "SELECT record_id FROM feedback_events WHERE item_id IN ({})", items))
    rows = _replace(pg, sq, "indicator_values", indicators)
    rows += _replace(pg, sq, "reports", reports) + _replace(pg, sq, "report_files", reports)
    if events or items:
        _delete(pg, "feedback_events", "item_id", items)
    rows += _replace(pg, sq, "feedback_events", events)
    if definitions:
        rows += _replace_whole(pg, sq, "units") + _replace_whole(pg, sq, "feedback_items")
    else:
        rows += _replace(pg, sq, "feedback_items", items)
    return rows, definitions or bool(reports)


def _select(sq: sqlite3.Connection, sql: str, keys: Iterable[Any]) -> set[Any]:
    out: set[Any] = set()
    for chunk in _chunks(sorted(keys)):
        out.update(row[0] for row in sq.execute(sql.format(",".join("?" * len(chunk))), chunk))
    return out


def _chunks(keys: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(keys), CHUNK):
        yield keys[start : start + CHUNK]


def _delete(pg: Any, table: str, column: str, keys: Iterable[Any]) -> None:
    ordered = sorted(keys)
    if ordered:
        pg.execute(f"DELETE FROM lienthong.{table} WHERE {column} = ANY(%s)", (ordered,))


def _replace(pg: Any, sq: sqlite3.Connection, table: str, keys: set[Any]) -> int:
    """Delete the rows of `keys` in PostgreSQL and copy the store's rows of them."""
    if not keys:
        return 0
    key = pg_schema.KEYS[table]
    _delete(pg, table, key, keys)
    return _copy(pg, sq, table, f"WHERE {key} IN ({{}})", sorted(keys))


def _replace_whole(pg: Any, sq: sqlite3.Connection, table: str) -> int:
    pg.execute(f"DELETE FROM lienthong.{table}")
    return _copy(pg, sq, table, "", ())


def _copy(pg: Any, sq: sqlite3.Connection, table: str, where: str, keys: Sequence[Any]) -> int:
    """COPY the store's rows of `table` (all, or those of `keys` by `where`) into PostgreSQL."""
    cols = pg_schema.columns(sq, table)
    names = ", ".join(name for name, _, _ in cols)
    count = 0
    with pg.cursor().copy(f"COPY lienthong.{table} ({names}) FROM STDIN") as copy:  # text: faster here than binary
        selects = (
            [(f"SELECT {names} FROM {table} {where.format(','.join('?' * len(c)))}", c) for c in _chunks(keys)]
            if where
            else [(f"SELECT {names} FROM {table}", ())]
        )
        for sql, args in selects:
            for row in sq.execute(sql, args):
                copy.write_row(row)
                count += 1
    return count


class _Reader:
    """What `completeness.submissions` reads through: the sink's own connection to the store."""

    def __init__(self, sq: sqlite3.Connection) -> None:
        self.db = sq

    def reader(self) -> sqlite3.Connection:
        return self.db


def _judge_completeness(pg: Any, sq: sqlite3.Connection, today: dt.date) -> int:
    """Judge every expected report of the recent periods (and of every period a report was
    submitted for) as of `today`, replacing the snapshot whole."""
    pg.execute("DELETE FROM lienthong.completeness")
    units = Units.load(sq)
    schedules = Schedules.from_envelopes(
        Envelope.FromString(raw)
        for (raw,) in sq.execute("SELECT envelope FROM records WHERE kind = ? AND deleted = 0", (records.DEFINITION,))
    )
    if not len(schedules):
        return 0
    subs = judge.submissions(_Reader(sq))  # type: ignore[arg-type]  # reads store.db only
    periods: set[str] = {period for (_, _, period) in subs}
    for schedule in schedules:
        current = containing(today, schedule.period_type)
        periods.update(shift(current, -back) for back in range(PERIODS_BACK))
    count = 0
    with pg.cursor().copy("COPY lienthong.completeness FROM STDIN") as copy:
        for period in sorted(periods):
            try:
                result = judge.completeness(units, list(schedules), subs, period, today=today)
            except LienthongError:  # a period text a schedule cannot read: no expected reports for it
                continue
            for item in result.reports:
                sub = item.submission
                copy.write_row(
                    (
                        item.unit.code,
                        item.unit.level,
                        item.schedule.report_type,
                        item.schedule.name,
                        item.period,
                        item.schedule.period_type,
                        item.due,
                        item.status,
                        sub.submitted_at.isoformat() if sub else None,
                        sub.recorded_at.isoformat() if sub else None,
                        sub.origin if sub else None,
                        today,
                    )
                )
                count += 1
    return count
