"""Sharing down (issue #14, item 2): the province shares a period's indicators with two of three
communes; exactly those two receive them, verify them, and show them as from above; the third
commune and the station below a receiving commune receive nothing; nothing shared goes back up."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pytest

from lienthong.config import settings as config
from lienthong.node.runtime import write_standing_shares
from lienthong.sync import records
from lienthong.sync.clock import HybridClock
from lienthong.sync.downstream import Downstream
from lienthong.sync.store import Store

from .conftest import MakeNode, listen_address
from .helpers import NodeProcess, changelog_duplicates, cli, running, status, wait_until, write_jsonl
from .test_files import report_manifest

PERIOD = "2026-10"


def rows(unit: str, start: int = 0) -> list[dict[str, object]]:
    """Indicators of the shared period and of the period before (not shared)."""
    return [
        {"kind": "indicator", "indicator": f"KTXH.{i:02d}", "unit": unit, "period": period, "value": i + 1, "agency": "thongke"}
        for period in (PERIOD, "2026-09")
        for i in range(start, start + 10)
    ]


def held(node: Path, kind: int = records.INDICATOR) -> dict[tuple[bytes, int], tuple[str, str, str]]:
    """(id, version) -> (origin, period, via) of the records of `kind` a node holds."""
    conn = sqlite3.connect(f"file:{node / 'lienthong.db'}?mode=ro", uri=True)
    try:
        out = {}
        for rid, version, origin, raw, via in conn.execute(
            "SELECT id, version, origin, envelope, via FROM records WHERE kind = ?", (kind,)
        ):
            out[(rid, version)] = (origin, records.body_of(records.Envelope.FromString(raw)).period, via)
        return out
    finally:
        conn.close()


def shares_held(node: Path) -> int:
    conn = sqlite3.connect(f"file:{node / 'lienthong.db'}?mode=ro", uri=True)
    try:
        defs = [records.body_of(records.Envelope.FromString(raw)) for (raw,) in conn.execute("SELECT envelope FROM records WHERE kind = 5")]
        return sum(1 for d in defs if d.type == "share")
    finally:
        conn.close()


@pytest.mark.slow
def test_a_share_to_two_of_three_communes_reaches_exactly_those_two(make_node: MakeNode, tmp_path: Path) -> None:
    province = make_node("86")
    address = listen_address(province)
    ba_tri = make_node("86-28894", parent=address, listen=True)
    station = make_node("86-28894.tyt", parent=listen_address(ba_tri))
    thanh_phu, mo_cay = make_node("86-29077", parent=address), make_node("86-29560", parent=address)
    nodes = [province, ba_tri, station, thanh_phu, mo_cay]
    for node in nodes:
        cli("ingest", "--dir", str(node), str(write_jsonl(tmp_path / f"{node.name}.jsonl", rows(node.name))))
    # The province's own monthly report, with its file, shared down too.
    pdf = os.urandom(1_500_000)
    pdf_sha = hashlib.sha256(pdf).hexdigest()
    cli("ingest", "--dir", str(province), str(report_manifest(tmp_path / "bc", "tinh-thang10.pdf", pdf, "86")))

    with running(*(NodeProcess(n) for n in nodes)):
        wait_until(lambda: len(held(province)) == 5 * 20, timeout=60, what="every indicator at the province")
        out = cli("share", "--dir", str(province), "indicators", "--period", "Tháng 10/2026", "--to", "86-28894", "--to", "86-29077")
        assert "Shared indicators of 2026-10 with 86-28894, 86-29077" in out.stdout
        cli("share", "--dir", str(province), "reports", "--period", PERIOD, "--to", "86-28894", "--to", "86-29077")
        shared = {k: v for k, v in held(province).items() if v[1] == PERIOD}
        assert len(shared) == 5 * 10
        for commune in (ba_tri, thanh_phu):
            wait_until(lambda c=commune: shared.keys() <= held(c).keys(), timeout=60, what=f"the shared indicators at {commune.name}")
        # A standing share: a figure the third commune writes later for the period goes on too.
        cli("ingest", "--dir", str(mo_cay), str(write_jsonl(tmp_path / "later.jsonl", rows(mo_cay.name, start=10)[:1])))
        wait_until(lambda: len(held(province)) == 5 * 20 + 1, timeout=30, what="the later figure at the province")
        later = {k for k, v in held(province).items() if v[1] == PERIOD} - shared.keys()
        for commune in (ba_tri, thanh_phu):
            wait_until(lambda c=commune: later <= held(c).keys(), timeout=30, what=f"the later figure at {commune.name}")
        wait_until(lambda: all(status(n)["parent"]["pending"] == 0 for n in nodes[1:]), timeout=30, what="nothing pending up")
        # The shared report's file came down with it, verified, and nothing waits.
        for commune in (ba_tri, thanh_phu):
            wait_until(lambda c=commune: (c / "blobs" / pdf_sha[:2] / pdf_sha).exists(), timeout=30, what=f"the file at {commune.name}")
            assert status(commune)["files"]["from_parent"]["files"] == 0
        reports = json.loads(cli("query", "reports", "--dir", str(ba_tri), "--json").stdout)
        listed = json.loads(cli("query", "indicators", "--dir", str(thanh_phu), "--period", PERIOD, "--json").stdout)

    assert [(r["origin"], r["from_above"], r["files"]) for r in reports] == [
        ("86", True, [{"name": "tinh-thang10.pdf", "sha256": pdf_sha, "size": len(pdf), "present": True}])
    ]
    assert (ba_tri / "blobs" / pdf_sha[:2] / pdf_sha).read_bytes() == pdf
    for other in (mo_cay, station):
        assert not held(other, records.REPORT) and not (other / "blobs").exists()
    # Exactly the two communes hold what was shared; nothing of another period came with it.
    for commune in (ba_tri, thanh_phu):
        mine = held(commune)
        assert {k for k, v in mine.items() if v[1] == PERIOD} == shared.keys() | later
        assert all(v[0] in (commune.name, station.name) for v in mine.values() if v[1] != PERIOD)
        assert shares_held(commune) == 2
    # The third commune, and the station below a commune that received it, hold their own only.
    for other in (mo_cay, station):
        assert {v[0] for v in held(other).values()} == {other.name}
        assert shares_held(other) == 0
    # Each receiving commune verifies every shared record's seal, from its origin.
    for commune in (ba_tri, thanh_phu):
        report = json.loads(cli("verify", "--dir", str(commune), "--json").stdout)
        assert report["ok"], report["findings"][:5]
    # Shown as from above, with their origin; its own figures are not.
    by_origin = {(r["origin"], r["from_above"]) for r in listed}
    assert by_origin == {("86", True), ("86-28894", True), ("86-28894.tyt", True), ("86-29560", True), ("86-29077", False)}
    # Nothing shared went back up: the province holds each version once and refused nothing.
    assert changelog_duplicates(province) == 0 and status(province)["quarantine"] == []
    assert len(held(province)) == 5 * 20 + 1


def test_a_standing_share_in_the_config_queues_its_records_for_the_units_named_only(tmp_path: Path) -> None:
    """[[sharing.shares]] is written at start as a share definition (the same rule again is unchanged);
    the province queues what it covers, and the share, for the children holding the `to` units only."""
    store = Store.create(tmp_path / "lienthong.db", "86")
    try:
        for child in ("86-28894", "86-29077", "86-29560"):
            Downstream(store).register_child(child, "test")
        rows_ = [r for unit in ("86", "86-28894", "86-29560") for r in rows(unit)]
        store.write_local([records.build("86", r) for r in rows_], HybridClock())
        settings = config.validate(
            {
                "node": {"id": "86", "mode": "provincial"},
                "server": {"listen": "127.0.0.1:0"},
                "sharing": {"shares": [{"what": "indicators", "period": "Tháng 10/2026", "indicators": ["KTXH.01"], "to": ["86-29077"]}]},
            }
        )
        assert write_standing_shares(store, settings) == 1 and write_standing_shares(store, settings) == 0
        queued = store.reader().execute(
            "SELECT d.child, r.kind, r.unit, r.envelope FROM downqueue d JOIN records r ON r.rid = d.rid WHERE r.kind != ?",
            (records.SEAL,),
        )
        got = {(child, kind, unit) for child, kind, unit, raw in queued if kind == records.INDICATOR or b"share" in raw}
        assert got == {
            ("86-29077", records.DEFINITION, "86"),
            ("86-29077", records.INDICATOR, "86"),
            ("86-29077", records.INDICATOR, "86-28894"),
            ("86-29077", records.INDICATOR, "86-29560"),
        }
    finally:
        store.close()


def test_a_node_without_units_below_cannot_share(make_node: MakeNode) -> None:
    """A leaf commune's `share` is refused in one sentence with a hint: no unit is below it."""
    commune = make_node("86-28894", parent="127.0.0.1:9")
    out = cli("share", "--dir", str(commune), "indicators", "--period", PERIOD, "--to", "86-28894.tyt", check=False)
    assert out.returncode == 1 and "Error: this node has no units below it to share with" in out.stderr and "Try:" in out.stderr


