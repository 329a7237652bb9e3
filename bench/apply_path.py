"""The province's apply path alone: `Store.apply_from_child`, no network, no child process.

    .venv/bin/python bench/apply_path.py [--records 200000] [--batch 500] [--variant NAME ...]

Builds N envelopes in memory as a child would send them, then applies them to a
fresh provincial store in batches exactly as `ChildSession` does (one call per
batch, checkpoint in the same transaction). Variants change only connection
settings or batch grouping from the outside (no product file is edited), to show
what each costs:

  as-is        the store as `Store.open` configures it
  cache64m     PRAGMA cache_size = -65536 (64 MiB page cache instead of SQLite's 2 MiB default)
  sync-normal  PRAGMA synchronous = NORMAL (NOT a proposal: it shows what the per-commit fsync costs)
  cache64m+5k  64 MiB cache and 5,000 records per transaction (10 wire batches grouped)
  cache256m+50k  256 MiB cache and 50,000 records per transaction (100 wire batches grouped),
               what a group-committing apply loop with a sized page cache would do
  parse-only   the Python loop before the transaction (decode + shape checks), no SQLite
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import code_under_test, command_line, fields_for, save_result

from lienthong.sync import clock, records
from lienthong.sync.admission import shape_problem
from lienthong.sync.downstream import Downstream
from lienthong.sync.store import Store

CHILD = "86-28894"
VARIANTS = ["as-is", "cache64m", "sync-normal", "cache64m+5k", "cache256m+50k", "parse-only"]


def envelopes(n: int, pad: int) -> list[bytes]:
    hlc = clock.HybridClock()
    out = []
    for i in range(n):
        k = records.build(CHILD, fields_for(CHILD, i, pad))
        out.append(k.envelope(CHILD, hlc.now()).SerializeToString())
    return out


def run_variant(variant: str, raws: list[bytes], batch: int) -> dict[str, Any]:
    if variant == "parse-only":
        t0 = time.perf_counter()
        parse = records.Envelope.FromString
        rows = []
        for raw in raws:
            env = parse(raw)
            shape_problem(env)
            rows.append((env.id, env.kind, env.origin, env.unit, env.agency, env.version, env.deleted, b"", CHILD, raw))
        dt = time.perf_counter() - t0
        return {"variant": variant, "records": len(raws), "seconds": round(dt, 2), "records_per_s": round(len(raws) / dt)}
    root = Path(tempfile.mkdtemp(prefix="lienthong-apply-"))
    try:
        store = Store.create(root / "p.db", "P86")
        if variant.startswith("cache64m"):
            store._w.execute("PRAGMA cache_size = -65536")
        if variant.startswith("cache256m"):
            store._w.execute("PRAGMA cache_size = -262144")
        if variant == "sync-normal":
            store._w.execute("PRAGMA synchronous = NORMAL")
        per_txn = 50_000 if variant.endswith("+50k") else 5000 if variant.endswith("+5k") else batch
        Downstream(store).register_child(CHILD, "bench")
        epoch = "e" * 32
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        lap = t0
        laps = []
        for lo in range(0, len(raws), per_txn):
            chunk = raws[lo : lo + per_txn]
            Downstream(store).apply_from_child(CHILD, epoch, lo, lo + len(chunk), b"", chunk)
            if (lo + per_txn) % 100_000 < per_txn:
                now = time.perf_counter()
                laps.append(round(100_000 / (now - lap)))
                lap = now
        dt = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        # Code whose read tables follow in the background (sync/read_upkeep.py): their catch-up
        # after the stream, timed apart (older code did it inside each apply).
        t1, cpu1 = time.perf_counter(), time.process_time()
        if hasattr(store, "catch_up_read_tables"):
            store.catch_up_read_tables()
        tables_s, tables_cpu = time.perf_counter() - t1, time.process_time() - cpu1
        applied = Downstream(store).child_state(CHILD).applied
        store.close()
        return {
            "variant": variant,
            "records": len(raws),
            "per_transaction": per_txn,
            "seconds": round(dt, 2),
            "cpu_s": round(cpu, 2),
            "read_tables_after_s": round(tables_s, 2),
            "read_tables_after_cpu_s": round(tables_cpu, 2),
            "records_per_s": round(len(raws) / dt),
            "records_per_s_per_100k": laps,
            "applied": applied,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=500, help="records per wire batch (the node's default is 500)")
    ap.add_argument("--pad", type=int, default=0)
    ap.add_argument("--variant", action="append", choices=VARIANTS, help="repeatable; default all")
    args = ap.parse_args()
    t0 = time.monotonic()
    raws = envelopes(args.records, args.pad)
    print(f"built {len(raws):,} envelopes (avg {sum(map(len, raws)) / len(raws):.0f} B) in {time.monotonic() - t0:.1f} s", flush=True)
    results = []
    for v in args.variant or VARIANTS:
        r = run_variant(v, raws, args.batch)
        results.append(r)
        print(
            f"{v:12s} {r['records_per_s']:>9,} records/s  ({r['seconds']} s, CPU {r.get('cpu_s')} s; per 100k: "
            f"{r.get('records_per_s_per_100k', '')}; read tables caught up after: {r.get('read_tables_after_s')} s, "
            f"CPU {r.get('read_tables_after_cpu_s')} s)",
            flush=True,
        )
    print(f"command: {command_line()}")
    print(f"code: {code_under_test()}")
    saved = save_result("apply_path", {"command": command_line(), "code": code_under_test(), "results": results})
    print(f"result saved to {saved}")


if __name__ == "__main__":
    main()
