"""`lienthong feedback`: dispatch citizen feedback and report its processing status.

Every change is one new `feedback_event` record written on this node (the item
itself never changes); what `list` and `show` print is the fold of the events this
node holds (sync/feedback.py), so the province and the unit print the same state
once their events have crossed. An event that would change nothing in the item's
current state (resolving a closed item, a stale update from a unit the item was
taken from) is refused here with the reason instead of being written.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click

from lienthong.sync import feedback as fb
from lienthong.sync import records
from lienthong.sync.clock import HybridClock
from lienthong.sync.store import Store
from lienthong.sync.units import Units

from . import runtime
from .cli_common import DIR_OPTION, aware_datetime, echo_json, fail, load_settings, opened_store, writing_store
from .cli_i18n import _, ngettext
from .display import local_time

# What a unit (or the dispatcher) reports with `update`; `assigned` has its own command.
UPDATE_STATUSES = ("accepted", "in_progress", "resolved", "closed", "reopened", "returned", "satisfaction")
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
ID_ARGUMENT = click.argument("item_ref", metavar="ID")


@click.group()
def feedback() -> None:
    """Citizen feedback: assign it to a unit, update its status, list what is overdue."""


# ---------------------------------------------------------------- reading


def _folded(node_dir: Path) -> fb.Folded:
    with opened_store(node_dir) as store:
        return fb.load(store)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@feedback.command("list")
@DIR_OPTION
@click.option("--overdue", is_flag=True, help="Only open items past their deadline.")
@click.option("--unit", default="", help="Only items this unit must handle (the assignee, else the item's unit).")
@click.option("--open", "only_open", is_flag=True, help="Only items not yet resolved or closed.")
@JSON_OPTION
def list_items(node_dir: Path, overdue: bool, unit: str, only_open: bool, as_json: bool) -> None:
    """Feedback items held here with their state, assignee, deadline and whether they are overdue."""
    load_settings(node_dir)
    folded = _folded(node_dir)
    now = _now()
    unit = records.nfc(unit.strip())
    items = [
        i for i in folded.items if (not overdue or i.overdue(now)) and (not unit or i.responsible == unit) and (not only_open or i.is_open)
    ]
    if as_json:
        echo_json([i.to_dict(now) for i in items])
        return
    if not items:
        click.echo(_("No feedback items match.") if overdue or unit or only_open else _("No feedback items on this node."))
        return
    heads = [_(h).upper() for h in ("id", "source id", "state", "assignee", "due", "overdue")]
    click.echo(f"{heads[0]:<12}  {heads[1]:<24} {heads[2]:<11} {heads[3]:<12} {heads[4]:<24}  {heads[5]}")
    for i in items:
        due = local_time(i.due_at)
        late = _("yes") if i.overdue(now) else (_("late") if i.on_time() is False else "")
        click.echo(f"{i.id[:12]:<12}  {i.source_id:<24} {i.state:<11} {i.responsible:<12} {due:<24}  {late}")
    late_count = sum(1 for i in items if i.overdue(now))
    summary = ngettext("{0} item, {1} overdue.", "{0} items, {1} overdue.", len(items)).format(len(items), late_count)
    if folded.orphans:
        orphans = len(folded.orphans)
        summary += " " + ngettext("{0} event names an item not held here.", "{0} events name items not held here.", orphans).format(orphans)
    click.echo(summary)


@feedback.command("show")
@DIR_OPTION
@ID_ARGUMENT
@JSON_OPTION
def show(node_dir: Path, item_ref: str, as_json: bool) -> None:
    """One item (by record id or source ticket id): its details, state and full history."""
    load_settings(node_dir)
    folded = _folded(node_dir)
    item = fb.find(folded.items, item_ref)
    now = _now()
    data = item.to_dict(now, history=True)
    if as_json:
        echo_json(data)
        return
    _print_item(data)


def _print_item(d: dict[str, Any]) -> None:
    click.echo(f"Feedback {d['source_id']}  (id {d['id']})")
    click.echo(f"  received {local_time(d['received_at'])} from {d['agency'] or 'this node'} at node {d['origin']}, about unit {d['unit']}")
    click.echo(f"  category {d['category']} {d['category_name']}".rstrip())
    click.echo(f"  {d['description']}")
    if d["address"]:
        click.echo(f"  address: {d['address']}")
    if d["citizen"]:
        click.echo("  citizen: " + ", ".join(d["citizen"].values()))
    assignee = d["assignee"] or "nobody (the dispatcher decides)"
    click.echo(
        f"  state: {d['state']}; assigned to {assignee}" + (f"; returned, suggesting {d['suggested_unit']}" if d["suggested_unit"] else "")
    )
    rule = {"source": "from the source", "category": "the category's deadline", "default": f"{fb.DEFAULT_DUE_DAYS} days after receipt"}
    timing = "OVERDUE" if d["overdue"] else {True: "handled on time", False: "handled late", None: "open"}[d["on_time"]]
    click.echo(f"  due {local_time(d['due_at'])} ({rule[d['due_rule']]}): {timing}")
    if d["result"]:
        click.echo(f"  result: {d['result']}")
    if d["rating"]:
        click.echo(f"  citizen's satisfaction: {d['rating']}/5")
    click.echo("History:")
    for h in d["history"]:
        extra = f" -> {h['assigned_unit']}" if "assigned_unit" in h else f" {h['rating']}/5" if "rating" in h else ""
        line = f"  {local_time(h['at'])}  {h['status']}{extra}  by {h['by']}"
        if h["note"]:
            line += f": {h['note']}"
        if not h["applied"]:
            line += f"  [ignored: {h['ignored_because']}]"
        click.echo(line)


# ---------------------------------------------------------------- writing


def _write_event(node_dir: Path, item_ref: str, status: str, *, at: str, note: str = "", unit: str = "", rating: int | None = None) -> None:
    """Check the event against the item's current state on this node, then write it."""
    settings = load_settings(node_dir)
    with writing_store(node_dir, settings) as store:
        item, after, written = record_event(store, settings, item_ref, status, at=at, note=note, unit=unit, rating=rating)
    if not written:
        click.echo(f"{item.source_id}: this event is already recorded; nothing changed.")
        return
    click.echo(f"{item.source_id}: {status}" + (f" -> {unit}" if unit else "") + f" recorded at {at}; now {after.state}.")


