"""Human-readable output of `status` and `query` (rich tables)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

QUERY_COLUMNS = {
    "indicators": ["indicator", "unit", "period", "disaggregation", "value", "agency", "origin"],
    "reports": ["report_type", "unit", "period", "title", "submitted_at", "origin"],
    "feedback": ["source_id", "unit", "category", "received_at", "description", "origin"],
}


def _yes(value: bool) -> str:
    return "[green]connected[/]" if value else "[red]disconnected[/]"


def print_status(data: dict[str, Any]) -> None:
    console = Console()
    node = data["node"]
    state = f"[green]running[/] (pid {node['pid']})" if node["running"] else "[yellow]stopped[/]"
    console.print(f"[bold]{node['id']}[/] {node['name']} — {node['mode']} node, {state}")
    if node["listen"]:
        console.print(f"  listening on {node['listen']}" + (f" (port {node['port']})" if node["port"] else ""))
    if node["certificate"]:
        cert = node["certificate"]
        console.print(f"  certificate: {cert['node_id']} ({cert['role']}), valid until {cert['not_after']}")
    else:
        console.print("  [red]no certificate[/]: this node cannot connect")
    counts = ", ".join(f"{n} {kind}" for kind, n in data["records"].items())
    console.print(f"  records: {counts}; change log head {node['head']}")
    parent = data["parent"]
    if parent:
        console.print(
            f"  parent {parent['id'] or '?'} at {parent['address']}: {_yes(parent['connected'])}, "
            f"last contact {parent['last_contact'] or 'never'}, {parent['pending']} pending, "
            f"{parent['acknowledged']} acknowledged, {parent['received']} received from it"
        )
        if parent["refused"]:
            console.print(f"  [red]{parent['refused']} record(s) refused by the parent[/] (correct and ingest them again):")
            for r in parent["refused_records"]:
                console.print(f"    {r['kind']} {r['id']} ({r['unit']}): {r['code']} — {r['reason']}")
    if data["children"]:
        table = Table("child", "link", "last contact", "applied", "received", "rejected", title="children")
        for c in data["children"]:
            table.add_row(
                c["id"], _yes(c["connected"]), c["last_contact"] or "never", str(c["applied"]), str(c["received"]), str(c["rejected"])
            )
        console.print(table)
    ingest = data.get("ingest") or {}
    if ingest.get("files"):
        console.print(f"  files taken: {ingest['files']} ({ingest['files_refused']} refused whole, {ingest['rows_refused']} rows refused)")
        for f in ingest["recent"]:
            console.print(
                f"    {f['at']} {f['agency']}/{f['name']} [{f['adapter']}] {f['status']}: {f['imported']} imported, "
                f"{f['updated']} updated, {f['unchanged']} unchanged, {f['refused']} refused"
            )
    if data["quarantine"]:
        console.print("  [red]quarantined records[/] (refused from children):")
        for q in data["quarantine"]:
            console.print(f"    from {q['child']}: {q['id']} {q['code']} — {q['reason']}")


def print_rows(what: str, rows: list[dict[str, Any]]) -> None:
    console = Console()
    columns = QUERY_COLUMNS[what]
    table = Table(*columns, title=f"{len(rows)} {what}")
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in columns))
    console.print(table)
