"""`lienthong report draft`: the IOC's monthly or quarterly activity report, drafted from the data.

The figures come from sync/activity.py (the store) and, for the security section, from this
node's audit log and the audit entries its children sent up; the text and layout from
node/report_document.py; the .docx and PDF from node/report_docx.py. `--format json` writes
the figures themselves: every number the document prints is one of them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import click

from lienthong.sync import activity, records
from lienthong.sync.errors import LienthongError
from lienthong.sync.satisfaction import canonical_period
from lienthong.sync.schedule import VIETNAM
from lienthong.sync.store import Store
from lienthong.sync.units import Units

from . import runtime
from .cli_common import DIR_OPTION, fail, load_settings, opened_store
from .report_document import Letterhead, markdown

FORMATS = ("docx", "pdf", "md", "json")
DEFAULT_ISSUER = "Trung tâm Giám sát, điều hành đô thị thông minh"
UNIT_PREFIXES = ("Tỉnh ", "Thành phố ", "Xã ", "Phường ", "Đặc khu ", "Huyện ", "Quận ", "Thị xã ")


@click.group()
def report() -> None:
    """The IOC's activity report (báo cáo hoạt động), drafted from the data."""


@report.command("draft")
@DIR_OPTION
@click.option("--period", required=True, help="A month (2026-10) or a quarter (2026-Q4).")
@click.option("--unit", default="", help="Report on this unit and the units below it (default: this node's unit).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="docx",
    show_default=True,
    help="docx to edit and sign, pdf, md, or json (the figures).",
)
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The file to write.")
@click.option(
    "--indicator",
    "indicators",
    multiple=True,
    metavar="CODE",
    help="A headline indicator (repeatable; default: every indicator with a value, at most 30).",
)
@click.option("--issuer", default=DEFAULT_ISSUER, show_default=True, help="The issuing body (cơ quan ban hành).")
@click.option("--superior", default="", help="Its superior body, above it in the header (default: UBND and the unit's name).")
@click.option("--short", "issuer_short", default="IOC", show_default=True, help="The issuer's abbreviation in the number: Số: …/BC-SHORT.")
@click.option("--place", default="", help="The place in the date line (default: the unit's name).")
@click.option("--signer", default="", help="The name of who signs.")
@click.option("--signer-title", default="GIÁM ĐỐC", show_default=True, help="Their title above the signature.")
def draft(
    node_dir: Path,
    period: str,
    unit: str,
    fmt: str,
    out: Path,
    indicators: tuple[str, ...],
    issuer: str,
    superior: str,
    issuer_short: str,
    place: str,
    signer: str,
    signer_title: str,
) -> None:
    """Draft the activity report for PERIOD: feedback, completeness and timeliness, headline
    indicators, refused data, security events and satisfaction, in the administrative layout."""
    settings = load_settings(node_dir)
    period = canonical_period(period)
    if not out.parent.is_dir():
        fail(f"cannot write {out}: {out.parent} is not a folder", "give --out in an existing folder")
    now = dt.datetime.now(dt.UTC)
    with opened_store(node_dir) as store:
        store.fresh_read_tables()  # survey results come from the read tables, which follow the records
        units = Units.from_store(store)
        root = _unit(units, records.nfc(unit.strip()), runtime.own_units(settings))
        entries, problems = _audit(node_dir, store)
        figures = activity.figures(
            store,
            period,
            unit=root,
            as_of=now,
            audit_entries=entries,
            audit_problems=problems,
            indicators=[records.nfc(i.strip()) for i in indicators],
        )
    name = figures["unit_name"] or settings.node.name
    head = Letterhead(
        superior=superior or (f"UBND {name}" if name else "UBND ……"),
        issuer=issuer,
        issuer_short=issuer_short,
        place=place or _place(name) or "……",
        signer_title=signer_title,
        signer=signer,
    )
    day = now.astimezone(VIETNAM).date()
    if fmt == "json":
        _write_text(out, json.dumps(figures, ensure_ascii=False, indent=2) + "\n")
    elif fmt == "md":
        _write_text(out, markdown(figures, head, day))
    else:
        from . import report_docx  # python-docx is loaded by this command only

        (report_docx.write_pdf if fmt == "pdf" else report_docx.write_docx)(figures, head, day, out)
    fb, comp = figures["feedback"]["total"], figures["completeness"]
    click.echo(
        f"Wrote {out}: {figures['period']}"
        + (f" for {root} ({figures['unit_name']})" if root else "")
        + f"; {fb['received']} feedback items received, {len(comp['late'])} late and {len(comp['missing'])} missing reports."
    )
    if fmt in ("docx", "md"):
        click.echo("It is a draft: fill in the number, complete section VII, then sign it.")


def _unit(units: Units, unit: str, own: list[str]) -> str | None:
    """The report's unit: --unit (a unit of the registry), else this node's first registered unit, else None (all)."""
    if unit:
        if len(units) and unit not in units:
            fail(f"unit {unit} is not in the unit registry", "give a unit code the province defined (lienthong query shows them)")
        return unit
    return next((records.nfc(code) for code in own if records.nfc(code) in units), None)


def _place(name: str) -> str:
    for prefix in UNIT_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def _audit(node_dir: Path, store: Store) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """This node's audit entries and those its children sent up, and the copied chains that broke."""
    from .trust.audit import FILE_NAME, AuditLog
    from .trust.audit_copies import held

    entries: list[dict[str, Any]] = []
    if (node_dir / FILE_NAME).exists():
        try:
            with AuditLog.open(node_dir) as log_:
                entries += [{**e.to_dict(), "node": store.node_id} for e in log_.entries()]
        except LienthongError:
            pass  # a damaged log: `audit verify` names it; the report counts what the copies say
    problems: list[dict[str, Any]] = []
    for node in held(store):
        data = node.as_dict(None)
        problems += [{"node": node.node, **p} for p in data["problems"]]
        if node.node == store.node_id and entries:
            continue  # this node's own copies: its log was read above
        entries += [{**e, "node": node.node} for e in data["events"]]
    return entries, problems


def _write_text(out: Path, text: str) -> None:
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
