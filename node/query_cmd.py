"""`lienthong query`: what the node holds, for operators and their scripts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from lienthong.sync import records
from lienthong.sync.store import Store

from . import runtime
from .cli_common import DIR_OPTION, load_settings

QUERY_KINDS = {"indicators": records.INDICATOR, "reports": records.REPORT, "feedback": records.FEEDBACK}


@click.command()
@DIR_OPTION
@click.argument("what", type=click.Choice(sorted(QUERY_KINDS)))
@click.option("--unit", help="Only this unit.")
@click.option("--period", help="Only this period (e.g. 2026-10, 2026Q3).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array for scripts.")
def query(node_dir: Path, what: str, unit: str | None, period: str | None, as_json: bool) -> None:
    """List indicators, reports or feedback held by this node."""
    load_settings(node_dir)
    store = Store.open(node_dir / runtime.STORE_FILE)
    try:
        rows: list[dict[str, Any]] = []
        for env in store.iter_records(QUERY_KINDS[what], records.nfc(unit) if unit else None):
            row = records.to_dict(env)
            if period and row.get("period") != period:
                continue
            rows.append(row)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    from .render import print_rows

    print_rows(what, rows)
