"""`lienthong query`: what the node holds, for operators and their scripts.

Lists records as they are, or (`indicators --rollup --period P`) the indicator values
of a period rolled up the unit hierarchy (sync/rollup.py), and exports either as CSV,
JSON or a DHIS2 dataValueSet.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from lienthong.sync import records
from lienthong.sync.approval import Approved
from lienthong.sync.blobs import BLOBS, Blobs
from lienthong.sync.catalogue import dhis2_period
from lienthong.sync.store import VIA_PARENT, Store

from .cli_common import DIR_OPTION, fail, load_settings, opened_store
from .cli_i18n import _, ngettext

QUERY_KINDS = {"indicators": records.INDICATOR, "reports": records.REPORT, "feedback": records.FEEDBACK}
FORMATS = ("table", "csv", "json", "dhis2")
DHIS2_DEFAULT = "default"  # the code of DHIS2's default category option combo

# CSV columns of the plain listing (citizen details stay out of CSV: personal data).
LIST_COLUMNS = {
    "indicators": ["indicator", "unit", "period", "disaggregation", "value", "agency", "origin", "comment", "follow_up", "version", "id"],
    "reports": [
        "report_type",
        "unit",
        "period",
        "title",
        "submitted_at",
        "summary",
        "signed_by",
        "source_id",
        "agency",
        "origin",
        "version",
        "id",
    ],
    "feedback": [
        "source_id",
        "unit",
        "category",
        "category_name",
        "received_at",
        "description",
        "address",
        "due_at",
        "assigned_unit",
        "agency",
        "origin",
        "version",
        "id",
    ],
}
ROLLUP_COLUMNS = [
    "indicator",
    "name",
    "unit",
    "unit_name",
    "level",
    "period",
    "disaggregation",
    "value",
    "measure",
    "aggregation",
    "definition_version",
    "reported_units",
    "sources",
    "set_aside",
    "notes",
]


@click.command()
@DIR_OPTION
@click.argument("what", type=click.Choice(sorted(QUERY_KINDS)))
@click.option("--unit", help="Only this unit (with --rollup: this unit and every unit below it).")
@click.option("--period", help="Only this period (e.g. 2026-10, 2026Q3, Tháng 10/2026).")
@click.option("--agency", help="Only figures from this agency (e.g. soyte).")
@click.option("--rollup", is_flag=True, help="Indicators only: aggregate the period's values up the unit hierarchy, sources kept.")
@click.option(
    "--format", "fmt", type=click.Choice(FORMATS), help="table (default), csv, json, or dhis2 (a DHIS2 dataValueSet; indicators)."
)
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), help="Write to this file instead of the terminal.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array for scripts (the same as --format json).")
@click.option(
    "--approved-only/--include-unapproved",
    default=None,
    help="Indicators and reports: only data its unit approved (default: approval.count_only_approved in lienthong.toml).",
)
def query(
    node_dir: Path,
    what: str,
    unit: str | None,
    period: str | None,
    agency: str | None,
    rollup: bool,
    fmt: str | None,
    out_file: Path | None,
    as_json: bool,
    approved_only: bool | None,
) -> None:
    """List indicators, reports or feedback held by this node, or roll indicators up and export them."""
    fmt = _format(fmt, as_json, out_file)
    if fmt == "dhis2" and what != "indicators":
        fail("a DHIS2 dataValueSet holds indicator values only", "use --format csv or json for reports and feedback")
    if rollup and what != "indicators":
        fail("--rollup aggregates indicator values", f"use `lienthong query --dir {node_dir} indicators --rollup --period P`")
    if rollup and not period:
        fail("--rollup needs the period to aggregate", "add --period, e.g. --period 2026-10")
    settings = load_settings(node_dir)
    if approved_only is None:
        approved_only = settings.approval.count_only_approved and what in ("indicators", "reports")
    period = _canonical_period(period, strict=rollup)
    unit = records.nfc(unit) if unit else None
    agency = records.nfc(agency) if agency else None
    with opened_store(node_dir) as store:
        approved = Approved(store.reader()) if approved_only else None
        if rollup:
            from lienthong.sync.rollup import rollup as roll

            assert period is not None
            rows = roll(store, period, unit=unit, agency=agency, only=approved.value if approved else None)
        else:
            rows = _listing(store, what, unit, period, agency)
            if approved is not None:
                rows = [r for r in rows if _approved_row(approved, what, r)]
    if fmt == "table":
        from .render import print_rows

        _print_rollup(rows) if rollup else print_rows(what, rows)
        return
    text = _render(fmt, what, rows, rollup)
    if out_file is None:
        click.echo(text, nl=not text.endswith("\n"))
        return
    _write(out_file, text, bom=fmt == "csv")
    n = len(rows)
    counted = {
        "rollup": ngettext("{0} rolled-up value", "{0} rolled-up values", n),
        "indicators": ngettext("{0} indicator value", "{0} indicator values", n),
        "reports": ngettext("{0} report", "{0} reports", n),
        "feedback": ngettext("{0} feedback item", "{0} feedback items", n),
    }["rollup" if rollup else what]
    click.echo(_("Wrote {0} to {1} ({2}).").format(counted.format(n), out_file, fmt))


def _approved_row(approved: Approved, what: str, row: dict[str, Any]) -> bool:
    if what == "indicators":
        return approved.value(row["unit"], row["indicator"], row["period"])
    if what == "reports":
        return approved.report(row["unit"], row["report_type"], row["period"])
    fail("--approved-only applies to indicators and reports", "leave it out for feedback")


def _format(fmt: str | None, as_json: bool, out_file: Path | None) -> str:
    if as_json and fmt not in (None, "json"):
        fail(f"--json and --format {fmt} ask for two formats", "give one of them")
    if as_json:
        return "json"
    if fmt is None and out_file is not None:
        return "csv" if out_file.suffix.lower() == ".csv" else "json"
    if fmt == "table" and out_file is not None:
        fail("a table is for the terminal", "write a file with --format csv, json or dhis2")
    return fmt or "table"


def _canonical_period(period: str | None, *, strict: bool) -> str | None:
    if not period:
        return None
    from lienthong.adapters.periods import PeriodError, canonical

    try:
        return canonical(period)
    except PeriodError:
        if strict:
            raise  # "'x' is not a period: …" / "write it as 2026-10, …", for the CLI's top level
        return period  # the listing compares as given, as it always did


def _listing(store: Store, what: str, unit: str | None, period: str | None, agency: str | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    blobs = Blobs(store.path.parent / BLOBS)
    # Records that came from the parent: shared down by the province, or dispatched to this unit.
    above = {i for (i,) in store.reader().execute("SELECT id FROM records WHERE kind = ? AND via = ?", (QUERY_KINDS[what], VIA_PARENT))}
    for env in store.iter_records(QUERY_KINDS[what], unit):
        if agency is not None and env.agency != agency:
            continue
        row = records.to_dict(env)
        if period and row.get("period") != period:
            continue
        row["from_above"] = env.id in above
        if env.kind == records.REPORT:
            row["files"] = report_files(blobs, env)
        rows.append(row)
    return rows


def report_files(blobs: Blobs, env: records.Envelope) -> list[dict[str, Any]]:
    """The files a report names, each with whether this node holds it (`files get` gives it)."""
    return [
        {"name": a.name, "sha256": a.sha256, "size": a.size, "present": blobs.has(a.sha256.lower())}
        for a in records.body_of(env).attachments
    ]


# ---------------------------------------------------------------- output


def _render(fmt: str, what: str, rows: list[dict[str, Any]], rollup: bool) -> str:
    if fmt == "json":
        return json.dumps(rows, ensure_ascii=False, indent=2)
    if fmt == "dhis2":
        return json.dumps(data_value_set(rows, rollup), ensure_ascii=False, indent=2)
    if rollup:
        return to_csv(ROLLUP_COLUMNS, rows, {"sources": _sources_text, "set_aside": _sources_text, "notes": "; ".join})
    return to_csv(LIST_COLUMNS[what], rows, {})


def to_csv(columns: list[str], rows: list[dict[str, Any]], convert: dict[str, Callable[..., str]]) -> str:
    """Rows as CSV text (comma-separated, RFC 4180 quoting), one header line."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            if column == "value" and "exact_value" in row:
                cells.append(row["exact_value"])  # the exact decimal, not a float
            elif column in convert and value is not None:
                cells.append(convert[column](value))
            elif isinstance(value, bool):
                cells.append("true" if value else "false")
            else:
                cells.append("" if value is None else str(value))
        writer.writerow(cells)
    return buffer.getvalue()


