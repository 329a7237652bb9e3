"""The feedback fold (sync/feedback.py): states, deadlines, derived counts, routing, CLI."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from lienthong.node.cli import cli as lienthong_cli
from lienthong.sync import feedback as fb
from lienthong.sync import records
from lienthong.sync.clock import HybridClock
from lienthong.sync.downstream import Downstream
from lienthong.sync.errors import InputError, LienthongError
from lienthong.sync.store import Store
from lienthong.sync.upstream import Upstream

from .conftest import MakeNode
from .helpers import cli

SAMPLE = Path(__file__).parent / "testdata" / "samples" / "inbox" / "1022" / "open311-2026-11-20.json"
DEFINITIONS = Path(__file__).parents[1] / "node" / "demo_data" / "definitions.jsonl"
A, B, C = "86-28894", "86-29077", "86-29254"


def item(**over: Any) -> fb.Item:
    base: dict[str, Any] = dict(
        id="00" * 16,
        source_id="1022-1",
        origin="86",
        agency="1022",
        unit=A,
        received_at="2026-11-20T07:42:10+07:00",
        due_at="2026-11-27T07:42:10+07:00",
        due_rule="source",
    )
    return fb.Item(**{**base, **over})


def ev(status: str, version: int, *, origin: str = "86", actor: str = A, unit: str = "", rating: int = 0, at: str = "") -> fb.Event:
    at = at or f"2026-11-2{version % 10}T08:00:00+07:00"
    return fb.Event(f"{version:032x}", status, at, origin, version, actor, unit, f"note {version}", rating)


def state(i: fb.Item) -> tuple[Any, ...]:
    return i.state, i.assignee, i.result, i.rating, i.handled_at, i.suggested_unit, [(s.event.id, s.applied) for s in i.history]


# ---------------------------------------------------------------- the fold


def test_lifecycle_from_dispatch_to_rating() -> None:
    """The ordinary life: assigned, accepted, in progress, resolved with its result, closed, rated."""
    events = [
        ev("assigned", 1, unit=A),
        ev("accepted", 2),
        ev("in_progress", 3),
        ev("resolved", 4),
        ev("closed", 5),
        ev("satisfaction", 6, rating=4),
    ]
    out = fb.fold(item(), events)
    assert (out.state, out.assignee, out.result, out.rating) == ("closed", A, "note 4", 4)
    assert out.handled_at == events[3].at and out.on_time() is True
    assert all(s.applied for s in out.history)


@pytest.mark.parametrize(
    ("before", "status", "applies"),
    [
        (["assigned"], "accepted", True),
        ([], "accepted", False),  # nobody was assigned to accept it
        (["assigned", "resolved"], "resolved", False),
        (["assigned", "resolved"], "reopened", True),
        (["assigned"], "reopened", False),
        (["assigned"], "satisfaction", False),  # no rating before it is handled
        (["assigned", "resolved", "closed"], "closed", False),
        (["assigned", "resolved", "closed"], "assigned", False),  # reopen before reassigning
        (["assigned", "returned"], "in_progress", False),
        (["assigned", "returned"], "assigned", True),
        ([], "resolved", True),  # the dispatcher may handle it itself
        ([], "received", True),
    ],
)
def test_transition_table(before: list[str], status: str, applies: bool) -> None:
    """Each event applies only in the states the table allows; otherwise it is kept, marked ignored, with a reason."""
    history = [ev(s, n + 1, unit=A if s == "assigned" else "", rating=3) for n, s in enumerate(before)]
    last = ev(status, 50, unit=B if status == "assigned" else "", rating=3)
    out = fb.fold(item(), [*history, last])
    step = out.history[-1]
    assert step.event.id == last.id and step.applied is applies
    assert bool(step.reason) is not applies
    if not applies:
        assert out.state == fb.fold(item(), history).state


def test_an_item_dispatched_on_receipt_starts_assigned() -> None:
    """An item naming its unit (the 1022 file does) starts assigned to it; restating that changes nothing."""
    out = fb.fold(item(state="assigned", assignee=A), [ev("received", 1), ev("assigned", 2, unit=A)])
    assert (out.state, out.assignee) == ("assigned", A) and all(s.applied for s in out.history)


def test_returned_clears_the_assignee_and_keeps_the_suggestion() -> None:
    """A unit returning an item hands it back to the dispatcher with the unit it suggests."""
    out = fb.fold(item(), [ev("assigned", 1, unit=A), ev("returned", 2, unit=B)])
    assert (out.state, out.assignee, out.suggested_unit, out.responsible) == ("returned", "", B, A)


def test_a_stale_update_from_the_previous_assignee_is_ignored() -> None:
    """After reassignment, the old unit's update changes nothing; the new unit's does."""
    events = [
        ev("assigned", 1, unit=A),
        ev("assigned", 2, unit=B),
        ev("resolved", 3, origin=A, actor=A),
        ev("in_progress", 4, origin=B, actor=B),
    ]
    out = fb.fold(item(), events)
    assert (out.state, out.assignee) == ("in_progress", B)
    assert [s.applied for s in out.history] == [True, True, False, True]
    assert "assigned to 86-29077" in out.history[2].reason


def test_a_unit_above_the_assignee_may_act_for_it() -> None:
    """A commune node updating an item assigned to one of its wards is not refused."""
    events = [ev("assigned", 1, unit="86-28894.w1"), ev("accepted", 2, origin=A, actor=A)]
    assert fb.fold(item(), events, lambda unit: [A, "86"] if unit == "86-28894.w1" else []).state == "accepted"
    assert fb.fold(item(), events).state == "assigned"


def test_reopening_forgets_the_resolution() -> None:
    """A reopened item is open again: no result, not handled, and overdue once past its deadline."""
    out = fb.fold(item(), [ev("assigned", 1, unit=A), ev("resolved", 2), ev("reopened", 3)])
    assert (out.state, out.result, out.handled_at, out.on_time()) == ("reopened", "", "", None)
    assert out.overdue(dt.datetime(2026, 12, 1, tzinfo=dt.UTC))


def test_order_is_the_clock_then_origin_then_id() -> None:
    """Events at the same version are ordered by origin, then record id, not by their stated time."""
    first = fb.Event("b" * 32, "assigned", "2026-11-30T00:00:00+07:00", "86", 7, A, A)
    second = fb.Event("a" * 32, "resolved", "2026-11-01T00:00:00+07:00", "86-9", 7, A)
    assert fb.fold(item(), [second, first]).state == "resolved"
    assert [s.event.id for s in fb.fold(item(), [second, first]).history] == [first.id, second.id]


STATUSES = ["received", "assigned", "accepted", "in_progress", "resolved", "closed", "reopened", "returned", "satisfaction"]


def random_event(status: str, version: int, origin: str, unit: str, rating: int, actor: str) -> fb.Event:
    # A record id is a hash of what the record says: equal ids never carry different content.
    rid = hashlib.sha256(repr((status, version, origin, unit, rating, actor)).encode()).hexdigest()[:32]
    return fb.Event(rid, status, f"2026-11-{version % 28 + 1:02d}T08:00:00+07:00", origin, version, actor, unit, "", rating)


event_strategy = st.builds(
    random_event,
    st.sampled_from(STATUSES),
    st.integers(1, 40),
    st.sampled_from(["86", A, B]),
    st.sampled_from(["", A, B, C]),
    st.integers(0, 6),
    st.sampled_from([A, B, C]),
)


@settings(max_examples=300, deadline=None)
@given(events=st.lists(event_strategy, max_size=14), seed=st.integers(0, 2**32), dup=st.integers(0, 5))
def test_any_delivery_order_with_duplicates_gives_the_same_state(events: list[fb.Event], seed: int, dup: int) -> None:
    """Property (DESIGN §3): the fold is the same whatever order events arrive in, and however often."""
    rng = random.Random(seed)
    delivered = events + [rng.choice(events) for _ in range(dup if events else 0)]
    rng.shuffle(delivered)
    assert state(fb.fold(item(), delivered)) == state(fb.fold(item(), events))


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_events_find_their_items_whatever_the_order(seed: int) -> None:
    """Property: grouping events under items from envelopes does not depend on their order."""
    rng = random.Random(seed)
    items = [records.build("86", feedback_row(f"1022-{n}", A)).envelope("86", n + 1) for n in range(3)]
    events = [
        records.build(origin, event_row(f"1022-{rng.randrange(4)}", status, n, origin)).envelope(origin, 100 + n)
        for n, (status, origin) in enumerate((rng.choice(STATUSES[:-1]), rng.choice(["86", A])) for _ in range(12))
    ]
    grouped, orphans = fb.attach(items, events)
    shuffled = events[:]
    rng.shuffle(shuffled)
    again, orphans_again = fb.attach(items[::-1], shuffled)
    assert {k: sorted(e.id for e in v) for k, v in grouped.items()} == {k: sorted(e.id for e in v) for k, v in again.items()}
    assert sorted(e.id for e in orphans) == sorted(e.id for e in orphans_again)
    # 1022-3 has no item: exactly its events are orphans (kept, not lost); every other event found its item.
    ticket = {e.id.hex(): records.body_of(e).feedback for e in events}
    assert sorted(e.id for e in orphans) == sorted(i for i, t in ticket.items() if t == "1022-3")
    assert sum(len(v) for v in grouped.values()) + len(orphans) == len(events)


def feedback_row(source_id: str, unit: str, **over: Any) -> dict[str, Any]:
    return {
        "kind": "feedback",
        "source_id": source_id,
        "unit": unit,
        "agency": "1022",
        "category": "GT-01",
        "description": "Ổ gà lớn trên đường tỉnh 885",
        "received_at": "2026-11-20T07:42:10+07:00",
        **over,
    }


def event_row(source_id: str, status: str, n: int, origin: str = "86", **over: Any) -> dict[str, Any]:
    return {
        "kind": "feedback_event",
        "feedback": source_id,
        "feedback_origin": "86",
        "status": status,
        "at": f"2026-11-{n % 28 + 1:02d}T08:00:00+07:00",
        "unit": A,
        "agency": "1022" if origin == "86" else "",
        **over,
    }


# ---------------------------------------------------------------- a store: deadlines, derived counts, status


def write(store: Store, *rows: dict[str, Any]) -> None:
    store.write_local([records.build(store.node_id, r) for r in rows], HybridClock(store.latest_version()))


def test_deadline_from_source_category_or_default(tmp_path: Path) -> None:
    """due_at from the source wins; else the category's due_days from the province; else 7 days."""
    store = Store.create(tmp_path / "s.db", "86")
    write(
        store,
        {"kind": "definition", "type": "feedback_category", "code": "MT-02", "fields": {"due_days": 3}},
        feedback_row("s", A, due_at="2026-11-21T17:00:00+07:00"),
        feedback_row("c", A, category="MT-02"),
        feedback_row("d", A),
    )
    due = {i.source_id: (i.due_at, i.due_rule) for i in fb.load(store).items}
    assert due == {
        "s": ("2026-11-21T17:00:00+07:00", "source"),
        "c": ("2026-11-23T07:42:10+07:00", "category"),
        "d": ("2026-11-27T07:42:10+07:00", "default"),
    }


