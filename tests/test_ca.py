"""The provincial CA's offline operations (node/trust/ca.py, issue.py, crl.py), with real keys and certificates."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import shutil
import sqlite3
import stat
import subprocess
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from lienthong.node.trust import ca, issue, tls
from lienthong.node.trust.crl import write_crl
from lienthong.sync import provenance
from lienthong.sync.errors import TrustError


def _csr(
    key, cn: str = "huyen-a", dns: tuple[str, ...] = (), extensions: tuple[x509.ExtensionType, ...] = (), signing: bool = True
) -> bytes:
    """A CSR made directly with `cryptography`, for CSRs `make_csr` would never make."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
    if signing:
        builder = builder.add_extension(provenance.csr_extension(ed25519.Ed25519PrivateKey.generate(), key.public_key()), critical=False)
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False)
    for ext in extensions:
        builder = builder.add_extension(ext, critical=True)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


def test_a_request_must_carry_a_proven_signing_key(ca_dir: Path) -> None:
    """The CA certifies a record-signing key only with proof that the requesting node holds it."""
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(TrustError, match="no record-signing key"):
        issue.issue_from_csr(ca_dir, _csr(key, signing=False), "district")
    # A proof made for another TLS key (someone else's signing key, copied) is refused.
    stolen = provenance.csr_extension(ed25519.Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP256R1()).public_key())
    forged = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "huyen-a")]))
        .add_extension(stolen, critical=False)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(TrustError, match="not proven"):
        issue.issue_from_csr(ca_dir, forged, "district")
    good = x509.load_pem_x509_certificate(issue.issue_from_csr(ca_dir, _csr(key), "district"))
    assert provenance.signing_public_key(good) is not None
    assert ca.list_issued(ca_dir)[0]["node_id"] == "huyen-a"


