"""`lienthong dispute`: question a figure, answer for it, and follow the thread.

A node that holds an indicator value or a report of another node (a higher tier holds
its subtree's; an agency's node holds what was shared with it) opens a dispute on it
in the name of one of its own units, or of an agency whose folder it keeps
(`--agency`). The act travels down the tree to the record's origin, whose operator
answers: explaining, or correcting the value (a new version of the record and the
`corrected` act, one transaction). The opener closes or reopens the thread. Each act
is one `dispute` record (sync/disputes.py) and one entry in this node's audit log;
`list` and `show` print the fold of the acts this node holds, the same at both ends.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click

from lienthong.sync import disputes, records
from lienthong.sync.clock import HybridClock
from lienthong.sync.store import Store

from . import runtime
from .cli_common import DIR_OPTION, audited, aware_datetime, echo_json, fail, load_settings, opened_store, writing_store

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
DISPUTE_ARGUMENT = click.argument("dispute_ref", metavar="DISPUTE")
AT_OPTION = click.option("--at", "at", default="", metavar="DATETIME", help="When it was done (RFC 3339 with offset; default: now).")


@click.group()
def dispute() -> None:
    """Disputes on a figure: question a value or a report, answer for it, close or reopen the thread."""


def _at(value: str) -> str:
    if not value:
        return dt.datetime.now().astimezone().isoformat(timespec="milliseconds")
    aware_datetime(value, "--at", "2026-11-21T16:30:00+07:00")
    return value


def _folded(node_dir: Path) -> disputes.Folded:
    with opened_store(node_dir) as store:
        return disputes.load(store)


# ---------------------------------------------------------------- reading


@dispute.command("list")
@DIR_OPTION
@click.option("--open", "only_open", is_flag=True, help="Only threads not closed.")
@JSON_OPTION
def list_threads(node_dir: Path, only_open: bool, as_json: bool) -> None:
    """Dispute threads held here: the record questioned, who asked, the state."""
    load_settings(node_dir)
    threads = [t for t in _folded(node_dir).threads if not only_open or t.state != "closed"]
    if as_json:
        echo_json([t.to_dict() for t in threads])
        return
    if not threads:
        click.echo("No disputes" + (" open." if only_open else " on this node."))
        return
    click.echo(f"{'ID':<12}  {'STATE':<10} {'RECORD':<12} {'KIND':<9} {'ORIGIN':<12} {'OPENED BY':<12} FIGURE")
    for t in threads:
        click.echo(
            f"{t.id[:12]:<12}  {t.state:<10} {t.record[:12]:<12} {t.record_kind:<9} {t.record_origin:<12} {t.opened_by:<12} {t.figure}"
        )
    click.echo(f"{len(threads)} disputes, {sum(1 for t in threads if t.state != 'closed')} not closed.")


@dispute.command("show")
@DIR_OPTION
@DISPUTE_ARGUMENT
@JSON_OPTION
def show(node_dir: Path, dispute_ref: str, as_json: bool) -> None:
    """One thread (by id or a unique prefix of 6 digits or more) with its whole history."""
    load_settings(node_dir)
    data = disputes.find(_folded(node_dir).threads, dispute_ref).to_dict(history=True)
    if as_json:
        echo_json(data)
        return
    click.echo(f"Dispute {data['id']}: {data['state']}")
    click.echo(f"  on {data['record_kind']} {data['record']} (unit {data['record_unit']}, origin {data['record_origin']})")
    click.echo(f"  figure questioned: {data['figure']} (version {data['record_version']})")
    who = data["unit"] + (f", agency {data['agency']}" if data["agency"] else "")
    click.echo(f"  opened {data['opened_at']} by node {data['opened_by']} for {who}: {data['reason']}")
    if data["answer"]:
        click.echo(f"  answer: {data['answer']}")
    if data["corrected_value"]:
        click.echo(f"  corrected to: {data['corrected_value']}")
    click.echo("History:")
    for h in data["history"]:
        line = f"  {h['at']}  {h['action']}  by {h['by']}" + (f": {h['note']}" if h["note"] else "")
        if "value" in h:
            line += f" (value {h['value']})"
        if not h["applied"]:
            line += f"  [ignored: {h['ignored_because']}]"
        click.echo(line)


# ---------------------------------------------------------------- writing


@dispute.command("open")
@DIR_OPTION
@click.argument("record_ref", metavar="RECORD")
@click.option("--reason", required=True, help="What is wrong with the figure (the question the origin answers).")
@click.option("--unit", default="", help="The unit asking (one of this node's units; default: its first).")
@click.option("--agency", default="", help="The agency asking, when it has no node of its own and asks through this one.")
@AT_OPTION
def open_thread(node_dir: Path, record_ref: str, reason: str, unit: str, agency: str, at: str) -> None:
    """Question an indicator value or a report (RECORD: its id, as `lienthong query` prints it)."""
    settings = load_settings(node_dir)
    own = runtime.own_units(settings)
    unit = records.nfc(unit.strip()) or own[0]
    if unit not in own:
        fail(f"unit {unit} is not one of this node's units ({', '.join(own)})", "a dispute is opened at the node of the unit that asks")
    if not reason.strip():
        fail("a dispute needs its reason", '--reason "what is wrong with the figure"')
    when = _at(at)
    with writing_store(node_dir, settings) as store:
        record = disputes.find_record(store, record_ref)
        if record.origin == store.node_id:
            fail("this node wrote that record itself", "correct it by ingesting the corrected file; disputes are for other nodes' figures")
        fields = disputes.opening_fields(record, when, unit=unit, agency=records.nfc(agency.strip()), reason=reason)
        keyed = records.dispute(store.node_id, fields)
        store.write_local([keyed], HybridClock(store.latest_version()))
    thread = keyed.id.hex()
    audited(node_dir, "dispute.opened", thread, record=record.id.hex(), origin=record.origin, unit=unit, agency=agency, reason=reason)
    click.echo(f"Dispute {thread} opened on {records.KIND_NAMES[record.kind]} {record.id.hex()}; it goes to node {record.origin}.")


@dispute.command("answer")
@DIR_OPTION
@DISPUTE_ARGUMENT
@click.option("--explanation", default="", help="The answer: why the figure stands, or what the correction is.")
@click.option("--value", default="", help="The corrected value (an indicator value): writes a new version of the record.")
@AT_OPTION
def answer(node_dir: Path, dispute_ref: str, explanation: str, value: str, at: str) -> None:
    """Answer a dispute on one of this node's records: explain it, or correct the value."""
    if not explanation.strip() and not value:
        fail("an answer needs an explanation or a corrected value", '--explanation "why the figure stands" or --value 123')
    action = "corrected" if value else "answered"
    details = _act(node_dir, dispute_ref, action, _at(at), note=explanation, value=value)
    click.echo(f"Dispute {details['thread']}: {action}" + (f", the value is now {details['value']}" if value else "") + ".")


