"""Revocation: a revoked node is cut off within seconds, at its parent's tier too, and cannot come back."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from pathlib import Path

import pytest

from lienthong.node import runtime
from lienthong.node.cli_common import load_settings
from lienthong.node.trust.publish import CrlPublisher
from lienthong.sync import records
from lienthong.sync.clock import HybridClock
from lienthong.sync.privacy import Redactor, hashing_key
from lienthong.sync.store import UPSERT, Store

from .conftest import MakeNode, listen_address
from .helpers import NodeProcess, cli, indicator_rows, running, status, wait_until
from .transports import MemoryLink, parent, until, uplink

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


def received_at_province(province: Path, commune: Path, rows: list[dict]) -> None:
    """The commune writes `rows` and sends them up; the province receives, verifies and stores them."""
    prov = runtime.open_store(province, load_settings(province))
    com = runtime.open_store(commune, load_settings(commune))
    redact = Redactor(hashing_key((commune / "tls" / "ca.crt").read_bytes()))

    async def main() -> None:
        link = MemoryLink()
        async with parent(link, prov), uplink(link, com, redact=redact):
            com.write_local([records.build(com.node_id, r) for r in rows], HybridClock(com.max_version()))
            await until(lambda: prov.head() >= com.head() and com.head() > 0, what="the commune's records at the province")

    try:
        asyncio.run(main())
    finally:
        prov.close()
        com.close()


def taken_without_checks(province: Path, commune: Path, rows: list[dict]) -> None:
    """The commune (or whoever holds its key) writes `rows`, and they reach the province's store
    without the live check (a store to audit: `lienthong verify` must judge them)."""
    com = runtime.open_store(commune, load_settings(commune))
    before = com.head()
    com.write_local([records.build(com.node_id, r) for r in rows], HybridClock(com.max_version()))
    new = com.db.execute("SELECT r.envelope FROM changelog c JOIN records r ON r.rid = c.rid WHERE c.seq > ?", (before,)).fetchall()
    com.close()
    prov = Store.open(province / "lienthong.db")
    with prov.writing() as db:
        for (raw,) in new:
            e = records.Envelope.FromString(raw)
            db.execute(UPSERT, (e.id, e.kind, e.origin, e.unit, e.agency, e.version, e.deleted, b"", e.origin, raw))
    prov.close()


def publish_crl(province: Path, ca_dir: Path) -> None:
    """What the province's running node does when the CRL file changes (`tls.crl`)."""
    prov = runtime.open_store(province, load_settings(province))
    try:
        assert CrlPublisher(prov, ca_dir / "ca.crl.pem", (ca_dir / "ca.crt").read_bytes()).check()
    finally:
        prov.close()


def verify_json(province: Path) -> dict:
    return json.loads(cli("verify", "--dir", str(province), "--json", check=False).stdout)


@pytest.mark.parametrize("reason", ["superseded", "cessation_of_operation", "key_compromise", ""])
def test_a_revocation_keeps_what_the_province_witnessed_before_it(make_node: MakeNode, ca_dir: Path, reason: str) -> None:
    """Records the province received and verified before a commune was revoked still verify, whatever
    the reason; what the revoked key signed afterwards is refused, once per seal, never again per record."""
    province = make_node("86")
    commune = make_node("86-28894", parent="127.0.0.1:9")
    received_at_province(province, commune, indicator_rows("86-28894", 5))
    time.sleep(1.1)  # revocation times are stated to the second: the revocation comes in a later one
    cli("ca", "revoke", str(ca_dir), "86-28894", *(["--reason", reason] if reason else []))
    publish_crl(province, ca_dir)
    result = verify_json(province)
    assert result["ok"] and result["origins"]["86-28894"]["records"] == 5, result

    taken_without_checks(province, commune, indicator_rows("86-28894", 3, start=100))
    findings = verify_json(province)["findings"]
    assert [(f["code"], f["kind"]) for f in findings] == [("revoked_key", "seal")], findings
    assert "3 record(s)" in findings[0]["reason"]


def test_a_stated_compromise_time_refuses_what_was_witnessed_after_it(make_node: MakeNode, ca_dir: Path) -> None:
    """`ca revoke --reason key_compromise --compromised-at T`: what the province witnessed before T
    stays valid, what it witnessed after T (before the revocation) is refused, once per seal."""
    province = make_node("86")
    commune = make_node("86-28894", parent="127.0.0.1:9")
    received_at_province(province, commune, indicator_rows("86-28894", 4))
    time.sleep(1.1)
    exposed = dt.datetime.now(dt.UTC).replace(microsecond=0)
    time.sleep(1.1)  # witness times are to the millisecond, stated times to the second: clearly after
    received_at_province(province, commune, indicator_rows("86-28894", 2, start=50))
    cli("ca", "revoke", str(ca_dir), "86-28894", "--reason", "key_compromise", "--compromised-at", exposed.isoformat())
    publish_crl(province, ca_dir)
    result = verify_json(province)
    assert [(f["code"], f["kind"]) for f in result["findings"]] == [("revoked_key", "seal")], result
    assert "2 record(s)" in result["findings"][0]["reason"]
    bad = cli("ca", "revoke", str(ca_dir), "86-28894", "--reason", "superseded", "--compromised-at", exposed.isoformat(), check=False)
    assert bad.returncode == 1 and "Try:" in bad.stderr