def _ca_cert(ca_dir: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate((ca_dir / tls.CA_CERT).read_bytes())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _issue(ca_dir: Path, tmp_path: Path, node_id: str, role: str = "district", hosts: tuple[str, ...] = (), **kw) -> x509.Certificate:
    csr = issue.make_csr(tmp_path / node_id / "node.key", node_id, list(hosts))
    return x509.load_pem_x509_certificate(issue.issue_from_csr(ca_dir, csr, role, **kw))


# ---------------------------------------------------------------- CSR -> certificate


def test_csr_round_trip(ca_dir: Path, tmp_path: Path) -> None:
    key_path = tmp_path / "node" / "node.key"
    csr_pem = issue.make_csr(key_path, "huyen-a", ["10.0.0.5", "huyen-a.example.vn", "10.0.0.5"])
    assert _mode(key_path) == 0o600
    assert b"PRIVATE KEY" not in csr_pem

    cert = x509.load_pem_x509_certificate(issue.issue_from_csr(ca_dir, csr_pem, "district", parent="tinh"))

    ca_cert = _ca_cert(ca_dir)
    cert.verify_directly_issued_by(ca_cert)
    node_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert cert.public_key() == node_key.public_key()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "huyen-a"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "district"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["huyen-a", "huyen-a.example.vn"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5")]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca is False
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=30) <= lifetime <= dt.timedelta(days=30, minutes=10)

    # The node keeps its key: a second CSR (renewal) uses the same one.
    again = x509.load_pem_x509_csr(issue.make_csr(key_path, "huyen-a", []))
    assert again.public_key() == node_key.public_key()


def test_only_the_name_is_taken_from_the_csr(ca_dir: Path) -> None:
    """A CSR asking to be a CA gets an ordinary node certificate."""
    csr = _csr(ec.generate_private_key(ec.SECP256R1()), "huyen-b", extensions=(x509.BasicConstraints(ca=True, path_length=None),))
    cert = x509.load_pem_x509_certificate(issue.issue_from_csr(ca_dir, csr, "district", validity_days=2))
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= dt.timedelta(days=2, minutes=10)


def test_ed25519_csr_is_refused_because_grpc_tls_cannot_use_it(ca_dir: Path) -> None:
    """An Ed25519 key would make a certificate no gRPC peer accepts: refused, saying which keys work."""
    with pytest.raises(TrustError, match="Ed25519; this CA only signs EC P-256"):
        issue.issue_from_csr(ca_dir, _csr(ed25519.Ed25519PrivateKey.generate(), "xa-c"), "district")


def test_tampered_csr_is_refused(ca_dir: Path) -> None:
    der = x509.load_pem_x509_csr(_csr(ec.generate_private_key(ec.SECP256R1()), "huyen-a")).public_bytes(serialization.Encoding.DER)
    forged = der.replace(b"huyen-a", b"huyen-b")  # same length: still parses, signature no longer matches
    assert forged != der
    with pytest.raises(TrustError, match="signature does not verify"):
        issue.issue_from_csr(ca_dir, forged, "district")
    with pytest.raises(TrustError, match="not a certificate signing request"):
        issue.issue_from_csr(ca_dir, b"-----BEGIN CERTIFICATE REQUEST-----\nnonsense\n-----END CERTIFICATE REQUEST-----\n", "district")
    assert ca.list_issued(ca_dir) == []


@pytest.mark.parametrize("node_id", ["-huyen", "huyen a", "../etc", "huyen/a", "huyen\n", "huyện-a"])
def test_bad_node_id_is_refused(ca_dir: Path, tmp_path: Path, node_id: str) -> None:
    with pytest.raises(TrustError, match="node id") as err:
        issue.issue_from_csr(ca_dir, _csr(ec.generate_private_key(ec.SECP256R1()), node_id), "district")
    assert "letters, digits" in err.value.hint
    with pytest.raises(TrustError, match="node id"):
        issue.make_csr(tmp_path / "k.key", node_id, [])
    assert not (tmp_path / "k.key").exists()
    assert ca.list_issued(ca_dir) == []


def test_node_id_length(tmp_path: Path) -> None:
    issue.make_csr(tmp_path / "k.key", "x" * 64, [])
    with pytest.raises(TrustError, match="node id"):
        issue.make_csr(tmp_path / "k.key", "x" * 65, [])  # (a CSR cannot even carry a CN this long)


def test_weak_or_foreign_keys_are_refused_with_the_reason(ca_dir: Path) -> None:
    rsa_csr = _csr(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(TrustError, match=r"RSA 2048-bit; this CA only signs EC P-256 \(secp256r1\) keys") as err:
        issue.issue_from_csr(ca_dir, rsa_csr, "district")
    assert "P-256" in err.value.hint
    with pytest.raises(TrustError, match="EC secp384r1"):
        issue.issue_from_csr(ca_dir, _csr(ec.generate_private_key(ec.SECP384R1())), "district")


def test_role_parent_and_names_are_checked(ca_dir: Path, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(TrustError, match="role 'admin'"):
        issue.issue_from_csr(ca_dir, _csr(key), "admin")
    with pytest.raises(TrustError, match="parent id"):
        issue.issue_from_csr(ca_dir, _csr(key), "district", parent="bad parent")
    with pytest.raises(TrustError, match=r"DNS name '\*\.example\.vn'") as err:
        issue.issue_from_csr(ca_dir, _csr(key, dns=("*.example.vn",)), "district")
    assert "wildcard" in err.value.hint
    # One node's certificate may not pass for another node (peers check the node id as a DNS name).
    _issue(ca_dir, tmp_path, "tinh", "provincial")
    with pytest.raises(TrustError, match="another node's id"):
        issue.issue_from_csr(ca_dir, _csr(key, "huyen-a", dns=("TINH",)), "district")
    with pytest.raises(TrustError, match="differs only in case"):
        issue.issue_from_csr(ca_dir, _csr(key, "Tinh"), "district")
    issue.issue_from_csr(ca_dir, _csr(key, "huyen-x", dns=("gateway-x",)), "district")
    with pytest.raises(TrustError, match="naming 'gateway-x'"):
        issue.issue_from_csr(ca_dir, _csr(key, "gateway-x"), "district")
    assert [c["node_id"] for c in ca.list_issued(ca_dir)] == ["tinh", "huyen-x"]


# ---------------------------------------------------------------- the CA key


def test_protected_ca_needs_its_passphrase(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    ca.init_ca_protected(ca_dir, "Tỉnh Test", b"correct horse")
    assert _mode(ca_dir / tls.CA_KEY) == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in (ca_dir / tls.CA_KEY).read_bytes()
    csr = issue.make_csr(tmp_path / "n" / "node.key", "huyen-a", [])

    with pytest.raises(TrustError, match="protected by a passphrase and none was given") as err:
        ca.load_ca(ca_dir, None)
    assert ca.PASSPHRASE_ENV in err.value.hint
    with pytest.raises(TrustError, match="wrong passphrase") as err:
        issue.issue_from_csr(ca_dir, csr, "district", passphrase=b"wrong")
    assert ca.PASSPHRASE_ENV in err.value.hint
    with pytest.raises(TrustError, match="none was given"):
        write_crl(ca_dir)
    assert ca.list_issued(ca_dir) == []

    key, cert = ca.load_ca(ca_dir, b"correct horse")
    assert key.public_key() == cert.public_key()
    issued = x509.load_pem_x509_certificate(issue.issue_from_csr(ca_dir, csr, "district", passphrase=b"correct horse"))
    issued.verify_directly_issued_by(cert)
    assert ca.passphrase_from_env({ca.PASSPHRASE_ENV: "correct horse"}) == b"correct horse"
    assert ca.passphrase_from_env({}) is None

    with pytest.raises(TrustError, match="already exists"):
        ca.init_ca_protected(ca_dir, "again", None)


def test_unprotected_ca_and_tls_ca_load(tmp_path: Path, ca_dir: Path) -> None:
    plain = tmp_path / "plain"
    ca.init_ca_protected(plain, "Plain", None)
    assert _mode(plain / tls.CA_KEY) == 0o600
    assert b"ENCRYPTED" not in (plain / tls.CA_KEY).read_bytes()
    ca.load_ca(plain, None)
    ca.load_ca(plain, b"set but not needed")
    ca.load_ca(ca_dir)  # a CA made by ca.init_ca
    with pytest.raises(TrustError, match="no CA in"):
        ca.load_ca(tmp_path / "nowhere")
    with pytest.raises(TrustError, match="no CA in"):
        ca.list_issued(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


def test_ca_fingerprint_is_sha256_of_the_der(ca_dir: Path) -> None:
    der = _ca_cert(ca_dir).public_bytes(serialization.Encoding.DER)
    assert ca.ca_fingerprint(ca_dir) == hashlib.sha256(der).hexdigest()


# ---------------------------------------------------------------- registry and revocation


def test_registry_from_a_newer_lienthong_is_refused_and_left_alone(ca_dir: Path, tmp_path: Path) -> None:
    """A CA registry at a schema version this lienthong does not know is a TrustError with a hint, not touched."""
    _issue(ca_dir, tmp_path, "huyen-a")
    with contextlib.closing(sqlite3.connect(ca_dir / ca.REGISTRY)) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(TrustError, match="newer than this lienthong understands") as info:
        ca.list_issued(ca_dir)
    assert "upgrade" in info.value.hint
    with contextlib.closing(sqlite3.connect(ca_dir / ca.REGISTRY)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 99
        assert conn.execute("SELECT count(*) FROM issued").fetchone()[0] == 1


def test_list_shows_every_issued_certificate(ca_dir: Path, tmp_path: Path) -> None:
    tinh = _issue(ca_dir, tmp_path, "tinh", "provincial", hosts=("127.0.0.1",))
    huyen = _issue(ca_dir, tmp_path, "huyen-a", parent="tinh")
    issued = ca.list_issued(ca_dir)
    assert [(c["node_id"], c["role"], c["parent"], c["status"]) for c in issued] == [
        ("tinh", "provincial", "", "valid"),
        ("huyen-a", "district", "tinh", "valid"),
    ]
    first = issued[0]
    assert first["serial"] == format(tinh.serial_number, "x")
    assert first["fingerprint"] == tinh.fingerprint(hashes.SHA256()).hex()
    assert first["sans"] == ["DNS:tinh", "IP:127.0.0.1"]
    assert first["not_after"] == tinh.not_valid_after_utc.isoformat()
    assert first["revoked_at"] is None and first["reason"] == ""
    assert issued[1]["serial"] == format(huyen.serial_number, "x")


def test_revoke_by_node_id_and_by_serial(ca_dir: Path, tmp_path: Path) -> None:
    old = _issue(ca_dir, tmp_path, "huyen-a")
    new = _issue(ca_dir, tmp_path, "huyen-a")
    other = _issue(ca_dir, tmp_path, "huyen-b")
    keep = _issue(ca_dir, tmp_path, "huyen-c")

    revoked = ca.revoke(ca_dir, "huyen-a", "key_compromise")
    assert sorted(revoked) == sorted(format(c.serial_number, "x") for c in (old, new))
    assert ca.revoke(ca_dir, "huyen-a", "again") == []  # already revoked

    serial = format(other.serial_number, "x")
    colons = ":".join(f"{b:02X}" for b in other.serial_number.to_bytes(20, "big")).lstrip("0:")  # as openssl prints it
    assert ca.revoke(ca_dir, colons, "superseded") == [serial]
    with pytest.raises(TrustError, match="no certificate") as err:
        ca.revoke(ca_dir, "huyen-z", "")
    assert "ca list" in err.value.hint

    status = {c["serial"]: (c["status"], c["reason"]) for c in ca.list_issued(ca_dir)}
    assert status[format(keep.serial_number, "x")] == ("valid", "")
    assert status[serial] == ("revoked", "superseded")
    assert status[format(old.serial_number, "x")] == ("revoked", "key_compromise")

    listing = ca.revocation_list(ca_dir)
    assert listing["issuer"] == ca.ca_fingerprint(ca_dir)
    dt.datetime.fromisoformat(listing["updated"])
    assert {r["serial"] for r in listing["revoked"]} == {*revoked, serial}
    assert {r["node_id"] for r in listing["revoked"]} == {"huyen-a", "huyen-b"}
    assert all(r["revoked_at"] and set(r) == {"serial", "node_id", "revoked_at", "reason"} for r in listing["revoked"])


def test_crl_is_a_standard_signed_x509_crl(ca_dir: Path, tmp_path: Path) -> None:
    gone = _issue(ca_dir, tmp_path, "huyen-a")
    stays = _issue(ca_dir, tmp_path, "huyen-b")
    ca.revoke(ca_dir, "huyen-a", "key compromise")
    path = write_crl(ca_dir)
    assert path == ca_dir / "ca.crl.pem"

    crl = x509.load_pem_x509_crl(path.read_bytes())
    ca_cert = _ca_cert(ca_dir)
    assert crl.is_signature_valid(ca_cert.public_key())
    assert crl.issuer == ca_cert.subject
    assert crl.next_update_utc is not None and crl.next_update_utc > crl.last_update_utc
    entry = crl.get_revoked_certificate_by_serial_number(gone.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    assert crl.get_revoked_certificate_by_serial_number(stays.serial_number) is None
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 1

    ca.revoke(ca_dir, format(stays.serial_number, "x"), "left the network")
    crl = x509.load_pem_x509_crl(write_crl(ca_dir).read_bytes())
    assert {r.serial_number for r in crl} == {gone.serial_number, stays.serial_number}
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    free_text = crl.get_revoked_certificate_by_serial_number(stays.serial_number)
    assert free_text is not None and len(free_text.extensions) == 0  # no reason code for free text

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not on PATH")
    out = subprocess.run(["openssl", "crl", "-in", str(path), "-noout", "-text"], capture_output=True, text=True, check=True).stdout
    listed = out.upper().replace(":", "")
    for cert in (gone, stays):
        assert format(cert.serial_number, "X") in listed
    assert "KEY COMPROMISE" in listed


def test_empty_crl(ca_dir: Path) -> None:
    crl = x509.load_pem_x509_crl(write_crl(ca_dir).read_bytes())
    assert len(crl) == 0 and crl.is_signature_valid(_ca_cert(ca_dir).public_key())
    assert ca.revocation_list(ca_dir)["revoked"] == []


# ---------------------------------------------------------------- real mTLS


def _health_check(port: int, ca_pem: bytes, key: bytes | None, cert: bytes | None, server_name: str = "") -> int:
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem, private_key=key, certificate_chain=cert)
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return reply.status


def test_certificates_from_csrs_work_for_mtls(ca_dir: Path, tmp_path: Path) -> None:
    ca_pem = (ca_dir / tls.CA_CERT).read_bytes()
    server_cert = issue.issue_from_csr(ca_dir, issue.make_csr(tmp_path / "tinh.key", "tinh", ["127.0.0.1"]), "provincial")
    client_cert = issue.issue_from_csr(ca_dir, issue.make_csr(tmp_path / "huyen.key", "huyen-a", []), "district", parent="tinh")
    client_key = (tmp_path / "huyen.key").read_bytes()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    credentials = grpc.ssl_server_credentials([((tmp_path / "tinh.key").read_bytes(), server_cert)], ca_pem, require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        serving = health_pb2.HealthCheckResponse.SERVING
        assert _health_check(port, ca_pem, client_key, client_cert) == serving
        assert _health_check(port, ca_pem, client_key, client_cert, server_name="tinh") == serving  # as transport.connect does
        with pytest.raises(grpc.RpcError):
            _health_check(port, ca_pem, None, None)  # no client certificate
        stranger = tmp_path / "stranger"
        ca.init_ca_protected(stranger, "Other province", None)
        foreign = issue.issue_from_csr(stranger, issue.make_csr(tmp_path / "x.key", "huyen-x", []), "district")
        with pytest.raises(grpc.RpcError):
            _health_check(port, ca_pem, (tmp_path / "x.key").read_bytes(), foreign)  # another CA's certificate
    finally:
        server.stop(None)
