"""A province serving many concurrent child streams.

    .venv/bin/python bench/many_children.py [--children 200] [--records 2000] [--procs 2] [--profile]

The province is a real `lienthong run` process (mTLS on 127.0.0.1). The children
run inside `--procs` bench worker processes, each child with its own store, its
own CA-issued certificate (`lienthong.node.trust.issue.issue_node`) and the library's
`Uplink` over `transport.connect`, exactly as `lienthong run` wires them. Every
child's store is pre-filled before anything runs. All workers open their stores
and then wait; the clock starts when they are told to go (all children connect
at once, like after a provincial outage) and stops when the province's
`children.applied` equals every child's change-log head (polled every 0.2 s).

Reported: aggregate records/s and MB/s, the province's peak RSS (VmHWM) and CPU
seconds, the workers' peak RSS. Target: province under 1 GB RSS with 200 children.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import multiprocessing
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PROVINCE_ID,
    STORE_FILE,
    NodeProc,
    ProvinceWatch,
    cli,
    code_under_test,
    command_line,
    cpu_seconds,
    free_port,
    init_province,
    loadavg,
    make_ca,
    mb,
    memory_map,
    prefill,
    proc_status_kb,
    save_result,
    start_profiler,
    stop_profiler,
    vm_hwm_kb,
)

from lienthong.node.trust.issue import issue_node
from lienthong.node.trust.tls import NodeTlsPaths
from lienthong.sync.store import Store


def child_id(i: int) -> str:
    return f"86-3{i:04d}"


def child_paths(kids: Path, cid: str) -> tuple[Path, NodeTlsPaths]:
    d = kids / cid
    return d / STORE_FILE, NodeTlsPaths(ca=d / "tls" / "ca.crt", cert=d / "tls" / "node.crt", key=d / "tls" / "node.key")


# ====================================================================== worker


def worker(kids: Path, ids: list[str], port: int, log_path: Path) -> None:
    """Run the given children's uplinks until told to stop (stdin 'stop' or SIGTERM)."""
    from lienthong.node import logs
    from lienthong.sync import transport
    from lienthong.sync.replication import Changes, Tuning
    from lienthong.sync.uplink import Uplink

    log_file = open(log_path, "a")  # noqa: SIM115
    logs.configure("warning", "json", stream=log_file)
    address = f"127.0.0.1:{port}"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        stores, uplinks = [], []
        for cid in ids:
            path, tls_paths = child_paths(kids, cid)
            store = Store.open(path)
            tls = tls_paths.load()
            stores.append(store)

            def connect(tls: transport.TlsFiles = tls) -> contextlib.AbstractAsyncContextManager[Any]:
                return transport.connect(address, tls, PROVINCE_ID)

            uplinks.append(Uplink(store, connect, Tuning(), Changes(), address))
        print("ready", flush=True)
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if line.strip() != "go":
            return
        tasks = [asyncio.create_task(u.run()) for u in uplinks]
        reader = loop.run_in_executor(None, sys.stdin.readline)
        await asyncio.wait([asyncio.ensure_future(reader), asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for s in stores:
            s.close()

    asyncio.run(main())
    log_file.close()
    os._exit(0)  # the stdin reader thread may still block


# ====================================================================== coordinator


def prepare_one(job: tuple[Path, Path, str, int, int]) -> tuple[str, int, int]:
    kids, ca, cid, records, pad = job
    path, tls_paths = child_paths(kids, cid)
    Store.create(path, cid).close()
    issue_node(ca, tls_paths, cid, "district", [])
    facts = prefill(path, records, pad, tls=tls_paths)
    return cid, facts["head"], facts["envelope_bytes"]


def prepare(kids: Path, ca: Path, n: int, records: int, pad: int, procs: int) -> dict[str, Any]:
    """Create, certify and pre-fill every child's store, `procs` children at a time."""
    t0 = time.monotonic()
    jobs = [(kids, ca, child_id(i), records, pad) for i in range(n)]
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        done = pool.map(prepare_one, jobs, chunksize=8)
    heads = {cid: head for cid, head, _ in done}
    return {"heads": heads, "envelope_bytes": sum(b for _, _, b in done), "prepare_s": time.monotonic() - t0}


def fingerprints(db: Path, origin: str | None = None) -> dict[str, tuple[int, str]]:
    """Per origin: how many records and the SHA-256 of their (id, version, envelope) in id order."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    sums: dict[str, Any] = {}
    counts: dict[str, int] = {}
    try:
        where, args = ("WHERE origin = ?", (origin,)) if origin else ("", ())
        for o, rid, version, envelope in conn.execute(
            f"SELECT origin, id, version, envelope FROM records {where} ORDER BY origin, id", args
        ):
            h = sums.get(o)
            if h is None:
                h = sums[o] = hashlib.sha256()
            h.update(rid)
            h.update(version.to_bytes(8, "big"))
            h.update(envelope)
            counts[o] = counts.get(o, 0) + 1
    finally:
        conn.close()
    return {o: (counts[o], h.hexdigest()) for o, h in sums.items()}


def check_exact(kids: Path, province_db: Path, ids: list[str]) -> dict[str, Any]:
    """Every child's own records, byte for byte, at the province: none missing, none extra."""
    at_province = fingerprints(province_db)
    differ = []
    for cid in ids:
        mine = fingerprints(child_paths(kids, cid)[0], cid).get(cid, (0, ""))
        if at_province.get(cid, (0, "")) != mine:
            differ.append({"child": cid, "child_records": mine[0], "province_records": at_province.get(cid, (0, ""))[0]})
    return {"children_checked": len(ids), "children_differ": len(differ), "first_differences": differ[:5]}


def run(n: int, records: int, procs: int, pad: int, profile: bool, timeout: float, keep: bool) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="lienthong-many-"))
    province = None
    workers: list[subprocess.Popen[str]] = []
    spy = None
    try:
        ca = make_ca(root)
        port = free_port()
        pdir = init_province(root, ca, port)
        kids = root / "kids"
        print(f"preparing {n} children with {records:,} records each ...", flush=True)
        prep = prepare(kids, ca, n, records, pad, max(2, procs))
        heads = prep["heads"]
        total = sum(heads.values())
        print(f"  {total:,} records, {mb(prep['envelope_bytes']):.1f} MB of envelopes, in {prep['prepare_s']:.1f} s", flush=True)

        province = NodeProc(pdir)
        province.wait_listening()
        watch = ProvinceWatch(pdir / STORE_FILE)
        ids = list(heads)
        share = [ids[k::procs] for k in range(procs)]
        for k, part in enumerate(share):
            workers.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--worker", str(kids), str(port), str(root / f"worker{k}.log"), *part],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for w in workers:
            if w.stdout is None or w.stdout.readline().strip() != "ready":
                raise RuntimeError("a worker failed to start; see its log")
        load_before = loadavg()
        province_cpu0 = cpu_seconds(province.pid)
        t0 = time.monotonic()
        for w in workers:
            assert w.stdin is not None
            w.stdin.write("go\n")
            w.stdin.flush()
        if profile:
            spy = start_profiler(province.pid, root / "province.pyspy.txt", duration=int(timeout))
        worker_hwm = [0] * len(workers)
        samples = []
        done = 0
        peak_map: dict[str, Any] = {}
        next_map = 0.0
        while True:
            time.sleep(0.2)
            province.check_alive()
            for k, w in enumerate(workers):
                if w.poll() is not None:
                    raise RuntimeError(f"worker {k} exited with {w.returncode}; see {root / f'worker{k}.log'}")
                worker_hwm[k] = max(worker_hwm[k], vm_hwm_kb(w.pid))
            province.sample()
            applied = watch.applied()
            done_records = sum(min(applied.get(c, 0), h) for c, h in heads.items())
            done = sum(1 for c, h in heads.items() if applied.get(c, 0) >= h)
            now = time.monotonic()
            if now >= next_map:  # reading smaps of a large process costs a few ms: once a second
                next_map = now + 1.0
                m = memory_map(province.pid)
                if m["rss_kb"] >= peak_map.get("rss_kb", 0):
                    peak_map = m
            samples.append((round(now - t0, 1), len(applied), done, done_records, proc_status_kb(province.pid, "VmRSS")))
            if done == n:
                break
            if now - t0 > timeout:
                raise TimeoutError(
                    f"after {timeout} s only {done} of {n} children are fully applied ({done_records:,} of {total:,} records)"
                )
        elapsed = now - t0
        province.sample()
        province_cpu = cpu_seconds(province.pid) - province_cpu0
        for k, w in enumerate(workers):
            worker_hwm[k] = max(worker_hwm[k], vm_hwm_kb(w.pid))
        worker_cpu = [cpu_seconds(w.pid) for w in workers]
        watch.close()
        if spy is not None:
            stop_profiler(spy)
        status = json.loads(cli("status", "--dir", str(pdir), "--json"))
        exact = check_exact(kids, pdir / STORE_FILE, ids)
        result = {
            "command": command_line(),
            "code": code_under_test(),
            "children": n,
            "records_per_child": records,
            "records": total,
            "worker_processes": procs,
            "envelope_mb": round(mb(prep["envelope_bytes"]), 2),
            "elapsed_s": round(elapsed, 2),
            "records_per_s": round(total / elapsed),
            "mb_per_s": round(mb(prep["envelope_bytes"]) / elapsed, 2),
            "province_peak_rss_mb": round(province.hwm_kb / 1024, 1),
            "province_cpu_s": round(province_cpu, 2),
            "province_written_mb": round(mb(province.io.get("wchar", 0)), 1),
            "province_written_bytes_per_record": round(province.io.get("wchar", 0) / total) if total else 0,
            "worker_peak_rss_mb": [round(h / 1024, 1) for h in worker_hwm],
            "worker_cpu_s": [round(c, 2) for c in worker_cpu],
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
            "province_memory_at_peak": peak_map,
            "exact": exact,
            "status_children_connected": sum(1 for c in status["children"] if c["connected"]),
            "status_children_rejected": sum(c["rejected"] for c in status["children"]),
            "status_province_records": status["records"],
            "timeline (t, registered, done, records, prov RSS kB)": samples[:: max(1, len(samples) // 40)],
        }
        if spy is not None:
            result["profile"] = str(root / "province.pyspy.txt")
        return result
    finally:
        for w in workers:
            if w.poll() is None:
                with contextlib.suppress(Exception):
                    assert w.stdin is not None
                    w.stdin.write("stop\n")
                    w.stdin.flush()
        for w in workers:
            try:
                w.wait(30)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
        if province is not None:
            province.stop()
        if keep or profile:
            print(f"(directories kept in {root})")
        else:
            shutil.rmtree(root, ignore_errors=True)


def report(r: dict[str, Any]) -> None:
    print()
    print(f"command: {r['command']}")
    print(f"code: {r['code']}")
    print(
        f"{r['children']} children x {r['records_per_child']:,} records = {r['records']:,} records "
        f"({r['envelope_mb']} MB of envelopes), children in {r['worker_processes']} worker processes"
    )
    print(f"time from go to all applied at the province: {r['elapsed_s']} s")
    print(f"aggregate throughput: {r['records_per_s']:,} records/s, {r['mb_per_s']} MB/s")
    print(f"province peak RSS: {r['province_peak_rss_mb']} MB (target < 1024 MB); province CPU {r['province_cpu_s']} s")
    print(f"province wrote {r['province_written_mb']} MB ({r['province_written_bytes_per_record']} B per record)")
    print(f"worker peak RSS: {r['worker_peak_rss_mb']} MB; worker CPU {r['worker_cpu_s']} s")
    print(f"load average before / after: {r['loadavg_before']} / {r['loadavg_after']}")
    print(
        f"province status: {r['status_children_connected']} children connected, {r['status_children_rejected']} records rejected, "
        f"records {r['status_province_records']}"
    )
    m = r["province_memory_at_peak"]
    print(
        f"province memory at its sampled peak (smaps, MB): heap {m.get('heap_kb', 0) / 1024:.0f}, "
        f"anonymous {m.get('anon_kb', 0) / 1024:.0f} (largest {[round(k / 1024) for k in m.get('anon_top_kb', [])]}), "
        f"files {m.get('files_kb', 0) / 1024:.0f}; {m.get('threads', 0)} threads"
    )
    e = r["exact"]
    verdict = "all exact" if e["children_differ"] == 0 else f"{e['children_differ']} DIFFER, first: {e['first_differences']}"
    print(f"every child's records at the province, byte for byte ({e['children_checked']} children): {verdict}")
    if r.get("profile"):
        print(f"py-spy profile of the province (raw collapsed stacks): {r['profile']}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        kids, port, log_path, *ids = sys.argv[2:]
        worker(Path(kids), ids, int(port), Path(log_path))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--children", type=int, default=200)
    ap.add_argument("--records", type=int, default=2000, help="records per child (default 2,000)")
    ap.add_argument("--procs", type=int, default=2, help="bench worker processes the children run in (default 2)")
    ap.add_argument("--pad", type=int, default=0)
    ap.add_argument("--profile", action="store_true", help="py-spy record the province")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # each child holds a store and a connection; the province three sockets per child
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    r = run(args.children, args.records, args.procs, args.pad, args.profile, args.timeout, args.keep)
    report(r)
    if r["exact"]["children_differ"]:
        print(f"result saved to {save_result('many_children', r)}")
        sys.exit(1)
    print(f"result saved to {save_result('many_children', r)}")


if __name__ == "__main__":
    main()
