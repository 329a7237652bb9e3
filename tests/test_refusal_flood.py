"""A flood of refused handshakes makes a bounded number of audit entries and does not stop a child streaming."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lienthong.node.trust.refusals import OTHERS, RefusalTally

from .conftest import MakeNode, listen_address
from .helpers import NodeProcess, cli, fill, indicator_rows, versions, wait_until

pytestmark = pytest.mark.slow

PROBES = 600


def probe(port: int) -> None:
    """One plaintext 'HTTP' probe, as a scanner sends: write, read until the node closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        while s.recv(4096):
            pass


def refused_entries(node_dir: Path) -> list[dict]:
    cli("audit", "export", "--dir", str(node_dir), str(node_dir / "audit.jsonl"))
    lines = (node_dir / "audit.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e.get("action") == "connection.refused"]


def test_probe_flood_is_aggregated_in_the_audit_log_while_a_child_streams(make_node: MakeNode) -> None:
    """600 plaintext probes while a child streams its backlog: the child's records all arrive, and
    the audit log holds one entry for the probing address with the count, first and last time —
    not one entry per probe."""
    province = make_node("86")
    child = make_node("86-28894", parent=listen_address(province))
    fill(child, indicator_rows("86-28894", 20_000))
    expected = versions(child, "86-28894")
    parent = NodeProcess(province).start()
    port = parent.port()
    NodeProcess(child).start()
    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(probe, port) for _ in range(PROBES)]:
            future.result()
    wait_until(lambda: versions(province, "86-28894") >= expected, timeout=120, what="the child's backlog at the province")
    assert parent.stop() == 0
    entries = refused_entries(province)
    plaintext = [e for e in entries if e["details"]["error"] == "not TLS (plaintext)"]
    assert len(entries) <= 3, [e["details"] for e in entries]  # one per window (60 s) and reason
    assert sum(e["details"]["count"] for e in plaintext) == PROBES
    assert {e["subject"] for e in plaintext} == {"127.0.0.1"}
    assert all(e["details"]["first"] <= e["details"]["last"] for e in plaintext)
    assert "intact" in cli("audit", "verify", "--dir", str(province)).stdout


def test_tally_is_bounded_whatever_the_number_of_sources() -> None:
    """Refusals from more sources than the tally counts one by one fold into one `*` entry that
    says how many sources it holds; a new window starts empty."""
    tally = RefusalTally(max_keys=10, clock=lambda: 1_000_000.0)
    firsts = [tally.add(f"10.0.{i // 256}.{i % 256}:{40000 + i}", "not TLS (plaintext)") for i in range(5000)]
    assert sum(firsts) == 10  # the first of each counted source is logged; the folded ones are not
    entries = tally.take()
    assert len(entries) == 11
    others = dict(entries)[OTHERS]
    assert others["count"] == 4990 and others["sources"] == 4990
    assert sum(d["count"] for _, d in entries) == 5000
    assert tally.take() == []
