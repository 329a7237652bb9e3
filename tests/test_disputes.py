"""Disputes on a figure (#15 item 6): the fold of a thread's acts, and the flow on real nodes —
opened at the province, corrected at the commune, the same thread at both ends, forged acts
from another commune refused at the province, every act in the audit logs."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from lienthong.config.settings import load
from lienthong.node.cli import cli as lienthong_cli
from lienthong.node.runtime import open_store
from lienthong.sync import disputes, records
from lienthong.sync.clock import HybridClock
from lienthong.sync.downstream import Downstream
from lienthong.sync.store import Store
from lienthong.sync.upstream import Upstream

from .conftest import MakeNode, listen_address
from .fault_helpers import check_alive, log_excerpt
from .helpers import STORE_FILE, NodeProcess, fill, running, wait_until

DEFINITIONS = Path(__file__).parents[1] / "node" / "demo_data" / "definitions.jsonl"
BA_TRI, LONG_CHAU = "86-28894", "86-29254"
FIGURE = {"kind": "indicator", "indicator": "KTXH.NS.01", "unit": BA_TRI, "period": "2026-10", "value": 12450, "agency": "thongke"}
STATION = f"{BA_TRI}.tyt"  # Ba Tri's health station, a node below the commune's
STATION_FIGURE = {"kind": "indicator", "indicator": "KTXH.YT.01", "unit": STATION, "period": "2026-10", "value": 830, "agency": "soyte"}


def lienthong(*args: str) -> str:
    """An operator's command, run in this process (a subprocess costs a second of start-up each); its stdout."""
    result = CliRunner().invoke(lienthong_cli, list(args))
    assert result.exit_code == 0 and result.exception is None, f"lienthong {' '.join(args)}: {result.exception!r}\n{result.output}"
    return result.stdout


def threads(node: Path) -> list[dict[str, Any]]:
    return list(json.loads(lienthong("dispute", "list", "--dir", str(node), "--json")))


def show(node: Path, thread: str) -> dict[str, Any]:
    return dict(json.loads(lienthong("dispute", "show", "--dir", str(node), thread, "--json")))


def figure_at(node: Path, record_id: str) -> str:
    store = Store.open(node / STORE_FILE)
    try:
        raw = store.envelope(bytes.fromhex(record_id))
    finally:
        store.close()
    return str(records.body_of(records.Envelope.FromString(raw)).value) if raw else ""


def forge(node: Path, fields: dict[str, Any]) -> bytes:
    """Write a dispute act at `node` through the library, sealed with its own key: what a node that
    bypasses the command (or a modified one) would send up."""
    store = open_store(node, load(node))
    try:
        keyed = records.dispute(store.node_id, fields)
        store.write_local([keyed], HybridClock(store.latest_version()))
        return keyed.id
    finally:
        store.close()


def audit_actions(node: Path, tmp_path: Path) -> list[dict[str, Any]]:
    dest = tmp_path / f"{node.name}-audit.jsonl"
    lienthong("audit", "export", "--dir", str(node), str(dest))
    entries = [json.loads(line) for line in dest.read_text().splitlines()]
    return [e for e in entries if "action" in e]  # the last line is the verification result


# ---------------------------------------------------------------- the fold


def _act(thread: disputes.Thread, action: str, origin: str, version: int, note: str = "", value: str = "") -> disputes.Act:
    return disputes.Act(
        f"{version:032x}", action, f"2026-11-0{version}T09:00:00+07:00", origin, version, origin, "", note, value, thread.id,
        thread.record, thread.record_origin, thread.opened_by,
    )  # fmt: skip


def test_the_fold_is_the_same_in_any_order_and_ignores_acts_of_non_parties() -> None:
    """Any delivery order gives the same thread; an answer by a node other than the record's origin,
    or a close by a node other than the opener, changes nothing and is kept as ignored."""
    thread = disputes.Thread("ab" * 16, "cd" * 16, "indicator", BA_TRI, BA_TRI, 7, "12450", "86", "86", "", "2026-11-01", "too high")
    acts = [
        _act(thread, "answered", LONG_CHAU, 1, "forged"),
        _act(thread, "corrected", BA_TRI, 2, "double counted", "12405"),
        _act(thread, "closed", LONG_CHAU, 3),
        _act(thread, "reopened", "86", 4, "still too high"),
        _act(thread, "answered", BA_TRI, 5, "checked again"),
    ]
    results = {json.dumps(disputes.fold(thread, order).to_dict(history=True)) for order in itertools.permutations(acts)}
    assert len(results) == 1
    folded = disputes.fold(thread, acts)
    assert (folded.state, folded.answer, folded.corrected_value) == ("answered", "checked again", "12405")
    assert [(s.act.action, s.applied) for s in folded.history] == [
        ("answered", False),
        ("corrected", True),
        ("closed", False),
        ("reopened", True),
        ("answered", True),
    ]
    assert "only the record's origin 86-28894 answers" in folded.history[0].reason


