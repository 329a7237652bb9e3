"""The console's read API and pages at provincial size: p50 / p95 / max per endpoint.

Builds a province's store — 170 communes, 1,000,000 indicator values (20 monthly indicators ×
24 months × 170 communes × 12–13 breakdowns), 50,000 feedback items with ~95,000 events, 24
months of monthly reports from every commune (4,080, each with a file) — by writing it with the
library as the node itself writes (sealed; the read tables caught up after the writes, as the
running node does in the background), then
starts a real `lienthong run` and asks each endpoint `--requests` times in a row over HTTP on
loopback (after 3 warm-up requests, the first of which is reported apart: it computes what is
kept until the store changes), timing each answer in full.

    .venv/bin/python bench/console.py [--values 1000000] [--feedback 50000] [--requests 40] [--keep] [--root DIR]

`--root DIR` keeps the node (CA and province) in DIR, and on a later run with the same DIR
measures again without building the store again (building it takes minutes).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from _common import (
    PROVINCE_ID,
    STORE_FILE,
    NodeProc,
    cli,
    code_under_test,
    command_line,
    loadavg,
    make_ca,
    save_result,
)

from lienthong.node.runtime import running_info
from lienthong.node.trust.tls import NodeTlsPaths
from lienthong.sync import clock, records
from lienthong.sync.provenance import Signer, signing_key_path
from lienthong.sync.store import Store

COMMUNES = [f"{PROVINCE_ID}-{27000 + i}" for i in range(170)]
INDICATORS = [f"KTXH.B{i:02d}" for i in range(20)]
MONTHS = [f"{2024 + m // 12}-{m % 12 + 1:02d}" for m in range(24)]  # 2024-01 .. 2025-12
CHUNK = 20_000


def definitions() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"kind": "definition", "type": "unit", "code": PROVINCE_ID, "fields": {"name": "Tỉnh Bench", "level": "province", "parent": ""}}
    ]
    out += [
        {"kind": "definition", "type": "unit", "code": c, "fields": {"name": f"Xã {i}", "level": "commune", "parent": PROVINCE_ID}}
        for i, c in enumerate(COMMUNES)
    ]
    out += [
        {
            "kind": "definition",
            "type": "indicator",
            "code": code,
            "fields": {"name": f"Chỉ tiêu {code}", "measure": "lượt", "period_type": "monthly", "aggregation": "sum"},
        }
        for code in INDICATORS
    ]
    out.append(
        {
            "kind": "definition",
            "type": "report_schedule",
            "code": "BC-IOC-THANG@commune",
            "fields": {
                "report_type": "BC-IOC-THANG",
                "name": "Báo cáo IOC tháng",
                "period_type": "monthly",
                "level": "commune",
                "due": "day 25 of the period's month",
            },
        }
    )
    return out


def build_store(node_dir: Path, values: int, feedback_items: int) -> dict[str, float]:
    store = Store.open(node_dir / STORE_FILE)
    tls = NodeTlsPaths(node_dir / "tls" / "ca.crt", node_dir / "tls" / "node.crt", node_dir / "tls" / "node.key")
    store.signer = Signer.load(store.node_id, signing_key_path(tls.key), tls.cert, tls.ca)
    hlc = clock.HybridClock(store.latest_version())
    origin = store.node_id
    rng = random.Random(86)
    timings: dict[str, float] = {}

    def write(rows: Any, what: str) -> None:
        t0 = time.monotonic()
        batch: list[records.Keyed] = []
        for fields in rows:
            batch.append(records.build(origin, fields))
            if len(batch) >= CHUNK:
                store.write_local(batch, hlc)
                batch = []
        if batch:
            store.write_local(batch, hlc)
        timings[what] = round(time.monotonic() - t0, 1)
        print(f"  wrote {what} in {timings[what]} s", flush=True)

    per_cell = len(COMMUNES) * len(MONTHS) * len(INDICATORS)
    try:
        write(definitions(), "definitions")
        write(
            (
                {
                    "kind": "indicator",
                    "indicator": INDICATORS[(i // (len(COMMUNES) * len(MONTHS))) % len(INDICATORS)],
                    "unit": COMMUNES[i % len(COMMUNES)],
                    "period": MONTHS[(i // len(COMMUNES)) % len(MONTHS)],
                    "disaggregation": "" if i < per_cell else f"d{i // per_cell:02d}",  # the first pass: totals
                    "value": rng.randint(0, 5000),
                    "agency": "thongke" if i % 2 else "soyte",
                }
                for i in range(values)
            ),
            f"{values:,} indicator values",
        )
        write(
            (
                {
                    "kind": "report",
                    "report_type": "BC-IOC-THANG",
                    "unit": unit,
                    "period": month,
                    "title": f"Báo cáo IOC tháng {month}",
                    "submitted_at": f"{month}-{rng.randint(18, 28):02d}T16:00:00+07:00",
                    "agency": "vanphong",
                    "attachments": [
                        {"name": f"bc-{unit}-{month}.pdf", "sha256": f"{rng.getrandbits(256):064x}", "size": rng.randint(10**4, 10**6)}
                    ],
                }
                for unit in COMMUNES
                for month in MONTHS
            ),
            f"{len(COMMUNES) * len(MONTHS):,} reports",
        )
        tickets = []
        items = []
        for n in range(feedback_items):
            month = MONTHS[n % len(MONTHS)]
            ticket = f"1022-{month.replace('-', '')}-{n:06d}"
            unit = COMMUNES[rng.randrange(len(COMMUNES))]
            tickets.append((ticket, unit, month))
            items.append(
                {
                    "kind": "feedback",
                    "source_id": ticket,
                    "category": f"GT-{n % 9:02d}",
                    "category_name": "Hạ tầng giao thông",
                    "description": "Ổ gà lớn trên đường tỉnh, xe máy dễ té ngã vào ban đêm.",
                    "received_at": f"{month}-{rng.randint(1, 28):02d}T08:00:00+07:00",
                    "unit": unit,
                    "agency": "1022",
                }
            )
        write(items, f"{feedback_items:,} feedback items")
        events = []
        for n, (ticket, unit, month) in enumerate(tickets):
            base = {"kind": "feedback_event", "feedback": ticket, "feedback_origin": origin, "agency": "1022", "unit": unit}
            events.append({**base, "status": "assigned", "at": f"{month}-28T09:00:00+07:00", "assigned_unit": unit})
            if n % 10 < 9:
                events.append({**base, "status": "resolved", "at": f"{month}-28T15:00:00+07:00", "note": "Đã xử lý"})
        write(events, f"{len(events):,} feedback events")
        t0 = time.monotonic()
        store.catch_up_read_tables()
        timings["read tables"] = round(time.monotonic() - t0, 1)
    finally:
        store.close()
    return timings


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(p * len(ordered) + 0.5) - 1))]


def measure(base: str, path: str, requests: int) -> dict[str, Any]:
    def once() -> tuple[float, int, int]:
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(base + path, timeout=120) as resp:
                body = resp.read()
                code = resp.status
        except urllib.error.HTTPError as exc:
            body, code = exc.read(), exc.code
        return (time.perf_counter() - t0) * 1000, code, len(body)

    first_ms = once()[0]  # cold: what is computed once per store change is computed here
    for _ in range(2):
        once()
    times, codes, size = [], set(), 0
    for _ in range(requests):
        ms, code, size = once()
        times.append(ms)
        codes.add(code)
    return {
        "path": path,
        "status": sorted(codes),
        "bytes": size,
        "first_ms": round(first_ms, 1),
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(percentile(times, 0.95), 1),
        "max_ms": round(max(times), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--values", type=int, default=1_000_000)
    parser.add_argument("--feedback", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--root", type=Path, help="keep the node here; reuse a store built there before")
    args = parser.parse_args()
    print(f"command: {command_line()}\ncode: {code_under_test()}\nload before: {loadavg()}", flush=True)
    root = args.root or Path(tempfile.mkdtemp(prefix="lienthong-bench-console-"))
    keep = args.keep or args.root is not None
    province = root / "province"
    node: NodeProc | None = None
    try:
        timings: dict[str, float] = {}
        build_s = 0.0
        if not (province / STORE_FILE).exists():
            root.mkdir(parents=True, exist_ok=True)
            ca = make_ca(root)
            cli("init", "--dir", str(province), "--mode", "provincial", "--id", PROVINCE_ID, "--listen", "127.0.0.1:0", "--ca", str(ca))
            config = province / "lienthong.toml"
            text = config.read_text(encoding="utf-8").replace('listen = "127.0.0.1:8080"', 'listen = "127.0.0.1:0"')
            config.write_text(text, encoding="utf-8")
            t0 = time.monotonic()
            timings = build_store(province, args.values, args.feedback)
            build_s = time.monotonic() - t0
        else:
            print(f"reusing the store in {province}", flush=True)
        size_mb = (province / STORE_FILE).stat().st_size / 1e6
        print(f"store built in {build_s:.0f} s ({size_mb:.0f} MB)", flush=True)
        node = NodeProc(province)
        deadline = time.monotonic() + 120
        while not (running_info(province) or {}).get("web_port"):
            node.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("the node did not report its web port")
            time.sleep(0.2)
        base = f"http://127.0.0.1:{running_info(province)['web_port']}"  # type: ignore[index]
        unit, month = COMMUNES[17], MONTHS[-2]
        with urllib.request.urlopen(f"{base}/api/v1/feedback?limit=1", timeout=120) as resp:
            item = json.loads(resp.read())["items"][0]["id"]
        paths = [
            "/api/v1/node",
            "/api/v1/units?limit=200",
            f"/api/v1/indicators?period={month}&limit=100",
            f"/api/v1/indicators?unit={unit}&period={month}&limit=100",
            f"/api/v1/indicators?period={month}&indicator={INDICATORS[3]}&offset=2000&limit=100",
            f"/api/v1/indicators/rollup?period={month}",
            f"/api/v1/reports?period={month}&limit=200",
            f"/api/v1/completeness?period={month}",
            "/api/v1/feedback?limit=100",
            "/api/v1/feedback?overdue=true&limit=100",
            f"/api/v1/feedback?unit={unit}&limit=100",
            "/api/v1/feedback/counts",
            f"/api/v1/feedback/{item}",
            "/api/v1/files",
            "/metrics",
            "/",
            f"/reports?report_type=BC-IOC-THANG&period={month}",
            "/feedback",
            f"/feedback/{item}",
            f"/indicators?period={month}",
        ]
        rows = []
        for path in paths:
            row = measure(base, path, args.requests)
            rows.append(row)
            print(
                f"  {row['p95_ms']:>8.1f} ms p95  {row['p50_ms']:>8.1f} p50  {row['max_ms']:>8.1f} max  {row['first_ms']:>8.1f} first  {row['status']}  {path}",
                flush=True,
            )
        result = {
            "command": command_line(),
            "code": code_under_test(),
            "values": args.values,
            "feedback": args.feedback,
            "communes": len(COMMUNES),
            "months": len(MONTHS),
            "requests": args.requests,
            "build_s": round(build_s, 1),
            "build": timings,
            "store_mb": round(size_mb),
            "endpoints": rows,
            "load_after": loadavg(),
        }
        print(f"load after: {result['load_after']}\nsaved {save_result('console', result)}")
    finally:
        if node is not None:
            node.stop()
        if keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
