"""Human-readable output of `status` and `query` (rich tables)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import sink_task

QUERY_COLUMNS = {
    "indicators": ["indicator", "unit", "period", "disaggregation", "value", "agency", "origin"],
    "reports": ["report_type", "unit", "period", "title", "submitted_at", "origin"],
    "feedback": ["source_id", "unit", "category", "received_at", "description", "origin"],
}


def _yes(value: bool) -> str:
    return "[green]connected[/]" if value else "[red]disconnected[/]"


def _print_files(console: Console, files: dict[str, Any]) -> None:
    """Files still arriving (down from the parent, up from the children) and files refused."""
    mb = 1024 * 1024
    for key, words in (("from_parent", "from the parent"), ("from_children", "from the children")):
        side = files.get(key) or {}
        if side.get("files"):
            console.print(f"  files pending {words}: {side['files']} ({side['received'] / mb:,.1f} of {side['bytes'] / mb:,.1f} MB here)")
    if files.get("last_error"):
        console.print(f"    last: {files['last_error']}")
    for f in files.get("refused") or []:
        console.print(f"  [red]file refused[/] {f['name']} ({f['sha256'][:12]}…) of {f['origin']}: {f['reason']}")


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
    disk = data["disk"]
    if disk["problem"]:
        console.print(f"  [red]disk: {disk['problem']}[/]")
    counts = ", ".join(f"{n} {kind}" for kind, n in data["records"].items())
    console.print(f"  records: {counts}; change log head {node['head']}")
    _print_owed(console, data.get("reports_owed") or [], data.get("schedule_problems") or [])
    feedback = data.get("feedback") or {}
    if feedback.get("open"):
        overdue = f", [red]{feedback['overdue']} overdue[/]" if feedback["overdue"] else ""
        console.print(f"  citizen feedback: {feedback['open']} open{overdue}")
        for item in feedback["overdue_items"]:
            console.print(
                f"    {item['source_id'] or item['id']} ({item['state']}, {item['assignee'] or 'unassigned'}): due {item['due_at']}"
            )
    if data.get("sink"):
        style = "red" if data["sink"]["state"] == "retrying" else "default"
        console.print(f"  [{style}]{escape(sink_task.describe(data['sink']))}[/]", soft_wrap=True)
    parent = data["parent"]
    if parent:
        console.print(
            f"  parent {parent['id'] or '?'} at {parent['address']}: {_yes(parent['connected'])}, "
            f"last contact {parent['last_contact'] or 'never'}, {parent['pending']} pending, "
            f"{parent['acknowledged']} acknowledged, {parent['received']} received from it"
        )
        if parent.get("clock_warning"):
            console.print(f"  [red]{parent['clock_warning']}[/]")
        if parent["refused"]:
            console.print(
                f"  [red]{parent['refused']} record(s) refused by the parent[/] "
                "(a clock, certificate or unit problem: sent again by itself once corrected; otherwise correct and ingest them again):"
            )
            for r in parent["refused_records"]:
                console.print(f"    {r['kind']} {r['id']} ({r['unit']}): {r['code']} — {r['reason']}")
    if data["children"]:
        table = Table("child", "link", "last contact", "applied", "received", "rejected", title="children")
        for c in data["children"]:
            table.add_row(
                c["id"], _yes(c["connected"]), c["last_contact"] or "never", str(c["applied"]), str(c["received"]), str(c["rejected"])
            )
        console.print(table)
        for c in data["children"]:
            if c.get("clock_warning"):
                console.print(f"  [red]{c['clock_warning']}[/]")
    _print_files(console, data.get("files") or {})
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


def _print_owed(console: Console, owed: list[dict[str, Any]], problems: list[str]) -> None:
    if owed:
        console.print("  reports owed:")
    for item in owed:
        days = item["days_left"]
        when = (
            f"[red]overdue[/] since {item['due']}"
            if item["overdue"]
            else f"due {item['due']} ({'today' if days == 0 else f'in {days} day' + ('s' if days != 1 else '')})"
        )
        console.print(f"    {item['report_type']} {item['period']} for {item['unit']}: {when} — {item['report_name']}")
    for problem in problems:
        console.print(f"  [red]report schedule not understood[/]: {problem}")


STATUS_STYLE = {"on_time": "[green]on time[/]", "late": "[yellow]late[/]", "missing": "[red]missing[/]", "pending": "[dim]pending[/]"}


def _when(text: str | None) -> str:
    """A submission time as a Vietnam date and minute (the deadlines' time zone)."""
    if not text:
        return ""
    from datetime import datetime

    from lienthong.sync.schedule import VIETNAM

    return datetime.fromisoformat(text).astimezone(VIETNAM).strftime("%Y-%m-%d %H:%M")


def print_completeness(data: dict[str, Any]) -> None:
    """`reports completeness`: one row per expected report, then the rates per level and report type."""
    console = Console()
    if not data["reports"]:
        console.print(f"No report is expected for {data['period']} from the units this node answers for.")
        return
    table = Table("unit", "name", "report", "due", "status", "submitted (UTC+7)", "resubmitted", title=f"reports for {data['period']}")
    for row in data["reports"]:
        table.add_row(
            row["unit"],
            row["unit_name"],
            row["report_type"],
            row["due"],
            STATUS_STYLE[row["status"]],
            _when(row["submitted_at"]),
            _when(row["last_submitted_at"]),
        )
    console.print(table)
    rates = Table(
        "level",
        "report",
        "expected",
        "on time",
        "late",
        "missing",
        "pending",
        "completeness",
        "timeliness",
        title=f"rates as of {data['as_of']} (completeness = submitted / expected, timeliness = on time / expected)",
    )
    for row in [*({**r, "report_type": "all"} for r in data["levels"]), *data["report_types"]]:
        rates.add_row(
            row["level"],
            row["report_type"],
            *(str(row[k]) for k in ("expected", "on_time", "late", "missing", "pending")),
            *(f"{row[k]:.1f} %" if row[k] is not None else "—" for k in ("completeness", "timeliness")),
        )
    console.print(rates)


def print_rows(what: str, rows: list[dict[str, Any]]) -> None:
    console = Console()
    columns = QUERY_COLUMNS[what]
    table = Table(*columns, title=f"{len(rows)} {what}")
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in columns))
    console.print(table)