# ---------------------------------------------------------------- real nodes


@pytest.mark.slow
def test_dispute_opened_at_province_is_corrected_at_the_commune_and_forgeries_are_refused(make_node: MakeNode, tmp_path: Path) -> None:
    """Province questions Ba Tri's figure; Ba Tri corrects it; both print the same thread and the
    province holds the corrected value; Long Châu's forged answer, its answer claiming to be the
    origin, and its dispute in Ba Tri's name are refused at the province; every act is audited.
    Then over three tiers: a question on the figure of a station below Ba Tri is answered at the
    station, and the three nodes print the same thread."""
    province = make_node("86")
    ba_tri = make_node(BA_TRI, parent=listen_address(province), listen=True)
    long_chau = make_node(LONG_CHAU, parent=listen_address(province))
    station = make_node(STATION, parent=listen_address(ba_tri), parent_id=BA_TRI)  # a third tier, below Ba Tri
    lienthong("ingest", "--dir", str(province), str(DEFINITIONS))
    fill(ba_tri, [FIGURE])
    fill(station, [STATION_FIGURE])
    procs = [NodeProcess(n) for n in (province, ba_tri, long_chau, station)]

    def until(predicate: Any, what: str) -> Any:
        def probe() -> Any:
            check_alive(procs)
            return predicate()

        try:
            return wait_until(probe, timeout=30, interval=0.2, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log_excerpt(procs)}") from None

    with running(*procs):
        rows = until(
            lambda: json.loads(lienthong("query", "--dir", str(province), "indicators", "--format", "json")), "the figure upstairs"
        )
        record_id = rows[0]["id"]
        out = lienthong("dispute", "open", "--dir", str(province), record_id[:10], "--reason", "Cao bất thường so với quý trước")
        thread = out.split()[1]
        opened = until(lambda: threads(ba_tri), "the question at Ba Tri")
        assert (opened[0]["id"], opened[0]["state"], opened[0]["figure"]) == (thread, "open", "12450")

        lienthong("dispute", "answer", "--dir", str(ba_tri), thread[:8], "--value", "12405", "--explanation", "Trùng 45 hộ, đã sửa")
        until(lambda: figure_at(province, record_id) == "12405", "the corrected value at the province")
        until(lambda: threads(province)[0]["state"] == "corrected", "the correction at the province")
        at_province, at_commune = show(province, thread), show(ba_tri, thread)
        assert at_province == at_commune
        assert (at_province["state"], at_province["corrected_value"], at_province["answer"]) == (
            "corrected",
            "12405",
            "Trùng 45 hộ, đã sửa",
        )
        assert [(h["action"], h["by"]) for h in at_province["history"]] == [("corrected", BA_TRI)]

        # Long Châu writes what it may not, sealed with its own key: each is refused at the province.
        base = disputes.act_fields(disputes.find(disputes_at(province), thread), "answered", "2026-11-30T08:00:00+07:00", unit=LONG_CHAU)
        forged = {
            forge(long_chau, {**base, "note": "Số liệu đúng"}): "not_dispute_party",  # in Ba Tri's name
            forge(
                long_chau, {**base, "record_origin": LONG_CHAU, "at": "2026-11-30T08:01:00+07:00"}
            ): "not_dispute_party",  # claims the origin
            forge(
                long_chau, {**base, "action": "opened", "thread": "", "thread_origin": LONG_CHAU, "unit": BA_TRI, "note": "x"}
            ): "foreign_unit",  # Ba Tri's unit
        }
        refused = until(lambda: len(refused_at(long_chau)) == 3 and refused_at(long_chau), "the refusals shown at Long Châu")
        assert {bytes.fromhex(r["id"]): r["code"] for r in refused} == forged
        assert show(province, thread) == at_province  # nothing changed upstairs
        assert show(ba_tri, thread) == at_commune

        # Ba Tri's audit entry for its correction reaches the province with its audit copies.
        until(lambda: ("dispute.corrected", thread) in audit_copies(province, BA_TRI), "Ba Tri's audit entry at the province")
        lienthong("dispute", "reopen", "--dir", str(province), thread, "--reason", "Còn 3 hộ tạm trú?")
        until(lambda: threads(ba_tri)[0]["state"] == "reopened", "the reopening at Ba Tri")
        lienthong("dispute", "answer", "--dir", str(ba_tri), thread, "--explanation", "Hộ tạm trú không tính vào chỉ tiêu này")
        until(lambda: threads(province)[0]["state"] == "answered", "the explanation at the province")
        lienthong("dispute", "close", "--dir", str(province), thread, "--reason", "Chấp nhận số đã sửa")
        until(lambda: threads(ba_tri)[0]["state"] == "closed", "the close at Ba Tri")
        final = show(province, thread)
        assert show(ba_tri, thread) == final
        assert [(h["action"], h["by"], h["applied"]) for h in final["history"]] == [
            ("corrected", BA_TRI, True),
            ("reopened", "86", True),
            ("answered", BA_TRI, True),
            ("closed", "86", True),
        ]
        assert (final["corrected_value"], final["answer"]) == ("12405", "Hộ tạm trú không tính vào chỉ tiêu này")

        # Three tiers: the province questions the station's figure; Ba Tri carries the question down
        # and the station's answer up; the province, Ba Tri and the station show the same thread.
        figures = until(
            lambda: [
                r for r in json.loads(lienthong("query", "--dir", str(province), "indicators", "--format", "json")) if r["unit"] == STATION
            ],
            "the station's figure at the province",
        )
        out = lienthong("dispute", "open", "--dir", str(province), figures[0]["id"], "--reason", "Số ca tăng gấp đôi tháng 9?")
        third = out.split()[1]
        until(lambda: third in {t["id"] for t in threads(station)}, "the question at the station")
        lienthong("dispute", "answer", "--dir", str(station), third, "--explanation", "Ổ dịch tại ấp 3, đã báo Sở Y tế")
        until(lambda: show(province, third)["state"] == "answered", "the station's answer at the province")
        at_top = show(province, third)
        assert at_top == show(station, third) == show(ba_tri, third)
        assert [(h["action"], h["by"]) for h in at_top["history"]] == [("answered", STATION)]

    assert [(e["action"], e["subject"]) for e in audit_actions(province, tmp_path) if e["action"].startswith("dispute.")] == [
        ("dispute.opened", thread),
        ("dispute.reopened", thread),
        ("dispute.closed", thread),
        ("dispute.opened", third),
    ]
    assert [e["subject"] for e in audit_actions(province, tmp_path) if e["action"] == "record.refused"] == [LONG_CHAU] * 3
    at_commune = [e for e in audit_actions(ba_tri, tmp_path) if e["action"].startswith("dispute.")]
    assert [e["action"] for e in at_commune] == ["dispute.corrected", "dispute.answered"]
    assert at_commune[0]["details"]["value"] == "12405"


