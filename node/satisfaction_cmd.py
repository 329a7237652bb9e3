"""`lienthong feedback import-survey` and `feedback stats --satisfaction`: citizens' satisfaction,
from the ratings given to feedback and from survey results imported from a CSV file.

A survey file is imported by this command rather than dropped in an inbox: survey results are
few files a year, typed by an officer (not exported by an agency's system on a schedule), and
are checked whole before anything is stored, every refused row named at once, so the officer
corrects the file and runs the command again. What it stores are indicator values
(sync/satisfaction.py), sealed and replicated like any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lienthong.adapters import survey_csv
from lienthong.sync import feedback as fb
from lienthong.sync import records, satisfaction
from lienthong.sync.clock import HybridClock
from lienthong.sync.store import Store
from lienthong.sync.units import Units

from . import runtime
from .cli_common import DIR_OPTION, echo_json, fail, load_settings, opened_store, writing_store

MAX_SHOWN = 50


@click.command("import-survey")
@DIR_OPTION
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--agency", default="", help="Who ran the survey (an agency code, e.g. sonoivu).")
def import_survey(node_dir: Path, file: Path, agency: str) -> None:
    """Import satisfaction survey results from FILE (CSV: don_vi, ky, linh_vuc, muc_do, so_phieu; see docs/adapters.md).

    All or nothing: when a row is refused, nothing is stored and every refused row is named."""
    settings = load_settings(node_dir)
    agency = records.nfc(agency.strip())
    with writing_store(node_dir, settings) as store:
        keyed, refused = survey_csv.read(file, store.node_id, agency)
        registry = Units.from_store(store)
        if len(registry):
            own = [records.nfc(u) for u in runtime.own_units(settings) if records.nfc(u) in registry]
            mine = {u for o in own for u in (o, *registry.descendants(o))} if own else None
            for line, record in keyed:
                if record.unit not in registry:
                    refused.append(survey_csv.Refused(line, "don_vi", f"unit {record.unit} is not in the unit registry"))
                elif mine is not None and record.unit not in mine:
                    refused.append(
                        survey_csv.Refused(line, "don_vi", f"unit {record.unit} is not this node's ({', '.join(own)}) nor below it")
                    )
        if refused:
            refused.sort(key=lambda r: r.line)
            for r in refused[:MAX_SHOWN]:
                click.echo(f"  line {r.line}: {r.column}: {r.reason}", err=True)
            if len(refused) > MAX_SHOWN:
                click.echo(f"  … and {len(refused) - MAX_SHOWN} more", err=True)
            fail(f"{file}: {len(refused)} row(s) refused, nothing imported", "correct the rows named above and run the command again")
        if not keyed:
            fail(f"{file} holds no survey results", "add one row per unit, period, category and rating under the header")
        summary = store.write_local([record for _, record in keyed], HybridClock(store.latest_version()))
    click.echo(
        f"{file}: {summary.imported} imported, {summary.updated} updated, {summary.unchanged} unchanged (survey results, {satisfaction.SURVEY_INDICATOR})."
    )


def satisfaction_summary(store: Store, period: str, unit: str = "") -> dict[str, Any]:
    """The summary `feedback stats --satisfaction` prints (as the report's section VI, for a scope)."""
    registry = Units.from_store(store)
    items = fb.load(store).items
    within = {unit, *registry.descendants(unit)} if unit else None
    answers = [*satisfaction.feedback_answers(items, period), *satisfaction.survey_answers(store.reader(), period)]
    return satisfaction.summarise(
        answers,
        period,
        within=within,
        unit_names={u.code: u.name for u in registry},
        category_names=satisfaction.category_names(items),
    )


def print_satisfaction(data: dict[str, Any]) -> None:
    total = data["total"]["all"]
    if not total["responses"]:
        click.echo(f"No satisfaction ratings or survey results for {data['period']} on this node.")
        return
    click.echo(f"Satisfaction {data['period']} (1-5; satisfied: {data['satisfied_from']}-5)")
    click.echo(f"{'UNIT':<14} {'CATEGORY':<12} {'RATINGS':>8} {'SURVEYED':>9} {'AVERAGE':>8} {'SATISFIED':>10}")
    for row in data["rows"]:
        a = row["all"]
        click.echo(
            f"{row['unit']:<14} {row['category'] or '-':<12} {row['feedback']['responses']:>8} {row['survey']['responses']:>9} "
            f"{a['average']:>8} {str(a['satisfied_pct']) + '%':>10}"
        )
    click.echo(
        f"{'all':<27} {data['total']['feedback']['responses']:>8} {data['total']['survey']['responses']:>9} {total['average']:>8} {str(total['satisfied_pct']) + '%':>10}"
    )


def stats_satisfaction(node_dir: Path, period: str, unit: str, as_json: bool) -> None:
    load_settings(node_dir)
    period = satisfaction.canonical_period(period)
    with opened_store(node_dir) as store:
        store.fresh_read_tables()  # survey results come from the read tables, which follow the records
        data = satisfaction_summary(store, period, records.nfc(unit.strip()))
    if as_json:
        echo_json(data)
    else:
        print_satisfaction(data)
