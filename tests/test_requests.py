"""On-demand data requests: the province asks, units approve or decline, answers flow up with their origin."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lienthong.sync import records
from lienthong.sync import requests as dr
from lienthong.sync.clock import HybridClock
from lienthong.sync.downstream import Downstream
from lienthong.sync.errors import InputError
from lienthong.sync.store import Store
from lienthong.sync.upstream import Upstream

from .conftest import MakeNode, listen_address
from .helpers import NodeProcess, cli, running, wait_until

DEFINITIONS = Path(__file__).resolve().parent.parent / "node" / "demo_data" / "definitions.jsonl"
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=dr.VIETNAM)


def definitions(*extra: dict[str, object]) -> list[dict[str, object]]:
    rows = [json.loads(line) for line in DEFINITIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [*rows, *extra]


def unit(code: str, parent: str) -> dict[str, object]:
    return {"kind": "definition", "type": "unit", "code": code, "fields": {"name": code, "level": "commune", "parent": parent}}


def ask(
    origin: str = "86", code: str = "YC-20261120-01", units: tuple[str, ...] = ("86-28894", "86-29077"), due: str = "2026-11-30"
) -> records.Keyed:
    return dr.request_record(
        origin,
        code=code,
        what="Số hộ nghèo theo ấp, quý III",
        units=units,
        periods=["2026Q3"],
        reason="Báo cáo Tỉnh ủy",
        due=due,
        created_at="2026-11-20T09:00:00+07:00",
        requested_by="van.thu",
    )


@pytest.fixture
def province(tmp_path: Path) -> Iterator[Store]:
    store = Store.create(tmp_path / "province.db", "86")
    store.write_local([records.build("86", row) for row in definitions()], HybridClock())
    yield store
    store.close()


def write(store: Store, *keyed: records.Keyed) -> None:
    store.write_local(list(keyed), HybridClock(store.max_version()))


def from_parent(store: Store, *keyed: records.Keyed, parent: str = "86") -> None:
    """Deliver records written at the parent, as the downward stream does."""
    clock = HybridClock(store.max_version())
    epoch, applied, _ = Upstream(store).down_cursor()
    raws = [k.envelope(parent, clock.now()).SerializeToString() for k in keyed]
    Upstream(store).apply_from_parent(epoch or "parent-epoch", applied, applied + 1, raws)


def board(store: Store, own: list[str], now: datetime = NOW) -> list[dict[str, Any]]:
    return dr.board(dr.requests(store), dr.answers(store), dr.Scope.from_store(store, own), now)


# ---------------------------------------------------------------- the rules, on real stores


def test_request_fields_are_checked_and_name_the_bad_field() -> None:
    """A request with no unit, no period, a bad period, a due without offset or a bad code is refused, naming the field."""
    good = {"code": "YC-1", "what": "x", "units": ["86-28894"], "periods": ["2026Q3"], "reason": "r", "due": "2026-11-30"}
    cases = {
        "units": {"units": []},
        "periods": {"periods": []},
        "period": {"periods": ["Tháng 13/2026"]},
        "due": {"due": "2026-11-30T17:00:00"},
        "code": {"code": "86/YC-1"},
        "reason": {"reason": " "},
    }
    for field, change in cases.items():
        with pytest.raises(InputError) as caught:
            dr.request_record("86", **{**good, **change}, created_at="2026-11-20T09:00:00+07:00")  # type: ignore[arg-type]
        assert caught.value.field == field, (field, caught.value.message)
    assert dr.request_record("86", **good, created_at="2026-11-20T09:00:00+07:00").kind == records.DEFINITION  # type: ignore[arg-type]


def test_answering_twice_replaces_the_answer_with_a_new_version(province: Store) -> None:
    """The answer's id is (request, unit, answering node): a second answer is a new version of the same record."""
    write(province, ask())
    request = dr.find(dr.requests(province), "YC-20261120-01")
    first = dr.answer_record("86", request, "86-28894", dr.DECLINED, reason="Chưa có số liệu", at="2026-11-21T08:00:00+07:00")
    write(province, first)
    v1 = next(a.version for a in dr.answers(province))
    blob = {"name": "ho-ngheo.csv", "sha256": "ab" * 32, "size": 12}
    second = dr.answer_record("86", request, "86-28894", dr.APPROVED, reason="", at="2026-11-22T08:00:00+07:00", attachments=[blob])
    write(province, second)

    assert first.id == second.id
    (only,) = dr.answers(province)
    assert only.version > v1 and only.decision == dr.APPROVED and only.attachments == (blob,)
    rows = board(province, ["86"])[0]["answers"]
    assert [(r["unit"], r["status"]) for r in rows] == [("86-28894", "approved"), ("86-29077", "pending")]