def test_a_share_from_a_child_is_refused_at_its_parent(tmp_path: Path) -> None:
    """Shares go down only: one arriving from a child (which would make the parent route what it
    holds of other units to the child's subtree) is refused, named, before anything is stored."""
    from lienthong.sync import admission
    from lienthong.sync.sharing import share_record

    keyed = share_record("86-28894", "indicators", PERIOD, [], ["86-29077"], "kẻ gian", "2026-11-01T08:00:00+07:00")
    env = records.Envelope(id=keyed.id, kind=records.DEFINITION, origin="86-28894", unit="86-28894", version=1 << 16, body=keyed.body)
    rows_, refusals, quarantined = admission.prepare("86-28894", [env.SerializeToString()], 0.0, None)
    assert not rows_ and [r.code for r in refusals] == ["unauthorized_definition"] and len(quarantined) == 1
    assert "never up" in refusals[0].reason
    rows_, refusals, _ = admission.prepare("^", [env.SerializeToString()], 0.0, None)  # from the parent: a tier above shared it
    assert len(rows_) == 1 and not refusals


@pytest.mark.slow
def test_a_district_shares_with_two_of_its_three_communes(make_node: MakeNode, tmp_path: Path) -> None:
    """Any tier shares with its own subtree: a district shares a period's indicators (its communes'
    and its own) with two of its three communes; exactly those two receive and verify them, the
    third receives nothing, and the share never reaches the province."""
    province = make_node("86")
    district = make_node("86-001", parent=listen_address(province), listen=True)
    below = listen_address(district)
    communes = [make_node(unit, parent=below) for unit in ("86-28894", "86-29077", "86-29560")]
    nodes = [province, district, *communes]
    for node in nodes[1:]:
        cli("ingest", "--dir", str(node), str(write_jsonl(tmp_path / f"{node.name}.jsonl", rows(node.name))))
    with running(*(NodeProcess(n) for n in nodes)):
        wait_until(lambda: len(held(district)) == 4 * 20, timeout=60, what="every indicator at the district")
        out = cli("share", "--dir", str(district), "indicators", "--period", PERIOD, "--to", "86-28894", "--to", "86-29077")
        assert "Shared indicators of 2026-10 with 86-28894, 86-29077" in out.stdout
        shared = {k: v for k, v in held(district).items() if v[1] == PERIOD}
        for commune in communes[:2]:
            wait_until(lambda c=commune: shared.keys() <= held(c).keys(), timeout=60, what=f"the shared indicators at {commune.name}")
        wait_until(lambda: len(held(province)) == 4 * 20, timeout=30, what="every indicator at the province")
        wait_until(lambda: all(status(n)["parent"]["pending"] == 0 for n in nodes[1:]), timeout=30, what="nothing pending up")
        assert status(district)["parent"]["refused"] == 0
    for commune in communes[:2]:
        assert {k for k, v in held(commune).items() if v[1] == PERIOD} == shared.keys() and shares_held(commune) == 1
        report = json.loads(cli("verify", "--dir", str(commune), "--json").stdout)
        assert report["ok"], report["findings"][:5]
    assert {v[0] for v in held(communes[2]).values()} == {"86-29560"} and shares_held(communes[2]) == 0
    # The share stayed below the district: the province neither holds nor refused it.
    assert shares_held(province) == 0 and status(province)["quarantine"] == []