def audit_copies(node: Path, origin: str) -> set[tuple[str, str]]:
    """(action, subject) of the audit entries of `origin` that `node` holds as records."""
    store = Store.open(node / STORE_FILE)
    try:
        bodies = [records.body_of(env) for env in store.iter_records(records.AUDIT_ENTRY) if env.origin == origin]
        return {(body.action, body.subject) for body in bodies}
    finally:
        store.close()


def refused_at(node: Path) -> list[dict[str, Any]]:
    """What `status` shows as the records of `node` its parent refused (read in this process)."""
    store = Store.open(node / STORE_FILE)
    try:
        return Upstream(store).refused()
    finally:
        store.close()


def disputes_at(node: Path) -> list[disputes.Thread]:
    store = Store.open(node / STORE_FILE)
    try:
        return disputes.load(store).threads
    finally:
        store.close()


# ---------------------------------------------------------------- routing, in process


AGENCY = "86-SYT"  # the health department's own node, a child of the province


def test_acts_from_an_agency_node_go_down_to_the_origin_and_the_answer_back_to_the_agency(tmp_path: Path) -> None:
    """At the province (a real store, no network): an agency node's question is queued for the
    record's origin, the origin's answer for the agency, never back to the sender; the agency's
    answers in the origin's name, or claiming to be the origin, are refused."""
    store = Store.create(tmp_path / "province.db", "86")
    down = Downstream(store)
    for child in (BA_TRI, AGENCY):
        down.register_child(child, "127.0.0.1:1")
    clock = HybridClock(store.latest_version())
    store.write_local([records.build("86", unit_definition(code)) for code in (BA_TRI, AGENCY)], clock)
    record = records.indicator_value(BA_TRI, FIGURE).envelope(BA_TRI, clock.now())
    opening = records.dispute(AGENCY, {**disputes.opening_fields(record, "2026-11-02T08:00:00+07:00", unit=AGENCY, agency="", reason="?")})
    thread = disputes.thread_from_envelope(opening.envelope(AGENCY, 1))
    answer = records.dispute(BA_TRI, disputes.act_fields(thread, "answered", "2026-11-03T08:00:00+07:00", unit=BA_TRI, note="ok"))
    forged = records.dispute(AGENCY, disputes.act_fields(thread, "answered", "2026-11-04T08:00:00+07:00", unit=AGENCY, note="ok"))

    claim = records.dispute(
        AGENCY, {**disputes.act_fields(thread, "answered", "2026-11-02T09:00:00+07:00", unit=AGENCY), "record_origin": AGENCY}
    )

    def send(child: str, seq: int, *keyed: records.Keyed) -> list[str]:
        raws = [k.envelope(child, clock.now()).SerializeToString() for k in keyed]
        return [r.code for r in down.apply_from_child(child, "e", seq - 1, seq, b"", raws)]

    assert send(AGENCY, 1, opening, claim) == ["not_dispute_party"]  # claims to be the origin, in the thread's own batch
    assert send(BA_TRI, 1, answer) == []
    assert send(AGENCY, 2, forged) == ["not_dispute_party"]
    queued = {
        (child, rid)
        for child, rid in store.reader().execute(
            "SELECT d.child, r.id FROM downqueue d JOIN records r ON r.rid = d.rid WHERE r.kind = ?", (records.DISPUTE,)
        )
    }
    assert queued == {(BA_TRI, opening.id), (AGENCY, answer.id)}


