"""Revocation: a revoked node is cut off within seconds, at its parent's tier too, and cannot come back."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import MakeNode, listen_address
from .helpers import NodeProcess, cli, running, status, wait_until

pytestmark = pytest.mark.slow


def child_state(node: Path, child: str) -> dict:
    return next((c for c in status(node)["children"] if c["id"] == child), {})


def test_revoking_cuts_off_connected_nodes_at_every_tier(make_node: MakeNode, ca_dir: Path) -> None:
    """`ca revoke` on the CA: the province publishes its CRL, cuts the revoked child, and the list
    flows down so the commune cuts its revoked health station; everyone else stays connected."""
    province = make_node("86")
    config = province / "lienthong.toml"
    config.write_text(config.read_text().replace('crl = ""', f'crl = "{ca_dir / "ca.crl.pem"}"'))
    commune = make_node("86-28894", parent=listen_address(province), listen=True)
    other = make_node("86-29077", parent=listen_address(province))
    station = make_node("86-28894.tyt", parent=listen_address(commune))
    procs = [NodeProcess(n) for n in (province, commune, other, station)]
    with running(*procs):
        wait_until(lambda: len([c for c in status(province)["children"] if c["connected"]]) == 2, timeout=30, what="both children up")
        wait_until(lambda: child_state(commune, "86-28894.tyt").get("connected"), timeout=30, what="the station up")

        cli("ca", "revoke", str(ca_dir), "86-29077", "--reason", "key_compromise")
        wait_until(lambda: not child_state(province, "86-29077")["connected"], timeout=10, what="the province to cut 86-29077")
        cli("ca", "revoke", str(ca_dir), "86-28894.tyt")
        wait_until(lambda: not child_state(commune, "86-28894.tyt")["connected"], timeout=10, what="the commune to cut its station")

        # They stay out: every reconnect is refused at the handshake, with a reason in their own logs.
        wait_until(lambda: "revoked" in procs[2].log(), timeout=15, what="the revoked child to be told why")
        assert child_state(province, "86-28894")["connected"] and status(commune)["parent"]["connected"]
        assert not child_state(province, "86-29077")["connected"]
        assert '"reason": "certificate revoked"' in procs[0].log()
        assert '"reason": "certificate revoked"' in procs[1].log()
    # Each cut-off and each refused reconnect is in the node's tamper-evident audit log, and the
    # revocations in the CA's.
    assert "intact" in cli("audit", "verify", "--dir", str(province)).stdout
    cli("audit", "export", "--dir", str(province), str(province / "audit.jsonl"))
    exported = (province / "audit.jsonl").read_text()
    assert '"action": "connection.refused"' in exported and '"subject": "86-29077"' in exported and "certificate revoked" in exported
    cli("audit", "export", "--dir", str(ca_dir), str(ca_dir / "audit.jsonl"))
    assert (ca_dir / "audit.jsonl").read_text().count('"action": "cert.revoke"') == 2


def test_revocation_is_enforced_by_the_cas_home_without_configuration(make_node: MakeNode, ca_dir: Path) -> None:
    """A province made with `init --ca` enforces the CA's list as made: no TOML edit, no restart.
    `ca revoke` warns when no running node enforces it, and is quiet when the province runs."""
    province = make_node("86")
    kept = make_node("86-28894", parent=listen_address(province))
    gone = make_node("86-29077", parent=listen_address(province))
    early = make_node("86-29560", parent=listen_address(province))
    stopped = cli("ca", "revoke", str(ca_dir), "86-29560", "--reason", "cessation_of_operation")
    assert "Warning: no running node enforces" in stopped.stderr and len(stopped.stderr.strip().splitlines()) == 1
    procs = [NodeProcess(n) for n in (province, kept, gone, early)]
    with running(*procs):
        wait_until(lambda: len([c for c in status(province)["children"] if c["connected"]]) == 2, timeout=30, what="two children up")
        wait_until(lambda: "revoked" in procs[3].log(), timeout=15, what="the node revoked before the start to be refused")
        revoked = cli("ca", "revoke", str(ca_dir), "86-29077", "--reason", "key_compromise")
        assert "Warning" not in revoked.stderr
        wait_until(lambda: not child_state(province, "86-29077")["connected"], timeout=10, what="the province to cut 86-29077")
        wait_until(lambda: "revoked" in procs[2].log(), timeout=15, what="the revoked child to be told why")
        assert child_state(province, "86-28894")["connected"]
        assert not child_state(province, "86-29560").get("connected")
