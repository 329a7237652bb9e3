"""The province-side processes of bench/peers.py, kept free of lienthong's imports so their
start-up is what a plain Python consumer's is.

    python bench/_peer_workers.py raw SRC DST     copy every row of SRC into a new DST
    python bench/_peer_workers.py nats URL DB N   mirror the district's stream at the province, pull N into DB

Each prints its figures as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sqlite3
import sys
import time
from pathlib import Path


def open_sqlite(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # as lienthong's store
    conn.execute("CREATE TABLE IF NOT EXISTS records (rid INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, body BLOB NOT NULL)")
    return conn


def own_usage() -> dict[str, float]:
    """CPU seconds and peak RSS (VmHWM: reset at exec, unlike ru_maxrss, which keeps the forking parent's)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    hwm_kb = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm_kb = int(line.split()[1])
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": hwm_kb / 1024}


def raw_copy_worker(src: Path, dst: Path) -> None:
    """Copy every row of `src` into a new `dst`, 10,000 per transaction; print the figures as JSON."""
    t0 = time.monotonic()
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    target = open_sqlite(dst)
    rows = source.execute("SELECT id, body FROM records ORDER BY rid")
    copied = 0
    while chunk := rows.fetchmany(10_000):
        target.execute("BEGIN")
        target.executemany("INSERT INTO records(id, body) VALUES (?, ?)", chunk)
        target.execute("COMMIT")
        copied += len(chunk)
    print(json.dumps({"records": copied, "elapsed_s": time.monotonic() - t0, **own_usage()}))


def nats_consumer_worker(url: str, db: Path, n: int) -> None:
    """At the province: mirror the district's stream, pull it into SQLite; print the figures as JSON."""
    asyncio.run(_consume(url, db, n))


async def _consume(url: str, db_path: Path, n: int) -> None:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, ExternalStream, StorageType, StreamConfig, StreamSource

    t0 = time.monotonic()
    nc = await nats.connect(url)
    js = nc.jetstream()
    mirror = StreamSource(name="REC", external=ExternalStream(api="$JS.district.API"))
    await js.add_stream(StreamConfig(name="REC", mirror=mirror, storage=StorageType.FILE))
    config = ConsumerConfig(ack_policy=AckPolicy.ALL, max_ack_pending=-1)
    sub = await js.pull_subscribe("rec.>", durable="sqlite", stream="REC", config=config)
    conn = open_sqlite(db_path)
    stored = 0
    ready = time.monotonic() - t0
    first = None
    while stored < n:
        try:
            msgs = await sub.fetch(1000, timeout=0.2)
        except nats.errors.TimeoutError:
            continue
        first = first or time.monotonic() - t0
        if os.environ.get("PEERS_DEBUG"):
            print(f"{time.monotonic() - t0:.2f} s: {len(msgs)} messages", file=sys.stderr, flush=True)
        conn.execute("BEGIN")
        conn.executemany("INSERT OR IGNORE INTO records(id, body) VALUES (?, ?)", ((m.data[:16], m.data[16:]) for m in msgs))
        conn.execute("COMMIT")
        await msgs[-1].ack()  # AckPolicy.ALL: acknowledges the batch, after it is durable here
        stored = conn.execute("SELECT max(rid) FROM records").fetchone()[0] or 0
    await nc.close()
    usage = own_usage()
    print(json.dumps({"records": stored, "elapsed_s": time.monotonic() - t0, "ready_s": ready, "first_s": first, **usage}))


if __name__ == "__main__":
    if sys.argv[1] == "raw":
        raw_copy_worker(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        nats_consumer_worker(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]))
