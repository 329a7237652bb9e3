"""The PostgreSQL sink (#13): the initial load of N indicator values into PostgreSQL, and the
sink's lag while a child streams its backlog to the province at full speed.

Self-contained: it starts its own PostgreSQL cluster (Debian's `postgresql`, initdb in a
temporary directory, as tests/postgres.py does), its own CA, province and child.

    .venv/bin/python bench/sink.py                       # 1,000,000 values loaded, 200,000 streamed
    .venv/bin/python bench/sink.py --values 200000 --stream 50000

Target (#13): 1M values loaded in ≤ 30 s on 2 cores; the lag bounded while the child streams.
It prints the load average before and after: on a busy machine the figures are lower bounds.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomlkit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/postgres.py: the cluster

from _common import LIENTHONG, free_port, init_district, init_province, loadavg, make_ca, prefill, save_result

from lienthong.node import pg_sink
from tests.postgres import PASSWORD, Cluster


def initial_load(cluster: Cluster, province: Path, values: int) -> dict[str, float]:
    filled = prefill(province / "lienthong.db", values)
    # Fill the read tables from the change log (the node does the same at start).
    from lienthong.sync.store import Store

    t0 = time.monotonic()
    store = Store.open(province / "lienthong.db")
    store.catch_up_read_tables()
    store.close()
    read_tables_s = time.monotonic() - t0
    pg = cluster.connect()
    sq = pg_sink.open_store(province / "lienthong.db")
    t0 = time.monotonic()
    done = pg_sink.step(pg, sq, 50_000, resync=True)
    load_s = time.monotonic() - t0
    size = pg.execute("SELECT pg_total_relation_size('lienthong.indicator_values')").fetchone()[0]  # type: ignore[attr-defined]
    table = pg.execute("SELECT pg_relation_size('lienthong.indicator_values')").fetchone()[0]  # type: ignore[attr-defined]
    pg.close()  # type: ignore[attr-defined]
    sq.close()
    return {
        "values": values,
        "prefill_s": round(filled["prefill_s"], 1),
        "read_tables_s": round(read_tables_s, 1),
        "load_s": round(load_s, 2),
        "rows": done.rows,
        "rows_per_s": round(done.rows / load_s),
        "pg_bytes_per_million_values_with_indexes": round(size / values * 1_000_000),
        "pg_table_bytes_per_million_values": round(table / values * 1_000_000),
    }


def steady_lag(cluster: Cluster, root: Path, ca: Path, province: Path, port: int, stream: int) -> dict[str, object]:
    child = init_district(root, ca, "86-28894", port, "86")
    prefill(child / "lienthong.db", stream)
    config = province / "lienthong.toml"
    password = root / "pg-password"
    password.write_text(PASSWORD)
    doc = tomlkit.parse(config.read_text())
    doc["sink"]["postgres"]["dsn"] = cluster.dsn  # type: ignore[index]
    doc["sink"]["postgres"]["password_file"] = str(password)  # type: ignore[index]
    config.write_text(tomlkit.dumps(doc))
    procs = [
        subprocess.Popen([LIENTHONG, "run", "--dir", str(d)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for d in (province, child)
    ]
    watch = pg_sink.open_store(province / "lienthong.db")
    pg = cluster.connect()
    samples: list[tuple[float, int, int]] = []
    t0 = time.monotonic()
    try:
        base = int(watch.execute("SELECT coalesce(max(seq), 0) FROM changelog").fetchone()[0])
        while time.monotonic() - t0 < 600:
            head = int(watch.execute("SELECT coalesce(max(seq), 0) FROM changelog").fetchone()[0])
            row = pg.execute("SELECT position FROM lienthong.sink_state").fetchone()  # type: ignore[attr-defined]
            position = int(row[0]) if row else 0
            samples.append((round(time.monotonic() - t0, 1), head, head - position))
            if head - base >= stream and head - position == 0:
                break
            time.sleep(0.5)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
        pg.close()  # type: ignore[attr-defined]
        watch.close()
    lags = [lag for _, _, lag in samples]
    streamed = [s for s in samples if s[1] - samples[0][1] < stream]
    return {
        "streamed": stream,
        "seconds": samples[-1][0],
        "max_lag": max(lags),
        "lag_while_streaming_p50": sorted(s[2] for s in streamed)[len(streamed) // 2] if streamed else 0,
        "caught_up_after_s": samples[-1][0],
        "samples": samples[:: max(1, len(samples) // 20)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--values", type=int, default=1_000_000)
    parser.add_argument("--stream", type=int, default=200_000)
    args = parser.parse_args()
    result: dict[str, object] = {"load_before": loadavg()}
    cluster = Cluster().start()
    try:
        with tempfile.TemporaryDirectory(prefix="lienthong-bench-sink-") as tmp:
            root = Path(tmp)
            ca = make_ca(root)
            port = free_port()
            province = init_province(root, ca, port, "86")
            result["initial_load"] = initial_load(cluster, province, args.values)
            print(json.dumps(result["initial_load"]), flush=True)
            result["steady_state"] = steady_lag(cluster, root, ca, province, port, args.stream)
    finally:
        cluster.destroy()
    result["load_after"] = loadavg()
    print(json.dumps(result, indent=2))
    save_result("sink", result)


if __name__ == "__main__":
    main()
