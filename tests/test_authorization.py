"""Authorization by identity: a child may send only records whose origin is itself or one of
its descendants, as the CA registered them; anything else is refused, quarantined and audited."""

from __future__ import annotations

from pathlib import Path

import pytest

from lienthong.sync import records
from lienthong.sync.clock import HybridClock
from lienthong.sync.store import UPSERT, Store

from .conftest import MakeNode, listen_address
from .helpers import NodeProcess, cli, fill, indicator_rows, running, status, versions, wait_until

pytestmark = pytest.mark.slow


def forge(node_dir: Path, origin: str) -> bytes:
    """Put a record claiming another node as its origin into a node's change log (a tampered node)."""
    store = Store.open(node_dir / "lienthong.db")
    try:
        env = records.build(origin, {**indicator_rows(origin, 1)[0], "value": 999}).envelope(origin, HybridClock().now())
        with store._write() as db:
            db.execute(
                UPSERT, (env.id, env.kind, env.origin, env.unit, env.agency, env.version, env.deleted, b"", "", env.SerializeToString())
            )
        return env.id
    finally:
        store.close()


def test_child_cannot_send_records_of_a_node_it_does_not_descend_from(make_node: MakeNode, ca_dir: Path) -> None:
    """Child A sends a record with child B as its origin (B never connected): refused as unauthorized,
    quarantined, audited and shown at A; A's own records and its grandchild's are taken."""
    province = make_node("86")
    config = province / "lienthong.toml"
    config.write_text(config.read_text().replace('ca_dir = ""', f'ca_dir = "{ca_dir}"'))
    a = make_node("86-28894", parent=listen_address(province), listen=True, parent_id="86")
    make_node("86-29077", parent=listen_address(province), parent_id="86")  # registered, never started
    station = make_node("86-28894.tyt", parent=listen_address(a), parent_id="86-28894")
    fill(a, indicator_rows("86-28894", 20))
    fill(station, indicator_rows("86-28894.tyt", 10))
    forged = forge(a, "86-29077")

    with running(NodeProcess(province), NodeProcess(a), NodeProcess(station)):
        wait_until(lambda: len(versions(province, origin="86-28894")) == 20, timeout=30, what="A's own records")
        wait_until(lambda: len(versions(province, origin="86-28894.tyt")) == 10, timeout=30, what="the grandchild's records via A")
        wait_until(lambda: status(a)["parent"]["refused"] == 1, timeout=30, what="the refusal shown at A")
        refused = status(a)["parent"]["refused_records"][0]
        assert refused["code"] == "unauthorized_origin" and refused["id"] == forged.hex()
        assert "86-29077" in refused["reason"]
    assert versions(province, origin="86-29077") == set()
    assert [q["code"] for q in status(province)["quarantine"]] == ["unauthorized_origin"]
    cli("audit", "export", "--dir", str(province), str(province / "audit.jsonl"))
    assert '"action": "record.refused"' in (province / "audit.jsonl").read_text()
