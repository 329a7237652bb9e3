"""Provable provenance, attack by attack: every record is sealed by its origin and verified at
every hop; what fails is refused, quarantined, audited, and nothing stored changes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from lienthong.config.settings import load
from lienthong.node.runtime import open_store
from lienthong.sync import records
from lienthong.sync.clock import HybridClock

from .conftest import MakeNode, listen_address
from .helpers import NodeProcess, cli, fill, indicator_rows, running, status, versions, wait_until

pytestmark = pytest.mark.slow


def audit_entries(node_dir: Path) -> list[dict]:
    out = node_dir / "audit-export.jsonl"
    cli("audit", "export", "--dir", str(node_dir), str(out))
    return [json.loads(line) for line in out.read_text().splitlines()]


def refused_codes(node_dir: Path) -> list[str]:
    return [e["details"].get("code", "") for e in audit_entries(node_dir) if e.get("action") == "record.refused"]


def tamper(node_dir: Path, record_id: bytes, envelope: bytes, version: int | None = None) -> None:
    """Overwrite a stored record's bytes behind the node's back (a compromised disk or node),
    logging it so that the node sends it on."""
    with sqlite3.connect(node_dir / "lienthong.db") as db:
        if version is None:
            db.execute("UPDATE records SET envelope = ?, version = version WHERE id = ?", (envelope, record_id))
        else:
            db.execute("UPDATE records SET envelope = ?, version = ? WHERE id = ?", (envelope, version, record_id))


def stored(node_dir: Path, record_id: bytes) -> tuple[int, bytes] | None:
    with sqlite3.connect(node_dir / "lienthong.db") as db:
        return db.execute("SELECT version, envelope FROM records WHERE id = ?", (record_id,)).fetchone()


def province_and_child(make_node: MakeNode) -> tuple[Path, Path]:
    province = make_node("86")
    child = make_node("86-28894", parent=listen_address(province), parent_id="86")
    return province, child


def test_a_record_altered_after_signing_is_refused_quarantined_and_audited(make_node: MakeNode) -> None:
    """A record whose body was changed after its origin sealed it never reaches the province's data."""
    province, child = province_and_child(make_node)
    fill(child, indicator_rows("86-28894", 5))
    victim = sorted(versions(child, origin="86-28894"))[0][0]
    _, raw = stored(child, victim)
    env = records.Envelope.FromString(raw)
    body = records.body_of(env)
    body.value = "999999"
    env.body = body.SerializeToString()
    tamper(child, victim, env.SerializeToString())

    with running(NodeProcess(province), NodeProcess(child)):
        wait_until(lambda: status(child)["parent"]["refused"] == 1, timeout=30, what="the refusal shown at the child")
        wait_until(lambda: len(versions(province, origin="86-28894")) == 4, timeout=30, what="the four intact records")
    assert stored(province, victim) is None
    assert [q["code"] for q in status(province)["quarantine"]] == ["bad_signature"]
    assert status(child)["parent"]["refused_records"][0]["id"] == victim.hex()
    assert set(refused_codes(province)) == {"bad_signature"}


def test_an_old_version_replayed_is_refused_and_the_newer_one_kept(make_node: MakeNode) -> None:
    """A validly signed but superseded version sent again does not roll the province back."""
    province, child = province_and_child(make_node)
    row = indicator_rows("86-28894", 1)[0]
    fill(child, [row])
    ((record_id, v1),) = versions(child, origin="86-28894")
    _, old_raw = stored(child, record_id)
    with running(NodeProcess(province), NodeProcess(child)):
        wait_until(lambda: versions(province, origin="86-28894") == {(record_id, v1)}, timeout=30, what="version 1")
        fill(child, [{**row, "value": 42}])
        ((_, v2),) = versions(child, origin="86-28894")
        wait_until(lambda: versions(province, origin="86-28894") == {(record_id, v2)}, timeout=30, what="version 2")
        tamper(child, record_id, old_raw, version=v1)
        wait_until(lambda: status(child)["parent"]["refused"] == 1, timeout=30, what="the replay refused")
    assert versions(province, origin="86-28894") == {(record_id, v2)}
    assert records.to_dict(records.Envelope.FromString(stored(province, record_id)[1]))["value"] == 42
    assert "stale_version" in refused_codes(province)


