"""Authorization by identity: a child may send only records whose origin is itself or one of
its descendants, as the CA registered them; anything else is refused, quarantined and audited."""

from __future__ import annotations

from pathlib import Path

import pytest

from lienthong.sync import records
from lienthong.sync.store import UPSERT, Store

from .conftest import MakeNode, listen_address
from .helpers import NodeProcess, cli, fill, indicator_rows, running, status, versions, wait_until

pytestmark = pytest.mark.slow


def relay(node_dir: Path, other: Path) -> bytes:
    """Copy one record that `other` genuinely wrote and sealed (and its seal) into `node_dir`'s
    change log, as a node that got hold of another node's signed records would send them on."""
    fill(other, indicator_rows(other.name, 1))
    source = Store.open(other / "lienthong.db")
    target = Store.open(node_dir / "lienthong.db")
    try:
        (raw,) = source.db.execute("SELECT envelope FROM records WHERE kind = ?", (records.INDICATOR,)).fetchone()
        env = records.Envelope.FromString(raw)
        seal = records.Envelope.FromString(source.envelope(env.seal))
        with target.writing() as db:
            for e in (seal, env):
                db.execute(UPSERT, (e.id, e.kind, e.origin, e.unit, e.agency, e.version, e.deleted, b"", "", e.SerializeToString()))
        return env.id
    finally:
        source.close()
        target.close()


def test_child_cannot_send_records_of_a_node_it_does_not_descend_from(make_node: MakeNode, ca_dir: Path) -> None:
    """Child A sends on a record that child B signed (B never connected): its signature is B's,
    but A may not send B's records — refused as unauthorized, quarantined, audited and shown at
    A; A's own records and its grandchild's are taken."""
    province = make_node("86")
    config = province / "lienthong.toml"
    config.write_text(config.read_text().replace('ca_dir = ""', f'ca_dir = "{ca_dir}"'))
    a = make_node("86-28894", parent=listen_address(province), listen=True, parent_id="86")
    b = make_node("86-29077", parent=listen_address(province), parent_id="86")  # registered, never started
    station = make_node("86-28894.tyt", parent=listen_address(a), parent_id="86-28894")
    fill(a, indicator_rows("86-28894", 20))
    fill(station, indicator_rows("86-28894.tyt", 10))
    forged = relay(a, b)

    with running(NodeProcess(province), NodeProcess(a), NodeProcess(station)):
        wait_until(lambda: len(versions(province, origin="86-28894")) == 20, timeout=30, what="A's own records")
        wait_until(lambda: len(versions(province, origin="86-28894.tyt")) == 10, timeout=30, what="the grandchild's records via A")
        # The record and the seal that signs it are both refused.
        wait_until(lambda: status(a)["parent"]["refused"] == 2, timeout=30, what="the refusal shown at A")
        refused = status(a)["parent"]["refused_records"]
        assert {r["code"] for r in refused} == {"unauthorized_origin"} and forged.hex() in {r["id"] for r in refused}
        assert all("86-29077" in r["reason"] for r in refused)
    assert versions(province, origin="86-29077", seals=True) == set()
    assert [q["code"] for q in status(province)["quarantine"]] == ["unauthorized_origin"] * 2
    cli("audit", "export", "--dir", str(province), str(province / "audit.jsonl"))
    assert '"action": "record.refused"' in (province / "audit.jsonl").read_text()
