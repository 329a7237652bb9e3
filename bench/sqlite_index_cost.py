"""Where the province's apply time goes inside SQLite: the store's own schema and
UPSERT, driven with raw `executemany` (no Python per-record work), one variant at a time.

    .venv/bin/python bench/sqlite_index_cost.py [--records 200000] [--variant NAME ...]

For each variant: rows/s and the bytes the process passed to write()/pwrite()
per row (/proc/self/io wchar: WAL frames plus checkpoint copies).

  as-is            Store.create's schema and pragmas, store.UPSERT, 500 rows per transaction
  cache64m         500/txn, PRAGMA cache_size=-65536 (64 MiB; SQLite's default is 2 MiB)
  txn5k / txn50k   the same with 5,000 / 50,000 rows per transaction (default 2 MiB cache:
                   a transaction dirtying more pages than fit spills them to the WAL early)
  txn5k-cache64m / txn50k-cache256m   larger transactions with a page cache that holds them
  no-autockpt      500/txn, wal_autocheckpoint=0 and a checkpoint (PASSIVE) from another
                   connection every second, as a background thread would
  no-unique-id     500/txn, the records table without the UNIQUE index on the random
                   16-byte id (plain INSERT): the ceiling if the id lookup were not random
  staged           500 rows per transaction appended to an arrival-ordered staging table
                   (what would be acknowledged), merged into `records` with store.UPSERT
                   in id order every 50,000 rows
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import code_under_test, command_line, fields_for, save_result

from lienthong.sync import clock, records
from lienthong.sync.store import UPSERT, Store

CHILD = "86-28894"
VARIANTS = ["as-is", "cache64m", "txn5k", "txn5k-cache64m", "txn50k", "txn50k-cache256m", "no-autockpt", "no-unique-id", "staged"]
COLS = "id, kind, origin, unit, agency, version, deleted, chash, via, envelope"


def wchar() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


def make_rows(n: int, pad: int) -> list[tuple[Any, ...]]:
    hlc = clock.HybridClock()
    out = []
    for i in range(n):
        e = records.build(CHILD, fields_for(CHILD, i, pad)).envelope(CHILD, hlc.now())
        out.append((e.id, e.kind, e.origin, e.unit, e.agency, e.version, e.deleted, b"", CHILD, e.SerializeToString()))
    return out


def open_store_conn(root: Path, variant: str) -> sqlite3.Connection:
    Store.create(root / "p.db", "P86").close()
    conn = sqlite3.connect(root / "p.db", isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # as Store._connect
    if variant == "no-unique-id":
        conn.executescript(
            """
            DROP TABLE records;
            CREATE TABLE records (rid INTEGER PRIMARY KEY, id BLOB NOT NULL, kind INTEGER NOT NULL, origin TEXT NOT NULL,
                unit TEXT NOT NULL, agency TEXT NOT NULL, version INTEGER NOT NULL, deleted INTEGER NOT NULL,
                chash BLOB NOT NULL, via TEXT NOT NULL, envelope BLOB NOT NULL);
            CREATE INDEX records_by_kind_unit ON records(kind, unit);
            CREATE TRIGGER records_logged_insert AFTER INSERT ON records BEGIN
                INSERT INTO changelog(rid, version, up) VALUES (new.rid, new.version, new.via != '^');
            END;
            """
        )
    if variant == "staged":
        conn.execute("CREATE TABLE staging (seq INTEGER PRIMARY KEY, " + ", ".join(f"{c} ANY" for c in COLS.split(", ")) + ")")
    return conn


def run_variant(variant: str, rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="lienthong-sqlite-"))
    stop = threading.Event()
    checkpointer = None
    try:
        conn = open_store_conn(root, variant)
        per = 50000 if variant.startswith("txn50k") else 5000 if variant.startswith("txn5k") else 500
        if variant.endswith("cache64m"):
            conn.execute("PRAGMA cache_size=-65536")
        if variant.endswith("cache256m"):
            conn.execute("PRAGMA cache_size=-262144")
        sql = UPSERT
        if variant == "no-unique-id":
            sql = f"INSERT INTO records({COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        if variant == "no-autockpt":
            conn.execute("PRAGMA wal_autocheckpoint=0")

            def checkpoint_loop() -> None:
                c = sqlite3.connect(root / "p.db", isolation_level=None)
                c.execute("PRAGMA synchronous=FULL")
                while not stop.wait(1.0):
                    c.execute("PRAGMA wal_checkpoint(PASSIVE)")
                c.close()

            checkpointer = threading.Thread(target=checkpoint_loop, daemon=True)
            checkpointer.start()
        w0 = wchar()
        t0 = time.perf_counter()
        lap, laps, staged = t0, [], 0
        for lo in range(0, len(rows), per):
            chunk = rows[lo : lo + per]
            conn.execute("BEGIN IMMEDIATE")
            if variant == "staged":
                conn.executemany(f"INSERT INTO staging({COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", chunk)
                staged += len(chunk)
            else:
                conn.executemany(sql, chunk)
            conn.execute("COMMIT")
            if variant == "staged" and (staged >= 50_000 or lo + per >= len(rows)):
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    f"INSERT INTO records({COLS}) SELECT {COLS} FROM staging WHERE true ORDER BY id "
                    + UPSERT.split("VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", 1)[1]
                )
                conn.execute("DELETE FROM staging")
                conn.execute("COMMIT")
                staged = 0
            if (lo + per) % 100_000 < per:
                now = time.perf_counter()
                laps.append(round(100_000 / (now - lap) / 1000, 1))
                lap = now
        dt = time.perf_counter() - t0
        written = wchar() - w0
        stop.set()
        if checkpointer is not None:
            checkpointer.join()
        n = conn.execute("SELECT count(*) FROM records").fetchone()[0]
        conn.close()
        return {
            "variant": variant,
            "rows": len(rows),
            "stored": n,
            "seconds": round(dt, 2),
            "rows_per_s": round(len(rows) / dt),
            "k_rows_per_s_per_100k": laps,
            "written_mb": round(written / 1e6, 1),
            "written_bytes_per_row": round(written / len(rows)),
        }
    finally:
        stop.set()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--pad", type=int, default=0)
    ap.add_argument("--variant", action="append", choices=VARIANTS, help="repeatable; default all")
    args = ap.parse_args()
    t0 = time.monotonic()
    rows = make_rows(args.records, args.pad)
    print(f"built {len(rows):,} rows in {time.monotonic() - t0:.1f} s", flush=True)
    results = []
    for v in args.variant or VARIANTS:
        r = run_variant(v, rows)
        results.append(r)
        print(
            f"{v:13s} {r['rows_per_s']:>8,} rows/s  {r['written_bytes_per_row']:>6,} B written per row  "
            f"({r['seconds']} s; k rows/s per 100k: {r['k_rows_per_s_per_100k']})",
            flush=True,
        )
    print(f"command: {command_line()}")
    print(f"code: {code_under_test()}")
    print(f"result saved to {save_result('sqlite_index_cost', {'command': command_line(), 'code': code_under_test(), 'results': results})}")


if __name__ == "__main__":
    main()