@dispute.command("close")
@DIR_OPTION
@DISPUTE_ARGUMENT
@click.option("--reason", default="", help="Why it is closed (the answer is accepted, the question withdrawn).")
@AT_OPTION
def close(node_dir: Path, dispute_ref: str, reason: str, at: str) -> None:
    """Close a dispute this node opened."""
    details = _act(node_dir, dispute_ref, "closed", _at(at), note=reason)
    click.echo(f"Dispute {details['thread']}: closed.")


@dispute.command("reopen")
@DIR_OPTION
@DISPUTE_ARGUMENT
@click.option("--reason", required=True, help="Why the answer does not settle it.")
@AT_OPTION
def reopen(node_dir: Path, dispute_ref: str, reason: str, at: str) -> None:
    """Reopen a dispute this node opened, after its answer or its closing."""
    details = _act(node_dir, dispute_ref, "reopened", _at(at), note=reason)
    click.echo(f"Dispute {details['thread']}: reopened.")


def _act(node_dir: Path, dispute_ref: str, action: str, at: str, *, note: str = "", value: str = "") -> dict[str, Any]:
    """Check an act against the thread's state on this node, write it (with the corrected record), audit it."""
    settings = load_settings(node_dir)
    with writing_store(node_dir, settings) as store:
        thread = disputes.find(disputes.load(store).threads, dispute_ref)
        party = thread.record_origin if action in disputes.ORIGIN_ACTS else thread.opened_by
        if party != store.node_id:
            who = "the record's origin" if action in disputes.ORIGIN_ACTS else "the node that opened it"
            fail(f"dispute {thread.id} is answered and closed by its parties; {who} is node {party}, not this one", f"act at node {party}")
        fields = disputes.act_fields(thread, action, at, unit=runtime.own_units(settings)[0], note=note, value=value)
        keyed = [records.dispute(store.node_id, fields)]
        if value:
            keyed.insert(0, _corrected(store, thread, value))
            fields["value"] = records.body_of(keyed[0].envelope(store.node_id, 1)).value  # as the record keeps it
            keyed[1] = records.dispute(store.node_id, fields)
        act = disputes.Act.from_envelope(keyed[-1].envelope(store.node_id, 0))
        reason = disputes.refusal(thread, act)
        if reason:
            fail(f"dispute {thread.id} is {thread.state}: {reason}", f"see its history: lienthong dispute show --dir DIR {thread.id}")
        store.write_local(keyed, HybridClock(store.latest_version()))
    details = {"thread": thread.id, "record": thread.record, "note": note, **({"value": fields["value"]} if value else {})}
    audited(node_dir, f"dispute.{action}", thread.id, **details)
    return details


def _corrected(store: Store, thread: disputes.Thread, value: str) -> records.Keyed:
    """The disputed indicator value again with `value`: its next version."""
    raw = store.envelope(bytes.fromhex(thread.record))
    if raw is None:
        fail(f"record {thread.record} is not held here", "answer at the record's origin node")
    env = records.Envelope.FromString(raw)
    if env.kind != records.INDICATOR:
        fail("only an indicator value is corrected with --value", "send the corrected report file again, then answer with --explanation")
    fields = records.to_dict(env)
    fields["value"] = value
    keyed = records.indicator_value(store.node_id, fields)
    if records.body_of(keyed.envelope(store.node_id, 1)).value == records.body_of(env).value:
        fail(f"the value is already {value}", "answer with --explanation instead")
    return keyed
