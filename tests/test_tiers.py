"""Records written at every tier reach the top exactly once; dispatched feedback comes down."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import MakeNode, listen_address
from .helpers import NodeProcess, changelog_duplicates, cli, indicator_rows, running, status, versions, wait_until, write_jsonl

pytestmark = pytest.mark.slow


def test_province_children_and_grandchild_converge_exactly_once(make_node: MakeNode, tmp_path: Path) -> None:
    """Province + two children + a grandchild: the province holds exactly the union of all records."""
    province = make_node("86")
    p_addr = listen_address(province)
    commune = make_node("86-28894", parent=p_addr, listen=True)
    other = make_node("86-29077", parent=p_addr)
    station = make_node("86-28894.tyt", parent=listen_address(commune))
    nodes = [province, commune, other, station]

    for i, node in enumerate(nodes):
        cli("ingest", "--dir", str(node), str(write_jsonl(tmp_path / f"{i}.jsonl", indicator_rows(node.name, 1_500, agency="thongke"))))
    feedback = {
        "kind": "feedback",
        "source_id": "1022-1",
        "unit": "86-28894",
        "agency": "1022",
        "category": "GT-01",
        "description": "Ổ gà lớn trên đường tỉnh 885",
        "received_at": "2026-11-20T07:42:10+07:00",
    }
    cli("ingest", "--dir", str(province), str(write_jsonl(tmp_path / "fb.jsonl", [feedback])))

    with running(*(NodeProcess(n) for n in nodes)):
        expected = set().union(*(versions(n, origin=n.name) for n in nodes))
        wait_until(lambda: versions(province) == expected, timeout=60, what="the province to hold every record")
        wait_until(lambda: all(status(n)["parent"]["pending"] == 0 for n in nodes[1:]), timeout=30, what="nothing pending")
        # The commune received the feedback dispatched to it; the other commune did not.
        wait_until(lambda: len(versions(commune, origin="86")) == 1, timeout=30, what="dispatched feedback at the commune")
        assert versions(other, origin="86") == set()
        st = status(province)
        assert {c["id"] for c in st["children"]} == {"86-28894", "86-29077"}
        assert all(c["connected"] for c in st["children"])

    # Exactly once: the same (id, version) set, and no version logged twice anywhere.
    assert versions(province) == expected
    assert len(expected) == 4 * 1_500 + 1
    for node in nodes:
        assert changelog_duplicates(node) == 0
    # The middle tier forwarded its child's records and holds them too.
    assert versions(station, origin="86-28894.tyt") <= versions(commune)
    # Every record at every tier is provably its origin's: seals verify and chains are whole.
    for node in nodes:
        result = cli("verify", "--dir", str(node), "--json")
        report = json.loads(result.stdout)
        assert report["ok"], report["findings"][:5]
        assert report["seals"] >= 1
    assert json.loads(cli("verify", "--dir", str(province), "--json").stdout)["records"] == len(expected)
