"""Certificates renew themselves over the replication link, with new keys, through any number of
tiers; old records stay verifiable; a renewal a middle tier forges is refused."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lienthong.node import runtime
from lienthong.node.cli_common import load_settings
from lienthong.node.trust import ca
from lienthong.node.trust.renewal import NodeRenewal, issue_renewal, renewal_due
from lienthong.node.trust.tls import NodeTlsPaths
from lienthong.sync import provenance, records
from lienthong.sync.clock import HybridClock
from lienthong.sync.privacy import PSEUDONYM_KEY_FILE, PseudonymKey
from lienthong.sync.store import Store

from .conftest import MakeNode, listen_address
from .helpers import NodeProcess, cli, fill, indicator_rows, reissue, running, status, versions, wait_until

pytestmark = pytest.mark.slow


def age_certificate(node_dir: Path, ca_dir: Path, days_old: int = 25, days_left: int = 5) -> str:
    """Re-issue the node's certificate (same keys, same extensions) as if it had been issued
    `days_old` days ago; recorded in the CA registry like any certificate. Returns its serial."""
    cert_path = node_dir / "tls" / "node.crt"
    old = x509.load_pem_x509_certificate(cert_path.read_bytes())
    cert = reissue(cert_path.read_bytes(), ca_dir, -days_old, days_left)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path.write_bytes(pem)
    serial = format(cert.serial_number, "x")
    with sqlite3.connect(ca_dir / "issued.db") as db:
        row = db.execute(
            "SELECT role, parent, sans FROM issued WHERE node_id = ? ORDER BY rowid DESC",
            (old.subject.rfc4514_string().split("CN=")[1].split(",")[0],),
        ).fetchone()
        db.execute(
            "INSERT INTO issued (serial, node_id, role, parent, sans, not_before, not_after, fingerprint, issued_at, cert_pem)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                serial,
                node_dir.name,
                row[0],
                row[1],
                row[2],
                cert.not_valid_before_utc.isoformat(),
                cert.not_valid_after_utc.isoformat(),
                cert.fingerprint(hashes.SHA256()).hex(),
                cert.not_valid_before_utc.isoformat(),
                pem.decode(),
            ),
        )
    return serial


def serial_of(node_dir: Path) -> str:
    return format(x509.load_pem_x509_certificate((node_dir / "tls" / "node.crt").read_bytes()).serial_number, "x")


def seal_certificates(node_dir: Path, origin: str) -> set[bytes]:
    """The certificates of the seals over `origin`'s data records (not those over its audit-entry copies)."""
    store = Store.open(node_dir / "lienthong.db")
    try:
        audit = store.db.execute("SELECT envelope FROM records WHERE kind = ?", (records.AUDIT_ENTRY,)).fetchall()
        audit_seals = {records.Envelope.FromString(raw).seal for (raw,) in audit}
        rows = store.db.execute("SELECT id, envelope FROM records WHERE kind = ? AND origin = ?", (records.SEAL, origin)).fetchall()
        return {
            provenance.seal_statement(records.pb.Seal.FromString(records.Envelope.FromString(raw).body))[0].certificate
            for rid, raw in rows
            if rid not in audit_seals
        }
    finally:
        store.close()


def test_nodes_renew_over_the_link_through_a_middle_tier_and_old_records_still_verify(make_node: MakeNode, ca_dir: Path) -> None:
    """A commune (direct child) and its health station (renewing through the commune) get new
    certificates and keys before expiry, without an operator; everything sealed before and after verifies."""
    province = make_node("86")
    config = province / "lienthong.toml"
    config.write_text(config.read_text().replace('ca_dir = ""', f'ca_dir = "{ca_dir}"'))
    commune = make_node("86-28894", parent=listen_address(province), listen=True, parent_id="86")
    station = make_node("86-28894.tyt", parent=listen_address(commune), parent_id="86-28894")
    fill(commune, indicator_rows("86-28894", 10))
    aged = {node: age_certificate(node, ca_dir) for node in (commune, station)}
    old_keys = {node: (node / "tls" / "signing.key").read_bytes() for node in (commune, station)}
    assert all(renewal_due((node / "tls" / "node.crt").read_bytes()) for node in aged)

    with running(NodeProcess(province), NodeProcess(commune), NodeProcess(station)):
        for node, serial in aged.items():
            wait_until(lambda node=node, serial=serial: serial_of(node) != serial, timeout=60, what=f"{node.name} to renew")
        fill(commune, indicator_rows("86-28894", 20))  # rows 10-19 are new, sealed with the new key
        wait_until(lambda: len(versions(province, origin="86-28894")) == 20, timeout=30, what="records sealed after renewal")
    for node in aged:
        assert (node / "tls" / "signing.key").read_bytes() != old_keys[node]  # rotated
        assert not renewal_due((node / "tls" / "node.crt").read_bytes())
    # The commune's seals at the province carry two certificates (before/after), and all verify.
    assert len(seal_certificates(province, "86-28894")) == 2
    report = json.loads(cli("verify", "--dir", str(province), "--json").stdout)
    assert report["ok"], report["findings"][:3]

    # The CA recorded both renewals; the province audited them, the commune audited the one it passed on.
    issued = [row for row in ca.list_issued(ca_dir) if row["serial"] in {serial_of(commune), serial_of(station)}]
    assert {row["parent"] for row in issued} == {"86", "86-28894"}
    export = province / "audit.jsonl"
    cli("audit", "export", "--dir", str(province), str(export))
    renewed = [json.loads(line) for line in export.read_text().splitlines() if '"cert.renew"' in line]
    assert {e["subject"] for e in renewed} == {"86-28894", "86-28894.tyt"}
    cli("audit", "export", "--dir", str(commune), str(commune / "audit.jsonl"))
    assert '"subject": "86-28894.tyt"' in (commune / "audit.jsonl").read_text()

    # The renewed certificates are the ones the nodes now connect with.
    with running(NodeProcess(province), NodeProcess(commune), NodeProcess(station)):
        wait_until(lambda: status(station)["parent"]["connected"] is True, timeout=30, what="the station to reconnect")
        wait_until(lambda: status(commune)["parent"]["connected"] is True, timeout=30, what="the commune to reconnect")


