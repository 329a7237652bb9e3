"""The PostgreSQL sink (#13) against a real PostgreSQL server (Debian's `postgresql`, a cluster
made with initdb for this session, tests/postgres.py) and real node processes: a province
and three communes. One federation, the checks in order:

1. a wrong password: `status` shows one line, no traceback, and replication goes on;
2. the province SIGKILLed between the sink's COPY and its COMMIT: nothing in PostgreSQL;
3. restarted: PostgreSQL equals the province's read tables exactly;
4. PostgreSQL stopped while a third commune's records arrive, then started again: equal
   again (nothing lost, nothing twice);
5. the warehouse emptied, `lienthong sink resync`: equal again.

Then, in a database of the same server whose tables live in a tablespace on a small tmpfs (root
only, as CI runs), one province and one commune: the disk filled mid-flow, then the sink's
connection (through a TcpProxy relay) cut during a COPY. And weekly and daily completeness in
`lienthong.completeness`, in process.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import pwd
import re
import socket
import sqlite3
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomlkit

from lienthong.node import pg_schema, pg_sink, sink_task
from lienthong.sync.completeness import completeness, submissions
from lienthong.sync.schedule import Schedules
from lienthong.sync.store import Store
from lienthong.sync.units import Units

from .conftest import MakeNode, listen_address
from .helpers import (
    RELAYS,
    STORE_FILE,
    NodeProcess,
    TcpProxy,
    bound_port,
    cli,
    fill,
    indicator_rows,
    small_disk,
    status,
    wait_until,
    write_jsonl,
)
from .postgres import PASSWORD, Cluster, binaries
from .test_completeness import WEEKLY_HAND, weekly_and_daily
from .web_helpers import lienthong

DEFINITIONS = Path(__file__).parents[1] / "node" / "demo_data" / "definitions.jsonl"
SAMPLES = Path(__file__).parent / "testdata" / "samples" / "inbox"
COMMUNES = ("86-28894", "86-29077", "86-28756")
ROWS = 300
SMALL_DB = "small_disk"  # the database whose lienthong tables live on a small disk

pytestmark = pytest.mark.skipif(binaries() is None, reason="needs Debian's postgresql (scripts/test.sh installs it)")


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    cluster = Cluster().start()
    yield cluster
    cluster.destroy()


def tables_in_store(node: Path) -> dict[str, list[tuple[Any, ...]]]:
    sq = sqlite3.connect(f"file:{node / STORE_FILE}?mode=ro", uri=True)
    try:
        return {t: sorted(sq.execute(f"SELECT {pg_schema.names(sq, t)} FROM {t}"), key=repr) for t in pg_schema.KEYS}
    finally:
        sq.close()


def tables_in_postgres(cluster: Cluster, node: Path, db: str = "postgres") -> dict[str, list[tuple[Any, ...]]]:
    sq = sqlite3.connect(f"file:{node / STORE_FILE}?mode=ro", uri=True)
    pg: Any = cluster.connect(db)
    try:
        return {t: sorted(pg.execute(f"SELECT {pg_schema.names(sq, t)} FROM lienthong.{t}").fetchall(), key=repr) for t in pg_schema.KEYS}
    finally:
        pg.close()
        sq.close()


def sink_position(cluster: Cluster, db: str = "postgres") -> int | None:
    pg: Any = cluster.connect(db)
    try:
        if pg_schema.version(pg) is None:
            return None
        row = pg.execute("SELECT position FROM lienthong.sink_state").fetchone()
        return None if row is None else int(row[0])
    finally:
        pg.close()


def _scalar(node: Path, sql: str, args: tuple[Any, ...] = ()) -> int:
    """One number read from a (possibly running) node's store, read-only."""
    sq = sqlite3.connect(f"file:{node / STORE_FILE}?mode=ro", uri=True)
    try:
        return int(sq.execute(sql, args).fetchone()[0])
    finally:
        sq.close()


def read_tables_head(node: Path) -> int:
    return _scalar(node, "SELECT value FROM meta WHERE key = 'read_tables_seq'")


