"""The read tables (sync/read_tables.py) say what the records say: after local writes, after
feedback events, after a withdrawal, after replication, and for a store made before they existed.
They follow the records outside the records' transactions: a reader catches up before it reads
(`Store.fresh_read_tables`), the running node in the background (sync/read_upkeep.py, in a process of its own: node/read_worker.py), and a
catch-up cut short by a crash resumes from its checkpoint."""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from lienthong.node.cli import cli as lienthong_cli
from lienthong.sync import feedback as fb
from lienthong.sync import read_tables, records
from lienthong.sync.clock import HybridClock
from lienthong.sync.downstream import Downstream
from lienthong.sync.errors import StoreError
from lienthong.sync.store import Store

from .conftest import MakeNode
from .helpers import STORE_FILE, WAIT_SCALE, NodeProcess, alive, wait_until, workers_of

SAMPLES = Path(__file__).parent / "testdata" / "samples" / "inbox"
DEFINITIONS = Path(__file__).parents[1] / "node" / "demo_data" / "definitions.jsonl"
BA_TRI = "86-28894"
READ_WORKER = b"lienthong.node.read_worker"


def lienthong(*args: str) -> None:
    result = CliRunner().invoke(lienthong_cli, list(args))
    assert result.exit_code == 0 and result.exception is None, f"lienthong {' '.join(args)}: {result.exception!r}\n{result.output}"


def province_with_samples(make_node: MakeNode) -> Path:
    node = make_node("86")
    lienthong("ingest", "--dir", str(node), str(DEFINITIONS))
    lienthong("ingest", "--dir", str(node), "--agency", "1022", str(SAMPLES / "1022" / "open311-2026-11-20.json"))
    lienthong("ingest", "--dir", str(node), "--agency", "thongke", str(SAMPLES / "thongke" / "chi-tieu-ktxh-thang-10-2026.csv"))
    lienthong("ingest", "--dir", str(node), "--agency", "vanphong", str(SAMPLES / "vanphong" / "bc-ioc-thang-10-2026-ba-tri.report.json"))
    return node


def expected_tables(store: Store) -> dict[str, Any]:
    """What the read tables must hold, computed the slow way (decoding every envelope, the CLI's fold)."""
    now = dt.datetime.now(dt.UTC)
    indicators = set()
    for env in store.iter_records(records.INDICATOR):
        body = records.body_of(env)
        indicators.add((env.id, body.indicator, env.unit, body.period, env.agency, body.value))
    reports = set()
    for env in store.iter_records(records.REPORT):
        body = records.body_of(env)
        reports.add((env.id, body.report_type, env.unit, body.period, tuple((a.name, a.sha256, a.size) for a in body.attachments)))
    items = {bytes.fromhex(i.id): (i.state, i.assignee, i.due_at, i.overdue(now), len(i.history), i.result) for i in fb.load(store).items}
    return {"indicators": indicators, "reports": reports, "items": items}


def read_back(store: Store) -> dict[str, Any]:
    assert store.fresh_read_tables()
    db = store.reader()
    now = dt.datetime.now(dt.UTC).timestamp()
    files: dict[bytes, list[tuple[str, str, int]]] = {}
    for rid, name, sha, size in db.execute("SELECT record_id, name, sha256, size FROM report_files ORDER BY record_id, position"):
        files.setdefault(rid, []).append((name, sha, size))
    return {
        "indicators": set(db.execute("SELECT record_id, indicator, unit, period, agency, value FROM indicator_values")),
        "reports": {
            (rid, rt, unit, period, tuple(files.get(rid, [])))
            for rid, rt, unit, period in db.execute("SELECT record_id, report_type, unit, period FROM reports")
        },
        "items": {
            row[0]: (row[1], row[2], row[3], bool(row[4]), row[5], row[6])
            for row in db.execute(
                f"SELECT record_id, state, assignee, due_at, {read_tables.feedback_overdue_sql()}, events, result FROM feedback_items",
                {"now": now},
            )
        },
    }


def fresh(store: Store, sql: str) -> list[tuple[Any, ...]]:
    """What a reader sees: the tables caught up, then queried."""
    assert store.fresh_read_tables()
    return store.reader().execute(sql).fetchall()