def test_a_definition_not_signed_by_the_province_is_refused_at_every_tier(make_node: MakeNode, tmp_path: Path) -> None:
    """A middle tier that writes a definition (a compromised commune) gets it refused by its own
    child and by the province; the province's definitions still reach the grandchild."""
    province = make_node("86")
    commune = make_node("86-28894", parent=listen_address(province), listen=True, parent_id="86")
    station = make_node("86-28894.tyt", parent=listen_address(commune), parent_id="86-28894")
    forged = {"kind": "definition", "type": "indicator", "code": "KTXH.GIA.01", "fields": {"name": "forged", "aggregation": "sum"}}
    genuine = {"kind": "definition", "type": "indicator", "code": "KTXH.DS.01", "fields": {"name": "Dân số", "aggregation": "sum"}}
    store = open_store(commune, load(commune))
    try:
        store.write_local([records.build("86-28894", forged)], HybridClock(store.max_version()))
    finally:
        store.close()
    (tmp_path / "defs.jsonl").write_text(json.dumps(genuine, ensure_ascii=False) + "\n")
    cli("ingest", "--dir", str(province), str(tmp_path / "defs.jsonl"))

    with running(NodeProcess(province), NodeProcess(commune), NodeProcess(station)):
        wait_until(lambda: versions(station, origin="86"), timeout=30, what="the province's definition at the grandchild")
        wait_until(lambda: "unauthorized_definition" in refused_codes(station), timeout=30, what="the grandchild's refusal")
        wait_until(lambda: "unauthorized_definition" in refused_codes(province), timeout=30, what="the province's refusal")
    assert versions(station, origin="86-28894") == set()
    assert versions(province, origin="86-28894") == set()
    assert [q["code"] for q in status(station)["quarantine"]] == ["unauthorized_definition"]


def test_verify_names_every_record_altered_or_removed_at_rest(make_node: MakeNode) -> None:
    """`lienthong verify` proves an intact store and names what was edited, dropped or unsealed on disk."""
    province, child = province_and_child(make_node)
    fill(child, indicator_rows("86-28894", 30))
    with running(NodeProcess(province), NodeProcess(child)):
        wait_until(lambda: len(versions(province, origin="86-28894")) == 30, timeout=30, what="every record at the province")
    intact = json.loads(cli("verify", "--dir", str(province), "--json").stdout)
    # The commune's 30 (the province, the CA's home, also publishes the node registry: its own records).
    assert intact["ok"] and intact["origins"]["86-28894"]["records"] == 30
    # One seal for the 30 records, and one for each copy of audit entries the nodes wrote as they ran.
    assert intact["audit_entries"] >= 1 and intact["seals"] >= 2

    ids = sorted(i for i, _ in versions(province, origin="86-28894"))
    altered, removed = ids[0], ids[1]
    env = records.Envelope.FromString(stored(province, altered)[1])
    env.unit = "86-29077"  # the figure moved to another commune
    with sqlite3.connect(province / "lienthong.db") as db:
        db.execute("UPDATE records SET envelope = ? WHERE id = ?", (env.SerializeToString(), altered))
        db.execute("DELETE FROM records WHERE id = ?", (removed,))
    result = cli("verify", "--dir", str(province), "--json", check=False)
    assert result.returncode == 1
    findings = {(f["code"], f.get("id", "")) for f in json.loads(result.stdout)["findings"]}
    assert ("bad_signature", altered.hex()) in findings
    assert ("omitted", removed.hex()) in findings
    human = cli("verify", "--dir", str(province), check=False)
    assert human.returncode == 1 and altered.hex() in human.stderr
