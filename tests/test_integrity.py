"""Nothing written in another unit's name: a valid commune, sealing with its own key, cannot
overwrite, speak for or squat another commune's data (DESIGN §8).

Each node here is made with `lienthong init` and its CA-issued certificate; records are
sealed with the node's own key and verified by the province exactly as on the link (the
child's change log → the province's apply path, in one transaction with its checkpoint).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lienthong.config.settings import load
from lienthong.node.runtime import open_store
from lienthong.sync import admission, downstream, feedback, read_upkeep, records
from lienthong.sync.clock import HybridClock, wall_ms
from lienthong.sync.downstream import Downstream
from lienthong.sync.errors import HandshakeRefused, StoreError
from lienthong.sync.records import Keyed
from lienthong.sync.store import Store
from lienthong.sync.upstream import Upstream

from .conftest import MakeNode, listen_address
from .helpers import (
    NodeProcess,
    cli,
    fill,
    fill_disk,
    indicator_rows,
    running,
    small_disk,
    status,
    unmount,
    versions,
    wait_until,
    write_jsonl,
)

PROVINCE, ATTACKER, VICTIM, LATE = "86", "86-28894", "86-29077", "86-29560"


def indicator(unit: str, value: int = 1, indicator: str = "KTXH.DAN_SO") -> dict[str, Any]:
    return {"kind": "indicator", "indicator": indicator, "unit": unit, "period": "2026-10", "value": value}


def unit_definition(code: str) -> dict[str, Any]:
    return {"kind": "definition", "type": "unit", "code": code, "fields": {"name": code, "parent": PROVINCE, "level": "commune"}}


def node_definition(code: str) -> dict[str, Any]:
    return {"kind": "definition", "type": "node", "code": code, "fields": {"parent": PROVINCE}}


@dataclass
class Federation:
    province: Store
    nodes: dict[str, Store]
    cursors: dict[str, int]
    down: Downstream

    def write(self, node: str, *items: Keyed | dict[str, Any]) -> list[Keyed]:
        store = self.nodes[node] if node != PROVINCE else self.province
        keyed = [item if isinstance(item, Keyed) else records.build(store.node_id, item) for item in items]
        store.write_local(keyed, HybridClock(store.latest_version()))
        return keyed

    def sync(self, node: str) -> list[str]:
        """Send `node`'s change log up as its link would; the refusal codes the province answered."""
        store, codes = self.nodes[node], []
        self.down.register_child(node, "127.0.0.1:1")
        while (batch := Upstream(store).changes_after(self.cursors.get(node, 0), 500)) is not None:
            refusals = self.down.apply_from_child(node, store.epoch, batch.after, batch.last, batch.fingerprint, batch.envelopes)
            Upstream(store).record_acks(batch.last, len(batch.envelopes), len(batch.envelopes), refusals)
            codes += [r.code for r in refusals]
            self.cursors[node] = batch.last
        return codes

    def stored(self, origin: str, kind: int = records.INDICATOR) -> set[bytes]:
        return {env.id for env in self.province.iter_records(kind) if env.origin == origin}

    def quarantined(self) -> list[str]:
        return [q["code"] for q in self.down.quarantine(limit=1000)]

    def queued_for(self, child: str) -> set[bytes]:
        rows = self.province.reader().execute("SELECT r.id FROM downqueue d JOIN records r ON r.rid = d.rid WHERE d.child = ?", (child,))
        return {rid for (rid,) in rows}


@pytest.fixture
def federation(make_node: MakeNode) -> Iterator[Federation]:
    """A province that defined its communes' units and knows four communes' nodes (certified by
    its CA); the attacker and the victim are real nodes with their own certificates and keys."""
    dirs = {PROVINCE: make_node(PROVINCE)}
    for node in (ATTACKER, VICTIM, LATE):
        dirs[node] = make_node(node, parent="127.0.0.1:1", parent_id=PROVINCE)
    stores = {node: open_store(path, load(path)) for node, path in dirs.items()}
    province = stores.pop(PROVINCE)
    fed = Federation(province, stores, {}, Downstream(province))
    fed.write(PROVINCE, *(unit_definition(u) for u in (ATTACKER, VICTIM, LATE)), *(node_definition(n) for n in (ATTACKER, VICTIM, LATE)))
    try:
        yield fed
    finally:
        for store in (province, *stores.values()):
            store.close()


