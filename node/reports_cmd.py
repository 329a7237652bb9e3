"""`lienthong reports`: report schedules, completeness and timeliness."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lienthong.config.settings import Settings
from lienthong.sync import approval, indicator_sets, records
from lienthong.sync import completeness as completeness_mod
from lienthong.sync.indicator_sets import IndicatorSets
from lienthong.sync.schedule import Schedules, bounds, today_in_vietnam
from lienthong.sync.units import Units

from . import runtime
from .cli_common import DIR_OPTION, echo_json, fail, load_settings, opened_store


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
@click.option(
    "--period",
    required=True,
    help="The period: a month 2026-10, a quarter 2026Q4, a half-year 2026S1, a year 2026, a week 2026W05 or a day 2026-10-31.",
)
@click.option("--report-type", help="Only this report type (e.g. BC-IOC-THANG).")
@click.option("--dataset", help="Only this data set: a report type, or an indicator set (e.g. BCS-KTXH): its units and missing indicators.")
@click.option("--level", help="Only units of this level (e.g. commune).")
@click.option(
    "--approved-only/--include-unapproved",
    default=None,
    help="Count only data its unit approved (default: approval.count_only_approved in lienthong.toml).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def completeness(
    node_dir: Path,
    period: str,
    report_type: str | None,
    dataset: str | None,
    level: str | None,
    approved_only: bool | None,
    as_json: bool,
) -> None:
    """For every unit expected to report for PERIOD: on time, late, missing or pending, and the rates per level."""
    settings = load_settings(node_dir)
    period = period.strip()
    bounds(period)  # refuses what is not a reporting period, before opening anything
    if approved_only is None:
        approved_only = settings.approval.count_only_approved
    dataset = records.nfc(dataset.strip()) if dataset else None
    level = records.nfc(level) if level else None
    with opened_store(node_dir) as store:
        store.fresh_read_tables()  # indicator sets are judged on the read tables, which follow the records
        units = Units.from_store(store)
        schedules = Schedules.from_store(store)
        sets = IndicatorSets.load(store.reader())
        within = scope(units, settings)
        approvals = approval.states(store.reader(), within)
        if dataset and dataset in sets.datasets() and dataset not in {s.report_type for s in schedules}:
            judged = indicator_sets.completeness(
                store.reader(),
                units,
                sets,
                period,
                today=today_in_vietnam(),
                dataset=dataset,
                level=level,
                within=within,
                approvals=approvals,
                approved_only=approved_only,
            )
            data = judged.to_dict()
            data["dataset"] = dataset
            data["approved_only"] = approved_only
            return _show_sets(data, as_json)
        schedules.check()
        if not len(schedules) and not len(sets):
            fail(
                "this node holds no report schedule and no indicator set",
                "report schedules come from the province; check `lienthong status` for the parent link",
            )
        if dataset and dataset not in {s.report_type for s in schedules}:
            fail(
                f"{dataset!r} is neither a report type with a schedule nor an indicator set this node holds",
                "use one of " + ", ".join(sorted({s.report_type for s in schedules} | sets.datasets())),
            )
        subs = completeness_mod.submissions(store, within)
        set_result = (
            indicator_sets.completeness(
                store.reader(),
                units,
                sets,
                period,
                today=today_in_vietnam(),
                level=level,
                within=within,
                approvals=approvals,
                approved_only=approved_only,
            )
            if len(sets) and not (dataset or report_type)
            else None
        )
    result = completeness_mod.completeness(
        units,
        schedules.items,
        subs,
        period,
        today=today_in_vietnam(),
        report_type=dataset or (records.nfc(report_type) if report_type else None),
        level=level,
        within=within,
        approvals=approvals,
        approved_only=approved_only,
    )
    data = result.to_dict()
    data["approved_only"] = approved_only
    if set_result is not None:
        sets_data = set_result.to_dict()
        data["indicator_sets"] = {"units": sets_data["units"], "levels": sets_data["levels"]}
    if as_json:
        echo_json(data)
        return
    from .render import print_completeness

    print_completeness(data)
    if set_result is not None:
        _show_sets(set_result.to_dict(), False)


def _show_sets(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        echo_json(data)
        return
    from .render import print_set_completeness

    print_set_completeness(data)
