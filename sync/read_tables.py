"""Read tables: indexed, plain-column copies of what the records say, for the console, its API
and analytics (docs/analytics.md names every column).

The records table keeps each record as the envelope it arrived in; answering a page by decoding
every envelope does not scale to a province (a million indicator values). These tables hold the
same facts decoded once, with indexes on unit, period and agency:

    indicator_values   one row per indicator value (not withdrawn)
    reports            one row per report, with its first submission (timeliness is judged on it)
    report_files       the files each report lists (name, sha256, size)
    feedback_items     one row per feedback item, its events folded (state, assignee, deadline)
    feedback_events    one row per feedback event, naming the item it belongs to
    units              the unit registry (the province's `unit` definitions)

They follow the change log with a checkpoint (`meta.read_tables_seq`), in their own short
transactions after the records' (`Store.catch_up_read_tables`), not inside the transaction that
wrote the records: keeping them in every group commit cost a province ~40 % of its replication
throughput. Whatever path wrote the records — a local write, a child's batch, what the parent sent
down — the change log has them, and `catch_up` reads it from the checkpoint, which commits with
the rows it covers: a crash leaves the tables behind the records, never ahead or torn, and the
next catch-up resumes from the checkpoint. The running node catches up in the background after
each burst of commits (`read_upkeep.py`), and every reader catches up before it reads
(`Store.fresh_read_tables`), so no one is shown a state older than the records. A store made
before the tables existed is filled the same way (migration 5 sets the checkpoint to 0).

A feedback item's row is the fold of its events (`feedback.fold`, the same rules as the CLI),
refolded whenever one of them changes. `overdue` depends on the time of asking, so it is not
stored: an item is overdue when `is_open = 1 AND due_ts < now` (see `feedback_overdue_sql`).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf.message import DecodeError

from . import clock, feedback, records
from .errors import InputError
from .read_tables_schema import CHECKPOINT as CHECKPOINT  # readers compare with it
from .records import Envelope
from .units import Units

INDICATOR_COLUMNS = 17
# The period types the catalogue knows (sync/schedule.py's, plus the weekly and daily forms adapters read).
_PERIOD_TYPES = (
    ("monthly", re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")),
    ("quarterly", re.compile(r"^\d{4}Q[1-4]$")),
    ("sixmonthly", re.compile(r"^\d{4}S[12]$")),
    ("yearly", re.compile(r"^\d{4}$")),
    ("weekly", re.compile(r"^\d{4}W(0[1-9]|[1-4]\d|5[0-3])$")),
    ("daily", re.compile(r"^\d{4}-\d{2}-\d{2}$")),
)
CHUNK = 20_000  # change-log entries decoded per pass (memory stays flat on a large catch-up)


def feedback_overdue_sql(alias: str = "") -> str:
    """The SQL condition 'overdue now' on feedback_items (bind `:now`, seconds since the epoch)."""
    prefix = f"{alias}." if alias else ""
    return f"({prefix}is_open = 1 AND {prefix}due_ts < :now)"


def catch_up(db: sqlite3.Connection, limit: int | None = None) -> int:
    """Bring the read tables up to the change log's head — or `limit` entries past the
    checkpoint — inside the caller's transaction. Returns how many change-log entries were read
    (0 when already in step: one cheap query)."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (CHECKPOINT,)).fetchone()
    if row is None:
        return 0  # a store whose schema predates the read tables (migrating): nothing to keep
    done = int(row[0])
    head = int(db.execute("SELECT coalesce(max(seq), 0) FROM changelog").fetchone()[0])
    if limit is not None:
        head = min(head, done + limit)
    if head <= done:
        return 0
    seen = 0
    # A value first taken now is stamped now; on a full rebuild (checkpoint 0: a new or upgraded
    # store) the moment of arrival is unknown and its version's time stands in.
    received = None if done == 0 else _iso_ms(clock.wall_ms())
    while done < head:
        last = min(done + CHUNK, head)
        _apply(
            db,
            received,
            db.execute(
                "SELECT r.rid, r.id, r.kind, r.deleted, r.envelope FROM changelog c JOIN records r ON r.rid = c.rid "
                "WHERE c.seq > ? AND c.seq <= ? AND c.version = r.version ORDER BY c.seq",
                (done, last),
            ).fetchall(),
        )
        seen += last - done
        done = last
    db.execute("UPDATE meta SET value = ? WHERE key = ?", (str(head), CHECKPOINT))
    return seen