def _sources_text(sources: list[dict[str, Any]]) -> str:
    """'86-28894 86-28894/thongke=12450.75; …': unit, origin/agency and value of each figure."""
    parts = []
    for s in sources:
        who = f"{s.get('origin', '')}/{s.get('agency', '')}" if s.get("agency") else str(s.get("origin", ""))
        what = f"{s['indicator']} " if "indicator" in s else ""
        parts.append(f"{what}{s['unit']} {who}={s['value']}" + (f" ({s['from']})" if s.get("from") else ""))
    return "; ".join(parts)


def data_value_set(rows: list[dict[str, Any]], rollup: bool) -> dict[str, Any]:
    """A DHIS2 dataValueSet (JSON) of indicator rows, identified by code.

    Rolled-up values mix sources: their attribute option combo is DHIS2's default. A
    listed value names its agency as the attribute option combo (DHIS2's attribute
    option combo plays the source's role), `default` when it has none.
    """
    values = []
    for row in rows:
        if row.get("value") is None:
            continue
        value = row.get("exact_value") or _plain(row["value"])
        item = {
            "dataElement": row["indicator"],
            "period": dhis2_period(row["period"]),
            "orgUnit": row["unit"],
            "categoryOptionCombo": row.get("disaggregation") or DHIS2_DEFAULT,
            "attributeOptionCombo": DHIS2_DEFAULT if rollup else row.get("agency") or DHIS2_DEFAULT,
            "value": value,
        }
        if not rollup:
            if row.get("comment"):
                item["comment"] = row["comment"]
            if row.get("follow_up"):
                item["followup"] = True
        values.append(item)
    return {"dataElementIdScheme": "CODE", "orgUnitIdScheme": "CODE", "idScheme": "CODE", "dataValues": values}