def test_derived_values_match_a_hand_computed_table(tmp_path: Path) -> None:
    """KTXH.PA.01/PA.02 per responsible unit for a month, as counted by hand, tagged as derived."""
    store = Store.create(tmp_path / "s.db", "86")
    r = "resolved"
    write(
        store,
        feedback_row("a", A, received_at="2026-11-01T00:30:00+07:00"),  # November as written (October in UTC)
        feedback_row("b", A, received_at="2026-11-10T08:00:00+07:00", due_at="2026-11-12T17:00:00+07:00"),
        feedback_row("c", A, received_at="2026-11-15T08:00:00+07:00"),
        feedback_row("d", C, received_at="2026-11-20T08:00:00+07:00"),
        feedback_row("e", C, received_at="2026-12-01T08:00:00+07:00"),
        feedback_row("f", A, received_at="2026-11-03T08:00:00+07:00"),
    )
    write(store, event_row("a", r, 0, at="2026-11-05T10:00:00+07:00"))
    write(store, event_row("b", r, 0, at="2026-11-13T10:00:00+07:00"))  # a day late
    write(store, event_row("c", "assigned", 0, at="2026-11-15T09:00:00+07:00", assigned_unit=B))
    write(store, event_row("c", "closed", 0, at="2026-11-16T10:00:00+07:00"))  # closed as invalid: handled
    write(store, event_row("f", r, 0, at="2026-11-04T10:00:00+07:00"))
    write(store, event_row("f", "reopened", 0, at="2026-11-06T10:00:00+07:00"))
    rows = fb.derived_values(store, "2026-11")
    assert {(x["indicator"], x["unit"], x["value"]) for x in rows} == {
        ("KTXH.PA.01", A, 3),
        ("KTXH.PA.01", B, 1),
        ("KTXH.PA.01", C, 1),
        ("KTXH.PA.02", A, 1),
        ("KTXH.PA.02", B, 1),
        ("KTXH.PA.02", C, 0),
    }
    assert all(x["source"] == fb.DERIVED_SOURCE and x["period"] == "2026-11" and x["kind"] == "indicator" for x in rows)
    with pytest.raises(InputError, match="not a month"):
        fb.derived_values(store, "2026Q4")