def records_head(node: Path) -> int:
    return _scalar(node, "SELECT coalesce(max(seq), 0) FROM changelog")


def indicator_count(node: Path, unit: str) -> int:
    return _scalar(node, "SELECT count(*) FROM indicator_values WHERE unit = ?", (unit,))


def assert_equal(cluster: Cluster, node: Path, procs: list[NodeProcess], db: str = "postgres") -> None:
    """Wait for the read tables to reach the records (the node's upkeep worker follows them) and the
    sink to reach the read tables, then compare every table row for row. (Both at 0 before the
    worker's first pass is not "caught up": a loaded run compared empty tables.)"""

    def caught_up() -> bool:
        if not all(p.alive() for p in procs):
            raise AssertionError("a node exited:\n" + "\n".join(p.tail() for p in procs))
        head = read_tables_head(node)
        return head == records_head(node) and sink_position(cluster, db) == head

    wait_until(caught_up, timeout=120, what="the read tables to reach the records and the sink the read tables")
    want, got = tables_in_store(node), tables_in_postgres(cluster, node, db)
    assert want["indicator_values"] and want["feedback_items"] and want["reports"] and want["units"]
    for table in pg_schema.KEYS:
        assert got[table] == want[table], f"lienthong.{table} differs from the store's {table}"


def metrics(node: Path) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{bound_port(node, 'web_port')}/metrics", timeout=30) as answer:
        return str(answer.read().decode())


def sink_config(node: Path, **values: str) -> None:
    """Set [sink.postgres] fields in the node's lienthong.toml (init writes the section empty)."""
    config = node / "lienthong.toml"
    doc = tomlkit.parse(config.read_text())
    for key, value in values.items():
        doc["sink"]["postgres"][key] = value  # type: ignore[index]
    config.write_text(tomlkit.dumps(doc))


def test_the_sink_mirrors_the_read_tables_exactly_once_through_kills_and_outages(
    make_node: MakeNode, postgres: Cluster, tmp_path: Path
) -> None:
    province = make_node("86")
    communes = [make_node(code, parent=listen_address(province)) for code in COMMUNES]
    cli("ingest", "--dir", str(province), str(DEFINITIONS))
    cli("ingest", "--dir", str(province), "--agency", "1022", str(SAMPLES / "1022" / "open311-2026-11-20.json"))
    cli("ingest", "--dir", str(province), "--agency", "vanphong", str(SAMPLES / "vanphong" / "bc-ioc-thang-10-2026-ba-tri.report.json"))
    for commune in communes:
        fill(commune, indicator_rows(commune.name, ROWS, agency="thongke"))
    password = tmp_path / "pg-password"
    password.write_text("not the password\n")
    sink_config(province, dsn=postgres.dsn, password_file=str(password))

    # 1. A wrong password: one line in status, the node and replication go on.
    pp = NodeProcess(province).start()
    kids = [NodeProcess(c).start() for c in communes[:2]]
    for commune in communes[:2]:
        wait_until(lambda c=commune: indicator_count(province, c.name) == ROWS, timeout=120, what=f"{commune.name}'s rows at the province")
    sink = wait_until(lambda: (s := status(province)["sink"]) and s["state"] == "retrying" and s, timeout=60, what="the sink's error")
    assert "password authentication failed" in sink["last_error"] and "\n" not in sink["last_error"]
    shown = cli("status", "--dir", str(province)).stdout
    assert [line for line in shown.splitlines() if "PostgreSQL sink" in line and "password authentication failed" in line]
    assert "Traceback" not in shown + pp.log()
    assert "password authentication failed" in cli("sink", "status", "--dir", str(province)).stdout
    health = cli("health", "--dir", str(province), check=False)
    assert "warning: the PostgreSQL sink cannot write" in health.stdout

    # 2. The right password; the province killed after the sink's COPY, before its COMMIT.
    pp.stop()
    password.write_text(PASSWORD + "\n")
    marker = tmp_path / "paused"
    pp = NodeProcess(province, env={pg_sink.PAUSE_ENV: str(marker)}).start()
    wait_until(marker.exists, timeout=120, what="the sink to pause between its COPY and its COMMIT")
    pp.kill()
    assert sink_position(postgres) is None, "rows were committed by a step that never reached its COMMIT"

    # 3. Restarted: PostgreSQL holds exactly the read tables.
    pp = NodeProcess(province).start()
    procs = [pp, *kids]
    assert_equal(postgres, province, procs)
    assert cli("sink", "status", "--dir", str(province), "--json").stdout.count('"lag": 0') == 1
    assert "lienthong_sink_up 1.0" in metrics(province)

    # 4. PostgreSQL stopped while the third commune's records arrive, then started again.
    postgres.stop()
    late = NodeProcess(communes[2]).start()
    procs.append(late)
    wait_until(lambda: indicator_count(province, COMMUNES[2]) == ROWS, timeout=120, what="the third commune's rows at the province")
    wait_until(lambda: status(province)["sink"]["state"] == "retrying", timeout=60, what="the sink to notice PostgreSQL is gone")
    assert "lienthong_sink_up 0.0" in metrics(province)
    postgres.start()
    assert_equal(postgres, province, procs)

    # 5. The warehouse lost: `sink resync` rebuilds it from the store.
    for p in procs:
        p.stop()
    pg: Any = postgres.connect()
    pg.execute("DROP SCHEMA lienthong CASCADE")
    pg.close()
    out = cli("sink", "resync", "--dir", str(province)).stdout
    assert "Loaded" in out
    assert_equal(postgres, province, [])
    pg = postgres.connect()
    try:
        assert pg.execute("SELECT count(*) FROM lienthong.completeness").fetchone()[0] > 0
        assert pg.execute("SELECT count(*) FROM lienthong.indicator_series WHERE unit = %s", (COMMUNES[2],)).fetchone()[0] == ROWS
    finally:
        pg.close()


