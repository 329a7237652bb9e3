"""Human-readable output of `status` and `query` (rich tables)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape

from . import sink_task
from .cli_i18n import _, data_word, ngettext
from .display import console as new_console
from .display import is_time_field, local_time
from .display import table as display_table

QUERY_COLUMNS = {
    "indicators": ["indicator", "unit", "period", "disaggregation", "value", "agency", "origin"],
    "reports": ["report_type", "unit", "period", "title", "submitted_at", "origin"],
    "feedback": ["source_id", "unit", "category", "received_at", "description", "origin"],
}


def _yes(value: bool) -> str:
    return "[green]" + _("connected") + "[/]" if value else "[red]" + _("disconnected") + "[/]"


def _print_files(console: Console, files: dict[str, Any]) -> None:
    """Files still arriving (down from the parent, up from the children) and files refused."""
    mb = 1024 * 1024
    for key, words in (
        ("from_parent", _("  files pending from the parent: {0} ({1:,.1f} of {2:,.1f} MB here)")),
        ("from_children", _("  files pending from the children: {0} ({1:,.1f} of {2:,.1f} MB here)")),
    ):
        side = files.get(key) or {}
        if side.get("files"):
            console.print(words.format(side["files"], side["received"] / mb, side["bytes"] / mb))
    if files.get("last_error"):
        console.print(_("    last: {0}").format(files["last_error"]))
    for f in files.get("refused") or []:
        console.print(
            "  [red]" + _("file refused") + f"[/] {f['name']} ({f['sha256'][:12]}…) " + _("of {0}: {1}").format(f["origin"], f["reason"])
        )


def _record_count(kind: str, n: int) -> str:
    """'1 report', '2 feedback events': a record kind counted in words."""
    words = {
        "indicator": ngettext("{0} indicator value", "{0} indicator values", n),
        "report": ngettext("{0} report", "{0} reports", n),
        "feedback": ngettext("{0} feedback item", "{0} feedback items", n),
        "feedback_event": ngettext("{0} feedback event", "{0} feedback events", n),
        "definition": ngettext("{0} definition", "{0} definitions", n),
        "seal": ngettext("{0} seal", "{0} seals", n),
        "audit_entry": ngettext("{0} audit entry", "{0} audit entries", n),
        "approval": ngettext("{0} approval step", "{0} approval steps", n),
        "dispute": ngettext("{0} dispute act", "{0} dispute acts", n),
    }
    return words[kind].format(n) if kind in words else f"{n} {kind}"


def print_status(data: dict[str, Any]) -> None:
    console = new_console()
    node = data["node"]
    state = "[green]" + _("running") + f"[/] (pid {node['pid']})" if node["running"] else "[yellow]" + _("stopped") + "[/]"
    console.print(f"[bold]{node['id']}[/] {node['name']} — " + _("{0} node, {1}").format(data_word(node["mode"]), state))
    if node["listen"]:
        console.print(_("  listening on {0}").format(node["listen"]) + (_(" (port {0})").format(node["port"]) if node["port"] else ""))
    if node["certificate"]:
        cert = node["certificate"]
        console.print(_("  certificate: {0} ({1}), valid until {2}").format(cert["node_id"], cert["role"], local_time(cert["not_after"])))
    else:
        console.print("  [red]" + _("no certificate") + "[/]: " + _("this node cannot connect"))
    disk = data["disk"]
    if disk["problem"]:
        console.print("  [red]" + _("disk: {0}").format(disk["problem"]) + "[/]")
    counts = ", ".join(_record_count(kind, n) for kind, n in data["records"].items())
    console.print(_("  records: {0}; change log head {1}").format(counts, node["head"]))
    _print_owed(console, data.get("reports_owed") or [], data.get("schedule_problems") or [])
    feedback = data.get("feedback") or {}
    if feedback.get("open"):
        overdue = ", [red]" + _("{0} overdue").format(feedback["overdue"]) + "[/]" if feedback["overdue"] else ""
        console.print(_("  citizen feedback: {0} open").format(feedback["open"]) + overdue)
        for item in feedback["overdue_items"]:
            console.print(
                f"    {item['source_id'] or item['id']} ({item['state']}, {item['assignee'] or _('unassigned')}): "
                + _("due {0}").format(local_time(item["due_at"]))
            )
    if data.get("sink"):
        style = "red" if data["sink"]["state"] == "retrying" else "default"
        console.print(f"  [{style}]{escape(sink_task.describe(data['sink']))}[/]", soft_wrap=True)
    parent = data["parent"]
    if parent:
        console.print(
            _("  parent {0} at {1}: {2}, last contact {3}, {4} pending, {5} acknowledged, {6} received from it").format(
                parent["id"] or "?",
                parent["address"],
                _yes(parent["connected"]),
                local_time(parent["last_contact"]) or _("never"),
                parent["pending"],
                parent["acknowledged"],
                parent["received"],
            )
        )
        if parent.get("clock_warning"):
            console.print(f"  [red]{parent['clock_warning']}[/]")
        if parent["refused"]:
            refused = ngettext("{0} record refused by the parent", "{0} records refused by the parent", parent["refused"])
            console.print(
                "  [red]"
                + refused.format(parent["refused"])
                + "[/] "
                + _("(a clock, certificate or unit problem: sent again by itself once corrected; otherwise correct and ingest them again):")
            )
            for r in parent["refused_records"]:
                console.print(f"    {r['kind']} {r['id']} ({r['unit']}): {r['code']} — {r['reason']}")
    units = data.get("units") or []
    if units:
        links = {c["id"]: c for c in data["children"]}
        table = display_table(
            _("unit"),
            _("name"),
            _("link"),
            _("last contact"),
            _("applied"),
            _("received"),
            _("rejected"),
            title=ngettext(
                "{0} unit under this node (silent ones first)", "{0} units under this node (silent ones first)", len(units)
            ).format(len(units)),
        )
        for u in units:
            c = links.get(u["id"]) or {}
            link = _yes(u["connected"]) if c else "[red]" + _("never connected") + "[/]"
            if u["silent"] and c:
                link += " [red]" + _("silent") + "[/]"
            table.add_row(
                u["id"],
                u["name"],
                link,
                local_time(u["last_contact"]) or _("never"),
                str(c.get("applied", "")),
                str(c.get("received", "")),
                str(c.get("rejected", "")),
            )
        console.print(table)
        for c in data["children"]:
            if c.get("clock_warning"):
                console.print(f"  [red]{c['clock_warning']}[/]")
    _print_files(console, data.get("files") or {})
    ingest = data.get("ingest") or {}
    if ingest.get("files"):
        console.print(
            _("  files taken: {0} ({1} refused whole, {2} rows refused)").format(
                ingest["files"], ingest["files_refused"], ingest["rows_refused"]
            )
        )
        for f in ingest["recent"]:
            console.print(
                f"    {local_time(f['at'])} {f['agency']}/{f['name']} [{f['adapter']}] {f['status']}: "
                + _("{0} imported, {1} updated, {2} unchanged, {3} refused").format(
                    f["imported"], f["updated"], f["unchanged"], f["refused"]
                )
            )
    if data["quarantine"]:
        console.print("  [red]" + _("quarantined records") + "[/] " + _("(refused from children):"))
        for q in data["quarantine"]:
            console.print(_("    from {0}: {1} {2} — {3}").format(q["child"], q["id"], q["code"], q["reason"]))


def _print_owed(console: Console, owed: list[dict[str, Any]], problems: list[str]) -> None:
    if owed:
        console.print(_("  reports owed:"))
    for item in owed:
        days = item["days_left"]
        when = (
            "[red]" + _("overdue") + "[/] " + _("since {0}").format(item["due"])
            if item["overdue"]
            else _("due {0}").format(item["due"])
            + " ("
            + (_("today") if days == 0 else ngettext("in {0} day", "in {0} days", days).format(days))
            + ")"
        )
        console.print(
            _("    {0} {1} for {2}: {3} — {4}").format(item["report_type"], item["period"], item["unit"], when, item["report_name"])
        )
    for problem in problems:
        console.print("  [red]" + _("report schedule not understood") + f"[/]: {problem}")


def _status_style(status: str) -> str:
    colour = {"on_time": "green", "late": "yellow", "missing": "red", "pending": "dim", "incomplete": "red"}[status]
    words = {"on_time": _("on time"), "late": _("late"), "missing": _("missing"), "pending": _("pending"), "incomplete": _("incomplete")}[
        status
    ]
    return f"[{colour}]{words}[/]"


def _when(text: str | None) -> str:
    """A submission time as people read it (the display zone)."""
    return local_time(text)


def print_completeness(data: dict[str, Any]) -> None:
    """`reports completeness`: one row per expected report, then the rates per level and report type."""
    console = new_console()
    if not data["reports"]:
        console.print(_("No report is expected for {0} from the units this node answers for.").format(data["period"]))
        return
    flagged = any(row.get("stated_differs") for row in data["reports"])
    approvals = any(row.get("approval") not in (None, "", "submitted") for row in data["reports"])
    columns = ["unit", "name", "report", "due", "status", "witnessed", "resubmitted"]
    columns += ["stated (far from witnessed)"] if flagged else []
    columns += ["approval"] if approvals else []
    title = _("reports for {0}").format(data["period"]) + (_(" (approved data only)") if data.get("approved_only") else "")
    table = display_table(*map(_, columns), title=title)
    for row in data["reports"]:
        cells = [
            row["unit"],
            row["unit_name"],
            row["report_type"],
            row["due"],
            _status_style(row["status"]),
            _when(row.get("witnessed_at") or row["submitted_at"]),
            _when(row["last_submitted_at"]),
        ]
        cells += [f"[yellow]{_when(row['submitted_at'])}[/]" if row.get("stated_differs") else ""] if flagged else []
        cells += [row.get("approval") or ""] if approvals else []
        table.add_row(*cells)
    console.print(table)
    rates = display_table(
        *map(_, ("level", "report", "expected", "on time", "late", "missing", "pending", "completeness", "timeliness")),
        title=_("rates as of {0} (completeness = submitted / expected, timeliness = on time / expected)").format(data["as_of"]),
    )
    for row in [*({**r, "report_type": _("all")} for r in data["levels"]), *data["report_types"]]:
        rates.add_row(
            row["level"],
            row["report_type"],
            *(str(row[k]) for k in ("expected", "on_time", "late", "missing", "pending")),
            *(f"{row[k]:.1f} %" if row[k] is not None else "—" for k in ("completeness", "timeliness")),
        )
    console.print(rates)


def print_set_completeness(data: dict[str, Any]) -> None:
    """`reports completeness` for indicator sets: one row per unit and set, its missing indicators named."""
    console = new_console()
    if not data["units"]:
        console.print(_("No indicator set is expected for {0} from the units this node answers for.").format(data["period"]))
        return
    table = display_table(
        *map(_, ("unit", "name", "set", "due", "status", "values", "missing", "last witnessed", "approval")),
        title=_("indicator sets for {0}").format(data["period"]),
    )
    for row in data["units"]:
        table.add_row(
            row["unit"],
            row["unit_name"],
            row["dataset"],
            row["due"],
            _status_style(row["status"]),
            f"{row['values_present']}/{row['values_expected']}",
            ", ".join(row["missing"]),
            _when(row["last_witnessed_at"]),
            row["approval"] or "",
        )
    console.print(table)
    rates = display_table(
        *map(_, ("set", "level", "expected", "on time", "late", "incomplete", "missing", "pending", "completeness", "timeliness", "values"))
    )
    for row in data["levels"]:
        rates.add_row(
            row["dataset"],
            row["level"],
            *(str(row[k]) for k in ("expected", "on_time", "late", "incomplete", "missing", "pending")),
            *(f"{row[k]:.1f} %" if row[k] is not None else "—" for k in ("completeness", "timeliness", "value_completeness")),
        )
    console.print(rates)


def print_rows(what: str, rows: list[dict[str, Any]]) -> None:
    console = new_console()
    columns = QUERY_COLUMNS[what]
    titles = {
        "indicators": ngettext("{0} indicator value", "{0} indicator values", len(rows)),
        "reports": ngettext("{0} report", "{0} reports", len(rows)),
        "feedback": ngettext("{0} feedback item", "{0} feedback items", len(rows)),
    }
    table = display_table(*map(_, columns), title=titles[what].format(len(rows)))
    for row in rows:
        table.add_row(*(local_time(row.get(c)) if is_time_field(c) else str(row.get(c, "")) for c in columns))
    console.print(table)


def print_tokens(rows: list[dict[str, Any]]) -> None:
    """`token list`: one row per token, the newest last; times in the display zone."""
    colour = {"unused": "green", "used": "dim", "expired": "yellow", "revoked": "red"}
    table = display_table(
        *map(_, ("token", "node", "state", "created", "expires", "used at", "used from")),
        title=ngettext("{0} enrollment token", "{0} enrollment tokens", len(rows)).format(len(rows)),
    )
    for r in rows:
        table.add_row(
            r["token_id"],
            r["node_id"],
            f"[{colour[r['state']]}]{data_word(r['state'])}[/]",
            local_time(r["created"]),
            local_time(r["expires"]),
            local_time(r["used_at"]),
            r["used_by"],
        )
    new_console().print(table)