def test_status_summary_counts_open_and_overdue(tmp_path: Path) -> None:
    """status shows open items, how many are overdue and which, most overdue first."""
    store = Store.create(tmp_path / "s.db", "86")
    write(store, feedback_row("late", A, due_at="2026-11-21T00:00:00+07:00"), feedback_row("later", A), feedback_row("fine", A))
    write(store, event_row("fine", "resolved", 0, at="2026-11-20T09:00:00+07:00"))
    summary = fb.status_summary(store, dt.datetime(2026, 11, 28, tzinfo=dt.UTC))
    assert (summary["open"], summary["overdue"]) == (2, 2)
    assert [i["source_id"] for i in summary["overdue_items"]] == ["late", "later"]
    assert fb.status_summary(store, dt.datetime(2026, 11, 22, tzinfo=dt.UTC).timestamp())["overdue"] == 1


def test_find_by_ticket_id_record_id_or_prefix_and_says_when_ambiguous() -> None:
    """An item is named by its ticket id or record id (or a 6+ digit prefix); unknown and ambiguous names fail clearly."""
    one, two = item(id="ab" * 16, source_id="42"), item(id="ac" * 16, source_id="42", agency="portal")
    assert fb.find([one], "42") is one
    assert fb.find([one, two], "abab" * 8) is one
    assert fb.find([one, two], "ababab") is one
    with pytest.raises(LienthongError, match="names 2 feedback items"):
        fb.find([one, two], "42")
    with pytest.raises(LienthongError, match="no feedback item"):
        fb.find([one, two], "43")


