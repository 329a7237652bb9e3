"""One child streaming its backlog to a province: real `lienthong run` processes.

    .venv/bin/python bench/one_stream.py [--records 200000] [--pad 0] [--profile]

A throwaway CA, a province and one district node are created in a temp dir with
the CLI. The child's store is pre-filled with N records (library, 10,000 per
transaction) before any node runs. Then the province starts, then the child; the
clock runs from the child's start until the province's `children.applied` for
the child equals the child's change-log head (polled every 0.2 s). Reported:
records/s and MB/s (envelope bytes) durable at the province, peak RSS (VmHWM)
and CPU seconds of both processes, and `lienthong status --json` at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    STORE_FILE,
    NodeProc,
    ProvinceWatch,
    cli,
    code_under_test,
    command_line,
    free_port,
    init_district,
    init_province,
    loadavg,
    make_ca,
    mb,
    prefill,
    save_result,
    set_replication,
    start_profiler,
    stop_profiler,
    workers_cpu_line,
)

from lienthong.sync.replication import Tuning
from lienthong.sync.store import CACHE_KIB

CHILD_ID = "86-28894"


def run(
    records: int,
    pad: int,
    profile: bool,
    timeout: float,
    keep: bool,
    poll: float = 0.2,
    quiet: bool = False,
    batch_size: int | None = None,
    window: int | None = None,
    province_cache_mib: int | None = None,
    province_page_size: int | None = None,
    province_pragmas: list[str] | None = None,
) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="lienthong-bench-"))
    say = (lambda *a, **k: None) if quiet else print
    province = child = None
    spy = None
    try:
        ca = make_ca(root)
        port = free_port()
        pdir = init_province(root, ca, port)
        cdir = init_district(root, ca, CHILD_ID, port)
        for d in (pdir, cdir):
            set_replication(d, batch_size=batch_size, window=window)
        if province_page_size:
            set_page_size(pdir / STORE_FILE, province_page_size)
        say(f"prefilling the child with {records:,} records ...", flush=True)
        facts = prefill(cdir / STORE_FILE, records, pad)
        head = facts["head"]
        say(
            f"  {facts['records']:,} records, {mb(facts['envelope_bytes']):.1f} MB of envelopes "
            f"(avg {facts['avg_envelope_bytes']:.0f} B), head {head}, in {facts['prefill_s']:.1f} s",
            flush=True,
        )

        province = NodeProc(pdir, cache_mib=province_cache_mib, pragmas=province_pragmas)
        province.wait_listening()
        watch = ProvinceWatch(pdir / STORE_FILE)
        load_before = loadavg()
        child = NodeProc(cdir)
        t0 = child.started
        if profile:
            spy = start_profiler(province.pid, root / "province.pyspy.txt", duration=int(timeout))
        applied = 0
        samples: list[tuple[float, int, int, int]] = []  # (t, applied, province rss, child rss)
        while True:
            time.sleep(poll)
            province.check_alive()
            child.check_alive()
            province.sample()
            child.sample()
            applied = watch.applied().get(CHILD_ID, 0)
            now = time.monotonic()
            samples.append((now - t0, applied, province.rss_kb(), child.rss_kb()))
            if applied >= head:
                break
            if now - t0 > timeout:
                raise TimeoutError(f"the province applied {applied} of {head} after {timeout} s")
        elapsed = now - t0
        workers_at_applied = dict(province.workers_cpu_s)
        # The read tables follow in the background (sync/read_upkeep.py): when were they in step too?
        while watch.read_tables_lag() and time.monotonic() - t0 < timeout:
            time.sleep(poll / 4)
            province.check_alive()
        tables_in_step = time.monotonic() - t0
        # Both processes keep their peaks until they exit: read them now.
        province.sample()
        child.sample()
        watch.close()
        if spy is not None:
            stop_profiler(spy)
        status = json.loads(cli("status", "--dir", str(pdir), "--json"))
        child_status = json.loads(cli("status", "--dir", str(cdir), "--json"))
        first_batch = next((t for t, a, _, _ in samples if a > 0), None)
        result = {
            "command": command_line(),
            "code": code_under_test(),
            "records": records,
            "pad": pad,
            "batch_size": batch_size or f"default ({Tuning().batch_size})",
            "window": window or f"default ({Tuning().window})",
            "province_cache_mib": province_cache_mib or f"default ({CACHE_KIB // 1024} MiB writer cache)",
            "province_page_size": province_page_size or "default (4096)",
            "province_pragmas": province_pragmas or [],
            "avg_envelope_bytes": round(facts["avg_envelope_bytes"], 1),
            "envelope_mb": round(mb(facts["envelope_bytes"]), 2),
            "prefill_s": round(facts["prefill_s"], 2),
            "elapsed_s": round(elapsed, 2),
            "first_applied_after_s": round(first_batch, 2) if first_batch is not None else None,
            "read_tables_in_step_after_s": round(tables_in_step, 2),
            "records_per_s": round(records / elapsed),
            "mb_per_s": round(mb(facts["envelope_bytes"]) / elapsed, 2),
            "province_peak_rss_mb": round(province.hwm_kb / 1024, 1),
            "child_peak_rss_mb": round(child.hwm_kb / 1024, 1),
            "province_cpu_s": round(province.cpu_s, 2),
            "child_cpu_s": round(child.cpu_s, 2),
            # The province's worker processes: when all was applied, and when the read tables were in step.
            "province_workers_cpu_s_at_applied": workers_at_applied,
            "province_workers_cpu_s": dict(province.workers_cpu_s),
            "child_workers_cpu_s": dict(child.workers_cpu_s),
            "province_written_mb": round(mb(province.io.get("wchar", 0)), 1),
            "province_disk_written_mb": round(mb(province.io.get("write_bytes", 0)), 1),
            "province_write_calls": province.io.get("syscw", 0),
            "province_written_bytes_per_record": round(province.io.get("wchar", 0) / records) if records else 0,
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
            "status_children": status["children"],
            "status_province_records": status["records"],
            "status_child_parent": {k: v for k, v in (child_status["parent"] or {}).items() if k != "refused_records"},
            "timeline": [(round(t, 1), a, p, c) for t, a, p, c in samples[:: max(1, len(samples) // 40)]],
        }
        if spy is not None:
            result["profile"] = str(root / "province.pyspy.txt")
        return result
    finally:
        for node in (child, province):
            if node is not None:
                node.stop()
        if keep or profile:
            print(f"(node directories kept in {root})")
        else:
            shutil.rmtree(root, ignore_errors=True)


def set_page_size(store_path: Path, size: int) -> None:
    """What-if (no product change): give the province's still-empty store another page size. A
    dirty page is written whole to the WAL at each commit, so smaller pages write fewer bytes
    for rows scattered by a random key."""
    conn = sqlite3.connect(store_path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute(f"PRAGMA page_size={int(size)}")
        conn.execute("VACUUM")
        conn.execute("PRAGMA journal_mode=WAL")
        got = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    if got != size:
        raise RuntimeError(f"the province's store kept page size {got}, not {size}")


def report(r: dict[str, Any]) -> None:
    print()
    print(f"command: {r['command']}")
    print(f"code: {r['code']}")
    print(f"records: {r['records']:,} ({r['envelope_mb']} MB of envelopes, avg {r['avg_envelope_bytes']} B)")
    print(
        f"replication settings: batch_size {r['batch_size']}, window {r['window']}; province page cache {r['province_cache_mib']}, "
        f"page size {r.get('province_page_size', 'default (4096)')}; extra pragmas {r.get('province_pragmas') or 'none'}"
    )
    print(
        f"time from child start to all applied at the province: {r['elapsed_s']} s "
        f"(first batch applied after {r['first_applied_after_s']} s)"
    )
    print(f"throughput: {r['records_per_s']:,} records/s, {r['mb_per_s']} MB/s")
    print(f"the province's read tables were in step {r['read_tables_in_step_after_s']} s after the child's start")
    print(f"peak RSS: province {r['province_peak_rss_mb']} MB, child {r['child_peak_rss_mb']} MB")
    print(f"CPU: province {r['province_cpu_s']} s, child {r['child_cpu_s']} s (over {r['elapsed_s']} s wall)")
    print(
        f"CPU of the province's workers: {workers_cpu_line(r['province_workers_cpu_s_at_applied'])} when all was applied; "
        f"{workers_cpu_line(r['province_workers_cpu_s'])} when the read tables were in step; "
        f"the child's: {workers_cpu_line(r['child_workers_cpu_s'])}"
    )
    print(
        f"province wrote {r['province_written_mb']} MB ({r['province_written_bytes_per_record']} B per record, "
        f"{r['province_write_calls']:,} write calls; {r['province_disk_written_mb']} MB reached the disk)"
    )
    print(f"load average before / after: {r['loadavg_before']} / {r['loadavg_after']}")
    for c in r["status_children"]:
        print(f"province status: child {c['id']} applied={c['applied']} received={c['received']} rejected={c['rejected']}")
    p = r["status_child_parent"]
    print(
        f"child status: parent.pending={p.get('pending')} acked={p.get('acked')} sent={p.get('sent')} acknowledged={p.get('acknowledged')}"
    )
    if r.get("profile"):
        print(f"py-spy profile of the province (raw collapsed stacks): {r['profile']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=200_000, help="records pre-filled in the child (default 200,000)")
    ap.add_argument("--pad", type=int, default=0, help="characters of comment added to each record (default 0)")
    ap.add_argument("--profile", action="store_true", help="py-spy record the province while it applies")
    ap.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    ap.add_argument("--keep", action="store_true", help="keep the temp node directories")
    ap.add_argument("--batch-size", type=int, help="set [replication] batch_size on both nodes (node default 500)")
    ap.add_argument("--window", type=int, help="set [replication] window on both nodes (node default 4)")
    ap.add_argument("--province-cache-mib", type=int, help="what-if: run the province with PRAGMA cache_size of this many MiB")
    ap.add_argument("--province-page-size", type=int, help="what-if: rebuild the province's empty store with this page size first")
    ap.add_argument(
        "--province-pragma", action="append", help="what-if: run the province with this PRAGMA on every store connection (repeatable)"
    )
    args = ap.parse_args()
    r = run(
        args.records,
        args.pad,
        args.profile,
        args.timeout,
        args.keep,
        batch_size=args.batch_size,
        window=args.window,
        province_cache_mib=args.province_cache_mib,
        province_page_size=args.province_page_size,
        province_pragmas=args.province_pragma,
    )
    report(r)
    print(f"result saved to {save_result('one_stream', r)}")


if __name__ == "__main__":
    main()
