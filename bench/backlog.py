"""Backlog catch-up: a child that was offline with a large change log reconnects.

    .venv/bin/python bench/backlog.py [--sizes 100000,1000000] [--profile]

Runs `one_stream.py`'s scenario (real `lienthong run` processes, mTLS on
127.0.0.1, the child pre-filled before it starts) once per size, then compares
catch-up time and peak RSS of both processes across sizes: memory must not grow
with the backlog (the sender reads from SQLite only as its window opens).
Target: 1,000,000 records in <= 30 s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import code_under_test, command_line, save_result
from one_stream import report, run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated backlog sizes")
    ap.add_argument("--pad", type=int, default=0)
    ap.add_argument("--profile", action="store_true", help="py-spy record the province during each run")
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--batch-size", type=int, help="set [replication] batch_size on both nodes (node default 500)")
    ap.add_argument("--window", type=int, help="set [replication] window on both nodes (node default 4)")
    ap.add_argument("--province-cache-mib", type=int, help="what-if: run the province with PRAGMA cache_size of this many MiB")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    for n in sizes:
        print(f"=== backlog of {n:,} records ===", flush=True)
        r = run(
            n,
            args.pad,
            args.profile,
            args.timeout,
            keep=False,
            batch_size=args.batch_size,
            window=args.window,
            province_cache_mib=args.province_cache_mib,
        )
        report(r)
        results.append(r)
    print()
    print(f"command: {command_line()}")
    print(f"code: {code_under_test()}")
    print(
        f"{'backlog':>10} {'seconds':>8} {'records/s':>10} {'MB/s':>6} {'prov RSS MB':>12} {'child RSS MB':>13} {'prov CPU s':>10} {'child CPU s':>11}"
    )
    for r in results:
        print(
            f"{r['records']:>10,} {r['elapsed_s']:>8} {r['records_per_s']:>10,} {r['mb_per_s']:>6} "
            f"{r['province_peak_rss_mb']:>12} {r['child_peak_rss_mb']:>13} {r['province_cpu_s']:>10} {r['child_cpu_s']:>11}"
        )
    if len(results) >= 2:
        a, b = results[0], results[-1]
        print(
            f"RSS growth {a['records']:,} -> {b['records']:,}: province {b['province_peak_rss_mb'] - a['province_peak_rss_mb']:+.1f} MB, "
            f"child {b['child_peak_rss_mb'] - a['child_peak_rss_mb']:+.1f} MB"
        )
    big = max(results, key=lambda r: r["records"])
    if big["records"] >= 1_000_000:
        verdict = "met" if big["elapsed_s"] <= 30 * big["records"] / 1_000_000 else "MISSED"
        print(f"target 1M in <= 30 s: {verdict} ({big['elapsed_s']} s for {big['records']:,})")
    print(f"result saved to {save_result('backlog', {'command': command_line(), 'runs': results})}")


if __name__ == "__main__":
    main()