# ---------------------------------------------------------------- routing down


def test_routing_by_unit_registry_and_reassignment_history(tmp_path: Path) -> None:
    """Feedback goes to the child holding its unit (a ward through the registry); a reassignment
    sends the item and its whole history to the new unit's child, and never back to its sender."""
    store = Store.create(tmp_path / "p.db", "86")
    write(store, {"kind": "definition", "type": "unit", "code": "86-28894.w1", "fields": {"parent": A}})
    for child in (A, B):
        Downstream(store).register_child(child, "127.0.0.1:1")
    write(store, feedback_row("w", "86-28894.w1"), feedback_row("x", A))
    write(store, event_row("x", "accepted", 1))
    queued = queue(store)
    held = [*store.iter_records(records.FEEDBACK), *store.iter_records(records.FEEDBACK_EVENT)]
    rid_of = {records.to_dict(e).get("source_id") or records.to_dict(e)["status"]: e.id for e in held}
    assert {rid_of["w"], rid_of["x"], rid_of["accepted"]} <= queued[A]
    assert rid_of["x"] not in queued.get(B, set())
    write(store, event_row("x", "assigned", 2, assigned_unit=B, unit=B))
    queued = queue(store)
    assert {rid_of["x"], rid_of["accepted"]} <= queued[B]  # the item and its history follow it
    assert rid_of["w"] not in queued[B]