@functools.lru_cache(maxsize=4096)  # a province's values name a few hundred periods
def period_type(period: str) -> str:
    """The type a period is written in (2026-10 → monthly), '' for none."""
    return next((name for name, form in _PERIOD_TYPES if form.match(period)), "")


def _iso_ms(ms: int) -> str:
    """Unix ms as ISO 8601 UTC with milliseconds (2026-12-07T21:00:00.123+00:00). Every value
    taken is stamped twice: the seconds' text is made once per second, not once per value."""
    seconds, millis = divmod(ms, 1000)
    return f"{_iso_second(seconds)}.{millis:03d}+00:00"


@functools.lru_cache(maxsize=4096)
def _iso_second(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="seconds")[:19]


def _apply(db: sqlite3.Connection, received: str | None, rows: Sequence[tuple[int, bytes, int, int, bytes]]) -> None:
    latest: dict[bytes, tuple[int, int, int, bytes]] = {}
    for row_key, rid, kind, deleted, raw in rows:
        latest[rid] = (row_key, kind, deleted, raw)  # a record written twice in the window: its last version
    definitions_changed = False
    categories_changed = False
    refold: set[bytes] = set()
    indicators: list[tuple[object, ...]] = []
    gone: dict[int, list[bytes]] = {}
    gone_indicators: list[tuple[int]] = []
    for rid, (row_key, kind, deleted, raw) in latest.items():
        if deleted:
            if kind == records.INDICATOR:
                gone_indicators.append((row_key,))
            gone.setdefault(kind, []).append(rid)
            definitions_changed |= kind == records.DEFINITION
            continue
        try:
            env = Envelope.FromString(raw)
            body = records.body_of(env)
        except (DecodeError, KeyError):
            continue  # nothing to show for a body this version cannot read
        if kind == records.INDICATOR:
            indicators.append(_indicator_row(row_key, env, body, received))
        elif kind == records.REPORT:
            _put_report(db, env, body)
        elif kind == records.FEEDBACK:
            refold.add(rid)
            refold.update(_adopt_orphans(db, env, body))
        elif kind == records.FEEDBACK_EVENT:
            refold.add(_put_event(db, env, body))
        elif kind == records.DEFINITION:
            definitions_changed = True
            categories_changed |= body.type == feedback.CATEGORY_DEFINITION
    if indicators:
        db.executemany(_UPSERT_INDICATOR, indicators)
    db.executemany("DELETE FROM indicator_values WHERE rid = ?", gone_indicators)
    for kind, ids in gone.items():
        _forget(db, kind, ids, refold)
    if definitions_changed:
        _rebuild_units(db)
    if categories_changed:  # a deadline rule changed: every item's deadline may have
        refold.update(rid for (rid,) in db.execute("SELECT id FROM records WHERE kind = ? AND deleted = 0", (records.FEEDBACK,)))
    if refold:
        _refold(db, refold)


_INDICATOR_NAMES = (
    "rid, record_id, indicator, unit, period, disaggregation, agency, origin, value, value_number, comment, follow_up, "
    "version, period_type, approval_state, first_received_at, changed_at"
)
# A new version replaces every column but first_received_at (and approval_state, which approvals set).
_UPSERT_INDICATOR = (
    f"INSERT INTO indicator_values ({_INDICATOR_NAMES}) VALUES ({','.join('?' * INDICATOR_COLUMNS)}) ON CONFLICT(rid) DO UPDATE SET "
    + ", ".join(
        f"{c} = excluded.{c}" for c in _INDICATOR_NAMES.replace(" ", "").split(",")[1:] if c not in ("first_received_at", "approval_state")
    )
)


