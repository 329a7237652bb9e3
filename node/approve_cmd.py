"""`lienthong approve`: a unit's head approves its data set for a period; the level above accepts or returns it.

Which step a run takes follows from where it runs and for which unit (DHIS2's approval levels):

| run at | for | plain | `--return --reason R` | `--unapprove --reason R` |
|---|---|---|---|---|
| the unit's own node | its own unit | approve | refused | un-approve |
| a node above | a unit below it | accept | return | un-accept |

The step is an `approval` record (sync/approval.py), sealed and replicated, and an entry
of the node's audit log.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click

from lienthong.sync import approval as approval_mod
from lienthong.sync import records
from lienthong.sync.clock import HybridClock
from lienthong.sync.indicator_sets import IndicatorSets
from lienthong.sync.schedule import Schedules, bounds
from lienthong.sync.store import Store
from lienthong.sync.units import Units

from . import runtime
from .cli_common import DIR_OPTION, audited, echo_json, fail, load_settings, writing_store

# The step each action is, as the console names it (`asked`).
STEPS = {"approved": "approve", "unapproved": "unapprove", "accepted": "accept", "returned": "return", "unaccepted": "unaccept"}


def datasets(store_defs: list[records.Envelope]) -> set[str]:
    """The data sets a node knows: report types with a schedule, and indicator sets."""
    return {s.report_type for s in Schedules.from_envelopes(store_defs)} | IndicatorSets.from_envelopes(store_defs).datasets()


@click.command()
@DIR_OPTION
@click.option("--period", required=True, help="The period approved: 2026-10, 2026Q4, 2026S1 or 2026.")
@click.option("--dataset", required=True, help="The data set: a report type (BC-IOC-THANG) or an indicator set (BCS-KTXH).")
@click.option("--unit", help="The unit whose data it is (default: this node's own unit).")
@click.option("--return", "give_back", is_flag=True, help="At the level above: return the data to its unit, with --reason.")
@click.option("--unapprove", is_flag=True, help="Withdraw this node's approval (or, at the level above, its acceptance), with --reason.")
@click.option("--reason", default="", help="Why (required with --return and --unapprove).")
@click.option("--by", "by", default="", help="Who decides (default: the operator's user name).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def approve(
    node_dir: Path, period: str, dataset: str, unit: str | None, give_back: bool, unapprove: bool, reason: str, by: str, as_json: bool
) -> None:
    """Approve a data set of this node's unit for PERIOD, or accept / return a unit's below it."""
    from .trust.audit import operator_name

    settings = load_settings(node_dir)
    who = by or operator_name()
    with writing_store(node_dir, settings) as store:
        out = take_step(
            store, settings, period=period, dataset=dataset, unit=unit, give_back=give_back, unapprove=unapprove, reason=reason, by=who
        )
    action, after, unit, reason = out["action"], out["state"], out["unit"], out["reason"]
    audited(node_dir, f"approval.{action}", f"{unit} {out['dataset']} {out['period']}", reason=reason, by=who, state=after)
    if as_json:
        echo_json(out)
        return
    click.echo(f"{out['dataset']} {out['period']} of unit {unit}: {action} by {who}; now {after}.")


def take_step(
    store: Store,
    settings: Any,
    *,
    period: str,
    dataset: str,
    unit: str | None,
    give_back: bool,
    unapprove: bool,
    reason: str,
    by: str,
    asked: str = "",
) -> dict[str, str]:
    """Check one approval step against where this node stands and the current state, then write it.
    Which step it is follows from the node (see the table above); `asked` (approve, accept,
    unapprove, unaccept, return), when given, must be that step. Returns what was written and the
    state after it. Raises LienthongError (one sentence and a hint) when the step may not be taken.
    The console's approval actions call this too: the same rules from the page as from the CLI."""
    period, dataset, reason = period.strip(), records.nfc(dataset.strip()), reason.strip()
    bounds(period)  # refuses what is not a reporting period
    if give_back and unapprove:
        fail("--return and --unapprove are two different steps", "give one of them")
    if (give_back or unapprove) and not reason:
        fail("a return or an un-approval needs its reason", "give the reason (the unit sees it)")
    own = [records.nfc(code) for code in runtime.own_units(settings)]
    unit = records.nfc(unit.strip()) if unit else own[0]
    definitions = list(store.iter_records(records.DEFINITION))
    known = datasets(definitions)
    if dataset not in known:
        fail(
            f"{dataset!r} is neither a report type with a schedule nor an indicator set this node holds",
            "use one of " + (", ".join(sorted(known)) or "(none yet: the province sends them down)"),
        )
    registry = Units.from_envelopes(d for d in definitions if records.body_of(d).type == "unit")
    if unit in own:
        if give_back:
            fail(f"unit {unit} is this node's own: it cannot return its own data", "the level above returns it")
        action = "unapproved" if unapprove else "approved"
    elif any(unit in registry.descendants(code) for code in own):
        action = "returned" if give_back else "unaccepted" if unapprove else "accepted"
    else:
        fail(
            f"this node neither answers for unit {unit} nor is above it",
            "approve at the unit's own node, and accept at the node of the level above it",
        )
    if asked and STEPS[action] != asked:
        here = "its own node" if unit in own else "the level above it"
        fail(
            f"this node is {here}: for unit {unit} it may {STEPS[action]}, not {asked}",
            "approve and un-approve at the unit's own node; accept, return and un-accept at the level above",
        )
    current = approval_mod.approvals(store.reader(), [unit]).get((unit, dataset, period))
    state = current.state if current else approval_mod.SUBMITTED
    problem = approval_mod.step_problem(action, state, unit, dataset, period)
    if problem:
        fail(*problem)
    at = datetime.now().astimezone().isoformat(timespec="seconds")
    keyed = records.approval(
        store.node_id, {"unit": unit, "dataset": dataset, "period": period, "action": action, "reason": reason, "by": by, "at": at}
    )
    store.write_local([keyed], HybridClock(store.max_version()))
    after = approval_mod.approvals(store.reader(), [unit])[(unit, dataset, period)].state
    return {"unit": unit, "dataset": dataset, "period": period, "action": action, "state": after, "by": by, "at": at, "reason": reason}