def queue(store: Store) -> dict[str, set[bytes]]:
    out: dict[str, set[bytes]] = {}
    for child, rid in store.db.execute("SELECT d.child, r.id FROM downqueue d JOIN records r ON r.rid = d.rid WHERE r.kind IN (3, 4)"):
        out.setdefault(child, set()).add(rid)
    return out


# ---------------------------------------------------------------- the commands


def run(*args: str) -> str:
    """Run a `lienthong` command in this process (fast); fail on any error."""
    result = CliRunner().invoke(lienthong_cli, list(args), catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"lienthong {' '.join(args)} failed: {result.exception!r}\n{result.output}")
    assert result.exit_code == 0, result.output
    return result.output


def refused(*args: str) -> LienthongError:
    """Run a command in this process that must be refused; return the error the user sees."""
    result = CliRunner().invoke(lienthong_cli, list(args), catch_exceptions=True)
    assert isinstance(result.exception, LienthongError), f"not refused: {result.output}"
    return result.exception


def test_commands_on_the_1022_sample(make_node: MakeNode, tmp_path: Path) -> None:
    """list/show/assign/update/stats on a province holding the 1022 sample, including refusals."""
    province = make_node("86")
    d = str(province)
    run("ingest", "--dir", d, str(DEFINITIONS))
    run("ingest", "--dir", d, "--agency", "1022", str(SAMPLE))
    listed = {i["source_id"]: i for i in json.loads(run("feedback", "list", "--dir", d, "--json"))}
    assert {k: (v["state"], v["assignee"]) for k, v in listed.items()} == {
        "1022-20261120-000153": ("assigned", A),
        "1022-20261120-000161": ("closed", C),
    }
    first = listed["1022-20261120-000153"]["id"]
    run("feedback", "assign", "--dir", d, first[:8], "--unit", B, "--note", "Chuyển xã Thạnh Phú", "--at", "2026-11-20T10:00:00+07:00")
    # As a user sees a refusal: one sentence and a hint, exit code 1.
    out = cli("feedback", "update", "--dir", d, "1022-20261120-000161", "--status", "resolved", "--result", "x", check=False)
    assert out.returncode == 1 and "Error: 1022-20261120-000161 is closed" in out.stderr and "Try: reopen it first" in out.stderr
    assert "rating" in refused("feedback", "update", "--dir", d, "1022-20261120-000161", "--status", "satisfaction").message
    assert "no feedback item" in refused("feedback", "assign", "--dir", d, "1022-nope", "--unit", B).message
    assert "not in the unit registry" in refused("feedback", "assign", "--dir", d, first, "--unit", "99-00000").message
    run("feedback", "update", "--dir", d, "1022-20261120-000161", "--status", "satisfaction", "--rating", "4")
    run(
        "feedback",
        "update",
        "--dir",
        d,
        "1022-20261120-000153",
        "--status",
        "resolved",
        "--result",
        "Đã vá ổ gà",
        "--at",
        "2026-11-28T10:00:00+07:00",
    )
    shown = json.loads(run("feedback", "show", "--dir", d, "1022-20261120-000153", "--json"))
    assert (shown["state"], shown["assignee"], shown["result"], shown["on_time"]) == ("resolved", B, "Đã vá ổ gà", False)
    assert shown["citizen"]["phone"] == "0903123456"
    assert [h["status"] for h in shown["history"]] == ["received", "assigned", "assigned", "resolved"]
    assert "Đã vá ổ gà" in run("feedback", "show", "--dir", d, first)
    assert "4/5" in run("feedback", "show", "--dir", d, "1022-20261120-000161")
    stats = json.loads(run("feedback", "stats", "--dir", d, "--period", "2026-11", "--json"))
    assert {(s["indicator"], s["unit"], s["value"]) for s in stats} == {
        ("KTXH.PA.01", B, 1),
        ("KTXH.PA.01", C, 1),
        ("KTXH.PA.02", B, 0),
        ("KTXH.PA.02", C, 1),
    }
    assert "86-29077" in run("feedback", "stats", "--dir", d, "--period", "2026-11")
    assert json.loads(run("feedback", "list", "--dir", d, "--overdue", "--json")) == []
    assert [i["source_id"] for i in json.loads(run("feedback", "list", "--dir", d, "--unit", C, "--json"))] == ["1022-20261120-000161"]
    assert "2 items, 0 overdue." in run("feedback", "list", "--dir", d)