def test_the_ca_refuses_a_renewal_not_proven_by_the_node_itself(make_node: MakeNode, ca_dir: Path) -> None:
    """A middle tier cannot get a certificate for its child with keys of its own, nor renew for a node
    outside its subtree; a proven request from the node's own parent is issued."""
    province = make_node("86")
    commune = make_node("86-28894", parent=listen_address(province), listen=True, parent_id="86")
    station = make_node("86-28894.tyt", parent=listen_address(commune), parent_id="86-28894")
    other = make_node("86-29077", parent=listen_address(province), parent_id="86")

    def request(node: Path) -> object:
        store = Store.open(node / "lienthong.db")
        try:
            paths = NodeTlsPaths(node / "tls" / "ca.crt", node / "tls" / "node.crt", node / "tls" / "node.key")
            return NodeRenewal(node.name, paths, store).request()
        finally:
            store.close()

    genuine = request(station)
    # The commune swaps in a CSR of its own making, for the station's id (its proof no longer fits).
    forged = type(genuine)()
    forged.CopyFrom(genuine)
    key = ec.generate_private_key(ec.SECP256R1())
    forged.csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "86-28894.tyt")]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    before = len(ca.list_issued(ca_dir))
    assert "not signed by the node's current signing key" in issue_renewal(ca_dir, "86-28894", forged, None).error
    assert "may not pass on a renewal" in issue_renewal(ca_dir, "86-29077", genuine, None).error
    assert len(ca.list_issued(ca_dir)) == before
    reply = issue_renewal(ca_dir, "86-28894", genuine, None)
    assert reply.certificate and not reply.error
    assert x509.load_pem_x509_certificate(reply.certificate).not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=29)
    # A revoked node cannot renew.
    ca.revoke(ca_dir, "86-29077")
    assert "revoked" in issue_renewal(ca_dir, "86", request(other), None).error
    assert province.exists()


def test_a_renewal_brings_the_current_pseudonym_secret_to_units_only(make_node: MakeNode, ca_dir: Path) -> None:
    """After `ca rotate-pseudonym`, a unit's next renewal installs the new secret (0600) and its node
    keys pseudonyms with it at once; the province's own node renews without ever getting it."""
    province = make_node("86")
    commune = make_node("86-28894", parent="127.0.0.1:9", parent_id="86")
    first = PseudonymKey.load(commune / "tls" / PSEUDONYM_KEY_FILE)
    cli("ca", "rotate-pseudonym", str(ca_dir))
    rotated = PseudonymKey.load(ca_dir / PSEUDONYM_KEY_FILE)
    assert first is not None and rotated is not None and rotated != first
    for node in (commune, province):
        store = runtime.open_store(node, load_settings(node))
        try:
            renewal = NodeRenewal(
                node.name, NodeTlsPaths(node / "tls" / "ca.crt", node / "tls" / "node.crt", node / "tls" / "node.key"), store
            )
            reply = issue_renewal(ca_dir, node.name, renewal.request(), None)
            assert reply.certificate and not reply.error
            renewal.install(reply.certificate, reply.pseudonym_secret)
            if node == province:
                assert not reply.pseudonym_secret and not list(province.rglob(PSEUDONYM_KEY_FILE))
                continue
            secret = node / "tls" / PSEUDONYM_KEY_FILE
            assert PseudonymKey.load(secret) == rotated and stat.S_IMODE(secret.stat().st_mode) == 0o600
            row = {"kind": "feedback", "source_id": "1022-1", "unit": node.name, "category": "GT-01", "description": "Ổ gà"}
            row |= {"received_at": "2026-11-20T07:42:10+07:00", "citizen": {"phone": "0903123456"}}
            store.write_local([records.build(node.name, row)], HybridClock(store.max_version()))
            (raw,) = store.db.execute("SELECT envelope FROM records WHERE kind = ?", (records.FEEDBACK,)).fetchone()
            phone = records.Feedback.FromString(records.Envelope.FromString(raw).body).citizen.phone
            assert phone.startswith(f"hmac-sha256:{rotated.key_id}:")
        finally:
            store.close()