def test_read_tables_match_the_records_after_local_writes_and_feedback_events(make_node: MakeNode) -> None:
    """Indicators, reports with their files, folded feedback and units equal what decoding every record gives."""
    node = province_with_samples(make_node)
    lienthong("feedback", "assign", "--dir", str(node), "1022-20261120-000153", "--unit", BA_TRI)
    store = Store.open(node / STORE_FILE)
    try:
        got, want = read_back(store), expected_tables(store)
        assert want["indicators"] and want["reports"] and want["items"]
        assert got == want
        assert any(files for *_, files in got["reports"]), "the report's attachment is listed"
        pothole = store.reader().execute("SELECT state, assignee FROM feedback_items WHERE source_id = '1022-20261120-000153'").fetchone()
        assert pothole == ("assigned", BA_TRI)
        units = dict(store.reader().execute("SELECT code, level FROM units").fetchall())
        assert units["86"] == "province" and units[BA_TRI] == "commune"
        assert store.reader().execute("SELECT depth FROM units WHERE code = ?", (BA_TRI,)).fetchone()[0] == 1
    finally:
        store.close()


def test_analytics_columns_period_type_first_received_changed_and_unit_path(tmp_path: Path) -> None:
    """Migration 8's columns: the period's type, the first arrival kept across versions, the
    current version's time, approval_state NULL, and each unit's path from the top."""
    store = Store.create(tmp_path / "s.db", "86")
    hlc = HybridClock()
    try:
        definitions = [records.build("86", __import__("json").loads(line)) for line in DEFINITIONS.read_text().splitlines() if line]
        store.write_local(definitions, hlc)
        periods = {"2026-10": "monthly", "2026Q3": "quarterly", "2026S1": "sixmonthly", "2026": "yearly", "2026W05": "weekly"}
        rows = [{"kind": "indicator", "indicator": "X", "unit": BA_TRI, "period": p, "value": "1"} for p in periods]
        store.write_local([records.build("86", r) for r in rows], hlc)
        store.fresh_read_tables()  # the tables follow the records: a reader catches them up first
        db = store.reader()
        assert dict(db.execute("SELECT period, period_type FROM indicator_values")) == periods
        first = dict(db.execute("SELECT period, first_received_at FROM indicator_values"))
        store.write_local([records.build("86", {**rows[0], "value": "2"})], hlc)
        store.fresh_read_tables()
        value, received, changed, approval, version = db.execute(
            "SELECT value, first_received_at, changed_at, approval_state, version FROM indicator_values WHERE period = '2026-10'"
        ).fetchone()
        assert (value, received, approval) == ("2", first["2026-10"], None)
        assert dt.datetime.fromisoformat(changed).timestamp() * 1000 == pytest.approx((version >> 16), abs=1)
        assert (
            changed == dt.datetime.fromtimestamp((version >> 16) // 1000, dt.UTC).isoformat()[:19] + f".{(version >> 16) % 1000:03d}+00:00"
        )
        assert db.execute("SELECT path FROM units WHERE code = ?", (BA_TRI,)).fetchone()[0] == f"86/{BA_TRI}"
        wide = db.execute("SELECT unit_level, unit_path FROM indicator_values_by_unit_path WHERE period = '2026'").fetchone()
        assert wide == ("commune", f"86/{BA_TRI}")
    finally:
        store.close()


@pytest.mark.parametrize("ms", [0, 999, 1000, 1_796_678_487_000, 1_796_678_487_999, 1_796_678_488_001, 4_102_444_799_999])
def test_times_in_the_read_tables_are_iso_utc_with_milliseconds(ms: int) -> None:
    """The seconds' text is cached per second: each millisecond still reads as datetime writes it."""
    first = read_tables._iso_ms(ms)
    assert first == read_tables._iso_ms(ms) == dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")


def test_a_withdrawn_indicator_leaves_the_read_table(tmp_path: Path) -> None:
    """A tombstone removes the row; writing it again brings it back."""
    store = Store.create(tmp_path / "s.db", "86")
    hlc = HybridClock()
    fields = {"kind": "indicator", "indicator": "X", "unit": "86", "period": "2026-10", "value": "5"}
    try:
        store.write_local([records.build("86", fields)], hlc)
        assert fresh(store, "SELECT value, value_number FROM indicator_values") == [("5", 5.0)]
        store.write_local([records.build("86", {**fields, "deleted": True})], hlc)
        assert fresh(store, "SELECT count(*) FROM indicator_values") == [(0,)]
        store.write_local([records.build("86", {**fields, "value": "7"})], hlc)
        assert fresh(store, "SELECT value FROM indicator_values") == [("7",)]
    finally:
        store.close()


def test_a_store_made_before_the_read_tables_gets_them_filled_from_the_change_log(make_node: MakeNode) -> None:
    """Migration 7 on a store at schema 6 with records: the first catch-up builds the tables from the change log."""
    node = province_with_samples(make_node)
    conn = sqlite3.connect(node / STORE_FILE, isolation_level=None)
    for table in ("indicator_values", "reports", "report_files", "feedback_items", "feedback_events", "units"):
        conn.execute(f"DROP TABLE {table}")
    conn.execute("DELETE FROM meta WHERE key = ?", (read_tables.CHECKPOINT,))
    conn.execute("PRAGMA user_version = 6")
    conn.close()
    store = Store.open(node / STORE_FILE)
    try:
        got, want = read_back(store), expected_tables(store)
        assert want["items"] and got == want
    finally:
        store.close()


def test_what_a_child_sends_reaches_the_parents_read_tables(tmp_path: Path) -> None:
    """Records applied from a child's batch (downstream) are in the parent's read tables once a reader catches up."""
    parent = Store.create(tmp_path / "p.db", "86")
    child = Store.create(tmp_path / "c.db", BA_TRI)
    hlc = HybridClock()
    try:
        definitions = [records.build("86", __import__("json").loads(line)) for line in DEFINITIONS.read_text().splitlines() if line]
        parent.write_local(definitions, hlc)
        rows = [
            {"kind": "indicator", "indicator": "KTXH.MAU", "unit": BA_TRI, "period": "2026-10", "value": str(i), "disaggregation": str(i)}
            for i in range(3)
        ]
        child.write_local([records.build(BA_TRI, r) for r in rows], hlc)
        raws = [raw for (raw,) in child.reader().execute("SELECT envelope FROM records ORDER BY rid")]
        down = Downstream(parent)
        down.register_child(BA_TRI, "test")
        refusals = down.apply_from_child(BA_TRI, child.epoch, 0, child.head(), child.fingerprint_at(child.head()), raws)
        assert refusals == []
        assert parent.read_tables_lag() >= 3  # the commits did not touch them
        got = fresh(parent, "SELECT unit, value, origin FROM indicator_values ORDER BY value")
        assert got == [(BA_TRI, "0", BA_TRI), (BA_TRI, "1", BA_TRI), (BA_TRI, "2", BA_TRI)]
    finally:
        parent.close()
        child.close()


TABLES = ("indicator_values", "reports", "report_files", "feedback_items", "feedback_events", "units")


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every read table, read from the file as it is (no catch-up). Without
    `first_received_at`: when this node's tables took a value, which a rebuild takes anew."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out = {}
        for t in TABLES:
            columns = [c[1] for c in conn.execute(f"PRAGMA table_info({t})") if c[1] != "first_received_at"]
            out[t] = sorted(conn.execute(f"SELECT {', '.join(columns)} FROM {t}").fetchall(), key=repr)
        return out
    finally:
        conn.close()


def rebuilt(store: Store, tmp_path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The read tables built from scratch from the whole change log, in one pass, in a copy of the store."""
    copy = tmp_path / "rebuilt.db"
    store.backup(copy)
    conn = sqlite3.connect(copy, isolation_level=None)
    conn.execute("BEGIN")
    for table in TABLES:
        conn.execute(f"DELETE FROM {table}")
    conn.execute("UPDATE meta SET value = '0' WHERE key = ?", (read_tables.CHECKPOINT,))
    read_tables.catch_up(conn)
    conn.execute("COMMIT")
    conn.close()
    return dump(copy)


def indicator_batches(count: int) -> list[list[records.Keyed]]:
    """A burst of writes: new values, the same values changed, some withdrawn."""
    rows = [
        {"kind": "indicator", "indicator": "KTXH.MAU", "unit": BA_TRI, "period": "2026-10", "value": str(i), "disaggregation": str(i)}
        for i in range(count)
    ]
    changed = [{**r, "value": f"{r['value']}.5"} for r in rows[: count // 2]]
    withdrawn = [{**r, "deleted": True} for r in rows[count // 2 : count // 2 + count // 4]]
    return [[records.build("86", r) for r in batch] for batch in (rows, changed, withdrawn)]


def test_the_background_catch_up_after_a_write_burst_equals_a_rebuild(make_node: MakeNode, tmp_path: Path) -> None:
    """A running node's upkeep worker (node/read_worker.py, a process of its own) takes a burst of
    commits into the read tables on its own — no reader asks — they end equal to tables built from
    scratch, and the worker exits once its node lets go of it (its stdin closes)."""
    node = province_with_samples(make_node)  # written by the CLI: its commits left the tables behind
    store = Store.open(node / STORE_FILE)
    hlc = HybridClock(store.max_version())
    ticket = {"kind": "feedback_event", "feedback": "1022-20261120-000153", "feedback_origin": "86", "agency": "1022", "unit": "86"}
    assign = {**ticket, "status": "assigned", "at": "2026-11-21T09:00:00+07:00", "assigned_unit": BA_TRI}
    burst = [*indicator_batches(1500), [records.build("86", assign)]]
    behind: list[int] = []
    worker = subprocess.Popen(
        [sys.executable, "-m", "lienthong.node.read_worker", str(store.path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert worker.stdin is not None
    try:
        for batch in burst:
            store.write_local(batch, hlc)
            behind.append(store.read_tables_lag())
            worker.stdin.write(b".")  # what the node writes after its commits
            worker.stdin.flush()
        wait_until(lambda: store.read_tables_lag() == 0, timeout=30 * WAIT_SCALE, what="the worker to catch the tables up")
        said, _ = worker.communicate(timeout=30 * WAIT_SCALE)  # closes its stdin, as a stopping node does
        assert worker.returncode == 0 and said == b"", f"the worker exits when its node lets go, having nothing to report: {said!r}"
        assert max(behind) > 0, "the writes' own commits left the tables behind"
        got = dump(store.path)
        assert len(got["indicator_values"]) > 1000 and got["feedback_events"]
        assert got == rebuilt(store, tmp_path)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
        store.close()


def test_the_upkeep_worker_lets_the_nodes_commits_in_between_its_steps(tmp_path: Path) -> None:
    """SQLite has one write lock and no queue for it: a writer waiting for it sleeps between tries.
    The worker's catch-up transactions ran back to back, and a child's stream at the province
    waited up to 2 s at a time. While the node commits (and says so on the worker's stdin), the
    worker now pauses between steps: the node's commits get in part way through a catch-up."""
    store = Store.create(tmp_path / STORE_FILE, "86")
    hlc = HybridClock()
    for batch in indicator_batches(12_000):  # 21,000 change-log entries the tables have not taken
        store.write_local(batch, hlc)
    head = store.head()
    seen: list[int] = []  # the tables' checkpoint, as each of the node's commits saw it
    worker = subprocess.Popen(
        [sys.executable, "-m", "lienthong.node.read_worker", str(store.path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert worker.stdin is not None
    try:
        deadline = time.monotonic() + 60 * WAIT_SCALE
        while not seen or seen[-1] < head:
            assert time.monotonic() < deadline, f"the worker did not catch the tables up: {seen[-5:]} of {head}"
            with store.writing() as db:  # what the node's group commits do, a few times a second
                db.execute("INSERT OR REPLACE INTO meta VALUES ('test.commits', ?)", (str(len(seen)),))
                seen.append(int(db.execute("SELECT value FROM meta WHERE key = ?", (read_tables.CHECKPOINT,)).fetchone()[0]))
            worker.stdin.write(b".")
            worker.stdin.flush()
            time.sleep(0.02)
        worker.communicate(timeout=30 * WAIT_SCALE)
        part_way = sorted({c for c in seen if 0 < c < head})
        assert len(part_way) >= 2, f"the node's commits got in between the worker's steps only at {part_way} (of {head} entries)"
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
        store.close()


def test_ctrl_c_and_a_kill_take_the_nodes_upkeep_worker_with_it_and_print_no_traceback(make_node: MakeNode) -> None:
    """Ctrl+C in a terminal (SIGINT to the node's whole process group) stops the node and its worker
    in words, no traceback; SIGKILL gives the node no chance to stop its worker: the closed pipe does.
    Either way no process is left."""
    node = make_node("86")
    argv = ["setsid", sys.executable, "-m", "lienthong.node", "run", "--dir", str(node)]  # its own group, as in a terminal

    def gone(pids: list[int]) -> bool:
        return not any(alive(p) for p in pids)

    first = NodeProcess(node, argv=argv).start()
    assert first.proc is not None
    workers = wait_until(
        lambda: workers_of(first.proc.pid, READ_WORKER), timeout=60 * WAIT_SCALE, what=f"the upkeep worker to start\n{first.tail()}"
    )
    os.killpg(first.proc.pid, signal.SIGINT)
    assert first.proc.wait(timeout=60 * WAIT_SCALE) == 0, first.tail()
    wait_until(lambda: gone(workers), timeout=30 * WAIT_SCALE, what="the worker to exit after Ctrl+C")
    assert "Traceback" not in first.log() and "KeyboardInterrupt" not in first.log(), first.tail()

    second = NodeProcess(node, argv=argv, log_name="run2.log").start()
    assert second.proc is not None
    workers = wait_until(
        lambda: workers_of(second.proc.pid, READ_WORKER), timeout=60 * WAIT_SCALE, what=f"the upkeep worker to start\n{second.tail()}"
    )
    second.kill()
    wait_until(lambda: gone(workers), timeout=30 * WAIT_SCALE, what="the worker to exit after its node was killed")


CRASH_MID_CATCH_UP = """
import sys, time
from pathlib import Path
from lienthong.sync import read_tables
from lienthong.sync.store import Store

store = Store.open(Path(sys.argv[1]))
with store.writing() as db:
    read_tables.catch_up(db, 100)  # one step committed
with store.writing() as db:
    read_tables.catch_up(db, 100)  # the next one written, not committed
    print("mid-step", flush=True)
    time.sleep(120)
"""


def test_a_catch_up_killed_mid_step_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    """SIGKILL in the middle of a catch-up transaction: the tables stay at the last committed step
    (neither torn nor ahead), and the next catch-up ends equal to a rebuild."""
    path = tmp_path / "s.db"
    store = Store.create(path, "86")
    hlc = HybridClock()
    for batch in indicator_batches(400):
        store.write_local(batch, hlc)
    head = store.head()
    store.close()
    with subprocess.Popen([sys.executable, "-c", CRASH_MID_CATCH_UP, str(path)], stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "mid-step"
        finally:
            proc.kill()
            proc.wait(timeout=30)
    store = Store.open(path)
    try:
        assert store.read_tables_lag() == head - 100
        assert len(dump(path)["indicator_values"]) <= 100
        assert store.catch_up_read_tables(step=150) == head - 100
        assert store.read_tables_lag() == 0
        assert dump(path) == rebuilt(store, tmp_path)
    finally:
        store.close()


def test_an_upkeep_worker_meeting_a_damaged_store_says_so_in_one_line(tmp_path: Path) -> None:
    """The worker's first read of a store (its node's id) met a damaged file as a bare SQLite
    traceback on the node's output. Opening a store says any damage in one sentence."""
    store = Store.create(tmp_path / STORE_FILE, "86")
    root = store.reader().execute("SELECT rootpage FROM sqlite_master WHERE name = 'meta'").fetchone()[0]
    page = store.reader().execute("PRAGMA page_size").fetchone()[0]
    store.close()
    with open(tmp_path / STORE_FILE, "r+b") as f:  # the meta table's page overwritten: the header still reads
        f.seek((root - 1) * page)
        f.write(b"\xa5" * page)
    with pytest.raises(StoreError, match="cannot be opened"):
        Store.open(tmp_path / STORE_FILE)
    worker = subprocess.run(
        [sys.executable, "-m", "lienthong.node.read_worker", str(tmp_path / STORE_FILE)], input=b"", capture_output=True, timeout=60
    )
    assert worker.returncode == 1 and b"Traceback" not in worker.stderr, worker.stderr.decode()
    assert b"read_tables.worker_failed" in worker.stdout and b"restore it from a backup" in worker.stdout