def _indicator_row(row_key: int, env: Envelope, body: Any, received: str | None) -> tuple[object, ...]:
    changed = _iso_ms(clock.physical_ms(env.version))
    try:
        number: float | None = float(body.value)  # decimal text (records.decimal_text); float() is 5x cheaper than Decimal
    except ValueError:
        number = None
    return (
        row_key,
        env.id,
        body.indicator,
        env.unit,
        body.period,
        body.disaggregation,
        env.agency,
        env.origin,
        body.value,
        number,
        body.comment,
        int(body.follow_up),
        env.version,
        period_type(body.period),
        None,
        received or changed,
        changed,
    )


def _put_report(db: sqlite3.Connection, env: Envelope, body: Any) -> None:
    first = db.execute("SELECT version, envelope FROM report_first WHERE id = ?", (env.id,)).fetchone()
    first_version, first_submitted = env.version, body.submitted_at
    if first is not None:
        first_version = first[0]
        first_submitted = records.body_of(Envelope.FromString(first[1])).submitted_at
    db.execute(
        f"INSERT OR REPLACE INTO reports VALUES ({','.join('?' * 15)})",
        (
            env.id,
            body.report_type,
            env.unit,
            body.period,
            env.agency,
            env.origin,
            body.title,
            body.summary,
            body.signed_by,
            body.source_id,
            body.submitted_at,
            first_submitted,
            env.version,
            first_version,
            len(body.attachments),
        ),
    )
    db.execute("DELETE FROM report_files WHERE record_id = ?", (env.id,))
    db.executemany(
        "INSERT INTO report_files VALUES (?, ?, ?, ?, ?)",
        [(env.id, i, a.name, a.sha256, a.size) for i, a in enumerate(body.attachments)],
    )


def _put_event(db: sqlite3.Connection, env: Envelope, body: Any) -> bytes:
    """Store one event row under the item it names (exactly, else by a unique ticket id, as
    `feedback.attach` matches); returns the item id to refold."""
    item_id = records.feedback_id(body.feedback_origin, env.agency, body.feedback)
    if db.execute("SELECT 1 FROM feedback_items WHERE record_id = ?", (item_id,)).fetchone() is None:
        candidates = [
            r[0]
            for r in db.execute(
                "SELECT record_id FROM feedback_items WHERE origin = ? AND source_id = ?", (body.feedback_origin, body.feedback)
            )
        ]
        if len(candidates) != 1:
            candidates = [r[0] for r in db.execute("SELECT record_id FROM feedback_items WHERE source_id = ?", (body.feedback,))]
        if len(candidates) == 1:
            item_id = candidates[0]
    db.execute(
        f"INSERT OR REPLACE INTO feedback_events VALUES ({','.join('?' * 13)})",
        (
            env.id,
            item_id,
            body.feedback,
            body.feedback_origin,
            env.agency,
            body.status,
            body.at,
            env.unit,
            body.unit,
            body.note,
            body.rating or None,
            env.origin,
            env.version,
        ),
    )
    return item_id


def _adopt_orphans(db: sqlite3.Connection, env: Envelope, body: Any) -> list[bytes]:
    """Events that arrived before their item (named by ticket id only) move under it."""
    orphans = [
        (rid, item_id)
        for rid, item_id in db.execute("SELECT record_id, item_id FROM feedback_events WHERE feedback = ?", (body.source_id,))
        if item_id != env.id and db.execute("SELECT 1 FROM feedback_items WHERE record_id = ?", (item_id,)).fetchone() is None
    ]
    db.executemany("UPDATE feedback_events SET item_id = ? WHERE record_id = ?", [(env.id, rid) for rid, _ in orphans])
    return [item_id for _, item_id in orphans]


