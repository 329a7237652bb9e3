"""The provincial CA and node certificates (offline path).

`lienthong ca init` makes a CA (ECDSA P-256 key, mode 0600); `lienthong init --ca`
makes the node's own key in its directory and a certificate signed by the CA,
binding the node id (subject common name and a DNS name) and its role (OU).
The node id a peer presents is always read from its verified certificate.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lienthong.sync.errors import TrustError
from lienthong.sync.transport import TlsFiles

CA_KEY = "ca.key"
CA_CERT = "ca.crt"
CA_VALIDITY = dt.timedelta(days=3650)
NODE_VALIDITY = dt.timedelta(days=397)


@dataclass(frozen=True)
class NodeTlsPaths:
    ca: Path
    cert: Path
    key: Path

    def load(self) -> TlsFiles:
        try:
            return TlsFiles(ca=self.ca.read_bytes(), cert=self.cert.read_bytes(), key=self.key.read_bytes())
        except FileNotFoundError as exc:
            raise TrustError(
                f"TLS file {exc.filename} is missing", "issue the node a certificate with `lienthong init --ca CA_DIR`"
            ) from None


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.rename(path)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.rename(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def init_ca(ca_dir: Path, name: str) -> Path:
    """Create a CA in `ca_dir`; refuses to overwrite one."""
    if (ca_dir / CA_KEY).exists():
        raise TrustError(f"a CA already exists in {ca_dir}", "use it, or choose another directory")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "lienthong")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(ca_dir / CA_KEY, _key_pem(key))
    _write_public(ca_dir / CA_CERT, cert.public_bytes(serialization.Encoding.PEM))
    return ca_dir / CA_CERT


def _load_ca(ca_dir: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    try:
        key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate((ca_dir / CA_CERT).read_bytes())
    except FileNotFoundError:
        raise TrustError(f"no CA in {ca_dir}", "create one with `lienthong ca init CA_DIR`") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TrustError(f"the CA key in {ca_dir} is not an ECDSA key", "create the CA with `lienthong ca init`")
    return key, cert


def check_ca(ca_dir: Path) -> None:
    """Raise TrustError unless `ca_dir` holds a usable CA."""
    _load_ca(ca_dir)


def issue_node(
    ca_dir: Path, paths: NodeTlsPaths, node_id: str, role: str, hosts: list[str], validity: dt.timedelta = NODE_VALIDITY
) -> None:
    """Make the node's key at `paths.key` and a CA-signed certificate for it.

    The certificate binds `node_id` (common name and DNS name) and `role` (OU);
    `hosts` are extra names and addresses the node is reached at.
    """
    ca_key, ca_cert = _load_ca(ca_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    names: list[x509.GeneralName] = [x509.DNSName(node_id)]
    for host in dict.fromkeys(["localhost", "127.0.0.1", "::1", *hosts]):
        if not host or host in ("0.0.0.0", "::"):
            continue
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, node_id),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "lienthong"),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(paths.key, _key_pem(key))
    _write_public(paths.cert, cert.public_bytes(serialization.Encoding.PEM))
    _write_public(paths.ca, ca_cert.public_bytes(serialization.Encoding.PEM))


def certificate_summary(path: Path) -> dict[str, str]:
    """Node id, role and expiry of the certificate at `path`, for `status`."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ou = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return {
        "node_id": str(cn[0].value) if cn else "",
        "role": str(ou[0].value) if ou else "",
        "not_after": cert.not_valid_after_utc.isoformat(),
    }
