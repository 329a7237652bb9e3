"""`lienthong audit events`: the security events and audit heads the nodes below sent up, per node."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import runtime
from .cli_common import DIR_OPTION, echo_json, fail, opened_store
from .cli_i18n import _, ngettext
from .display import local_time
from .trust.audit_copies import held


@click.command("events")
@DIR_OPTION
@click.option("--unit", default="", help="Only this node (its id or its unit code).")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(0), help="Latest events shown per node (0: none).")
@click.option("--json", "as_json", is_flag=True, help="Print every node's head, chain check and events as JSON.")
def events(node_dir: Path, unit: str, limit: int, as_json: bool) -> None:
    """Each node's audit head and latest security events, as copied up to this node, and whether
    each node's copied audit chain holds together. Exit 1 when a node's log was rewritten."""
    path = node_dir / runtime.STORE_FILE
    if not path.exists():
        fail(f"no store in {node_dir}", "give the node directory with --dir")
    with opened_store(node_dir) as store:
        nodes = held(store, unit or None)
    if unit and not nodes:
        fail(f"no audit entries from node or unit {unit!r} are held here", "check the id, or wait until that node has connected")
    if as_json:
        echo_json([n.as_dict(limit) for n in nodes])
    else:
        for node in nodes:
            data = node.as_dict(limit)
            problems = len(data["problems"])
            verdict = _("chain intact") if data["intact"] else ngettext("{0} problem", "{0} problems", problems).format(problems)
            missing = sum(b - a + 1 for a, b in data["missing"])
            if missing:
                verdict += ", " + ngettext("{0} entry not received yet", "{0} entries not received yet", missing).format(missing)
            entries = ngettext("{0} audit entry", "{0} audit entries", data["entries"]).format(data["entries"])
            click.echo(_("{0} (unit {1}): {2}, head {3}, {4}").format(node.node, node.unit, entries, data["head_text"], verdict))
            for problem in data["problems"]:
                click.echo(f"  {problem['problem']}: {problem['reason']}", err=True)
            for e in data["events"]:
                details = e["details"] if isinstance(e["details"], dict) else {}
                count = f" ×{details['count']}" if "count" in details else ""
                why = details.get("error") or details.get("reason") or ""
                click.echo(f"  {e['seq']:>6} {local_time(e['time'], seconds=True)} {e['action']:<22} {e['subject']}{count} {why}".rstrip())
        if nodes:
            click.echo(
                _("Prove a node's log was not rewritten since its head: on that node, lienthong audit verify --dir DIR --head SEQ:HASH")
            )
    if any(not n.as_dict(0)["intact"] for n in nodes):
        sys.exit(1)
