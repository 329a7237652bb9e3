"""What the regulations hold units to (#15 items 1-3): approval by the unit head and acceptance by the
level above, timeliness judged on the time a node witnessed a submission (never a date in the file),
and indicator-set completeness with the missing indicators named."""

from __future__ import annotations

import json
import os
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from lienthong.node.trust.audit import AuditLog
from lienthong.sync import approval, indicator_sets, records
from lienthong.sync.clock import HybridClock
from lienthong.sync.completeness import completeness, submissions
from lienthong.sync.downstream import Downstream
from lienthong.sync.schedule import Schedules
from lienthong.sync.store import UPSERT, VIA_PARENT, Store
from lienthong.sync.units import Units
from lienthong.sync.upstream import Upstream

from .conftest import MakeNode, listen_address
from .helpers import STORE_FILE, NodeProcess, cli, fill, running, wait_until, write_jsonl

DEMO_DEFINITIONS = Path(__file__).resolve().parent.parent / "node" / "demo_data" / "definitions.jsonl"
BA_TRI = "86-28894"
SET = "BCS-KTXH"
SET_INDICATORS = ["KTXH.NS.01", "KTXH.DVC.01", "KTXH.DVC.02", "KTXH.YT.01"]
INDICATOR_SET = {
    "kind": "definition",
    "type": "indicator_set",
    "code": f"{SET}@commune",
    "fields": {
        "name": "Bộ chỉ số kinh tế - xã hội tháng",
        "indicators": SET_INDICATORS,
        "period_type": "monthly",
        "level": "commune",
        "due": "day 25 of the period's month",
    },
}