def test_a_commune_refuses_from_its_parent_an_act_that_does_not_match_its_thread(tmp_path: Path) -> None:
    """What comes down is checked too: an answer by another commune claiming to be the record's
    origin is refused at the commune that holds the thread; the question itself is taken."""
    store = Store.create(tmp_path / "commune.db", BA_TRI)
    clock = HybridClock(0)
    record = records.indicator_value(BA_TRI, FIGURE).envelope(BA_TRI, clock.now())
    opening = records.dispute("86", disputes.opening_fields(record, "2026-11-02T08:00:00+07:00", unit="86", agency="", reason="?"))
    thread = disputes.thread_from_envelope(opening.envelope("86", 1))
    claim = {**disputes.act_fields(thread, "answered", "2026-11-03T08:00:00+07:00", unit=LONG_CHAU), "record_origin": LONG_CHAU}
    forged = records.dispute(LONG_CHAU, claim)
    raws = [opening.envelope("86", clock.now()).SerializeToString(), forged.envelope(LONG_CHAU, clock.now()).SerializeToString()]
    taken, refused = Upstream(store).apply_from_parent("e", 0, 2, raws)
    assert (taken, [(r.id, r.code) for r in refused]) == (1, [(forged.id, "not_dispute_party")])
    assert [t.id for t in disputes.load(store).threads] == [opening.id.hex()] and not disputes.load(store).orphans


def unit_definition(code: str) -> dict[str, Any]:
    return {"kind": "definition", "type": "unit", "code": code, "fields": {"name": code, "parent": "86"}}


def test_acts_held_before_a_child_first_connects_are_queued_to_it_when_it_does(tmp_path: Path) -> None:
    """A district holds a question about a commune's figure before that commune (named by no
    definition) has ever connected: nothing can take it yet; when the commune first connects, the
    question is queued to it, as feedback for its units is, and never to another child."""
    district = "86-BT"
    store = Store.create(tmp_path / "district.db", district)
    clock = HybridClock(0)
    record = records.indicator_value(BA_TRI, FIGURE).envelope(BA_TRI, clock.now())
    opening = records.dispute("86", disputes.opening_fields(record, "2026-11-02T08:00:00+07:00", unit="86", agency="", reason="?"))
    taken, refused = Upstream(store).apply_from_parent("e", 0, 1, [opening.envelope("86", clock.now()).SerializeToString()])
    assert (taken, refused) == (1, [])

    def queued() -> set[tuple[str, bytes]]:
        sql = "SELECT d.child, r.id FROM downqueue d JOIN records r ON r.rid = d.rid WHERE r.kind = ?"
        return {(child, bytes(rid)) for child, rid in store.reader().execute(sql, (records.DISPUTE,))}

    assert queued() == set()
    down = Downstream(store)
    down.register_child(LONG_CHAU, "127.0.0.1:1")
    down.register_child(BA_TRI, "127.0.0.1:2")
    assert queued() == {(BA_TRI, opening.id)}
    store.close()
