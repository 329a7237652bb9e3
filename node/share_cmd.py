"""`lienthong share`: a node (the province, or any tier with units below it) shares indicators or
reports it holds with units of its subtree (sync/sharing.py)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from lienthong.sync.clock import HybridClock
from lienthong.sync.sharing import share_record

from .cli_common import DIR_OPTION, audited, echo_json, fail, load_settings, writing_store
from .cli_i18n import ngettext


@click.command()
@DIR_OPTION
@click.argument("what", type=click.Choice(["indicators", "reports"]))
@click.option("--period", required=True, help="The period shared: 2026-10, 2026Q3, 2026, Tháng 10/2026 …")
@click.option("--indicator", "indicators", multiple=True, metavar="CODE", help="Only this indicator (repeatable; indicators only).")
@click.option("--to", "to_units", multiple=True, required=True, metavar="UNIT", help="A unit it is shared with (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the share as JSON.")
def share(node_dir: Path, what: str, period: str, indicators: tuple[str, ...], to_units: tuple[str, ...], as_json: bool) -> None:
    """Share WHAT of --period with the --to units: the records held here go down to the nodes answering for them."""
    from lienthong.adapters import periods as period_forms

    from .trust.audit import operator_name

    settings = load_settings(node_dir)
    if not settings.server.listen:
        # A share goes to the units below this node; a node that takes no children has none.
        fail("this node has no units below it to share with", "share from the node above the units (the province, or their district)")
    try:
        canonical = period_forms.canonical(period)
    except period_forms.PeriodError as exc:
        fail(f"--period {period!r} is not a period{exc.reason_en}", "write it as 2026-10, 2026Q3, 2026 or Tháng 10/2026")
    keyed = share_record(
        settings.node.id,
        what,
        canonical,
        indicators,
        to_units,
        operator_name(),
        datetime.now().astimezone().isoformat(timespec="seconds"),
    )
    with writing_store(node_dir, settings) as store:
        store.write_local([keyed], HybridClock(store.max_version()))
        row = store.reader().execute("SELECT count(*) FROM downqueue d JOIN records r ON r.rid = d.rid WHERE r.id = ?", (keyed.id,))
        children = row.fetchone()[0]
    fields = {"what": what, "period": canonical, "indicators": sorted(set(indicators)), "to": sorted(set(to_units))}
    audited(node_dir, "share", ",".join(fields["to"]), **fields)
    if as_json:
        echo_json({**fields, "children": children})
        return
    click.echo(
        ngettext(
            "Shared {0} of {1} with {2}: it goes down through {3} child node at their next sync.",
            "Shared {0} of {1} with {2}: it goes down through {3} child nodes at their next sync.",
            children,
        ).format(what, canonical, ", ".join(fields["to"]), children)
    )
