"""`lienthong requests`: on-demand data requests from the province and their answers.

The province (or any node with units below it) writes a request with `create`; it
flows down like every definition. A unit's operator sees it with `list` and answers
with `answer`; the answer flows up with its origin. The rules live in
`lienthong.sync.requests`; this module is the operator's side: options, blobs for
the shared files, the audit log, output.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

import click

from lienthong.sync import records
from lienthong.sync import requests as data_requests
from lienthong.sync.blobs import BLOBS, Blobs
from lienthong.sync.clock import HybridClock
from lienthong.sync.units import Units

from . import runtime
from .cli_common import DIR_OPTION, audited, echo_json, fail, load_settings, writing_store
from .display import local_time

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@click.group()
def requests() -> None:
    """On-demand data requests: see them, approve or decline them."""


@requests.command("create")
@DIR_OPTION
@click.argument("what")
@click.option("--unit", "units", multiple=True, required=True, metavar="CODE", help="A unit asked to answer (repeatable).")
@click.option("--period", "periods", multiple=True, required=True, metavar="P", help="A period the data must cover (repeatable).")
@click.option("--reason", required=True, help="Why the data is needed.")
@click.option("--due", required=True, metavar="DATE", help="By when: 2026-11-30 (the whole day, Vietnam time) or a date-time with offset.")
@click.option("--code", default="", help="The request's code (default: YC-<today>-NN).")
@click.option("--replace", is_flag=True, help="Write a new version of the existing request --code (e.g. a later --due).")
@JSON_OPTION
def create(
    node_dir: Path,
    what: str,
    units: tuple[str, ...],
    periods: tuple[str, ...],
    reason: str,
    due: str,
    code: str,
    replace: bool,
    as_json: bool,
) -> None:
    """Ask units for WHAT: for which --unit and --period, why (--reason), by when (--due)."""
    from lienthong.adapters import periods as period_forms

    from .trust.audit import operator_name

    settings = load_settings(node_dir)
    if settings.node.mode != "provincial":
        # Requests are definitions, and nodes take definitions only from a provincial node.
        fail("only a provincial node makes data requests", "ask the provincial IOC to send the request")
    code = code.strip()
    if replace and not code:
        fail("--replace needs the --code of the request to replace", "add --code CODE (see `lienthong requests list`)")
    now = datetime.now().astimezone()
    canonical = []
    for text in periods:
        try:
            canonical.append(period_forms.canonical(text))
        except period_forms.PeriodError as exc:
            fail(f"--period {text!r} is not a period{exc.reason_en}", "write it as 2026-10, 2026Q3, 2026 or Tháng 10/2026")
    with writing_store(node_dir, settings) as store:
        registry = Units.from_store(store)
        _check_units(registry, [records.nfc(u) for u in units], now.date())
        held = data_requests.requests(store)
        mine = [r.code for r in held if r.origin == store.node_id]
        if code and code in mine and not replace:
            fail(f"request {store.node_id}/{code} exists", "choose another --code, or add --replace to write a new version of it")
        if replace and code not in mine:
            fail(f"there is no request {store.node_id}/{code} to replace", "leave out --replace to create it")
        code = code or data_requests.new_code(mine, now.date())
        keyed = data_requests.request_record(
            store.node_id,
            code=code,
            what=what,
            units=units,
            periods=canonical,
            reason=reason,
            due=due,
            created_at=now.isoformat(timespec="seconds"),
            requested_by=operator_name(),
        )
        if data_requests.deadline(data_requests.check_due(due)) <= now:
            fail(f"the due time {due} has already passed", "give a later --due")
        store.write_local([keyed], HybridClock(store.max_version()))
        request = data_requests.find(data_requests.requests(store), f"{store.node_id}/{code}")
    _audited(
        node_dir,
        "requests replace" if replace else "requests create",
        request.key,
        units=list(request.units),
        periods=list(request.periods),
        due=request.due,
        reason=request.reason,
    )
    if as_json:
        echo_json(request.as_dict())
        return
    click.echo(f"{'Replaced' if replace else 'Created'} request {request.key} for {', '.join(request.units)}, due {request.due}.")
    click.echo("It reaches those units at their next sync; follow the answers with `lienthong requests list`.")


@requests.command("list")
@DIR_OPTION
@JSON_OPTION
def list_(node_dir: Path, as_json: bool) -> None:
    """The requests for this node's units (all of them where they were made), with each unit's answer."""
    settings = load_settings(node_dir)
    with writing_store(node_dir, settings, sign=False) as store:
        scope = data_requests.Scope.from_store(store, runtime.own_units(settings))
        rows = data_requests.board(data_requests.requests(store), data_requests.answers(store), scope, datetime.now().astimezone())
    # Each answer's data files, and whether this node holds each (`files get` writes it out).
    blobs = Blobs(node_dir / BLOBS)
    for row in rows:
        for answer in row["answers"]:
            answer["files"] = [{**a, "present": blobs.has(str(a["sha256"]).lower())} for a in answer.get("attachments") or []]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("No data requests for this node's units.")
        return
    for row in rows:
        click.echo(f"{row['request']}  due {row['due']}{' (passed)' if row['past_due'] else ''}  periods {', '.join(row['periods'])}")
        click.echo(f"  {row['what']}")
        click.echo(f"  why: {row['reason']}")
        for answer in row["answers"]:
            click.echo("  " + _answer_line(answer))


@requests.command("answer")
@DIR_OPTION
@click.argument("request_ref", metavar="REQUEST")
@click.option("--approve", "decision", flag_value=data_requests.APPROVED, help="Agree to share the data (FILES are the data).")
@click.option("--decline", "decision", flag_value=data_requests.DECLINED, help="Refuse; --reason is then required.")
@click.option("--reason", default="", help="Why (required when declining; a note when approving).")
@click.option(
    "--unit",
    "units",
    multiple=True,
    metavar="CODE",
    help="Answer for this unit only (repeatable; default: every addressed unit this node answers for).",
)
@click.option("--signed-by", "signed_by", default="", help="Who decided, as the answer should show it (default: the operator's user name).")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@JSON_OPTION
def answer(
    node_dir: Path,
    request_ref: str,
    decision: str | None,
    reason: str,
    units: tuple[str, ...],
    signed_by: str,
    files: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Approve or decline REQUEST; an approval may carry data FILES. Answering again replaces the answer."""
    from .intake import StoreSink
    from .trust.audit import operator_name

    if decision is None:
        fail("say whether you approve or decline the request", "add --approve or --decline")
    settings = load_settings(node_dir)
    if decision == data_requests.DECLINED and files:
        fail("a declined request carries no data files", "leave the files out, or --approve")
    names = [records.nfc(path.name) for path in files]
    if len(set(names)) != len(names):
        fail("two data files have the same name", "rename one: the province sees the files by name")
    now = datetime.now().astimezone()
    with writing_store(node_dir, settings) as store:
        request = data_requests.find(data_requests.requests(store), request_ref)
        scope = data_requests.Scope.from_store(store, runtime.own_units(settings))
        targets = [records.nfc(u) for u in units] or [u for u in request.units if u in scope.answerable]
        if not targets:
            fail(
                f"this node answers for none of the units request {request.key} addresses ({', '.join(request.units)})",
                "answer at the node of those units, or list this node's units in node.units of lienthong.toml",
            )
        for unit in targets:
            if unit in request.units and unit not in scope.answerable:
                fail(f"this node does not answer for unit {unit}", "answer at the node that answers for it")
        attachments: list[dict[str, Any]] = []
        if files:
            sink = StoreSink(store, HybridClock(), node_dir, runtime.own_units(settings))
            attachments = [
                {"name": name, "sha256": sink.store_blob(path), "size": path.stat().st_size}
                for name, path in zip(names, files, strict=True)
            ]
        at = now.isoformat(timespec="seconds")
        keyed = [
            data_requests.answer_record(
                store.node_id,
                request,
                unit,
                decision,
                reason=reason,
                at=at,
                operator=signed_by or operator_name(),
                attachments=attachments,
            )
            for unit in targets
        ]
        summary = store.write_local(keyed, HybridClock(store.max_version()))
    late = data_requests.is_late(at, request.due)
    replaced = summary.updated > 0
    _audited(
        node_dir,
        "requests answer",
        request.key,
        units=targets,
        decision=decision,
        reason=reason,
        late=late,
        files=[{"name": a["name"], "sha256": a["sha256"]} for a in attachments],
    )
    if as_json:
        out = {"request": request.key, "units": targets, "decision": decision, "reason": reason, "answered_at": at, "late": late}
        click.echo(
            json.dumps(
                {**out, "replaced": replaced, "attachments": attachments, "ids": [k.id.hex() for k in keyed]}, ensure_ascii=False, indent=2
            )
        )
        return
    files_note = f" with {len(attachments)} data file{'s' if len(attachments) != 1 else ''}" if attachments else ""
    click.echo(
        f"{decision.capitalize()} request {request.key} for {', '.join(targets)}{files_note}{' (replacing the earlier answer)' if replaced else ''}."
    )
    if late:
        click.echo(f"The answer is late: it was due {request.due}. It is taken and shown as late.")
    click.echo("It goes up to the requesting node at the next sync.")


