"""A flood of refused handshakes while one child streams: the child's throughput and the audit log's size.

    .venv/bin/python bench/refusal_flood.py [--records 100000] [--probes 10000] [--threads 16]

A throwaway CA, a province and one district node are made with the CLI; the child's
store is pre-filled with N records. The province starts, then the child; from the
child's start, `--threads` threads send `--probes` plaintext probes (one TCP
connection each, "GET / HTTP/1.0", read until the node closes) to the province's
port on loopback. The run ends when the province has applied the child's whole
change log and every probe was answered. Reported: the child's records/s, the
probes/s the front refused, how long the slowest probe waited, and the
province's audit log after the stop (entries, `connection.refused` entries and
the refusals they count, bytes of audit.db and its WAL). `--probes 0` gives the
baseline throughput without a flood.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import tempfile
import threading
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
    prefill,
    save_result,
)

CHILD_ID = "86-28894"


def probe(port: int) -> float:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        while s.recv(4096):
            pass
    return time.monotonic() - started


def flood(port: int, probes: int, threads: int, out: dict[str, Any]) -> None:
    lock = threading.Lock()
    left = [probes]
    waits: list[float] = []
    errors = [0]

    def worker() -> None:
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            try:
                w = probe(port)
            except OSError:
                with lock:
                    errors[0] += 1
                continue
            with lock:
                waits.append(w)

    t0 = time.monotonic()
    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.update(elapsed=time.monotonic() - t0, answered=len(waits), errors=errors[0], max_wait=max(waits, default=0.0))


def audit_facts(pdir: Path) -> dict[str, Any]:
    cli("audit", "export", "--dir", str(pdir), str(pdir / "audit.jsonl"))
    entries = [json.loads(line) for line in (pdir / "audit.jsonl").read_text().splitlines()]
    refused = [e for e in entries if e.get("action") == "connection.refused"]
    files = [pdir / name for name in ("audit.db", "audit.db-wal")]
    return {
        "audit_entries": len(entries) - 1,  # the last line is the export's summary
        "refused_entries": len(refused),
        "refusals_counted": sum(e["details"].get("count", 1) for e in refused),
        "audit_bytes": sum(f.stat().st_size for f in files if f.exists()),
    }


def run(records: int, probes: int, threads: int, timeout: float) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="lienthong-bench-"))
    province = child = None
    try:
        ca = make_ca(root)
        port = free_port()
        pdir = init_province(root, ca, port)
        cdir = init_district(root, ca, CHILD_ID, port)
        head = prefill(cdir / STORE_FILE, records)["head"]
        province = NodeProc(pdir)
        province.wait_listening()
        watch = ProvinceWatch(pdir / STORE_FILE)
        load_before = loadavg()
        child = NodeProc(cdir)
        t0 = child.started
        probes_out: dict[str, Any] = {}
        flooder = threading.Thread(target=flood, args=(port, probes, threads, probes_out))
        flooder.start()
        while watch.applied().get(CHILD_ID, 0) < head:
            province.check_alive()
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"the province did not apply the child's {head} entries in {timeout} s")
            time.sleep(0.2)
        elapsed = time.monotonic() - t0
        flooder.join()
        watch.close()
        province.stop()
        province = None
        return {
            "command": command_line(),
            "code": code_under_test(),
            "records": records,
            "probes": probes,
            "threads": threads,
            "child_elapsed_s": round(elapsed, 2),
            "child_records_per_s": round(records / elapsed),
            "probes_answered": probes_out.get("answered", 0),
            "probe_errors": probes_out.get("errors", 0),
            "probes_per_s": round(probes_out.get("answered", 0) / probes_out["elapsed"]) if probes_out.get("elapsed") else 0,
            "slowest_probe_s": round(probes_out.get("max_wait", 0.0), 3),
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
            **audit_facts(pdir),
        }
    finally:
        for node in (child, province):
            if node is not None:
                node.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000, help="records pre-filled in the child (default 100,000)")
    ap.add_argument("--probes", type=int, default=10_000, help="plaintext probes sent while the child streams (default 10,000)")
    ap.add_argument("--threads", type=int, default=16, help="probing threads (default 16)")
    ap.add_argument("--timeout", type=float, default=900.0)
    args = ap.parse_args()
    r = run(args.records, args.probes, args.threads, args.timeout)
    print(f"command: {r['command']}")
    print(f"code: {r['code']}")
    print(f"child: {r['records']:,} records in {r['child_elapsed_s']} s = {r['child_records_per_s']:,} records/s")
    print(
        f"probes: {r['probes_answered']:,} refused of {r['probes']:,} ({r['probe_errors']} errors), "
        f"{r['probes_per_s']:,}/s, slowest waited {r['slowest_probe_s']} s"
    )
    print(
        f"audit after the stop: {r['audit_entries']} entries, {r['refused_entries']} connection.refused entries "
        f"counting {r['refusals_counted']:,} refusals, {r['audit_bytes']:,} bytes (audit.db + WAL)"
    )
    print(f"load average before / after: {r['loadavg_before']} / {r['loadavg_after']}")
    print(f"saved: {save_result('refusal_flood', r)}")


if __name__ == "__main__":
    main()
