"""The operator's commands, run as a user runs them: clear errors, truthful status, JSON contracts."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from .conftest import MakeNode
from .helpers import NodeProcess, cli, running, status, wait_until, write_jsonl

ROWS = [
    {"kind": "indicator", "indicator": "KTXH.NS.01", "unit": "86-28894", "period": "2026-10", "value": 12450.75, "agency": "thongke"},
    {"kind": "indicator", "indicator": "KTXH.NS.01", "unit": "86-29077", "period": "2026-10", "value": 8904.2},
    {
        "kind": "report",
        "report_type": "BC-IOC-THANG",
        "unit": "86-28894",
        "period": "2026-10",
        "title": "Báo cáo tháng 10",
        "submitted_at": "2026-10-24T16:20:00+07:00",
    },
    {
        "kind": "feedback",
        "source_id": "1022-1",
        "unit": "86-28894",
        "category": "GT-01",
        "description": "Ổ gà",
        "received_at": "2026-11-20T07:42:10+07:00",
    },
    {"kind": "feedback_event", "feedback": "1022-1", "status": "accepted", "at": "2026-11-20T10:00:00+07:00", "unit": "86-28894"},
]


def test_ingest_query_and_reingest(make_node: MakeNode, tmp_path: Path) -> None:
    """Valid lines are stored and summarised; re-ingesting is 'unchanged'; query --json carries the fields plus origin."""
    node = make_node("86")
    data = write_jsonl(tmp_path / "d.jsonl", ROWS)
    out = cli("ingest", "--dir", str(node), str(data))
    assert "5 imported, 0 updated, 0 unchanged, 0 refused" in out.stdout
    assert "0 imported, 0 updated, 5 unchanged, 0 refused" in cli("ingest", "--dir", str(node), str(data)).stdout

    rows = json.loads(cli("query", "--dir", str(node), "indicators", "--unit", "86-28894", "--json").stdout)
    assert len(rows) == 1
    row = rows[0]
    assert {k: row[k] for k in ("indicator", "unit", "period", "value", "agency", "origin")} == {
        "indicator": "KTXH.NS.01",
        "unit": "86-28894",
        "period": "2026-10",
        "value": 12450.75,
        "agency": "thongke",
        "origin": "86",
    }
    assert len(json.loads(cli("query", "--dir", str(node), "indicators", "--period", "2026-10", "--json").stdout)) == 2
    assert json.loads(cli("query", "--dir", str(node), "indicators", "--period", "2026-09", "--json").stdout) == []
    reports = json.loads(cli("query", "--dir", str(node), "reports", "--json").stdout)
    assert reports[0]["title"] == "Báo cáo tháng 10" and reports[0]["submitted_at"] == "2026-10-24T16:20:00+07:00"
    feedback = json.loads(cli("query", "--dir", str(node), "feedback", "--json").stdout)
    assert [f["source_id"] for f in feedback] == ["1022-1"]
    assert "KTXH.NS.01" in cli("query", "--dir", str(node), "indicators").stdout


def test_bad_lines_are_listed_and_good_ones_kept(make_node: MakeNode, tmp_path: Path) -> None:
    """A bad line is refused with its line number and a hint; the others are stored; exit code 1."""
    node = make_node("86")
    lines = [json.dumps(ROWS[0]), "{not json", json.dumps({**ROWS[1], "period": "Tháng 13/2026"}), json.dumps(ROWS[2])]
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = cli("ingest", "--dir", str(node), str(tmp_path / "bad.jsonl"), check=False)
    assert out.returncode == 1
    assert "2 imported, 0 updated, 0 unchanged, 2 refused" in out.stdout
    assert "line 2: This line is not valid JSON" in out.stderr
    assert "line 3: period: The period «Tháng 13/2026» is not valid" in out.stderr
    assert "Traceback" not in out.stderr


def test_errors_are_one_sentence_and_a_hint(make_node: MakeNode, tmp_path: Path) -> None:
    """Expected failures print Error:/Try: and no traceback; bad config names the field path and value."""
    out = cli("init", "--dir", str(tmp_path / "x"), "--mode", "district", "--id", "86-1", check=False)
    assert out.returncode == 1 and out.stderr.startswith("Error: ") and "Try: add --parent HOST:PORT" in out.stderr

    out = cli("status", "--dir", str(tmp_path / "nowhere"), check=False)
    assert out.returncode == 1 and "Error: no lienthong.toml" in out.stderr and "Try: " in out.stderr

    node = make_node("86-28894", parent="127.0.0.1:1")
    config = node / "lienthong.toml"
    config.write_text(config.read_text().replace('address = "127.0.0.1:1"', 'address = "foo"').replace("window = 8", "window = 0"))
    out = cli("status", "--dir", str(node), check=False)
    assert out.returncode == 1
    assert "parent.address: must be host:port (got 'foo')" in out.stderr
    assert "replication.window: " in out.stderr and "(got 0)" in out.stderr
    assert "Traceback" not in out.stderr

    out = cli("init", "--dir", str(tmp_path / "y"), "--mode", "provincial", "--id", "86", "--ca", str(tmp_path / "no-ca"), check=False)
    assert out.returncode == 1 and "Error: no CA in" in out.stderr and "lienthong ca init" in out.stderr
    assert not (tmp_path / "y").exists()  # nothing half-made


def test_status_tells_the_truth_running_or_not(make_node: MakeNode, tmp_path: Path) -> None:
    """status --json reports the parent link (connected, last contact, pending) and each child, stopped or running."""
    province = make_node("86")
    from .conftest import listen_address

    child = make_node("86-28894", parent=listen_address(province))
    cli("ingest", "--dir", str(child), str(write_jsonl(tmp_path / "d.jsonl", ROWS)))
    before = status(child)
    assert before["node"]["running"] is False
    assert before["parent"]["connected"] is False and before["parent"]["pending"] == 5 + 1 and before["parent"]["last_contact"] is None
    with running(NodeProcess(province), NodeProcess(child)):
        wait_until(lambda: status(child)["parent"]["pending"] == 0, timeout=30, what="the child to be caught up")
        up = status(child)
        assert up["node"]["running"] and up["parent"]["connected"] and up["parent"]["last_contact"]
        prov = status(province)
        # Told to listen on port 0, the node reports the port the system gave it, and it answers there.
        assert prov["node"]["listen"] == "127.0.0.1:0" and prov["node"]["port"] > 0 and prov["node"]["enroll_port"] is None
        socket.create_connection(("127.0.0.1", prov["node"]["port"]), timeout=10).close()
        kid = prov["children"][0]
        assert kid["id"] == "86-28894" and kid["connected"] and kid["last_contact"] and kid["applied"] == up["node"]["head"]
        # A second node on the same directory is refused.
        second = cli("run", "--dir", str(child), check=False, timeout=30)
        assert second.returncode == 1 and "already running" in second.stderr
    after = status(province)
    assert after["node"]["running"] is False and after["node"]["port"] is None and after["children"][0]["connected"] is False
    assert "86-28894" in cli("status", "--dir", str(province)).stdout


def test_edited_audit_log_fails_verify(make_node: MakeNode) -> None:
    """An edit to the audit log is named by `audit verify`, which exits 1 with one sentence and a hint."""
    import sqlite3

    node = make_node("86")
    assert "intact" in cli("audit", "verify", "--dir", str(node)).stdout
    head = cli("audit", "head", "--dir", str(node)).stdout.strip()
    conn = sqlite3.connect(node / "audit.db")
    triggers = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")]
    for name in triggers:  # an attacker with file access drops the guards first
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("UPDATE entries SET subject = 'something else' WHERE seq = 1")
    conn.commit()
    conn.close()
    out = cli("audit", "verify", "--dir", str(node), "--head", head, check=False)
    assert out.returncode == 1 and out.stderr.startswith("Error: ") and "1" in out.stderr and "Try: " in out.stderr
    assert "Traceback" not in out.stderr