COMPLAINT: dict[str, Any] = {
    "kind": "feedback",
    "agency": "1022",
    "category": "GT-01",
    "description": "Đèn đường hỏng",
    "received_at": "2026-11-20T07:42:10+07:00",
}
RESOLVED: dict[str, Any] = {
    "kind": "feedback_event",
    "feedback_origin": PROVINCE,
    "status": "resolved",
    "at": "2026-11-21T08:00:00+07:00",
    "note": "Đã xử lý",
    "agency": "1022",
}


def forged_with_id(origin: str, row: dict[str, Any], record_id: bytes) -> Keyed:
    """A record `origin` builds honestly, but under another record's id."""
    honest = records.build(origin, row)
    return Keyed(record_id, honest.kind, honest.unit, honest.agency, honest.body, honest.deleted)


def test_a_record_under_another_communes_id_is_refused_and_the_owners_value_lands(federation: Federation) -> None:
    """(a) The attacker's record carrying the victim's indicator id is refused (id_mismatch); the victim's real value is stored."""
    victims = records.build(VICTIM, indicator(VICTIM, 1200))
    federation.write(ATTACKER, forged_with_id(ATTACKER, indicator(ATTACKER, 7), victims.id))
    assert federation.sync(ATTACKER) == ["id_mismatch"]
    federation.write(VICTIM, indicator(VICTIM, 1200))
    assert federation.sync(VICTIM) == []
    assert federation.stored(VICTIM) == {victims.id}
    assert federation.stored(ATTACKER) == set()
    assert "id_mismatch" in federation.quarantined()


def test_an_indicator_for_another_communes_unit_is_refused(federation: Federation) -> None:
    """(b) A value for the victim's unit, sealed by the attacker, is refused (foreign_unit) and never reaches a roll-up."""
    federation.write(ATTACKER, indicator(VICTIM, 999_999), indicator(ATTACKER, 5))
    assert federation.sync(ATTACKER) == ["foreign_unit"]
    held = [records.to_dict(env) for env in federation.province.iter_records(records.INDICATOR)]
    assert [(r["unit"], r["value"]) for r in held] == [(ATTACKER, 5)]
    assert federation.quarantined() == ["foreign_unit"]


def test_squatting_a_unit_whose_node_has_not_connected_yet_gets_nothing(federation: Federation) -> None:
    """(c) The attacker names a commune whose node never connected: refused, and that commune's citizen
    feedback is queued for its own node (which has not connected), never for the attacker."""
    federation.write(ATTACKER, indicator(LATE, 3))
    assert federation.sync(ATTACKER) == ["foreign_unit"]
    complaint = federation.write(
        PROVINCE,
        {
            "kind": "feedback",
            "source_id": "1022-20261120-0042",
            "unit": LATE,
            "agency": "1022",
            "category": "GT-01",
            "description": "Ổ gà lớn trên đường tỉnh 885",
            "received_at": "2026-11-20T07:42:10+07:00",
            "citizen": {"name": "Nguyễn Văn A", "phone": "0909123456"},
        },
    )[0]
    assert complaint.id not in federation.queued_for(ATTACKER)
    assert complaint.id in federation.queued_for(LATE)
    federation.write(LATE, indicator(LATE, 4))
    assert federation.sync(LATE) == []  # the real node connects: its first session carries the complaint
    assert complaint.id in federation.queued_for(LATE) and complaint.id not in federation.queued_for(ATTACKER)


def test_a_feedback_event_from_a_commune_that_is_not_the_assignee_is_refused(federation: Federation) -> None:
    """(d) The attacker 'resolves' a complaint assigned to the victim: refused (not_assignee); the province still shows it open."""
    item = federation.write(PROVINCE, {**COMPLAINT, "source_id": "1022-20261120-0043", "unit": VICTIM, "assigned_unit": VICTIM})[0]
    federation.sync(VICTIM)
    resolved = {**RESOLVED, "feedback": "1022-20261120-0043", "unit": ATTACKER}
    federation.write(ATTACKER, resolved)
    assert federation.sync(ATTACKER) == ["not_assignee"]
    (folded,) = [i for i in feedback.load(federation.province).items if i.id == item.id.hex()]
    assert folded.state == "assigned" and folded.assignee == VICTIM
    federation.write(VICTIM, {**resolved, "unit": VICTIM})
    assert federation.sync(VICTIM) == []
    (folded,) = [i for i in feedback.load(federation.province).items if i.id == item.id.hex()]
    assert folded.state == "resolved"