def test_an_answer_from_another_node_is_another_record() -> None:
    """Two nodes answering for one unit write two records: each has exactly one writer."""
    request = dr.read_request(ask().envelope("86", 1))
    assert request is not None
    mine = dr.answer_record("86-28894", request, "86-28894", dr.APPROVED, reason="", at="2026-11-21T08:00:00+07:00")
    theirs = dr.answer_record("86", request, "86-28894", dr.APPROVED, reason="", at="2026-11-21T08:00:00+07:00")
    assert mine.id != theirs.id


def test_a_decline_needs_a_reason_and_carries_no_files() -> None:
    """Declining without a reason, declining with files, or answering for a unit not asked is refused."""
    request = dr.read_request(ask().envelope("86", 1))
    assert request is not None
    at = "2026-11-21T08:00:00+07:00"
    with pytest.raises(InputError, match="needs a reason"):
        dr.answer_record("86", request, "86-28894", dr.DECLINED, reason=" ", at=at)
    with pytest.raises(InputError, match="no data files"):
        dr.answer_record("86", request, "86-28894", dr.DECLINED, reason="x", at=at, attachments=[{"name": "a", "sha256": "ab", "size": 1}])
    with pytest.raises(InputError, match="does not address unit 86-29254"):
        dr.answer_record("86", request, "86-29254", dr.APPROVED, reason="", at=at)


def test_a_late_approval_is_taken_and_marked_late(province: Store) -> None:
    """An answer after the deadline is stored and shown late; on the due day it is on time; pending past due is overdue."""
    write(province, ask(due="2026-11-30"))
    request = dr.requests(province)[0]
    write(
        province,
        dr.answer_record("86", request, "86-28894", dr.APPROVED, reason="", at="2026-11-30T23:59:59+07:00"),
        dr.answer_record("86", request, "86-29077", dr.APPROVED, reason="", at="2026-11-30T17:00:00+00:00"),  # 1 Dec, 00:00 in Vietnam
    )
    after = datetime(2026, 12, 2, tzinfo=dr.VIETNAM)
    rows = {r["unit"]: r for r in board(province, ["86"], after)[0]["answers"]}
    assert (rows["86-28894"]["late"], rows["86-29077"]["late"]) == (False, True)
    assert rows["86-29077"]["status"] == dr.APPROVED

    write(province, ask(code="YC-2", units=("86-29254",), due="2026-11-30"))
    pending = {r["request"]: r["answers"][0] for r in board(province, ["86"], after)}
    assert pending["86/YC-2"] == {"unit": "86-29254", "status": "pending", "overdue": True, "answerable": True}
    before = {r["request"]: r["answers"][0] for r in board(province, ["86"], NOW)}
    assert before["86/YC-2"]["overdue"] is False


@given(
    due=st.dates(min_value=date(2025, 7, 1), max_value=date(2030, 12, 31)),
    day_offset=st.integers(min_value=-3, max_value=3),
    seconds=st.integers(min_value=0, max_value=86_399),
    shown_hours=st.integers(min_value=-12, max_value=14),
)
def test_lateness_is_judged_on_the_vietnamese_calendar_day(due: date, day_offset: int, seconds: int, shown_hours: int) -> None:
    """Whatever offset an answer's time is written with, it is late exactly when its day in Vietnam is after the due day."""
    local = datetime.combine(due + timedelta(days=day_offset), time(), dr.VIETNAM) + timedelta(seconds=seconds)
    written = local.astimezone(timezone(timedelta(hours=shown_hours))).isoformat()
    assert dr.is_late(written, due.isoformat()) == (day_offset > 0)


@settings(max_examples=50, deadline=None)
@given(st.permutations(range(6)))
def test_the_board_is_the_same_whatever_order_answers_arrive_in(order: list[int]) -> None:
    """The shown answer per unit is the latest version (ties broken by node), whatever order answers are read in."""
    request = dr.read_request(ask().envelope("86", 1))
    assert request is not None
    answers = [
        dr.Answer(request.key, "86-28894", "86-28894", dr.DECLINED, "x", "2026-11-21T08:00:00+07:00", "", version=5),
        dr.Answer(request.key, "86-28894", "86-28894", dr.APPROVED, "", "2026-11-22T08:00:00+07:00", "", version=9),
        dr.Answer(request.key, "86-28894", "86", dr.DECLINED, "y", "2026-11-22T08:00:00+07:00", "", version=9),
        dr.Answer(request.key, "86-29077", "86-29077", dr.DECLINED, "z", "2026-11-21T08:00:00+07:00", "", version=3),
        dr.Answer(request.key, "86-29077", "86-29077", dr.APPROVED, "", "2026-11-23T08:00:00+07:00", "", version=7),
        dr.Answer("86/OTHER", "86-29077", "86-29077", dr.DECLINED, "w", "2026-11-23T08:00:00+07:00", "", version=99),
    ]
    scope = dr.Scope("86", answerable={"86-28894", "86-29077"}, visible={"86-28894", "86-29077"})
    rows = dr.board([request], [answers[i] for i in order], scope, NOW)[0]["answers"]
    assert [(r["unit"], r["status"], r["node"]) for r in rows] == [
        ("86-28894", "approved", "86-28894"),
        ("86-29077", "approved", "86-29077"),
    ]


