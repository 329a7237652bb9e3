"""`lienthong demo`: a province and its subordinate nodes on this machine.

It makes a throwaway CA, a provincial node and `children` subordinate nodes under
it, plus one node two tiers down (the Ba Tri commune's health station under the
commune), all as real `lienthong run` processes on loopback. It feeds each the
records made from the agency sample files and a generated volume, shows progress
while data flows up (and dispatched feedback flows down), checks that the
province holds every record exactly once, prints a per-node summary and stops
every node gracefully.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lienthong.sync.downstream import Downstream
from lienthong.sync.store import Store
from lienthong.sync.upstream import Upstream

from .runtime import STORE_FILE, running_info

DATA = Path(__file__).parent / "demo_data"
PROVINCE = ("86", "Tỉnh Vĩnh Long")
COMMUNES = [
    ("86-28894", "Xã Ba Tri"),
    ("86-29077", "Xã Thạnh Phú"),
    ("86-29254", "Phường Long Châu"),
    ("86-29278", "Phường Phước Hậu"),
    ("86-28756", "Phường An Hội"),
    ("86-29494", "Phường Trà Vinh"),
    ("86-29560", "Xã Cầu Kè"),
]
GRANDCHILD = ("86-28894.tyt", "Trạm Y tế xã Ba Tri")


@dataclass
class DemoNode:
    id: str
    name: str
    tier: int
    dir: Path
    parent: DemoNode | None = None
    listen: str = ""
    port: int = 0  # the port it bound, once started
    process: subprocess.Popen[bytes] | None = None
    children: list[DemoNode] = field(default_factory=list)


def _bound_port(node: DemoNode) -> int | None:
    """The port a started node bound (it listens on port 0 and says which in its run lock)."""
    info = running_info(node.dir)
    return int(info["port"]) if info and info.get("port") else None


def _cli(*args: str, log: Path | None = None) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "lienthong.node", *args], capture_output=True, text=True, check=False)
    if log is not None:
        with log.open("a", encoding="utf-8") as f:
            f.write(out.stdout + out.stderr)
    if out.returncode not in (0,):
        raise RuntimeError(f"`lienthong {' '.join(args)}` failed: {out.stderr.strip() or out.stdout.strip()}")
    return out


# The generated history uses the monthly indicators (the catalogue refuses a value for the wrong period type).
INDICATORS = [
    d["code"]
    for d in map(json.loads, (DATA / "definitions.jsonl").read_text(encoding="utf-8").splitlines())
    if d.get("type") == "indicator" and d["fields"].get("period_type") == "monthly"
]


def _generate(path: Path, node: DemoNode, count: int, seed: int) -> None:
    """`count` values of the approved indicators for the node's unit, by month and breakdown, as an agency would send."""
    rng = random.Random(seed)
    unit = node.id.split(".")[0]
    months = 240
    with path.open("w", encoding="utf-8") as f:
        for i in range(count):
            month = (i // len(INDICATORS)) % months
            line = {
                "kind": "indicator",
                "indicator": INDICATORS[i % len(INDICATORS)],
                "unit": unit,
                "period": f"{2006 + month // 12}-{month % 12 + 1:02d}",
                "disaggregation": f"N{i // (len(INDICATORS) * months):03d}",
                "value": round(rng.uniform(0, 100_000), 2),
            }
            f.write(json.dumps(line) + "\n")


def _own_records(node: DemoNode) -> set[tuple[bytes, int]]:
    store = Store.open(node.dir / STORE_FILE)
    try:
        return {(i, v) for i, v, o in store.db.execute("SELECT id, version, origin FROM records").fetchall() if o == node.id}
    finally:
        store.close()


def _state(node: DemoNode) -> dict[str, int]:
    store = Store.open(node.dir / STORE_FILE)
    try:
        up = Upstream(store).uplink_state()
        children = Downstream(store).children()
        total = store.db.execute("SELECT count(*) FROM records").fetchone()[0]
        definitions = store.counts()["definition"]
        return {
            "definitions": definitions,
            "records": total,
            "sent": up["sent"],
            "acknowledged": up["acked_records"],
            "from_parent": up["received"],
            "from_children": sum(c["received"] for c in children),
            "lag": Upstream(store).pending() if node.parent else 0,
        }
    finally:
        store.close()


def run_demo(n_children: int, volume: int, keep: bool, timeout: float) -> int:
    console = Console() if sys.stdout.isatty() else Console(width=120)
    root = Path(tempfile.mkdtemp(prefix="lienthong-demo-"))
    logs = root / "logs"
    logs.mkdir()
    nodes: list[DemoNode] = []
    try:
        console.print(f"[bold]lienthong demo[/] in {root}")
        _cli("ca", "init", str(root / "ca"), "--name", "Demo CA tỉnh Vĩnh Long")
        # Nodes that accept children listen on port 0: the system chooses a free port, the node binds it and
        # reports it, and its children are told it (no port is picked here and bound later by another process).
        province = DemoNode(*PROVINCE, tier=0, dir=root / PROVINCE[0], listen="127.0.0.1:0")
        nodes.append(province)
        for i in range(n_children):
            cid, name = COMMUNES[i] if i < len(COMMUNES) else (f"86-9{i:04d}", f"Xã mẫu {i}")
            child = DemoNode(cid, name, tier=1, dir=root / cid, parent=province)
            province.children.append(child)
            nodes.append(child)
        first = province.children[0]
        first.listen = "127.0.0.1:0"
        grandchild = DemoNode(*GRANDCHILD, tier=2, dir=root / GRANDCHILD[0], parent=first)
        first.children.append(grandchild)
        nodes.append(grandchild)

        for node in nodes:  # a parent comes before its children: each is created once its parent runs
            args = ["init", "--dir", str(node.dir), "--id", node.id, "--name", node.name, "--ca", str(root / "ca")]
            args += ["--mode", "provincial" if node.tier == 0 else "district"]
            if node.listen:
                args += ["--listen", node.listen]
            if node.parent is not None:
                args += ["--parent", f"127.0.0.1:{node.parent.port}", "--parent-id", node.parent.id]
                if node.tier == 2:
                    args += ["--unit", node.parent.id]  # the health station answers for its commune's figures
            _cli(*args)
            # Several nodes on one machine: each console on a port the system chooses.
            config = node.dir / "lienthong.toml"
            config.write_text(
                config.read_text(encoding="utf-8").replace('listen = "127.0.0.1:8080"', 'listen = "127.0.0.1:0"'), encoding="utf-8"
            )
            with (logs / f"{node.id}.log").open("wb") as log:
                node.process = subprocess.Popen(
                    [sys.executable, "-m", "lienthong.node", "run", "--dir", str(node.dir)], stdout=log, stderr=log
                )
            if node.listen:
                process = node.process
                if not _until(lambda: bool(_bound_port(node)) or process.poll() is not None, timeout):  # noqa: B023 (called at once)
                    return _failed(console, logs, f"node {node.id} did not start listening")
                node.port = _bound_port(node) or 0
                if not node.port:
                    return _failed(console, logs, f"node {node.id} stopped before it listened")
        console.print(
            f"Created a CA, province {province.id} and {len(nodes) - 1} subordinate nodes "
            f"({n_children} communes, and {grandchild.id} under {first.id})."
        )
        console.print(f"Started {len(nodes)} nodes (logs in {logs}).")
        web = (running_info(province.dir) or {}).get("web_port")
        if web:
            console.print(f"The province's console (while the demo runs): http://127.0.0.1:{web}/")

        # The province sends its definitions (units, indicator set, report schedule) down first.
        _cli("ingest", "--dir", str(province.dir), "--agency", "ioc", str(DATA / "definitions.jsonl"), log=logs / "ingest.log")
        n_definitions = sum(1 for _ in (DATA / "definitions.jsonl").open(encoding="utf-8"))
        if not _until(lambda: all(_state(n)["definitions"] >= n_definitions for n in nodes), timeout):
            return _failed(console, logs, "the definitions did not reach every node")
        console.print(f"The province sent {n_definitions} definitions down to every node.")

        # Agencies drop their files into the nodes' inboxes (written aside, then renamed into place).
        dropped = 0
        for node in nodes:
            source = DATA / "inbox" / node.id
            for sample in sorted(source.rglob("*")) if source.exists() else []:
                if sample.is_file():
                    _drop(sample, node.dir / "inbox" / sample.parent.name)
                    dropped += 1
            if node.tier > 0 and volume:
                generated = root / f"generated-{node.id}.jsonl"
                _generate(generated, node, volume, seed=len(node.id))
                _drop(generated, node.dir / "inbox" / ("thongke" if node.tier == 1 else "yte"))
                dropped += 1
        console.print(f"Agencies dropped {dropped} files into the inboxes: the agency samples, and generated indicator values.")
        if not _until(lambda: all(_inbox_empty(n) for n in nodes), timeout):
            return _failed(console, logs, "the inboxes were not emptied")
        for node in nodes:
            updates = DATA / "updates" / f"{node.id}.jsonl"
            if updates.exists():
                _cli("ingest", "--dir", str(node.dir), "--agency", "1022", str(updates), log=logs / "ingest.log")
        _receipts(console, nodes)

        expected = set().union(*(_own_records(n) for n in nodes))
        ok = _wait(console, nodes, province, len(expected), timeout)
        if not ok:
            keep = True
            return _failed(console, logs, f"data did not finish flowing within {timeout:.0f} s")
        held = Store.open(province.dir / STORE_FILE)
        try:
            at_province = held.record_versions()
        finally:
            held.close()
        missing = expected - at_province
        if missing:
            keep = True
            return _failed(console, logs, f"the province lacks {len(missing)} records")
        _summary(console, nodes)
        problem = _workflows(console, nodes, province, logs, timeout)
        if problem:
            keep = True
            return _failed(console, logs, problem)
        console.print(
            f"[green]OK[/]: the province holds all {len(expected)} records written at {len(nodes)} nodes, each exactly once and "
            "provably its origin's; dispatched feedback reached its communes and their resolution came back."
        )
        return 0
    finally:
        _stop(nodes)
        if keep:
            console.print(f"Kept {root}. Try: lienthong status --dir {root / province.id}")
        else:
            shutil.rmtree(root, ignore_errors=True)


FEEDBACK_ITEM = "1022-20261120-000153"  # the 1022 hotline's pothole report, dispatched to Xã Ba Tri


def _json(*args: str, log: Path) -> Any:
    return json.loads(_cli(*args, "--json", log=log).stdout)


def _workflows(console: Console, nodes: list[DemoNode], province: DemoNode, logs: Path, timeout: float) -> str | None:
    """The IOC's cycle on the data that just flowed: provenance, feedback status coming back,
    report completeness and an indicator roll-up. Returns what failed, or None."""
    log = logs / "workflows.log"
    pdir = str(province.dir)
    proof = _json("verify", "--dir", pdir, log=log)
    console.print(
        f"Provenance: the province re-verified {proof['records']:,} records under {proof['seals']:,} seals from "
        f"{len(proof['origins'])} origins — each record signed by the node that wrote it, unaltered."
    )
    commune = next((n for n in nodes if n.id == "86-28894"), None)
    if commune is not None:
        _cli("feedback", "update", "--dir", str(commune.dir), FEEDBACK_ITEM, "--status", "resolved", "--result", "Đã vá xong ổ gà", log=log)

        def agreed() -> bool:
            ends = [_json("feedback", "show", "--dir", str(n.dir), FEEDBACK_ITEM, log=log)["state"] for n in (province, commune)]
            return ends == ["resolved", "resolved"]

        if not _until(agreed, timeout):
            return "the commune's resolution of the dispatched feedback did not reach the province"
        table = Table("ticket", "assigned to", "state", "due", "overdue", title=f"citizen feedback at province {province.id}")
        for item in _json("feedback", "list", "--dir", pdir, log=log):
            table.add_row(
                item["source_id"], item["assignee"] or "—", item["state"], item["due_at"][:10], "yes" if item["overdue"] else "no"
            )
        console.print(table)
    completeness = _json("reports", "completeness", "--dir", pdir, "--period", "2026-10", log=log)
    table = Table("level", "expected", "on time", "late", "missing", "completeness %", "timeliness %", title="report completeness, 2026-10")
    for level in completeness["levels"]:
        table.add_row(level["level"], *(str(level[k]) for k in ("expected", "on_time", "late", "missing", "completeness", "timeliness")))
    console.print(table)
    rollup = _json("query", "--dir", pdir, "indicators", "--rollup", "--period", "2026-10", "--unit", province.id, log=log)
    table = Table("indicator", "breakdown", "value", "rule", "units reporting", title=f"indicators rolled up to {province.id}, 2026-10")
    for row in [r for r in rollup if r["unit"] == province.id and r["value"] is not None][:10]:
        table.add_row(row["indicator"], row["disaggregation"] or "—", str(row["value"]), row["aggregation"], str(row["reported_units"]))
    console.print(table)
    return None


def _failed(console: Console, logs: Path, what: str) -> int:
    console.print(f"[red]Error:[/] {what}.")
    console.print(f"Try: look at the node logs in {logs} (kept with --keep), or run with a larger --timeout.")
    return 1


def _until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def _drop(source: Path, inbox: Path) -> None:
    """What a well-behaved agency system does: write under a temporary name, then rename."""
    inbox.mkdir(parents=True, exist_ok=True)
    staging = inbox / f"{source.name}.part"
    shutil.copyfile(source, staging)
    os.replace(staging, inbox / source.name)


def _inbox_empty(node: DemoNode) -> bool:
    from lienthong.adapters.inbox_names import iter_candidates

    root = node.dir / "inbox"
    return all(not any(iter_candidates(folder)) for folder in root.iterdir() if folder.is_dir())


def _receipts(console: Console, nodes: list[DemoNode]) -> None:
    """Show each file's receipt; for files with refused rows, the Vietnamese reasons agency staff read."""
    table = Table("node", "agency/file", "adapter", "status", "imported", "refused", title="receipts (inbox/*/archive)")
    notes: list[str] = []
    for node in nodes:
        for path in sorted((node.dir / "inbox").glob("*/*/*/*.receipt.json")) + sorted(
            (node.dir / "inbox").glob("*/rejected/*.receipt.json")
        ):
            r = json.loads(path.read_text(encoding="utf-8"))
            counts = r["importCount"]
            table.add_row(node.id, f"{r['agency']}/{r['file']}", r["adapter"], r["status"], str(counts["imported"]), str(counts["refused"]))
            notes += [f"  {r['file']} dòng {c['line']}: {c['message']}" for c in r["conflicts"][:6]]
    console.print(table)
    if notes:
        console.print("Refused rows, as the receipts tell agency staff:")
        for line in notes:
            console.print(line)


def _wait(console: Console, nodes: list[DemoNode], province: DemoNode, expected: int, timeout: float) -> bool:
    dispatched = {c for c in ("86-28894", "86-29254") if any(n.id == c for n in nodes)}
    deadline = time.monotonic() + timeout
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,} records"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task(f"at province {province.id}", total=expected)
        last_line = 0.0
        while time.monotonic() < deadline:
            for node in nodes:
                if node.process and node.process.poll() is not None:
                    console.print(f"[red]Error:[/] node {node.id} exited with code {node.process.returncode}.")
                    return False
            states = {n.id: _state(n) for n in nodes}
            have = states[province.id]["records"]
            progress.update(task, completed=min(have, expected))
            if not console.is_terminal and time.monotonic() - last_line > 2:
                console.print(f"province {province.id}: {have:,}/{expected:,} records")
                last_line = time.monotonic()
            down_ok = all(states[c]["from_parent"] > 0 for c in dispatched)
            if have >= expected and all(s["lag"] == 0 for s in states.values()) and down_ok:
                progress.update(task, completed=expected)
                return True
            time.sleep(0.3)
    return False


def _summary(console: Console, nodes: list[DemoNode]) -> None:
    table = Table("node", "name", "held", "sent up", "acked", "from children", "from parent", "lag", title="per-node summary (records)")
    for node in nodes:
        s = _state(node)
        table.add_row(
            ("  " * node.tier) + node.id,
            node.name,
            f"{s['records']:,}",
            f"{s['sent']:,}",
            f"{s['acknowledged']:,}",
            f"{s['from_children']:,}",
            f"{s['from_parent']:,}",
            str(s["lag"]),
        )
    console.print(table)


def _stop(nodes: list[DemoNode]) -> None:
    for node in nodes:
        if node.process and node.process.poll() is None:
            node.process.send_signal(signal.SIGTERM)
    for node in nodes:
        if node.process:
            try:
                node.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                node.process.kill()
                with contextlib.suppress(Exception):
                    node.process.wait(timeout=5)


__all__ = ["run_demo"]