def definitions() -> list[dict[str, Any]]:
    """The demo's units, indicators and report schedules, and one indicator set of four monthly indicators."""
    rows = [json.loads(line) for line in DEMO_DEFINITIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [*rows, INDICATOR_SET]


def clock_at(moment: str, last: int = 0) -> HybridClock:
    """A clock reading `moment`: what its node writes then is witnessed then."""
    ms = int(datetime.fromisoformat(moment).timestamp() * 1000)
    return HybridClock(last, wall=lambda: ms)


def report(unit: str, stated: str, period: str = "2026-10", **extra: Any) -> dict[str, Any]:
    return {
        "kind": "report",
        "report_type": "BC-IOC-THANG",
        "period": period,
        "unit": unit,
        "title": "Báo cáo IOC",
        "submitted_at": stated,
        **extra,
    }


def value(unit: str, indicator: str, number: int, period: str = "2026-10") -> dict[str, Any]:
    return {"kind": "indicator", "indicator": indicator, "unit": unit, "period": period, "value": number}


def sync_up(child: Store, parent: Store) -> list[Any]:
    """Replicate the child's whole change log into the parent (as the link does); the refusals."""
    refused: list[Any] = []
    cursor = 0
    while (batch := Upstream(child).changes_after(cursor, 1000)) is not None:
        refused += Downstream(parent).apply_from_child(
            child.node_id, child.epoch, batch.after, batch.last, batch.fingerprint, batch.envelopes
        )
        cursor = batch.last
    return refused


@pytest.fixture
def pair(tmp_path: Path) -> Any:
    """A province store holding the definitions and a commune store registered as its child."""
    province = Store.create(tmp_path / "86.db", "86")
    province.write_local([records.build("86", row) for row in definitions()], clock_at("2026-09-01T08:00:00+07:00"))
    commune = Store.create(tmp_path / f"{BA_TRI}.db", BA_TRI)
    with commune.writing() as db:  # the definitions as the province sends them down (never sent back up)
        for (raw,) in province.reader().execute("SELECT envelope FROM records WHERE kind = ?", (records.DEFINITION,)):
            e = records.Envelope.FromString(raw)
            db.execute(UPSERT, (e.id, e.kind, e.origin, e.unit, e.agency, e.version, e.deleted, b"", VIA_PARENT, raw))
    Downstream(province).register_child(BA_TRI, "test")
    yield province, commune
    commune.close()
    province.close()


def judged(store: Store, today: date = date(2026, 12, 7)) -> dict[str, dict[str, Any]]:
    result = completeness(Units.from_store(store), Schedules.from_store(store).items, submissions(store), "2026-10", today=today)
    return {r["unit"]: r for r in result.to_dict()["reports"]}


def test_a_report_stated_before_the_due_day_but_witnessed_after_it_is_late_and_flagged(pair: Any) -> None:
    """A file ingested on 28 November claiming 20 October is late: timeliness is the witnessed time, the stated date is shown and flagged."""
    province, commune = pair
    commune.write_local([records.build(BA_TRI, report(BA_TRI, "2026-10-20T09:00:00+07:00"))], clock_at("2026-11-28T10:00:00+07:00"))
    assert sync_up(commune, province) == []
    row = judged(province)[BA_TRI]
    assert row["status"] == "late"
    assert row["submitted_at"] == "2026-10-20T09:00:00+07:00"  # the stated date is kept
    assert row["witnessed_at"] == "2026-11-28T10:00:00+07:00"
    assert row["stated_differs"] is True


def test_a_resubmission_that_reaches_the_parent_before_the_first_keeps_the_first_witnessed_time(pair: Any) -> None:
    """Written on the 20th and corrected on the 28th before the link carried either: the parent, which
    only ever receives the correction, still judges the report on the 20th (on time)."""
    province, commune = pair
    first, again = "2026-10-20T09:00:00+07:00", "2026-10-28T15:00:00+07:00"
    commune.write_local([records.build(BA_TRI, report(BA_TRI, first))], clock_at(first))
    commune.write_local([records.build(BA_TRI, report(BA_TRI, again, summary="Số liệu đã chỉnh sửa"))], clock_at(again))
    assert sync_up(commune, province) == []
    assert province.reader().execute("SELECT count(*) FROM report_first").fetchone()[0] == 1  # only the correction arrived
    row = judged(province)[BA_TRI]
    assert (row["status"], row["witnessed_at"]) == ("on_time", "2026-10-20T09:00:00+07:00")


def test_a_commune_missing_two_indicators_of_its_set_is_incomplete_with_both_named(pair: Any) -> None:
    """Indicator-set completeness as DHIS2 computes it: expected values present, on time; the missing ones named."""
    province, commune = pair
    rows = [value(BA_TRI, code, 10 + i) for i, code in enumerate(SET_INDICATORS[:2])]
    commune.write_local([records.build(BA_TRI, r) for r in rows], clock_at("2026-10-22T08:00:00+07:00"))
    other = "86-29254"
    province.write_local(
        [records.build("86", value(other, code, 5)) for code in SET_INDICATORS],
        clock_at("2026-10-24T08:00:00+07:00", province.latest_version()),
    )
    assert sync_up(commune, province) == []
    province.fresh_read_tables()  # the read tables follow the records in the background: a reader catches them up first
    sets = indicator_sets.IndicatorSets.load(province.reader())
    result = indicator_sets.completeness(province.reader(), Units.from_store(province), sets, "2026-10", today=date(2026, 12, 7)).to_dict()
    units = {u["unit"]: u for u in result["units"]}
    assert (units[BA_TRI]["status"], units[BA_TRI]["missing"]) == ("incomplete", ["KTXH.DVC.02", "KTXH.YT.01"])
    assert (units[BA_TRI]["values_present"], units[BA_TRI]["values_expected"]) == (2, 4)
    assert (units[other]["status"], units[other]["missing"]) == ("on_time", [])
    level = next(r for r in result["levels"] if r["level"] == "commune")
    assert level["expected"] == len(units) and level["on_time"] == 1 and level["incomplete"] == 1


def test_the_receiving_node_refuses_approvals_a_node_may_not_write(tmp_path: Path, pair: Any) -> None:
    """A commune cannot accept its own data, and a district cannot approve in its commune's name: refused at the parent."""
    province, commune = pair
    step = {"dataset": SET, "period": "2026-10", "by": "x", "at": "2026-10-26T08:00:00+07:00", "reason": "r"}
    commune.write_local([records.approval(BA_TRI, {**step, "unit": BA_TRI, "action": "accepted"})], HybridClock())
    refused = sync_up(commune, province)
    assert [r.code for r in refused] == ["approval_own_acceptance"]
    # A middle tier (district D) above the commune node C: D may accept C's data, never approve it.
    district = Store.create(tmp_path / "D.db", "86-D")
    try:
        nodes = [
            {"kind": "definition", "type": "node", "code": code, "fields": {"parent": parent}}
            for code, parent in (("86-D", "86"), ("86-29254", "86-D"))
        ]
        province.write_local([records.build("86", n) for n in nodes], HybridClock(province.latest_version()))
        Downstream(province).register_child("86-D", "test")
        district.write_local(
            [
                records.approval("86-D", {**step, "unit": "86-29254", "action": "approved"}),
                records.approval("86-D", {**step, "unit": "86-29254", "action": "accepted", "dataset": "BC-IOC-THANG"}),
            ],
            HybridClock(),
        )
        refused = sync_up(district, province)
    finally:
        district.close()
    assert [r.code for r in refused] == ["approval_not_own"]
    assert {(u, d) for (u, d, _), s in approval.states(province.reader()).items()} == {("86-29254", "BC-IOC-THANG")}


def test_approved_data_is_locked_until_unapproved(pair: Any) -> None:
    """With the node's guard installed, a change to approved data is refused in words; after an un-approval it is taken."""
    _, commune = pair
    commune.write_guard = approval.check_unlocked
    commune.write_local([records.build(BA_TRI, value(BA_TRI, "KTXH.NS.01", 1))], HybridClock(commune.latest_version()))
    step = {"unit": BA_TRI, "dataset": SET, "period": "2026-10", "by": "chủ tịch", "at": "2026-10-26T08:00:00+07:00"}
    commune.write_local([records.approval(BA_TRI, {**step, "action": "approved"})], HybridClock(commune.latest_version()))
    change = [records.build(BA_TRI, value(BA_TRI, "KTXH.NS.01", 2))]
    with pytest.raises(approval.ApprovalLocked, match=f"unit {BA_TRI} for {SET} 2026-10 is approved"):
        commune.write_local(change, HybridClock(commune.latest_version()))
    unchanged = commune.write_local([records.build(BA_TRI, value(BA_TRI, "KTXH.NS.01", 1))], HybridClock(commune.latest_version()))
    assert unchanged.unchanged == 1  # the same file again changes nothing, so it is not refused
    other_period = commune.write_local(
        [records.build(BA_TRI, value(BA_TRI, "KTXH.NS.01", 2, "2026-11"))], HybridClock(commune.latest_version())
    )
    assert other_period.imported == 1
    commune.write_local(
        [records.approval(BA_TRI, {**step, "action": "unapproved", "reason": "sửa số liệu"})], HybridClock(commune.latest_version())
    )
    assert commune.write_local(change, HybridClock(commune.latest_version())).updated == 1


def judged_at(node: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the commune's October report, its October indicator set) as `node` judges them, read in
    process: polling through the CLI would cost a process a poll on a loaded machine."""
    store = Store.open(node / STORE_FILE)
    try:
        db, units, states = store.reader(), Units.from_store(store), approval.states(store.reader())
        sets = indicator_sets.IndicatorSets.load(db)
        today = date(2026, 12, 7)
        reports = completeness(units, Schedules.from_store(store).items, submissions(store), "2026-10", today=today, approvals=states)
        unit_sets = indicator_sets.completeness(db, units, sets, "2026-10", today=today, approvals=states)
    finally:
        store.close()
    report_row = next((r.to_dict() for r in reports.reports if r.unit.code == BA_TRI and r.submission), None)
    return report_row, next((u.to_dict() for u in unit_sets.units if u.unit.code == BA_TRI), None)


def drop(node: Path, name: str, rows: list[dict[str, Any]]) -> Path:
    """Rename a file into the node's inbox as an agency would; returns where its receipt will be."""
    inbox = node / "inbox" / "thongke"
    inbox.mkdir(parents=True, exist_ok=True)
    staged = write_jsonl(node / f"{name}.staged", rows)
    os.replace(staged, inbox / name)
    return inbox


@pytest.mark.slow
def test_approval_flow_witnessed_timeliness_and_set_completeness_between_real_nodes(make_node: MakeNode, tmp_path: Path) -> None:
    """Real processes: the commune's October file claims an earlier date and is judged late on its
    witnessed time; its set misses two indicators, named at the province; the commune approves the set
    and the province accepts it (the acceptance reaches the commune); a change is refused (CLI and
    inbox) until un-approved, which takes the province's un-acceptance first; every step is audited."""
    province = make_node("86")
    commune = make_node(BA_TRI, parent=listen_address(province))
    fill(province, definitions())
    backdated = report(BA_TRI, "2026-10-20T09:00:00+07:00")

    def approve(node: Path, *extra: str, check: bool = True) -> Any:
        return cli("approve", "--dir", str(node), "--period", "2026-10", "--dataset", SET, *extra, check=check)

    def set_at(node: Path) -> dict[str, Any] | None:
        return judged_at(node)[1]

    with running(NodeProcess(province), NodeProcess(commune)):
        wait_until(lambda: set_at(commune), timeout=60, what="the indicator set at the commune")
        inbox = drop(commune, "october.jsonl", [backdated, *(value(BA_TRI, code, 10) for code in SET_INDICATORS[:2])])
        wait_until(lambda: (inbox / "archive").exists(), timeout=60, what="the October file taken")
        ba_tri, row = wait_until(lambda: (j := judged_at(province))[0] and j[1] and j[1]["values_present"] == 2 and j, timeout=60)
        assert (row["status"], row["missing"]) == ("incomplete", ["KTXH.DVC.02", "KTXH.YT.01"])
        assert (ba_tri["status"], ba_tri["submitted_at"], ba_tri["stated_differs"]) == ("late", backdated["submitted_at"], True)

        # The commune's head approves; the province accepts once the approval has arrived.
        assert json.loads(approve(commune, "--by", "Chủ tịch UBND xã", "--json").stdout)["state"] == "approved"
        wait_until(lambda: (r := set_at(province)) and r["approval"] == "approved", timeout=60, what="the approval at the province")
        assert json.loads(approve(province, "--unit", BA_TRI, "--json").stdout)["state"] == "accepted"
        wait_until(lambda: (r := set_at(commune)) and r["approval"] == "accepted", timeout=60, what="the acceptance at the commune")
        args = ("reports", "completeness", "--dir", str(province), "--period", "2026-10", "--dataset", SET, "--approved-only", "--json")
        only_approved = {u["unit"]: u for u in json.loads(cli(*args).stdout)["units"]}
        assert only_approved[BA_TRI]["values_present"] == 2 and only_approved[BA_TRI]["approval"] == "accepted"
        assert all(u["values_present"] == 0 for code, u in only_approved.items() if code != BA_TRI)

        # A change is refused: at the CLI in words, and in the inbox with a receipt saying so.
        change = [value(BA_TRI, "KTXH.NS.01", 11)]
        refused = cli("ingest", "--dir", str(commune), str(write_jsonl(tmp_path / "change.jsonl", change)), check=False)
        assert refused.returncode == 1 and "is approved by its unit and accepted" in refused.stderr and "Try:" in refused.stderr
        receipt_file = drop(commune, "change.jsonl", change) / "rejected" / "change.jsonl.receipt.json"
        receipt = json.loads(wait_until(lambda: receipt_file.exists() and receipt_file.read_text(), timeout=60, what="the receipt"))
        assert (receipt["error_code"], receipt["approval"]) == ("approved_data", "accepted")

        # Un-approving an accepted set takes the level above's un-acceptance first; then the change is taken.
        assert approve(commune, "--unapprove", "--reason", "sửa số liệu", check=False).returncode == 1
        approve(province, "--unit", BA_TRI, "--unapprove", "--reason", "xã xin sửa số liệu")
        wait_until(lambda: (r := set_at(commune)) and r["approval"] == "approved", timeout=60, what="the un-acceptance at the commune")
        approve(commune, "--unapprove", "--reason", "sửa số liệu")
        taken = drop(commune, "change-again.jsonl", change)
        wait_until(lambda: list((taken / "archive").glob("*/change-again.jsonl")), timeout=60, what="the change taken")
    with AuditLog.open(province) as log_:
        assert {"approval.accepted", "approval.unaccepted"} <= {e.action for e in log_.entries()}
    with AuditLog.open(commune) as log_:
        assert {"approval.approved", "approval.unapproved"} <= {e.action for e in log_.entries()}


def test_indicator_sets_are_imported_from_the_provinces_csv_list(tmp_path: Path) -> None:
    """An indicator-set list in CSV (Vietnamese headers) becomes `indicator_set` definitions that the completeness reads."""
    from lienthong.adapters.base import ParseContext
    from lienthong.adapters.definitions_csv import DefinitionsCsvAdapter

    path = tmp_path / "bo-chi-so.csv"
    path.write_text(
        "Mã,Tên,Loại kỳ,Cấp,Hạn nộp,Chỉ số\n"
        f'{SET},Bộ chỉ số KT-XH tháng,tháng,commune,day 25 of the period\'s month,"{", ".join(SET_INDICATORS)}"\n',
        encoding="utf-8",
    )
    rows = list(DefinitionsCsvAdapter().parse(path, ParseContext(origin="86", agency="ioc", inbox=tmp_path)))
    assert [r.error for r in rows] == [None]
    assert rows[0].record is not None
    (item,) = indicator_sets.IndicatorSets.from_envelopes([rows[0].record.envelope("86", 1)]).items
    assert (item.code, item.dataset, item.indicators, item.level, item.due("2026-10")) == (
        f"{SET}@commune",
        SET,
        tuple(SET_INDICATORS),
        "commune",
        date(2026, 10, 25),
    )


def test_roll_ups_and_exports_can_count_only_approved_data(pair: Any) -> None:
    """`only=Approved.value` keeps a unit's values once its set is approved, and drops another unit's unapproved ones."""
    from lienthong.sync.rollup import rollup

    province, _ = pair
    rows = [value(BA_TRI, "KTXH.NS.01", 100), value("86-29254", "KTXH.NS.01", 1)]
    province.write_local([records.build("86", r) for r in rows], HybridClock(province.latest_version()))

    def total(only: Any) -> Any:
        out = rollup(province, "2026-10", unit="86", extra=[], only=only)
        return next((r["value"] for r in out if r["indicator"] == "KTXH.NS.01" and r["unit"] == "86"), None)

    assert total(None) == 101
    assert total(approval.Approved(province.reader()).value) is None  # nothing approved: nothing counted
    step = {"unit": BA_TRI, "dataset": SET, "period": "2026-10", "action": "approved", "by": "x", "at": "2026-10-26T08:00:00+07:00"}
    with province.writing() as db:  # as if the commune's approval had come up (the province cannot write it in the unit's name)
        env = records.approval(BA_TRI, step).envelope(BA_TRI, HybridClock(province.latest_version()).now())
        db.execute(
            UPSERT, (env.id, env.kind, env.origin, env.unit, env.agency, env.version, env.deleted, b"", BA_TRI, env.SerializeToString())
        )
    approved = approval.Approved(province.reader())
    assert approved.value(BA_TRI, "KTXH.NS.01", "2026-10") and not approved.value("86-29254", "KTXH.NS.01", "2026-10")
    assert total(approved.value) == 100