@contextlib.contextmanager
def warehouse_on_small_disk(cluster: Cluster, size: str) -> Iterator[Path]:
    """A database `SMALL_DB` whose new tables go to a tablespace on a tmpfs of `size`; its
    catalogue and the server's WAL stay on the cluster's own disk (docs/analytics.md, "A full
    disk"). Dropped, and the tmpfs unmounted, even when the test fails."""
    with small_disk(cluster.root / "small-disk", size) as disk:
        owner = pwd.getpwnam(cluster.user)
        os.chown(disk, owner.pw_uid, owner.pw_gid)
        admin: Any = cluster.connect()
        try:
            admin.execute(f"CREATE TABLESPACE small_disk LOCATION '{disk}'")
            admin.execute(f"CREATE DATABASE {SMALL_DB}")
            admin.execute(f"ALTER DATABASE {SMALL_DB} SET default_tablespace = small_disk")
            yield disk
        finally:  # then small_disk unmounts, whatever happened here
            try:
                admin.execute(f"DROP DATABASE IF EXISTS {SMALL_DB} WITH (FORCE)")  # a node left running is cut off
                admin.execute("DROP TABLESPACE IF EXISTS small_disk")
            finally:
                admin.close()


def fill_up(ballast: Path) -> None:
    """Write `ballast` until its file system has no byte left."""
    with contextlib.suppress(OSError), ballast.open("wb") as filler:
        for block in (1 << 20, 65536, 4096, 512, 64, 1):
            with contextlib.suppress(OSError):
                while True:
                    filler.write(b"\0" * block)
                    filler.flush()


def sink_copying(cluster: Cluster) -> bool:
    """Whether the sink's PostgreSQL session is in the middle of a COPY."""
    pg: Any = cluster.connect()
    try:
        return bool(
            pg.execute(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = 'lienthong sink' AND datname = %s "
                "AND state = 'active' AND query LIKE 'COPY lienthong.%%'",
                (SMALL_DB,),
            ).fetchone()
        )
    finally:
        pg.close()