# ---------------------------------------------------------------- helpers


def _check_units(registry: Units, units: list[str], today: date) -> None:
    if not len(registry):
        fail(
            "this node's unit registry is empty",
            "ingest the province's unit definitions first (lienthong ingest --dir DIR definitions.jsonl)",
        )
    for unit in units:
        known = registry.get(unit)
        if known is None:
            fail(f"unit {unit} is not in the unit registry", "check the code against the province's unit definitions")
        elif not known.active_on(today):
            successor = registry.successor(unit, today)
            hint = f"address {successor}, which answers for it now" if successor != unit else "address a unit that exists today"
            fail(f"unit {unit} no longer exists (until {known.valid_to})", hint)


def _audited(node_dir: Path, command: str, subject: str, **details: Any) -> None:

    audited(node_dir, "admin.command", command, request=subject, **details)


def _answer_line(row: dict[str, Any]) -> str:
    if row["status"] == data_requests.PENDING:
        return f"{row['unit']:<12} pending{'  OVERDUE' if row['overdue'] else ''}"
    files = ", ".join(a["name"] + ("" if a.get("present", True) else " (still arriving)") for a in row.get("files") or row["attachments"])
    parts = [
        f"{row['unit']:<12} {row['status']}{' (late)' if row['late'] else ''}",
        f"at {local_time(row['answered_at'])} by node {row['node']}" + (f" ({row['operator']})" if row["operator"] else ""),
    ]
    if row["reason"]:
        parts.append(f"reason: {row['reason']}")
    if files:
        parts.append(f"files: {files}")
    return "  ".join(parts)