def test_each_node_shows_requests_for_the_units_it_answers_for_or_holds_below(tmp_path: Path) -> None:
    """A middle tier shows requests for its own units and its child node's, answers only for its own; others are hidden."""
    store = Store.create(tmp_path / "middle.db", "86-28894")
    try:
        from_parent(store, *(records.build("86", row) for row in definitions(unit("86-28894.ap1", "86-28894"))))
        Downstream(store).register_child("86-28894.tyt", "test")  # a health station's node below this commune
        from_parent(
            store,
            ask(code="OWN", units=("86-28894",)),
            ask(code="HAMLET", units=("86-28894.ap1",)),
            ask(code="STATION", units=("86-28894.tyt",)),
            ask(code="ELSEWHERE", units=("86-29077",)),
        )
        scope = dr.Scope.from_store(store, ["86-28894"])
        assert scope.answerable == {"86-28894", "86-28894.ap1"}
        shown = {r["code"]: [a["answerable"] for a in r["answers"]] for r in board(store, ["86-28894"])}
        assert shown == {"OWN": [True], "HAMLET": [True], "STATION": [False]}
    finally:
        store.close()


def test_the_province_answers_only_for_units_without_a_node_of_their_own(province: Store) -> None:
    """At the province, a commune whose node has connected answers for itself; one without a node is the province's."""
    Downstream(province).register_child("86-28894", "test")
    scope = dr.Scope.from_store(province, ["86"])
    assert "86-28894" not in scope.answerable and "86-29077" in scope.answerable
    assert {"86-28894", "86-29077"} <= scope.visible


def test_new_codes_are_unique_per_day() -> None:
    """Generated request codes count up within a day and skip codes already taken."""
    today = date(2026, 11, 20)
    assert dr.new_code([], today) == "YC-20261120-01"
    assert dr.new_code(["YC-20261120-01", "YC-20261119-05"], today) == "YC-20261120-02"
    assert dr.new_code(["YC-20261120-02"], today) == "YC-20261120-03"


# ---------------------------------------------------------------- the commands


def test_cli_refuses_bad_requests_with_a_hint(make_node: MakeNode) -> None:
    """`requests create` refuses an unknown unit, a passed due date and a duplicate code with Error/Try; `answer` needs a decision."""
    node = make_node("86")
    cli("ingest", "--dir", str(node), str(DEFINITIONS))
    base = ["requests", "create", "--dir", str(node), "Số hộ nghèo", "--period", "Quý III/2026", "--reason", "r"]
    later = (date.today() + timedelta(days=10)).isoformat()
    for args, message in (
        (["--unit", "99-00000", "--due", later], "unit 99-00000 is not in the unit registry"),
        (["--unit", "86-28894", "--due", "2020-01-01"], "the due time 2020-01-01 has already passed"),
    ):
        out = cli(*base, *args, check=False)
        assert out.returncode == 1 and f"Error: {message}" in out.stderr and "Try: " in out.stderr, out.stderr
    cli(*base, "--unit", "86-28894", "--due", later, "--code", "YC-A")
    out = cli(*base, "--unit", "86-28894", "--due", later, "--code", "YC-A", check=False)
    assert out.returncode == 1 and "--replace" in out.stderr
    out = cli("requests", "answer", "--dir", str(node), "YC-A", check=False)
    assert out.returncode == 1 and "Try: add --approve or --decline" in out.stderr


