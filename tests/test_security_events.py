"""Security events go up: each node's audit entries reach the province through every tier, and the
province can prove a node's audit log was not rewritten since the head it holds."""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from lienthong.node.trust.audit import AuditLog
from lienthong.node.trust.audit_chain import GENESIS, entry_hash

from .conftest import MakeNode, listen_address
from .helpers import NodeProcess, cli, status, wait_until

pytestmark = pytest.mark.slow


def events(province: Path, unit: str) -> list[dict[str, Any]]:
    out = cli("audit", "events", "--dir", str(province), "--unit", unit, "--json", "--limit", "1000", check=False)
    return json.loads(out.stdout) if out.stdout.startswith("[") else []


def view(province: Path, unit: str, predicate: Any) -> dict[str, Any] | None:
    """The province's view of one node's audit log, once `predicate` holds for it."""
    nodes = events(province, unit)
    return nodes[0] if nodes and predicate(nodes[0]) else None


def held(province: Path, unit: str, predicate: Any) -> dict[str, Any] | None:
    nodes = events(province, unit)
    return nodes[0] if nodes and any(predicate(e) for e in nodes[0]["events"]) else None


def probe(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        while s.recv(4096):
            pass


def rewrite_first_entry(node_dir: Path, subject: str) -> None:
    """An attacker with write access to audit.db edits entry 1 and recomputes every hash and the
    anchor: the file alone verifies again."""
    db = sqlite3.connect(node_dir / "audit.db", isolation_level=None)
    try:
        for trigger in ("entries_append_only_update", "entries_append_only_delete"):
            db.execute(f"DROP TRIGGER {trigger}")
        db.execute("UPDATE entries SET subject = ? WHERE seq = 1", (subject,))
        prev = GENESIS
        for seq, time, actor, action, subj, details in db.execute(
            "SELECT seq, time, actor, action, subject, details FROM entries ORDER BY seq"
        ).fetchall():
            digest = entry_hash(seq, time, actor, action, subj, json.loads(details), prev)
            db.execute("UPDATE entries SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, seq))
            prev = digest
        db.execute("UPDATE anchor SET hash = ?", (prev,))
    finally:
        db.close()


def test_security_events_reach_the_province_through_a_middle_tier(make_node: MakeNode) -> None:
    """Refused handshakes at a commune (aggregated) and an entry of its station's audit log reach the
    province; `audit events` shows each node's head, and the head proves the station's log on the station."""
    province = make_node("86")
    commune = make_node("86-28894", parent=listen_address(province), listen=True)
    station = make_node("86-28894.tyt", parent=listen_address(commune))
    NodeProcess(province).start()
    middle = NodeProcess(commune).start()
    NodeProcess(station).start()
    wait_until(lambda: status(station)["parent"]["connected"], timeout=30, what="the station up")
    with AuditLog.open(station) as log_:
        log_.append("admin.command", "token create", {"node": "86-28894.tyt.1"})
    for _ in range(40):
        probe(middle.port())
    middle.stop()  # the window's refusals are audited at the stop at the latest
    middle.start()

    refused = wait_until(
        lambda: held(province, "86-28894", lambda e: e["action"] == "connection.refused"),
        timeout=60,
        what="the commune's refused handshakes at the province",
    )
    [entry] = [e for e in refused["events"] if e["action"] == "connection.refused"]
    assert entry["subject"] == "127.0.0.1" and entry["details"]["count"] == 40
    assert entry["details"]["error"] == "not TLS (plaintext)"
    assert refused["intact"] is True

    station_view = wait_until(
        lambda: held(province, "86-28894.tyt", lambda e: e["subject"] == "token create"),
        timeout=60,
        what="the station's audit entry at the province, relayed by the commune",
    )
    assert station_view["intact"] and station_view["complete"]
    head = station_view["head_text"]
    assert head == cli("audit", "head", "--dir", str(station)).stdout.strip().split()[-1]
    assert "intact" in cli("audit", "verify", "--dir", str(station), "--head", head).stdout
    text = cli("audit", "events", "--dir", str(province)).stdout
    assert "86-28894.tyt" in text and "connection.refused" in text and "×40" in text


def test_a_rewritten_audit_log_is_found_at_the_province(make_node: MakeNode) -> None:
    """A commune's audit log rewritten consistently on its disk verifies on its own; the province,
    holding the entries it reported before, names the rewrite, and its held head fails on the node."""
    province = make_node("86")
    commune = make_node("86-28894", parent=listen_address(province))
    NodeProcess(province).start()
    node = NodeProcess(commune).start()
    with AuditLog.open(commune) as log_:
        for i in range(3):
            log_.append("admin.command", f"command {i}", {"i": i})
    before = wait_until(
        lambda: view(province, "86-28894", lambda n: n["entries"] >= 3), timeout=60, what="the commune's entries at the province"
    )
    assert before["intact"]
    node.stop()
    rewrite_first_entry(commune, "nothing happened")
    assert "intact" in cli("audit", "verify", "--dir", str(commune)).stdout  # the file alone cannot tell
    node.start()
    with AuditLog.open(commune) as log_:
        log_.append("admin.command", "after", {})
    after = wait_until(lambda: view(province, "86-28894", lambda n: not n["intact"]), timeout=60, what="the province to see the rewrite")
    assert any(p["problem"] == "rewritten" for p in after["problems"]), after["problems"]
    out = cli("audit", "events", "--dir", str(province), "--unit", "86-28894", check=False)
    assert out.returncode == 1 and "rewritten" in out.stderr
    proof = cli("audit", "verify", "--dir", str(commune), "--head", before["head_text"], check=False)
    assert proof.returncode == 1 and "no longer has the hash" in proof.stderr


def test_copies_that_do_not_match_their_hash_are_named_forged() -> None:
    """A copy altered on the way (its details no longer hash to its hash) is `forged`; a gap is
    `missing`, not damage."""
    from lienthong.node.trust.audit_chain import canonical
    from lienthong.node.trust.audit_copies import NodeAudit, check

    prev, entries = GENESIS, []
    for seq in (1, 2, 4):
        details = {"n": seq}
        digest = entry_hash(seq, "t", "a", "admin.command", "s", details, prev)
        entries.append(
            {
                "seq": seq,
                "time": "t",
                "actor": "a",
                "action": "admin.command",
                "subject": "s",
                "details": canonical(details),
                "prev_hash": prev,
                "hash": digest,
            }
        )
        prev = digest
    entries[1] = {**entries[1], "details": canonical({"n": 99})}
    node = NodeAudit("86-28894", "86-28894", entries)
    check(node)
    assert [(p["seq"], p["problem"]) for p in node.problems] == [(2, "forged")]
    assert node.missing == [[3, 3]]
    assert node.as_dict()["intact"] is False and node.as_dict()["complete"] is False


def test_a_failed_audit_verification_is_itself_a_security_event(tmp_path: Path) -> None:
    """`audit verify` that finds an edited entry appends `audit.verify_failed` after the damage (so
    it goes up with the other entries) and still exits 1 with the verdict."""
    with AuditLog.open(tmp_path) as log_:
        log_.append("admin.command", "first", {})
        log_.append("admin.command", "second", {})
    db = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    try:
        db.execute("DROP TRIGGER entries_append_only_update")
        db.execute("UPDATE entries SET subject = 'edited' WHERE seq = 1")
    finally:
        db.close()
    out = cli("audit", "verify", "--dir", str(tmp_path), check=False)
    assert out.returncode == 1 and "FAILED verification at entry 1" in out.stderr
    with AuditLog.open(tmp_path) as log_:
        last = log_.entries()[-1]
    assert last.action == "audit.verify_failed" and last.details["problem"] == "edited"