def test_a_unit_cannot_update_an_item_assigned_elsewhere(make_node: MakeNode, tmp_path: Path) -> None:
    """At a commune, an item reassigned to another unit is refused with who updates it instead."""
    commune = make_node(A, parent="127.0.0.1:1")
    store = Store.open(commune / "lienthong.db")
    item_env = records.build("86", feedback_row("1022-7", A)).envelope("86", HybridClock().now())
    moved = records.build("86", event_row("1022-7", "assigned", 3, assigned_unit=B, unit=B)).envelope("86", HybridClock().now() + 1)
    Upstream(store).apply_from_parent("e", 0, 2, [item_env.SerializeToString(), moved.SerializeToString()])
    store.close()
    assert (
        f"assigned to {B}, not to this node's units"
        in refused("feedback", "update", "--dir", str(commune), "1022-7", "--status", "accepted").message
    )


def test_open311_status_update_from_a_units_system_finds_the_dispatched_item(tmp_path: Path) -> None:
    """A unit's own Open311 export (no description) adds events to the province's item, not a second item."""
    store = Store.create(tmp_path / "c.db", A)
    item_env = records.build("86", feedback_row("1022-9", A, assigned_unit=A)).envelope("86", HybridClock().now())
    Upstream(store).apply_from_parent("e", 0, 1, [item_env.SerializeToString()])
    update = [{"service_request_id": "1022-9", "status": "in_progress", "agency_responsible": A, "updated_datetime": "2026-11-22T08:00:00+07:00",
               "notes": [{"datetime": "2026-11-21T08:00:00+07:00", "type": "accepted", "description": "Đã nhận"}]}]  # fmt: skip
    path = tmp_path / "inbox" / "update.json"
    path.parent.mkdir()
    path.write_text(json.dumps(update, ensure_ascii=False), encoding="utf-8")
    from lienthong.adapters.base import ParseContext
    from lienthong.adapters.open311 import Open311Adapter

    rows = list(Open311Adapter().parse(path, ParseContext(A, "ubnd", path.parent)))
    assert [r.error for r in rows] == [None, None]
    store.write_local([r.record for r in rows if r.record], HybridClock(store.latest_version()))
    folded = fb.load(store)
    assert len(folded.items) == 1 and folded.orphans == []
    assert (folded.items[0].state, [s.event.status for s in folded.items[0].history]) == ("in_progress", ["accepted", "in_progress"])


def test_item_json_has_what_scripts_need() -> None:
    """`feedback list --json` rows carry state, assignee, deadline and timeliness for scripts."""
    keys = set(item().to_dict(dt.datetime(2026, 11, 21, tzinfo=dt.UTC)))
    assert {"id", "source_id", "state", "assignee", "due_at", "overdue", "on_time", "handled_at", "result", "rating"} <= keys