def test_cli_late_answer_with_a_file_is_taken_marked_late_and_audited(make_node: MakeNode, tmp_path: Path) -> None:
    """An approval after the deadline is stored with its file as a blob, reported late, listed late and audited."""
    node = make_node("86")
    cli("ingest", "--dir", str(node), str(DEFINITIONS))
    store = Store.open(node / "lienthong.db")
    try:
        write(store, ask(code="YC-OLD", units=("86-29254",), due="2026-01-31"))
    finally:
        store.close()
    data = tmp_path / "hộ nghèo.csv"
    data.write_text("ap,so_ho\nAp 1,12\n", encoding="utf-8")

    out = json.loads(cli("requests", "answer", "--dir", str(node), "YC-OLD", "--approve", str(data), "--json").stdout)
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    assert out["late"] is True and out["units"] == ["86-29254"]
    assert out["attachments"] == [{"name": "hộ nghèo.csv", "sha256": digest, "size": data.stat().st_size}]
    assert (node / "blobs" / digest[:2] / digest).read_bytes() == data.read_bytes()
    assert "(late)" in cli("requests", "list", "--dir", str(node)).stdout
    cli("audit", "export", "--dir", str(node), str(tmp_path / "audit.jsonl"))
    entries = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    answered = [e for e in entries if e.get("subject") == "requests answer"]
    assert answered and answered[0]["details"]["request"] == "86/YC-OLD" and answered[0]["details"]["late"] is True


# ---------------------------------------------------------------- real nodes


def listed(node: Path) -> list[dict[str, Any]]:
    return json.loads(cli("requests", "list", "--dir", str(node), "--json").stdout)


def shown(node: Path) -> list[dict[str, Any]]:
    """What `requests list` shows at a node whose unit is its id, read in process (cheap to poll)."""
    store = Store.open(node / "lienthong.db")
    try:
        return board(store, [node.name], datetime.now(UTC))
    finally:
        store.close()


@pytest.mark.slow
def test_request_goes_down_to_two_communes_and_their_answers_come_up_with_their_origin(make_node: MakeNode, tmp_path: Path) -> None:
    """Province asks two communes; both see it, one approves with a file (after first declining), one declines;
    the province sees both answers, each from its own node, exactly once."""
    province = make_node("86")
    address = listen_address(province)
    ba_tri, thanh_phu = make_node("86-28894", parent=address), make_node("86-29077", parent=address)
    cli("ingest", "--dir", str(province), str(DEFINITIONS))
    due = (datetime.now(UTC) + timedelta(days=7)).date().isoformat()
    data = tmp_path / "ho-ngheo-q3.csv"
    data.write_text("ap,so_ho_ngheo\nAp An Thoi,14\nAp Phu Le,9\n", encoding="utf-8")

    with running(NodeProcess(province), NodeProcess(ba_tri), NodeProcess(thanh_phu)):
        created = json.loads(
            cli(
                "requests", "create", "--dir", str(province), "Số hộ nghèo theo ấp",
                "--unit", "86-28894", "--unit", "86-29077", "--period", "Quý III/2026",
                "--reason", "Báo cáo Tỉnh ủy về giảm nghèo", "--due", due, "--json",
            ).stdout
        )  # fmt: skip
        key, code = created["request"], created["code"]
        for commune in (ba_tri, thanh_phu):
            wait_until(lambda c=commune: shown(c), timeout=30, what=f"the request at {commune.name}")
            seen = listed(commune)
            assert [r["request"] for r in seen] == [key]
            assert [a["unit"] for a in seen[0]["answers"]] == [commune.name]  # its own unit only

        cli("requests", "answer", "--dir", str(ba_tri), code, "--decline", "--reason", "Đang tổng hợp")
        cli("requests", "answer", "--dir", str(ba_tri), code, "--approve", "--reason", "Số liệu kèm theo", str(data))
        cli("requests", "answer", "--dir", str(thanh_phu), code, "--decline", "--reason", "Chưa có số liệu điều tra")

        def answered_at_province() -> bool:
            rows = {a["unit"]: a["status"] for a in shown(province)[0]["answers"]}
            return rows == {"86-28894": "approved", "86-29077": "declined"}

        wait_until(answered_at_province, timeout=30, what="both answers at the province")

    rows = {a["unit"]: a for a in listed(province)[0]["answers"]}
    assert rows["86-28894"]["status"] == "approved" and rows["86-29077"]["status"] == "declined"

    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    assert rows["86-28894"]["node"] == "86-28894" and rows["86-29077"]["node"] == "86-29077"
    assert rows["86-28894"]["attachments"] == [{"name": "ho-ngheo-q3.csv", "sha256": digest, "size": data.stat().st_size}]
    assert rows["86-29077"]["reason"] == "Chưa có số liệu điều tra" and rows["86-29077"]["attachments"] == []
    assert not rows["86-28894"]["late"] and not rows["86-29077"]["late"]
    store = Store.open(province / "lienthong.db")
    try:
        held = [(a.unit, a.node) for a in dr.answers(store)]
    finally:
        store.close()
    assert sorted(held) == [("86-28894", "86-28894"), ("86-29077", "86-29077")]  # the replaced answer is one record
