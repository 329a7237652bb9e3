"""Certificates the provincial CA issues: the offline path of DESIGN §5, where the
node's private key never leaves the node.

    node:      make_csr(key_path, node_id, hosts)                  -> CSR file (key stays, mode 0600)
    province:  issue_from_csr(ca_dir, csr, role, parent)           -> certificate, recorded in the registry
    both:      issue_node(ca_dir, paths, node_id, role, hosts)     -> the two steps on one machine (`init --ca`)

Enrollment (`enroll_server.py`, `enroll_client.py`) and renewal (`renewal.py`) run the
same two steps over the network.

Only the node id (subject CN) and the DNS/IP names are taken from a CSR; the
role, parent, lifetime and every other extension are the CA's decision.

Keys: EC P-256 (what `make_csr` makes) or Ed25519. Note that gRPC's TLS
(BoringSSL) does not offer Ed25519 signatures by default, so an Ed25519 node
certificate is valid X.509 but fails the gRPC handshake (NO_COMMON_SIGNATURE_ALGORITHMS);
use P-256 for nodes that replicate over gRPC.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from pathlib import Path
from typing import Any, cast

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from lienthong.sync import provenance
from lienthong.sync.errors import TrustError
from lienthong.sync.sqlite import transaction

from . import ca, root
from .tls import NODE_FILE_MODE, NodeTlsPaths, write_private, write_public

# The node roles a certificate may carry (its OU); the modes of `config.settings`.
ROLES = ("provincial", "district")
NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# A DNS name a CSR may ask for: letters, digits, '-', '_' and dots; no wildcards.
DNS_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252}[A-Za-z0-9_])?")
DEFAULT_VALIDITY_DAYS = 30


def _check_node_id(node_id: str, what: str = "node id") -> None:
    if not NODE_ID.fullmatch(node_id):
        raise TrustError(
            f"{what} {node_id!r} is not acceptable",
            "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )


def _key_kind(key: Any) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}-bit"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    # Anything else (DSA, whose name `cryptography` deprecates): its class and size.
    size = getattr(key, "key_size", None)
    return type(key).__name__.removeprefix("_") + (f" {size}-bit" if size else "")


def _check_key(key: Any) -> None:
    # Ed25519 certificates verify with openssl but gRPC's TLS stack does not offer
    # Ed25519 signatures (NO_COMMON_SIGNATURE_ALGORITHMS): such a node could never connect.
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return
    raise TrustError(
        f"the CSR's key is {_key_kind(key)}; this CA only signs EC P-256 (secp256r1) keys, the kind gRPC's TLS accepts",
        "make the CSR with `lienthong` on the node (it makes an EC P-256 key), or with `openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256`",
    )


def _host_names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(h.strip() for h in hosts):
        if not host or host in ("0.0.0.0", "::"):
            continue
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not DNS_NAME.fullmatch(host):
                raise TrustError(f"{host!r} is not a host name or IP address", "give DNS names (no wildcards) or IP addresses") from None
            names.append(x509.DNSName(host))
    return names


def _csr_names(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    """The DNS names and IP addresses the CSR asks for; anything else is refused."""
    try:
        requested = cast(x509.SubjectAlternativeName, csr.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value)
    except x509.ExtensionNotFound:
        return []
    names: list[x509.GeneralName] = []
    for name in requested:
        if isinstance(name, x509.DNSName):
            if not DNS_NAME.fullmatch(name.value):
                raise TrustError(f"the CSR asks for the DNS name {name.value!r}, which is not acceptable", "no wildcards or odd characters")
        elif isinstance(name, x509.IPAddress):
            if not isinstance(name.value, ipaddress.IPv4Address | ipaddress.IPv6Address):
                raise TrustError(f"the CSR asks for the address range {name.value}", "ask for single IP addresses")
        else:
            raise TrustError(
                f"the CSR asks for a {type(name).__name__} name ({name.value}); this CA only issues DNS names and IP addresses",
                "make the CSR again without it",
            )
        names.append(name)
    return names


def _san_text(name: x509.GeneralName) -> str:
    return f"DNS:{name.value}" if isinstance(name, x509.DNSName) else f"IP:{name.value}"


def _load_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    try:
        if csr_pem.lstrip().startswith(b"-----"):
            return x509.load_pem_x509_csr(csr_pem)
        return x509.load_der_x509_csr(csr_pem)
    except ValueError:
        raise TrustError(
            "the file is not a certificate signing request (CSR)", "make one on the node with `lienthong` and copy it here"
        ) from None


def issue_from_csr(
    ca_dir: Path,
    csr_pem: bytes,
    role: str,
    parent: str = "",
    validity_days: int = DEFAULT_VALIDITY_DAYS,
    passphrase: bytes | None = None,
) -> bytes:
    """Sign a node's CSR and record the certificate in the CA registry; returns the certificate PEM,
    followed by the issuing CA's when the CA has two levels (`root.py`): what the node presents.

    The node id is the CSR's subject CN; the certificate carries it as CN and as a DNS
    name (plus the DNS names and IP addresses the CSR asks for), `role` as OU,
    EKU serverAuth + clientAuth, BasicConstraints CA=false and the CA's key id.
    `parent` is recorded in the registry only. 30 days by default: see the module doc.
    """
    ca_dir = Path(ca_dir)
    if role not in ROLES:
        raise TrustError(f"role {role!r} is not known", f"use one of: {', '.join(ROLES)}")
    if parent:
        _check_node_id(parent, "parent id")
    if not isinstance(validity_days, int) or validity_days < 1:
        raise TrustError(
            f"a certificate must be valid for at least a day (got {validity_days!r})", f"the default is {DEFAULT_VALIDITY_DAYS}"
        )
    csr = _load_csr(csr_pem)
    if not csr.is_signature_valid:
        raise TrustError(
            "the CSR's signature does not verify: it was altered or damaged", "make the CSR again on the node and copy it intact"
        )
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1:
        raise TrustError(f"the CSR must name exactly one node id (subject CN); it has {len(cns)}", "make the CSR with `lienthong`")
    node_id = str(cns[0].value)
    _check_node_id(node_id)
    if parent == node_id:
        raise TrustError(f"node {node_id!r} cannot be its own parent", "give the id of the node it sends to")
    public_key = csr.public_key()
    _check_key(public_key)
    signing_key = provenance.certified_signing_key(csr)
    names: list[x509.GeneralName] = [x509.DNSName(node_id)]
    for name in _csr_names(csr):
        if name not in names:
            names.append(name)

    ca_key, ca_cert = ca.load_ca(ca_dir, passphrase)
    now = dt.datetime.now(dt.UTC)
    not_after = min(now + dt.timedelta(days=validity_days), ca_cert.not_valid_after_utc)
    if not_after <= now:
        raise TrustError(f"the CA certificate in {ca_dir} has expired", "create a new CA and re-issue every node")
    with ca.registry(ca_dir) as conn, transaction(conn):
        ca.check_names_unclaimed(conn, node_id, [n.value for n in names if isinstance(n, x509.DNSName)])
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
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(ca.authority_key_id(ca_cert), critical=False)
            .add_extension(provenance.certificate_extension(signing_key), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        pem = ca.record_issued(conn, cert, node_id, role, parent, [_san_text(n) for n in names], now)
    return pem + root.chain_for(ca_dir, pem)  # a two-level CA's node presents its issuing CA after its own


def make_csr(key_path: Path, node_id: str, hosts: list[str]) -> bytes:
    """The node's CSR (PEM) for `node_id`, naming `hosts` (DNS names or IP addresses) too.

    Uses the key at `key_path`, or makes an EC P-256 key there (mode 0600) if there is
    none: the private key never leaves the node, only the CSR is sent to the CA.
    """
    key_path = Path(key_path)
    _check_node_id(node_id)
    names: list[x509.GeneralName] = [x509.DNSName(node_id)]
    for name in _host_names(hosts):
        if name not in names:
            names.append(name)
    if key_path.exists():
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise TrustError(
                f"the key {key_path} cannot be read (or is protected by a passphrase)",
                "move it away to make a new key, or give another path",
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            raise TrustError(f"the key {key_path} is not an EC or Ed25519 key", "move it away to make a new EC P-256 key")
        _check_key(key.public_key())
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        write_private(key_path, pem)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    # The record-signing key (Ed25519, beside the TLS key) rides in the same request,
    # with proof that this node holds it; the CA certifies it with the TLS key.
    signing_key = provenance.load_or_make_signing_key(provenance.signing_key_path(key_path), write_private)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(provenance.csr_extension(signing_key, key.public_key()), critical=False)
        .sign(key, algorithm)
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def issue_node(
    ca_dir: Path,
    paths: NodeTlsPaths,
    node_id: str,
    role: str,
    hosts: list[str],
    days: int = DEFAULT_VALIDITY_DAYS,
    parent: str = "",
    passphrase: bytes | None = None,
) -> None:
    """Both ends of the offline path in one step, for a CA on the same machine: the node's
    key is made at `paths.key`, its request signed and recorded, and the certificate and the
    CA certificate written beside it. `lienthong init --ca` does this."""
    csr = make_csr(paths.key, node_id, ["localhost", "127.0.0.1", "::1", *hosts])
    write_public(paths.cert, issue_from_csr(ca_dir, csr, role, parent, days, passphrase), NODE_FILE_MODE)
    write_public(paths.ca, root.anchor_pem(ca_dir), NODE_FILE_MODE)  # the node trusts the root
