"""Moving a node under a new parent (a merger): the new parent receives the node's whole history,
its descendants' too, exactly once; the old parent keeps what it had."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import MakeNode, listen_address
from .helpers import NodeProcess, changelog_duplicates, cli, fill, indicator_rows, running, status, versions, wait_until, write_jsonl

pytestmark = pytest.mark.slow

TOTAL = 100_000


def test_a_node_with_100k_records_moves_to_a_new_parent_exactly_once(make_node: MakeNode, tmp_path: Path) -> None:
    """Re-parented with 100,000 records and a child of its own: the new province holds each exactly once,
    the old province keeps its copy, definitions come from the new parent, and everything verifies."""
    old = make_node("84")  # the province before the merger (Trà Vinh)
    new = make_node("86")  # the province after it (Vĩnh Long)
    commune = make_node("84-29494", parent=listen_address(old), listen=True, parent_id="84")
    station = make_node("84-29494.tyt", parent=listen_address(commune), parent_id="84-29494")
    fill(commune, indicator_rows(commune.name, TOTAL, agency="thongke"))
    fill(station, indicator_rows(station.name, 500))
    definition = {"kind": "definition", "type": "indicator", "code": "KTXH.DS.01", "fields": {"name": "Dân số", "aggregation": "sum"}}
    cli("ingest", "--dir", str(new), str(write_jsonl(tmp_path / "defs.jsonl", [definition])))
    history = versions(commune, origin=commune.name, seals=True) | versions(station, origin=station.name, seals=True)
    assert len(history) > TOTAL + 500  # records and their seals

    with running(NodeProcess(old), NodeProcess(commune), NodeProcess(station)):
        wait_until(lambda: versions(old, seals=True) >= history, timeout=120, what="the old province to hold the history")
    before_move = versions(old, seals=True)

    # Refused while the node runs; taken when it is stopped.
    with running(NodeProcess(commune)):
        wait_until(lambda: status(commune)["node"]["running"], timeout=30, what="the commune to run")
        refused = cli("reparent", "--dir", str(commune), "--parent", listen_address(new), check=False)
        assert refused.returncode == 1 and "already running" in refused.stderr and "Try:" in refused.stderr
    moved = cli("reparent", "--dir", str(commune), "--parent", listen_address(new), "--parent-id", "86")
    assert "whole history" in moved.stdout
    assert status(commune)["parent"]["address"] == listen_address(new)

    with running(NodeProcess(new), NodeProcess(commune), NodeProcess(station)):
        wait_until(lambda: versions(new, seals=True) >= history, timeout=180, what="the new province to hold the whole history")
        wait_until(lambda: status(commune)["parent"]["pending"] == 0, timeout=60, what="the commune to be caught up")
        wait_until(lambda: versions(commune, origin="86"), timeout=30, what="the new province's definition at the commune")
        wait_until(lambda: versions(station, origin="86"), timeout=30, what="and at the station")
    # Exactly once at the new parent, nothing lost at the old one.
    assert versions(new, seals=True) - versions(new, origin="86", seals=True) == history
    assert changelog_duplicates(new) == 0
    assert versions(old, seals=True) == before_move
    assert status(commune)["parent"]["id"] == "86"
    report = json.loads(cli("verify", "--dir", str(new), "--json", timeout=300).stdout)
    # Its own records: the definition above and its CA registry's `node` definitions (it is the CA's home).
    assert report["ok"] and report["records"] == TOTAL + 500 + len(versions(new, origin="86")), report["findings"][:3]
    cli("audit", "export", "--dir", str(commune), str(commune / "audit.jsonl"))
    assert '"subject": "reparent"' in (commune / "audit.jsonl").read_text()