def _forget(db: sqlite3.Connection, kind: int, ids: list[bytes], refold: set[bytes]) -> None:
    marks = [(rid,) for rid in ids]
    if kind == records.REPORT:
        db.executemany("DELETE FROM reports WHERE record_id = ?", marks)
        db.executemany("DELETE FROM report_files WHERE record_id = ?", marks)
    elif kind == records.FEEDBACK:
        db.executemany("DELETE FROM feedback_items WHERE record_id = ?", marks)
        refold.difference_update(ids)
    elif kind == records.FEEDBACK_EVENT:
        for rid in ids:
            row = db.execute("SELECT item_id FROM feedback_events WHERE record_id = ?", (rid,)).fetchone()
            if row is not None:
                refold.add(row[0])
        db.executemany("DELETE FROM feedback_events WHERE record_id = ?", marks)


def _rebuild_units(db: sqlite3.Connection) -> None:
    try:
        registry = Units.load(db)
    except InputError:
        return  # a unit definition that cannot be read: the registry stays as it was (the CLI names the problem)
    db.execute("DELETE FROM units")
    db.executemany(
        "INSERT INTO units VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                u.code,
                u.name,
                u.level,
                u.parent,
                u.valid_from.isoformat() if u.valid_from else None,
                u.valid_to.isoformat() if u.valid_to else None,
                u.successor,
                len(registry.ancestors(u.code)),
                "/".join([*reversed(registry.ancestors(u.code)), u.code]),
            )
            for u in registry
        ],
    )


def _refold(db: sqlite3.Connection, item_ids: Iterable[bytes]) -> None:
    """Fold each item again from its stored envelope and the events held for it."""
    ids = sorted(item_ids)
    registry = _registry(db)
    due_days = _due_days(db)
    rows = []
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        items = {
            rid: raw
            for rid, raw in db.execute(
                f"SELECT id, envelope FROM records WHERE kind = ? AND deleted = 0 AND id IN ({marks})", (records.FEEDBACK, *chunk)
            )
        }
        events: dict[bytes, list[feedback.Event]] = {rid: [] for rid in items}
        for item_id, raw in db.execute(
            f"SELECT e.item_id, r.envelope FROM feedback_events e JOIN records r ON r.id = e.record_id "
            f"WHERE r.deleted = 0 AND e.item_id IN ({marks})",
            chunk,
        ):
            if item_id in events:
                events[item_id].append(feedback.Event.from_envelope(Envelope.FromString(raw)))
        for rid, raw in items.items():
            try:
                item = feedback.fold(feedback.item_from_envelope(Envelope.FromString(raw), due_days), events[rid], registry.ancestors)
                rows.append(_item_row(rid, item))
            except (ValueError, DecodeError):
                continue  # a time the item states cannot be read: the CLI shows the problem
    db.executemany(f"INSERT OR REPLACE INTO feedback_items VALUES ({','.join('?' * 25)})", rows)


def _item_row(rid: bytes, item: feedback.Item) -> tuple[object, ...]:
    on_time = item.on_time()
    return (
        rid,
        item.source_id,
        item.origin,
        item.agency,
        item.unit,
        item.category,
        item.category_name,
        item.description,
        item.address,
        item.received_at,
        _ts(item.received_at),
        item.due_at,
        _ts(item.due_at),
        item.due_rule,
        item.state,
        int(item.is_open),
        item.assignee,
        item.responsible,
        item.suggested_unit,
        item.result,
        item.rating or None,
        item.handled_at,
        None if on_time is None else int(on_time),
        len(item.history),
        sum(1 for s in item.history if not s.applied),
    )


def _ts(text: str) -> float:
    when = dt.datetime.fromisoformat(text)
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


def _registry(db: sqlite3.Connection) -> Units:
    try:
        return Units.load(db)
    except InputError:
        return Units([])


def _due_days(db: sqlite3.Connection) -> dict[str, int]:
    out: dict[str, int] = {}
    for (raw,) in db.execute("SELECT envelope FROM records WHERE kind = ? AND deleted = 0", (records.DEFINITION,)):
        body = records.body_of(Envelope.FromString(raw))
        if body.type != feedback.CATEGORY_DEFINITION:
            continue
        try:
            days = json.loads(body.json or "{}").get("due_days")
        except (json.JSONDecodeError, AttributeError):
            continue
        if isinstance(days, int | float) and not isinstance(days, bool) and days > 0:
            out[body.code] = int(days)
    return out