DAY_MS = 24 * 3600 * 1000


@pytest.mark.parametrize(("offset_days", "codes"), [(2, {"clock_skew"}), (-2, {"expired_key", "unsealed"})])
def test_records_refused_for_a_bad_clock_go_again_once_the_clock_is_right(
    federation: Federation, offset_days: int, codes: set[str]
) -> None:
    """A commune whose clock ran two days ahead (or behind) has its records refused; once its clock is right, new records
    are not dragged into the future, and the refused ones are sent again under fresh versions: nothing is lost."""
    store = federation.nodes[ATTACKER]
    skewed = HybridClock(store.latest_version(), wall=lambda: wall_ms() + offset_days * DAY_MS)
    early = [records.build(ATTACKER, indicator(ATTACKER, i, indicator=f"KTXH.SKEW.{i}")) for i in range(3)]
    store.write_local(early, skewed)
    assert set(federation.sync(ATTACKER)) == codes
    assert federation.stored(ATTACKER) == set()
    # The clock is fixed and the node restarts: its clock is seeded from the store as at start-up.
    later = records.build(ATTACKER, indicator(ATTACKER, 9, indicator="KTXH.SKEW.9"))
    store.write_local([later], HybridClock(store.max_version()))
    assert federation.sync(ATTACKER) == []
    assert federation.stored(ATTACKER) == {later.id}
    assert Upstream(store).retry_refused(HybridClock(store.max_version())) == 3
    assert federation.sync(ATTACKER) == []
    assert federation.stored(ATTACKER) == {later.id, *(k.id for k in early)}
    assert Upstream(store).refused_count() == 0
    # Dropping the same data again changes nothing and sends nothing.
    assert store.write_local(early, HybridClock(store.max_version())).unchanged == 3


WRITES = st.lists(
    st.tuples(st.sampled_from(["own", "foreign_unit", "foreign_id", "foreign_event"]), st.integers(min_value=0, max_value=5)),
    min_size=1,
    max_size=25,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=WRITES)
def test_any_order_of_legitimate_and_forged_writes_leaves_exactly_the_legitimate_set(
    federation: Federation, writes: list[tuple[str, int]]
) -> None:
    """Random interleavings of legitimate and forged writes (foreign unit, foreign id, foreign event): the province
    holds exactly the legitimate records and quarantines exactly the forged ones."""
    round_ = federation.cursors.setdefault("round", 0) + 1  # examples share the federation: keep their records apart
    federation.cursors["round"] = round_
    if round_ == 1:
        federation.write(PROVINCE, {**COMPLAINT, "source_id": "T-1", "unit": VICTIM, "assigned_unit": VICTIM})
    held_before = federation.stored(ATTACKER) | federation.stored(ATTACKER, records.FEEDBACK_EVENT)
    quarantined_before = {bytes.fromhex(q["id"]) for q in federation.down.quarantine(limit=100_000)}
    legit: set[bytes] = set()
    forged: set[bytes] = set()
    for step, (what, n) in enumerate(writes):
        code = f"KTXH.R{round_}.{n}"
        if what == "own":
            legit |= {k.id for k in federation.write(ATTACKER, indicator(ATTACKER, step, indicator=code))}
        elif what == "foreign_unit":
            forged |= {k.id for k in federation.write(ATTACKER, indicator(VICTIM, step, indicator=code))}
        elif what == "foreign_id":
            target = records.build(VICTIM, indicator(VICTIM, 0, indicator=code)).id
            forged |= {
                k.id for k in federation.write(ATTACKER, forged_with_id(ATTACKER, indicator(ATTACKER, step, indicator=code + "F"), target))
            }
        else:
            event = {**RESOLVED, "feedback": "T-1", "at": f"2026-11-21T08:{step:02d}:{round_ % 60:02d}+07:00", "unit": ATTACKER}
            forged |= {k.id for k in federation.write(ATTACKER, event)}
        if step % 3 == 2:
            federation.sync(ATTACKER)
    federation.sync(ATTACKER)
    held = federation.stored(ATTACKER) | federation.stored(ATTACKER, records.FEEDBACK_EVENT)
    assert held - held_before == legit - held_before
    quarantined = {bytes.fromhex(q["id"]) for q in federation.down.quarantine(limit=100_000)}
    assert quarantined - quarantined_before == forged - quarantined_before
    assert not (held & forged) and not (quarantined & legit)