MONTHLY = ("KTXH.NS.01", "KTXH.DVC.01", "KTXH.DVC.02", "KTXH.YT.01", "KTXH.PA.01", "KTXH.PA.02", "YT.KHAM_BENH.LUOT", "YT.TIEMCHUNG.DU_MUI")


def agency_rows(count: int, start: int) -> list[dict[str, Any]]:
    """`count` monthly values of the demo catalogue's indicators for the province (an agency's file)."""
    return [
        {"kind": "indicator", "indicator": MONTHLY[i % 8], "unit": "86", "period": f"{1990 + i // 96}-{(i // 8) % 12 + 1:02d}", "value": i}
        for i in range(start, start + count)
    ]


def own_rows(node: Path) -> int:
    return indicator_count(node, node.name)


def sink_file(node: Path) -> dict[str, Any]:
    """What the running node's sink wrote last (sink.json: what `status` shows), {} before it wrote."""
    try:
        return dict(json.loads((node / sink_task.STATE_FILE).read_text()))
    except (OSError, ValueError):
        return {}


def one_error_line(node: Path, proc: NodeProcess, says: str) -> None:
    """Wait for the sink to be retrying with an error matching `says` (a regular expression, any
    case); check `status` and `sink status` show it as one line, with no traceback anywhere.
    (Polls sink.json, not `status`: while the fault lasts the sink's backoff grows, and the test
    waits that long again once it is gone.)"""
    pattern = re.compile(says, re.IGNORECASE)
    sink = wait_until(
        lambda: (s := sink_file(node)).get("state") == "retrying" and pattern.search(s.get("last_error") or "") and s,
        timeout=60,
        what=f"the sink's error saying {says!r}",
    )
    assert "\n" not in sink["last_error"]
    shown = lienthong("status", "--dir", str(node))  # in this process: quick, while the fault lasts
    assert len([line for line in shown.splitlines() if "PostgreSQL sink: retrying" in line and pattern.search(line)]) == 1, shown
    assert pattern.search(lienthong("sink", "status", "--dir", str(node)))
    assert "Traceback" not in shown + proc.log()


def test_the_sink_survives_a_full_disk_and_a_network_cut(make_node: MakeNode, postgres: Cluster) -> None:
    """PostgreSQL's disk full, then the network to it cut during a COPY: one error line in status,
    replication and the inbox go on, and once space and the network return PostgreSQL equals
    the read tables exactly."""
    with warehouse_on_small_disk(postgres, "24m") as disk:
        province = make_node("86")
        commune = make_node(COMMUNES[0], parent=listen_address(province))
        cli("ingest", "--dir", str(province), str(DEFINITIONS))
        cli("ingest", "--dir", str(province), "--agency", "1022", str(SAMPLES / "1022" / "open311-2026-11-20.json"))
        cli("ingest", "--dir", str(province), "--agency", "vanphong", str(SAMPLES / "vanphong" / "bc-ioc-thang-10-2026-ba-tri.report.json"))
        fill(commune, indicator_rows(commune.name, ROWS, agency="thongke"))
        fill(province, indicator_rows("86", ROWS, agency="thongke"))
        link = TcpProxy(postgres.port)  # the sink reaches PostgreSQL through it
        RELAYS.append(link)
        sink_config(province, dsn=postgres.dsn_for(SMALL_DB, link.port), password_file=str(postgres.password_file))
        inbox = province / "inbox" / "thongke"
        inbox.mkdir(parents=True, exist_ok=True)
        pp = NodeProcess(province).start()
        procs = [pp]
        assert_equal(postgres, province, procs, SMALL_DB)

        # 1. The disk of PostgreSQL's tables full: a commune's records and an agency file arrive all the same.
        ballast = disk / "ballast"
        fill_up(ballast)
        write_jsonl(inbox / "values.jsonl", agency_rows(ROWS, 0))
        procs.append(NodeProcess(commune).start())
        wait_until(lambda: own_rows(province) == 2 * ROWS, timeout=120, what="the agency file's rows at the province")
        wait_until(lambda: indicator_count(province, commune.name) == ROWS, timeout=120, what="the commune's rows at the province")
        one_error_line(province, pp, "PostgreSQL's disk is full: .*No space left on device")
        ballast.unlink()
        assert_equal(postgres, province, procs, SMALL_DB)

        # 2. The network cut while a COPY is in flight (a slow link, so that it lasts), and kept down a while.
        link.rate = 50_000
        write_jsonl(inbox / "more.jsonl", agency_rows(3000, ROWS))
        wait_until(lambda: sink_copying(postgres), timeout=120, interval=0.02, what="the sink's COPY in flight")
        link.blocked = True
        link.cut()
        committed = sink_position(postgres, SMALL_DB)
        one_error_line(province, pp, "connection|broken pipe")  # libpq's words for a reset link
        assert sink_position(postgres, SMALL_DB) == committed, "the step cut during its COPY committed"
        wait_until(lambda: own_rows(province) == 2 * ROWS + 3000, timeout=60, what="the second file's rows at the province")
        link.rate, link.blocked = 0, False
        assert_equal(postgres, province, procs, SMALL_DB)
        for proc in procs:
            proc.stop()


