"""`lienthong health` tells the truth: a refused node and a node cut off from its parent are unhealthy, with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import MakeNode, listen_address
from .helpers import NodeProcess, cli, status, wait_until

pytestmark = pytest.mark.slow


def health(node_dir: Path) -> tuple[int, str]:
    out = cli("health", "--dir", str(node_dir), check=False)
    return out.returncode, out.stdout + out.stderr


def set_max_silence(node_dir: Path, seconds: float) -> None:
    config = node_dir / "lienthong.toml"
    config.write_text(config.read_text().replace("max_silence = 600.0", f"max_silence = {seconds}"))


def unhealthy(node_dir: Path) -> tuple[int, str] | None:
    result = health(node_dir)
    return result if result[0] != 0 else None


def connected(province: Path, child: str) -> bool:
    return any(c["id"] == child and c["connected"] for c in status(province)["children"])


def test_healthy_nodes_say_so(make_node: MakeNode) -> None:
    """A province and a connected child are healthy (exit 0); --json gives the verdict and what was measured."""
    province = make_node("86")
    child = make_node("86-28894", parent=listen_address(province))
    NodeProcess(province).start()
    NodeProcess(child).start()
    wait_until(lambda: connected(province, "86-28894"), timeout=30, what="the child up")
    assert health(province) == (0, "healthy\n")
    assert health(child) == (0, "healthy\n")
    report = json.loads(cli("health", "--dir", str(child), "--json").stdout)
    assert report["healthy"] is True and report["reasons"] == []
    assert report["store"]["writable"] is True
    assert report["parent"]["connected"] is True and report["parent"]["refused"] is None


def test_a_revoked_child_is_unhealthy_with_the_reason(make_node: MakeNode, ca_dir: Path) -> None:
    """After `ca revoke`, the child's parent refuses it at every handshake: its health check fails
    and says so, although the child runs and its own store is fine."""
    province = make_node("86")
    config = province / "lienthong.toml"
    config.write_text(config.read_text().replace('crl = ""', f'crl = "{ca_dir / "ca.crl.pem"}"'))
    child = make_node("86-28894", parent=listen_address(province))
    NodeProcess(province).start()
    proc = NodeProcess(child).start()
    wait_until(lambda: connected(province, "86-28894"), timeout=30, what="the child up")
    assert health(child)[0] == 0
    cli("ca", "revoke", str(ca_dir), "86-28894", "--reason", "key_compromise")
    code, text = wait_until(lambda: unhealthy(child), timeout=30, what="the child unhealthy")
    assert code == 1, text
    assert "the parent refuses this node" in text and "revoked" in text, text
    assert "Traceback" not in text
    assert proc.alive()
    report = json.loads(cli("health", "--dir", str(child), "--json", check=False).stdout)
    assert report["healthy"] is False and "revoked" in report["parent"]["refused"]


def test_a_child_whose_parent_is_silent_too_long_is_unhealthy(make_node: MakeNode) -> None:
    """A child that has not reached its parent for longer than [health] max_silence is unhealthy,
    and healthy again once the parent is back."""
    province = make_node("86")
    child = make_node("86-28894", parent=listen_address(province))
    set_max_silence(child, 2.0)
    parent = NodeProcess(province).start()
    NodeProcess(child).start()
    wait_until(lambda: connected(province, "86-28894"), timeout=30, what="the child up")
    assert health(child)[0] == 0
    parent.stop()
    code, text = wait_until(lambda: unhealthy(child), timeout=30, what="the child unhealthy")
    assert code == 1, text
    assert "has not reached its parent" in text and "health.max_silence is 2 s" in text, text
    parent.start()
    wait_until(lambda: health(child)[0] == 0, timeout=30, what="the child healthy again")


def test_a_store_that_cannot_be_written_is_a_reason(make_node: MakeNode) -> None:
    """A store another writer holds locked longer than the health check waits is reported as not writable."""
    import sqlite3

    node = make_node("86")
    db = sqlite3.connect(node / "lienthong.db", isolation_level=None)
    try:
        db.execute("BEGIN EXCLUSIVE")
        out = cli("health", "--dir", str(node), "--timeout", "1", "--json", check=False)
    finally:
        db.close()
    report = json.loads(out.stdout)
    assert out.returncode == 1 and report["store"]["writable"] is False
    assert any(r.startswith("the store cannot be written") for r in report["reasons"]), report["reasons"]
    text = cli("health", "--dir", str(node), check=False)
    assert text.returncode == 1 and "not running" in text.stderr and "Try:" in text.stderr
