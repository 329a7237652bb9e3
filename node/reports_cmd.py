"""`lienthong reports`: report schedules, completeness and timeliness."""

from __future__ import annotations

import json
from pathlib import Path

import click

from lienthong.config.settings import Settings
from lienthong.sync import completeness as completeness_mod
from lienthong.sync import records
from lienthong.sync.schedule import Schedules, bounds, today_in_vietnam
from lienthong.sync.store import Store
from lienthong.sync.units import Units

from . import runtime
from .cli_common import DIR_OPTION, fail, load_settings


@click.group()
def reports() -> None:
    """Periodic reports: who has submitted on time, late, or not at all."""


def scope(units: Units, settings: Settings) -> list[str] | None:
    """The units this node answers for and every unit below them in the registry; None (the
    whole registry) when the registry does not know this node's units."""
    own = [records.nfc(code) for code in runtime.own_units(settings) if records.nfc(code) in units]
    if not own:
        return None
    out: list[str] = []
    for code in own:
        out += [code, *units.descendants(code)]
    return out


@reports.command()
@DIR_OPTION
@click.option("--period", required=True, help="The period: a month 2026-10, a quarter 2026Q4, a half-year 2026S1 or a year 2026.")
@click.option("--report-type", help="Only this report type (e.g. BC-IOC-THANG).")
@click.option("--level", help="Only units of this level (e.g. commune).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def completeness(node_dir: Path, period: str, report_type: str | None, level: str | None, as_json: bool) -> None:
    """For every unit expected to report for PERIOD: on time, late, missing or pending, and the rates per level."""
    settings = load_settings(node_dir)
    period = period.strip()
    bounds(period)  # refuses what is not a reporting period, before opening anything
    store = Store.open(node_dir / runtime.STORE_FILE)
    try:
        units = Units.from_store(store)
        schedules = Schedules.from_store(store)
        schedules.check()
        if not len(schedules):
            fail(
                "this node holds no report schedule",
                "report schedules come from the province; check `lienthong status` for the parent link",
            )
        within = scope(units, settings)
        subs = completeness_mod.submissions(store, within)
    finally:
        store.close()
    result = completeness_mod.completeness(
        units,
        schedules.items,
        subs,
        period,
        today=today_in_vietnam(),
        report_type=records.nfc(report_type) if report_type else None,
        level=records.nfc(level) if level else None,
        within=within,
    )
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return
    from .render import print_completeness

    print_completeness(result.to_dict())