def record_event(
    store: Store, settings: Any, item_ref: str, status: str, *, at: str, note: str = "", unit: str = "", rating: int | None = None
) -> tuple[fb.Item, fb.Item, bool]:
    """Check an event against the item's current state in `store` (this node's rules: its own items
    or those assigned to its units), then write it. Returns the item before and after, and whether
    anything was written. Raises LienthongError (Error/Try) when the event may not be written.
    The console's feedback actions call this too: the same rules from the page as from the CLI."""
    folded = fb.load(store)
    item = fb.find(folded.items, item_ref)
    registry = Units.from_store(store)
    own = set(runtime.own_units(settings))
    if unit and len(registry) and unit not in registry:
        fail(f"unit {unit} is not in the unit registry", "check the code with `lienthong query --dir DIR` or the province's unit list")
    # This node may act on an item it dispatched itself, or on one assigned to its units (or below them).
    if store.node_id != item.origin and item.assignee:
        mine = own | {u for o in own for u in registry.descendants(o)}
        if item.assignee not in mine:
            fail(
                f"{item.source_id} is assigned to {item.assignee}, not to this node's units ({', '.join(sorted(own))})",
                f"the node of {item.assignee} or the dispatcher ({item.origin}) updates it",
            )
    actor = unit if status == "assigned" else item.responsible
    event = fb.Event("", status, at, store.node_id, 0, actor, unit, note, rating or 0)
    reason = fb.refusal(item, event, registry.ancestors)
    if reason:
        fail(f"{item.source_id} is {item.state}: {reason}", _hint(item, status))
    hlc = HybridClock(store.latest_version())
    fields = fb.event_fields(item, status, at, actor=actor, note=note, unit=unit, rating=rating)
    summary = store.write_local([records.build(store.node_id, fields)], hlc)
    return item, fb.fold(item, [event]), bool(summary.imported or summary.updated)


def _hint(item: fb.Item, status: str) -> str:
    if item.state in fb.HANDLED and status != "reopened":
        return f"reopen it first: lienthong feedback update --dir DIR {item.source_id} --status reopened"
    if item.state == "returned":
        return f"assign it to a unit: lienthong feedback assign --dir DIR {item.source_id} --unit UNIT"
    return "see its history: lienthong feedback show --dir DIR " + item.source_id


def _at(value: str) -> str:
    if not value:
        return dt.datetime.now().astimezone().isoformat(timespec="milliseconds")
    aware_datetime(value, "--at", "2026-11-21T16:30:00+07:00")
    return value