def _plain(value: object) -> str:
    """A JSON number as DHIS2 writes values: text, no exponent."""
    from decimal import Decimal

    return format(Decimal(str(value)).normalize(), "f") if not isinstance(value, str) else value


def _write(path: Path, text: str, *, bom: bool) -> None:
    """Write `text` to a temporary file beside `path`, then rename: never a half-written export.

    CSV gets a byte-order mark so Excel (vi-VN) opens the Vietnamese text correctly."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8-sig" if bom else "utf-8", newline="")
        os.replace(tmp, path)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}", "choose a folder you can write to")


def _print_rollup(rows: list[dict[str, Any]]) -> None:
    from . import display

    table = display.table(title=f"{len(rows)} rolled-up values")
    for column in ("indicator", "unit", "disaggregation", "value", "measure", "rule"):
        table.add_column(column, no_wrap=column != "measure")
    table.add_column("sources", overflow="fold")
    for row in rows:
        sources = _sources_text(row["sources"])
        if row["set_aside"]:
            sources += f" [set aside: {_sources_text(row['set_aside'])}]"
        if row["notes"]:
            sources += f" [{'; '.join(row['notes'])}]"
        table.add_row(
            row["indicator"],
            row["unit"],
            row["disaggregation"],
            row["exact_value"] if row["value"] is not None else "—",
            row["measure"],
            row["aggregation"] or "?",
            sources,
        )
    display.console().print(table)