FAKETIME = next(Path("/usr/lib").glob("*-linux-gnu/faketime/libfaketimeMT.so.1"), Path("/usr/lib/faketime/libfaketimeMT.so.1"))


@pytest.mark.slow
def test_a_commune_whose_clock_runs_two_days_ahead_is_told_and_loses_nothing(make_node: MakeNode) -> None:
    """Real processes: a commune started with its clock two days ahead (libfaketime) is shown as such at both ends and
    its records are refused; restarted with the right clock, every record arrives, without touching a file."""
    if not FAKETIME.exists():
        pytest.fail("libfaketime is missing: scripts/test.sh installs it (apt-get install faketime)")
    province = make_node(PROVINCE)
    commune = make_node(ATTACKER, parent=listen_address(province), parent_id=PROVINCE)
    fill(province, [unit_definition(ATTACKER)])
    ahead = {"LD_PRELOAD": str(FAKETIME), "FAKETIME": "+2d", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    with running(NodeProcess(province)) as procs:
        skewed = NodeProcess(commune, env=ahead).start()
        try:
            fill_skewed = {**ahead}
            cli("ingest", "--dir", str(commune), str(write_jsonl(commune / "a.jsonl", indicator_rows(ATTACKER, 5))), env=fill_skewed)
            wait_until(lambda: status(commune)["parent"]["refused"] >= 5, timeout=60, what="the refusals at the commune")
            assert "ahead of its parent's" in (status(commune)["parent"]["clock_warning"] or "")
            (child,) = status(province)["children"]
            assert child["clock_offset_s"] > 86400 and "ahead of this node's" in child["clock_warning"]
            assert {q["code"] for q in status(province)["quarantine"]} == {"clock_skew"}
            health = cli("health", "--dir", str(commune), "--json", check=False)
            assert health.returncode == 1 and "ahead of its parent's" in health.stdout + health.stderr
            assert json.loads(health.stdout)["parent"]["clock_offset_s"] > 86400
        finally:
            skewed.stop()
        with running(NodeProcess(commune)):
            wait_until(lambda: len(versions(province, origin=ATTACKER)) == 5, timeout=60, what="the records sent again")
            wait_until(lambda: status(commune)["parent"]["refused"] == 0, timeout=30, what="no refusals left")
            assert status(commune)["parent"]["clock_warning"] is None
        assert procs[0].alive()


def test_one_child_cannot_fill_the_provinces_disk_with_refused_records(federation: Federation, monkeypatch: pytest.MonkeyPatch) -> None:
    """Oversized records are refused without keeping their bytes; refused records are kept whole only up to a bound,
    then as code and reason; past a limit the child's stream is refused in words, and nothing of that batch is applied."""
    monkeypatch.setattr(downstream, "QUARANTINE_KEEP", 5)
    monkeypatch.setattr(downstream, "QUARANTINE_LIMIT", 12)
    huge = records.build(ATTACKER, {**indicator(ATTACKER, 1, indicator="KTXH.HUGE"), "comment": "x" * 9_000})
    body = records.body_of(huge.envelope(ATTACKER, 1))
    body.comment = "x" * (admission.MAX_RECORD_BYTES + 10)
    oversized = Keyed(huge.id, huge.kind, huge.unit, huge.agency, body.SerializeToString())
    federation.write(ATTACKER, oversized, *(indicator(VICTIM, i, indicator=f"KTXH.Q{i}") for i in range(9)))
    assert sorted(federation.sync(ATTACKER)) == ["foreign_unit"] * 9 + ["too_large"]
    sizes = [len(raw) for (raw,) in federation.province.reader().execute("SELECT envelope FROM quarantine")]
    # The first five refusals are kept whole (the oversized one without its bytes), the rest as code and reason.
    assert len(sizes) == 10 and sum(1 for size in sizes if size) == 4 and max(sizes) < 10_000
    federation.write(ATTACKER, *(indicator(VICTIM, i, indicator=f"KTXH.R{i}") for i in range(5)))
    before = federation.province.head()
    with pytest.raises(HandshakeRefused, match="more than 12 records this node refused"):
        federation.sync(ATTACKER)
    assert federation.province.head() == before


def test_a_store_whose_wal_is_deleted_under_it_stops_taking_data(tmp_path: Path) -> None:
    """Deleting the WAL (or replacing the database) under an open store: the next write is refused in one sentence,
    and so is every later one, instead of committing into a file no one can read back."""
    store = Store.create(tmp_path / "node.db", ATTACKER)
    try:
        clock = HybridClock()
        store.write_local([records.build(ATTACKER, indicator(ATTACKER, 1))], clock)
        Path(f"{store.path}-wal").unlink()
        for value in (2, 3):
            with pytest.raises(StoreError, match="was removed while this node had it open") as caught:
                store.write_local([records.build(ATTACKER, indicator(ATTACKER, value))], clock)
            assert "restore the store from a backup" in caught.value.hint
    finally:
        store.close()


def test_a_read_that_meets_a_deleted_wal_is_said_as_the_removed_file_not_a_damaged_store(tmp_path: Path) -> None:
    """A running node's reads in a new thread are where a deleted WAL often shows first (a loaded CI run:
    the node stopped with "the node's database is damaged or unreadable (disk I/O error)"). The node
    turns such a failure into the same sentence as the refused write (`Store.explain`, used by
    `lienthong run` for any SQLite error that reaches it): what happened and to restore."""
    store = Store.create(tmp_path / "node.db", ATTACKER)
    try:
        store.write_local([records.build(ATTACKER, indicator(ATTACKER, 1))], HybridClock())
        store.set_meta("seen", "1")  # a running node keeps writing and reading: the WAL holds frames its index points to
        assert store.head() > 0
        Path(f"{store.path}-wal").unlink()
        # A thread with no read connection yet; its failed read leaves an empty WAL in place of the deleted one.
        with concurrent.futures.ThreadPoolExecutor(1) as pool, pytest.raises(sqlite3.OperationalError) as met:
            pool.submit(lambda: store.reader().execute("SELECT count(*) FROM meta").fetchone()).result()
        said = store.explain(met.value)
        assert re.search(r"-wal was (removed|replaced) while this node had it open", said.message), said.message
        assert "restore the store from a backup" in said.hint
    finally:
        store.close()


def test_the_read_tables_catch_up_that_meets_a_deleted_wal_says_so_and_does_not_mask_it(tmp_path: Path) -> None:
    """The node's last step when it stops is a read-table catch-up (and the read worker runs one after every
    commit). Its first reads are in a new thread; after a deleted WAL they failed with a bare "disk I/O error"
    that replaced, while the node stopped, the sentence saying the WAL was removed (a loaded CI run:
    `lienthong run` ended with "the node's database is damaged or unreadable"). Now it is the same sentence,
    raised to a reader and logged (not raised) by the stop path."""
    store = Store.create(tmp_path / "node.db", ATTACKER)
    try:
        store.write_local([records.build(ATTACKER, indicator(ATTACKER, 1))], HybridClock())
        store.set_meta("seen", "1")
        Path(f"{store.path}-wal").unlink()
        with concurrent.futures.ThreadPoolExecutor(1) as pool, pytest.raises(StoreError) as said:
            pool.submit(store.catch_up_read_tables).result()
        assert re.search(r"-wal was (removed|replaced) while this node had it open", said.value.message), said.value.message
        assert asyncio.run(read_upkeep.catch_up(store)) == 0  # what `lienthong run` awaits when it stops: logged, not raised
        assert store.fresh_read_tables() is False  # a console reader shows the tables as they are
    finally:
        store.close()


def test_a_damaged_store_is_one_sentence_and_a_hint_not_a_traceback(make_node: MakeNode) -> None:
    """Bytes flipped across the database: `status` and `run` say the store is damaged and how to recover, with no traceback."""
    node = make_node(PROVINCE)
    fill(node, indicator_rows(PROVINCE, 2000))
    db = node / "lienthong.db"
    data = bytearray(db.read_bytes())
    # The second half of the file: the store still opens (schema, meta), then its records read as garbage.
    for offset in range(len(data) // 2 // 4096 * 4096, len(data), 4096):
        data[offset : offset + 64] = b"\xa5" * 64
    db.write_bytes(bytes(data))
    for command in (["status", "--dir", str(node)], ["run", "--dir", str(node)]):
        out = cli(*command, check=False, timeout=60)
        assert out.returncode == 1, out
        assert "Traceback" not in out.stderr and "Error: " in out.stderr and "restore" in out.stderr, out.stderr


def test_verify_names_writes_the_parent_acknowledged_that_the_store_lost(make_node: MakeNode) -> None:
    """A store whose change log ends below what its parent acknowledged (committed writes lost under the node) fails `verify`."""
    node = make_node(ATTACKER, parent="127.0.0.1:1", parent_id=PROVINCE)
    fill(node, indicator_rows(ATTACKER, 3))
    store = Store.open(node / "lienthong.db")
    try:
        Upstream(store).record_acks(store.head() + 300, 300, 300, [])  # the parent took 300 entries this copy no longer has
    finally:
        store.close()
    out = cli("verify", "--dir", str(node), check=False)
    assert out.returncode == 1 and "lost_writes" in out.stderr, out


@pytest.mark.slow
def test_a_full_disk_at_the_province_is_said_everywhere_and_loses_nothing(make_node: MakeNode, tmp_path: Path) -> None:
    """Real processes: the province's disk fills while a commune streams. The province logs it as an error in words
    (no traceback) and shows it in `status`; the commune is told in words; once space returns every record arrives."""
    with small_disk(tmp_path / PROVINCE, "6m"):
        province = make_node(PROVINCE)
        commune = make_node(ATTACKER, parent=listen_address(province), parent_id=PROVINCE)
        fill(province, [unit_definition(ATTACKER)])
        (province / "lienthong.toml").write_text((province / "lienthong.toml").read_text().replace("min_free_mb = 256", "min_free_mb = 1"))
        ballast = province / "ballast"
        free = shutil.disk_usage(province).free
        ballast.write_bytes(b"\0" * max(0, free - 400_000))
        fill(commune, indicator_rows(ATTACKER, 3000))
        expected = versions(commune, origin=ATTACKER)
        prov = NodeProcess(province, log_name=str(tmp_path / "province.log"))
        with running(prov, NodeProcess(commune)) as (_, child):
            wait_until(lambda: "is full" in prov.log(), timeout=90, what="the province to log its full disk")
            assert prov.alive() and "Traceback" not in prov.log()
            full = [e for e in (json.loads(line) for line in prov.log().splitlines() if line.startswith("{")) if "is full" in str(e)]
            assert full[0]["level"] == "error" and "free space" in full[0].get("hint", "")
            wait_until(lambda: "the parent could not take what this node sent" in child.log(), timeout=60, what="the commune told")
            assert "is full" in child.log()
            disk = status(province)["disk"]
            assert disk["problem"] and "full" in disk["problem"] and disk["free_bytes"] < 400_000
            health = cli("health", "--dir", str(province), check=False)
            assert health.returncode == 1 and "is full" in health.stderr, health.stderr
            ballast.unlink()
            wait_until(lambda: versions(province, origin=ATTACKER) == expected, timeout=120, what="every record once space returned")
            assert status(province)["disk"]["problem"] is None
            assert cli("health", "--dir", str(province), check=False).returncode == 0


@pytest.mark.slow
def test_a_file_dropped_on_a_full_disk_waits_in_the_inbox_and_is_taken_when_space_returns(make_node: MakeNode, tmp_path: Path) -> None:
    """Real process: an agency file reaches a node whose disk is full. It is neither refused nor lost: the node logs
    the full disk in words, leaves the file where it is, and takes it once space returns."""
    with small_disk(tmp_path / PROVINCE, "6m"):
        province = make_node(PROVINCE)
        config = province / "lienthong.toml"
        config.write_text(config.read_text().replace("min_free_mb = 256", "min_free_mb = 1"))
        config.write_text(config.read_text().replace("rescan_seconds = 30.0", "rescan_seconds = 1.0"))
        inbox = province / "inbox" / "thongke"
        inbox.mkdir(parents=True)
        staged = province / "staged.jsonl"
        write_jsonl(staged, indicator_rows(PROVINCE, 400))
        node = NodeProcess(province, log_name=str(tmp_path / "province.log"))
        with running(node):
            node.port()
            ballast = province / "ballast"
            with ballast.open("wb") as filler, contextlib.suppress(OSError):
                while True:
                    filler.write(b"\0" * 65536)
            os.replace(staged, inbox / "values.jsonl")
            wait_until(lambda: "inbox.store_failed" in node.log(), timeout=60, what="the full disk to be logged")
            assert (inbox / "values.jsonl").exists() and not (inbox / "rejected").exists() and "Traceback" not in node.log()
            assert status(province)["disk"]["problem"]
            ballast.unlink()
            wait_until(lambda: not (inbox / "values.jsonl").exists(), timeout=60, what="the file taken once space returned")
            (archived,) = (inbox / "archive").glob("*/values.jsonl")
            assert json.loads(Path(f"{archived}.receipt.json").read_text())["importCount"]["imported"] == 400
            assert len(versions(province, origin=PROVINCE)) >= 400


@pytest.mark.slow
def test_a_running_node_whose_wal_is_deleted_stops_taking_files_and_says_so(make_node: MakeNode, tmp_path: Path) -> None:
    """Real process: the WAL is deleted under a running node. The next agency file is not taken (no SUCCESS receipt
    for rows that would be lost): it stays in the inbox and the log says the store was removed and to restore it."""
    province = make_node(PROVINCE)
    inbox = province / "inbox" / "thongke"
    inbox.mkdir(parents=True)
    node = NodeProcess(province)
    with running(node):
        node.port()
        write_jsonl(inbox / "first.jsonl", indicator_rows(PROVINCE, 10))
        wait_until(lambda: not (inbox / "first.jsonl").exists(), what="the first file taken")
        Path(f"{province / 'lienthong.db'}-wal").unlink()
        staged = write_jsonl(province / "second.jsonl", indicator_rows(PROVINCE, 300, start=10))
        os.replace(staged, inbox / "second.jsonl")
        # Whichever write meets it first says so: the file's (logged, the file left in the inbox) or one
        # of the node's own (the node stops with Error/Try): either way nothing more is taken.
        said = re.compile(r"was (removed|replaced) while this node had it open")
        wait_until(lambda: said.search(node.log()), what="the removed store to be said")
        assert "restore the store from a backup" in node.log()
        assert (inbox / "second.jsonl").exists() and not list((inbox / "archive").glob("*/second.jsonl"))
        assert "Traceback" not in node.log()


@pytest.mark.slow
def test_a_node_started_on_a_full_disk_says_so_in_words(make_node: MakeNode, tmp_path: Path) -> None:
    """`lienthong run` on a disk with no byte left (a node restarted after its disk filled) stops with
    one Error/Try sentence — whichever write meets the full disk first — never a traceback."""
    with small_disk(tmp_path / PROVINCE, "6m"):
        province = make_node(PROVINCE)
        fill(province, [unit_definition(ATTACKER)])
        ballast = province / "ballast"
        with contextlib.suppress(OSError), ballast.open("wb") as out:  # fill it to the last byte
            while True:
                out.write(bytes(65536))
        with contextlib.suppress(OSError), (province / "ballast2").open("wb") as out:
            while True:
                out.write(bytes(1))
        started = cli("run", "--dir", str(province), check=False, timeout=60)
        assert started.returncode != 0, started.stdout
        err = started.stderr
        assert "Traceback" not in err and "Error:" in err and "Try:" in err, err


def test_a_node_whose_run_file_meets_a_full_disk_says_so_in_words(make_node: MakeNode, tmp_path: Path) -> None:
    """The run file (node.lock: the ports `status` reads) is the one write that meets a full disk:
    `lienthong run` stops with one Error/Try sentence naming that file, never a traceback.
    The store and logs stay on a disk with room; only node.lock is a file of a full tmpfs, bound over it."""
    province = make_node(PROVINCE)
    lock = province / "node.lock"
    lock.touch()
    with small_disk(tmp_path / "full", "1m") as full:
        held = full / "node.lock"
        held.touch()
        fill_disk(full / "ballast")
        subprocess.run(["mount", "--bind", str(held), str(lock)], check=True)
        try:
            started = cli("run", "--dir", str(province), check=False, timeout=60)
        finally:
            unmount(lock)
    err = started.stderr
    assert started.returncode != 0, started.stdout
    assert "Traceback" not in err, err
    assert f"Error: the node cannot write {lock}: No space left on device" in err, err
    assert "Try: free space on the disk" in err, err