AT_OPTION = click.option("--at", "at", default="", metavar="DATETIME", help="When it happened (RFC 3339 with offset; default: now).")
NOTE_OPTION = click.option("--note", default="", help="A note for the history (what was done, why).")


@feedback.command("assign")
@DIR_OPTION
@ID_ARGUMENT
@click.option("--unit", required=True, help="The unit that must handle it (a unit code, e.g. 86-29077).")
@NOTE_OPTION
@AT_OPTION
def assign(node_dir: Path, item_ref: str, unit: str, note: str, at: str) -> None:
    """Assign (or reassign) an item to a unit; it goes down to the node of that unit with its history."""
    _write_event(node_dir, item_ref, "assigned", at=_at(at), note=note, unit=records.nfc(unit.strip()))


@feedback.command("update")
@DIR_OPTION
@ID_ARGUMENT
@click.option("--status", required=True, type=click.Choice(UPDATE_STATUSES), help="What happened.")
@NOTE_OPTION
@click.option("--result", default="", help="For resolved: what was done (the answer to the citizen).")
@click.option("--rating", type=click.IntRange(1, 5), help="For satisfaction: the citizen's rating, 1 (very unhappy) to 5.")
@click.option("--unit", default="", help="For returned: the unit that should handle it instead (a suggestion).")
@AT_OPTION
def update(node_dir: Path, item_ref: str, status: str, note: str, result: str, rating: int | None, unit: str, at: str) -> None:
    """Report what happened to an item: accepted, in_progress, resolved, closed, reopened, returned, satisfaction."""
    if status == "resolved":
        if result and note:
            fail("give the result with --result or --note, not both", "put the whole answer in --result")
        note = result or note
        if not note:
            fail("a resolution needs its result", 'add --result "what was done"')
    elif result:
        fail("--result goes with --status resolved", "write it as --note")
    if status == "satisfaction" and rating is None:
        fail("a satisfaction survey needs the citizen's rating", "add --rating 1..5")
    if status != "satisfaction" and rating is not None:
        fail("--rating goes with --status satisfaction", "drop --rating, or use --status satisfaction")
    if unit and status != "returned":
        fail("--unit goes with --status returned", "to send it to another unit use `lienthong feedback assign --unit`")
    if status == "returned" and not note:
        fail("returning an item needs the reason", 'add --note "why it is not this unit\'s responsibility"')
    _write_event(node_dir, item_ref, status, at=_at(at), note=note, unit=records.nfc(unit.strip()), rating=rating)


# ---------------------------------------------------------------- counts


@feedback.command("stats")
@DIR_OPTION
@click.option("--period", required=True, metavar="YYYY-MM", help="The month, e.g. 2026-11 (with --satisfaction also a quarter, 2026-Q4).")
@click.option(
    "--satisfaction", "satisfaction", is_flag=True, help="Citizens' satisfaction instead: ratings and surveys per unit and category."
)
@click.option("--unit", default="", help="With --satisfaction: only this unit and the units below it.")
@JSON_OPTION
def stats(node_dir: Path, period: str, satisfaction: bool, unit: str, as_json: bool) -> None:
    """Per unit, feedback received in a month and handled on time (KTXH.PA.01, KTXH.PA.02), derived from the items;
    with --satisfaction, the citizens' ratings and survey results per unit, category and period."""
    if satisfaction:
        from .satisfaction_cmd import stats_satisfaction

        stats_satisfaction(node_dir, period, unit, as_json)
        return
    if unit:
        fail("--unit goes with --satisfaction", "drop --unit, or add --satisfaction")
    load_settings(node_dir)
    with opened_store(node_dir) as store:
        rows = fb.derived_values(store, period)
    if as_json:
        echo_json(rows)
        return
    table: dict[str, dict[str, int]] = {}
    for row in rows:
        table.setdefault(row["unit"], {})[row["indicator"]] = row["value"]
    if not table:
        click.echo(f"No feedback received in {period} on this node.")
        return
    click.echo(f"{'UNIT':<14} {'RECEIVED':>9} {'ON TIME':>8}  ({fb.RECEIVED_INDICATOR}, {fb.ON_TIME_INDICATOR}; {period})")
    for unit, values in table.items():
        click.echo(f"{unit:<14} {values.get(fb.RECEIVED_INDICATOR, 0):>9} {values.get(fb.ON_TIME_INDICATOR, 0):>8}")