def test_an_unreachable_server_is_one_line_and_a_password_in_the_dsn_is_refused(make_node: MakeNode, tmp_path: Path) -> None:
    """No server at the address: `sink resync` says so in one Error/Try line. A dsn with a password in it is refused."""
    node = make_node("86")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink_config(node, dsn=f"host=127.0.0.1 port={port} dbname=x user=y")
    result = cli("sink", "resync", "--dir", str(node), check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: cannot reach PostgreSQL") and "Try:" in result.stderr
    sink_config(node, dsn="postgresql://y:hunter2@127.0.0.1/x")
    result = cli("sink", "status", "--dir", str(node), check=False)
    assert result.returncode != 0 and "must not hold a password" in result.stderr and "hunter2" not in result.stderr


def test_weekly_and_daily_completeness_reaches_postgresql(postgres: Cluster, tmp_path: Path) -> None:
    """lienthong.completeness holds the weekly and daily schedules' expected reports, judged as `reports completeness` judges them."""
    import psycopg

    store = Store.create(tmp_path / STORE_FILE, "86")
    try:
        weekly_and_daily(store, 2024)
        today = dt.date(2024, 12, 11)  # the day after the week's due day
        units, schedules, subs = Units.from_store(store), Schedules.from_store(store), submissions(store)
        want = {
            (e.unit.code, e.schedule.report_type, e.period, e.schedule.period_type, e.due, e.status)
            for period in ("2024W49", "2024-12-06")
            for e in completeness(units, list(schedules), subs, period, today=today).reports
        }
    finally:
        store.close()
    admin: Any = postgres.connect()
    admin.execute("CREATE DATABASE weekly_daily")
    pg: Any = psycopg.connect(postgres.dsn_for("weekly_daily"), password=PASSWORD, autocommit=True)
    sq = pg_sink.open_store(tmp_path / STORE_FILE)
    try:
        pg_sink.step(pg, sq, 1000, today=today)
        got = set(
            pg.execute(
                "SELECT unit, report_type, period, period_type, due, status FROM lienthong.completeness WHERE period IN ('2024W49', '2024-12-06')"
            ).fetchall()
        )
        kinds = dict(pg.execute("SELECT period_type, count(DISTINCT period) FROM lienthong.completeness GROUP BY 1").fetchall())
    finally:
        sq.close()
        pg.close()
        admin.execute("DROP DATABASE weekly_daily")
        admin.close()
    assert len(want) == 2 * len(WEEKLY_HAND) and got == want
    assert {(u, t): s for u, t, _, _, _, s in got} == {
        **{(u, "BC-TUAN"): weekly for u, (weekly, _) in WEEKLY_HAND.items()},
        **{(u, "BC-NGAY"): daily for u, (_, daily) in WEEKLY_HAND.items()},
    }
    assert kinds == {"weekly": pg_sink.PERIODS_BACK, "daily": pg_sink.PERIODS_BACK}  # the 12 weeks and 12 days up to today
