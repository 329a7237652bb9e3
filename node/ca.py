"""The provincial CA's offline operations: protected key, CSR signing, registry, revocation.

`tls.py` makes a CA and issues a node its key and certificate in one step (the
`init --ca` path, for a CA and node on the same machine). This module is the path
of DESIGN §5 where the private key never leaves the node:

    node:      make_csr(key_path, node_id, hosts)          -> CSR file (key stays, mode 0600)
    province:  issue_from_csr(ca_dir, csr, role, parent)   -> certificate file, recorded
    province:  revoke(ca_dir, node_or_serial, reason); write_crl(ca_dir)

Every certificate this CA issues is recorded in `CA_DIR/issued.db` (SQLite), so
the province can list what it issued and revoke it; the revocation list is
published as a standard X.509 CRL (`CA_DIR/ca.crl.pem`, signed by the CA key) and
as a plain dict (`revocation_list`) for the sync layer to send downward.

Certificates are short-lived (30 days by default). Revocation is the fast path for
taking a node out; the short life bounds the damage of a key that is stolen without
anyone noticing, or of a revocation list that does not reach a node in time. Nodes
renew their own, with new keys, over the replication link (node/renewal.py).

Only the node id (subject CN) and the DNS/IP names are taken from a CSR; the
role, parent, lifetime and every other extension are the CA's decision.

Keys: EC P-256 (what `make_csr` makes) or Ed25519. Note that gRPC's TLS
(BoringSSL) does not offer Ed25519 signatures by default, so an Ed25519 node
certificate is valid X.509 but fails the gRPC handshake (NO_COMMON_SIGNATURE_ALGORITHMS);
use P-256 for nodes that replicate over gRPC.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from lienthong.sync import provenance
from lienthong.sync.errors import TrustError
from lienthong.sync.sqlite import transaction

from .tls import CA_CERT, CA_KEY, CA_VALIDITY, NodeTlsPaths, write_private, write_public

REGISTRY = "issued.db"
CRL_FILE = "ca.crl.pem"
PASSPHRASE_ENV = "LIENTHONG_CA_PASSPHRASE"
# The node roles a certificate may carry (its OU); the modes of `config.settings`.
ROLES = ("provincial", "district")
NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# A DNS name a CSR may ask for: letters, digits, '-', '_' and dots; no wildcards.
DNS_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252}[A-Za-z0-9_])?")
DEFAULT_VALIDITY_DAYS = 30
# A CRL must be rewritten (`write_crl`) before this; readers may refuse a stale one.
CRL_NEXT_UPDATE = dt.timedelta(days=7)
SCHEMA_VERSION = 1

_PASSPHRASE_HINT = f"set the environment variable {PASSPHRASE_ENV} to the CA passphrase"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS issued (
    serial      TEXT PRIMARY KEY,           -- lowercase hex, no leading zeros
    node_id     TEXT NOT NULL,
    role        TEXT NOT NULL,
    parent      TEXT NOT NULL DEFAULT '',
    sans        TEXT NOT NULL,              -- JSON list: "DNS:name", "IP:address"
    not_before  TEXT NOT NULL,              -- ISO 8601, UTC
    not_after   TEXT NOT NULL,
    fingerprint TEXT NOT NULL,              -- SHA-256 of the certificate DER, hex
    status      TEXT NOT NULL DEFAULT 'valid' CHECK (status IN ('valid', 'revoked')),
    revoked_at  TEXT,
    reason      TEXT NOT NULL DEFAULT '',
    issued_at   TEXT NOT NULL,
    cert_pem    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS issued_node ON issued (node_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_COLUMNS = ("serial", "node_id", "role", "parent", "sans", "not_before", "not_after", "fingerprint", "status", "revoked_at", "reason")


# ---------------------------------------------------------------- the CA key


def passphrase_from_env(environ: dict[str, str] | None = None) -> bytes | None:
    """The CA passphrase from `LIENTHONG_CA_PASSPHRASE`, or None when unset or empty."""
    value = (os.environ if environ is None else environ).get(PASSPHRASE_ENV, "")
    return value.encode() if value else None


def _as_bytes(passphrase: bytes | str | None) -> bytes | None:
    if isinstance(passphrase, str):
        passphrase = passphrase.encode()
    return passphrase or None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).replace(microsecond=0).isoformat()


def init_ca_protected(ca_dir: Path, name: str, passphrase: bytes | None) -> Path:
    """Create a CA in `ca_dir`, its key encrypted with `passphrase` when given.

    The key file is mode 0600 either way; refuses to overwrite an existing CA.
    Returns the path of the CA certificate.
    """
    ca_dir = Path(ca_dir)
    if (ca_dir / CA_KEY).exists():
        raise TrustError(f"a CA already exists in {ca_dir}", "use it, or choose another directory")
    if not name.strip():
        raise TrustError("the CA needs a name", "give it one, e.g. the province's name")
    secret = _as_bytes(passphrase)
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
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(secret) if secret else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    write_private(ca_dir / CA_KEY, pem)
    write_public(ca_dir / CA_CERT, cert.public_bytes(serialization.Encoding.PEM))
    return ca_dir / CA_CERT


def _load_ca_cert(ca_dir: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate((Path(ca_dir) / CA_CERT).read_bytes())
    except FileNotFoundError:
        raise TrustError(f"no CA in {ca_dir}", "create one with `lienthong ca init CA_DIR`") from None
    except ValueError:
        raise TrustError(f"the CA certificate {Path(ca_dir) / CA_CERT} cannot be read", "restore it from the CA's backup") from None


def load_ca(ca_dir: Path, passphrase: bytes | None = None) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The CA's private key and certificate; TrustError if the passphrase is missing or wrong.

    A passphrase given for a key that is not encrypted is ignored.
    """
    ca_dir = Path(ca_dir)
    cert = _load_ca_cert(ca_dir)
    try:
        data = (ca_dir / CA_KEY).read_bytes()
    except FileNotFoundError:
        raise TrustError(
            f"the CA in {ca_dir} has no private key ({CA_KEY})", "sign on the machine that holds the CA key, or restore it from backup"
        ) from None
    secret = _as_bytes(passphrase)
    try:
        try:
            key = serialization.load_pem_private_key(data, password=secret)
        except TypeError:
            if secret is None:
                raise TrustError(f"the CA key in {ca_dir} is protected by a passphrase and none was given", _PASSPHRASE_HINT) from None
            key = serialization.load_pem_private_key(data, password=None)  # not encrypted: the passphrase is not needed
    except ValueError:
        if secret is not None and b"ENCRYPTED" in data:
            raise TrustError(f"wrong passphrase for the CA key in {ca_dir}", _PASSPHRASE_HINT + " (check it)") from None
        raise TrustError(f"the CA key {ca_dir / CA_KEY} cannot be read", "restore it from the CA's backup") from None
    except UnsupportedAlgorithm:
        raise TrustError(f"the CA key {ca_dir / CA_KEY} uses an unsupported algorithm", "create the CA with `lienthong ca init`") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TrustError(f"the CA key in {ca_dir} is not an ECDSA key", "create the CA with `lienthong ca init`")
    if key.public_key() != cert.public_key():
        raise TrustError(f"the CA key and certificate in {ca_dir} do not belong together", "restore both from the same backup")
    return key, cert


def ca_fingerprint(ca_dir: Path) -> str:
    """SHA-256 of the CA certificate's DER, lowercase hex: what enrollment tokens pin."""
    return _load_ca_cert(ca_dir).fingerprint(hashes.SHA256()).hex()


# ---------------------------------------------------------------- the registry


@contextlib.contextmanager
def _registry(ca_dir: Path) -> Iterator[sqlite3.Connection]:
    """The CA's registry, created on first use; only in a directory that holds a CA."""
    _load_ca_cert(ca_dir)
    conn = sqlite3.connect(Path(ca_dir) / REGISTRY, isolation_level=None, timeout=10)
    try:
        conn.row_factory = sqlite3.Row
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise TrustError(
                f"the CA registry {Path(ca_dir) / REGISTRY} was written by a newer lienthong", "use that version to manage this CA"
            )
        if version < SCHEMA_VERSION:
            conn.executescript(f"BEGIN; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        yield conn
    except sqlite3.DatabaseError as exc:
        raise TrustError(f"the CA registry {Path(ca_dir) / REGISTRY} cannot be used: {exc}", "restore it from the CA's backup") from None
    finally:
        conn.close()


def _row(row: sqlite3.Row) -> dict[str, Any]:
    entry = {name: row[name] for name in _COLUMNS}
    entry["sans"] = json.loads(entry["sans"])
    return entry


def list_issued(ca_dir: Path) -> list[dict[str, Any]]:
    """Every certificate this CA issued, oldest first.

    Each is a dict: serial (hex), node_id, role, parent, sans, not_before, not_after
    (ISO 8601 UTC), fingerprint (SHA-256 hex), status ('valid' or 'revoked'),
    revoked_at (ISO or None), reason. 'valid' means not revoked: compare not_after
    with the time to tell whether it has expired.
    """
    with _registry(ca_dir) as conn:
        return [_row(r) for r in conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM issued ORDER BY issued_at, rowid")]


def ancestors(ca_dir: Path, node_id: str) -> list[str]:
    """The node's parent, grandparent, … as the registry records them (latest certificate each)."""
    parent_of = {row["node_id"]: row["parent"] for row in list_issued(ca_dir)}
    out: list[str] = []
    current = parent_of.get(node_id, "")
    while current and current not in out and current != node_id:
        out.append(current)
        current = parent_of.get(current, "")
    return out


def _serial_hex(serial: int) -> str:
    return format(serial, "x")


def _normalize_serial(text: str) -> str | None:
    cleaned = text.strip().lower().replace(":", "")
    cleaned = cleaned.removeprefix("0x")
    if not cleaned or any(c not in "0123456789abcdef" for c in cleaned):
        return None
    return _serial_hex(int(cleaned, 16))


def revoke(ca_dir: Path, node_id_or_serial: str, reason: str = "") -> list[str]:
    """Revoke every valid certificate of a node id, or the one with this serial (hex).

    Returns the serials revoked now (empty if they already were). Rewrite the CRL
    afterwards with `write_crl`, which needs the CA key.
    """
    target = node_id_or_serial.strip()
    serial = _normalize_serial(target)
    with _registry(ca_dir) as conn, transaction(conn):
        by_node = conn.execute("SELECT serial, status FROM issued WHERE node_id = ?", (target,)).fetchall()
        by_serial = conn.execute("SELECT serial, status FROM issued WHERE serial = ?", (serial,)).fetchall() if serial else []
        if by_node and by_serial:
            raise TrustError(
                f"{target!r} is both a node id and a certificate serial", "revoke by the serial shown in `lienthong ca list` instead"
            )
        rows = by_node or by_serial
        if not rows:
            raise TrustError(f"this CA issued no certificate to node or with serial {target!r}", "see `lienthong ca list`")
        serials = [r["serial"] for r in rows if r["status"] == "valid"]
        now = _iso(_now())
        conn.executemany(
            "UPDATE issued SET status = 'revoked', revoked_at = ?, reason = ? WHERE serial = ?", [(now, reason.strip(), s) for s in serials]
        )
        return serials


def revocation_list(ca_dir: Path) -> dict[str, Any]:
    """The revoked certificates, for the sync layer to send downward (unsigned; see `write_crl`).

    {"issuer": CA fingerprint, "updated": when this list was made (ISO UTC),
     "revoked": [{"serial", "node_id", "revoked_at", "reason"}, ...]}
    """
    fingerprint = ca_fingerprint(ca_dir)
    with _registry(ca_dir) as conn:
        rows = conn.execute(
            "SELECT serial, node_id, revoked_at, reason FROM issued WHERE status = 'revoked' ORDER BY revoked_at, rowid"
        ).fetchall()
    return {"issuer": fingerprint, "updated": _iso(_now()), "revoked": [dict(r) for r in rows]}


# Not reasons for a permanent revocation: no code (RFC 5280 says to omit it), a hold, a release.
_NOT_REVOCATION = (x509.ReasonFlags.unspecified, x509.ReasonFlags.certificate_hold, x509.ReasonFlags.remove_from_crl)


def _crl_reason(reason: str) -> x509.ReasonFlags | None:
    """The CRL reason code named by `reason` ('key_compromise', 'superseded', ...), if any."""
    wanted = re.sub(r"[^a-z]", "", reason.lower())
    for flag in x509.ReasonFlags:
        if flag not in _NOT_REVOCATION and re.sub(r"[^a-z]", "", flag.value.lower()) == wanted:
            return flag
    return None


def write_crl(ca_dir: Path, passphrase: bytes | None = None, next_update: dt.timedelta = CRL_NEXT_UPDATE) -> Path:
    """Write `CA_DIR/ca.crl.pem`: an X.509 CRL of every revoked serial, signed by the CA key.

    A revocation reason that names an RFC 5280 reason code (e.g. 'key_compromise',
    'superseded', 'cessation_of_operation') is carried as the entry's reason code.
    Each CRL gets the next CRL number. Returns the path written.
    """
    ca_dir = Path(ca_dir)
    key, cert = load_ca(ca_dir, passphrase)
    now = _now()
    with _registry(ca_dir) as conn, transaction(conn):
        rows = conn.execute("SELECT serial, revoked_at, reason FROM issued WHERE status = 'revoked' ORDER BY rowid").fetchall()
        number_row = conn.execute("SELECT value FROM meta WHERE key = 'crl_number'").fetchone()
        number = int(number_row[0]) + 1 if number_row else 1
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('crl_number', ?)", (str(number),))
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(cert.subject)
        .last_update(now)
        .next_update(now + next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(_authority_key_id(cert), critical=False)
    )
    for row in rows:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(int(row["serial"], 16))
            .revocation_date(dt.datetime.fromisoformat(row["revoked_at"]))
        )
        flag = _crl_reason(row["reason"])
        if flag is not None:
            entry = entry.add_extension(x509.CRLReason(flag), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    crl = builder.sign(key, hashes.SHA256())
    write_public(ca_dir / CRL_FILE, crl.public_bytes(serialization.Encoding.PEM))
    return ca_dir / CRL_FILE


# ---------------------------------------------------------------- CSRs and certificates


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
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA {key.key_size}-bit"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    return type(key).__name__


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
        requested = csr.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
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


def _authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]


def _check_names_unclaimed(conn: sqlite3.Connection, node_id: str, extra_dns: list[str]) -> None:
    """Refuse names that would let one node's certificate pass for another node.

    Peers check a parent's certificate by host name (the node id as a DNS name), so a
    node may not be given another node's id as a DNS name, nor take an id already
    given to another node as a DNS name; node ids differing only in case are refused
    too (DNS names are case-insensitive).
    """
    own = node_id.lower()
    for row in conn.execute("SELECT DISTINCT node_id FROM issued WHERE lower(node_id) = ? AND node_id != ?", (own, node_id)):
        raise TrustError(f"node id {node_id!r} differs only in case from {row['node_id']!r}, already issued", "choose another node id")
    wanted = {name.lower() for name in extra_dns} - {own}
    if wanted:
        marks = ", ".join("?" * len(wanted))
        for row in conn.execute(f"SELECT DISTINCT node_id FROM issued WHERE lower(node_id) IN ({marks})", sorted(wanted)):
            raise TrustError(
                f"the CSR for {node_id!r} asks for the DNS name {row['node_id']!r}, another node's id", "make the CSR again without it"
            )
    for row in conn.execute("SELECT node_id, sans FROM issued WHERE status = 'valid' AND lower(node_id) != ?", (own,)):
        if f"dns:{own}" in (s.lower() for s in json.loads(row["sans"])):
            raise TrustError(
                f"node {row['node_id']!r} holds a certificate naming {node_id!r} as a DNS name",
                f"choose another node id, or revoke {row['node_id']!r}'s certificate first",
            )


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
    """Sign a node's CSR and record the certificate in the CA registry; returns the certificate PEM.

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

    ca_key, ca_cert = load_ca(ca_dir, passphrase)
    now = dt.datetime.now(dt.UTC)
    not_after = min(now + dt.timedelta(days=validity_days), ca_cert.not_valid_after_utc)
    if not_after <= now:
        raise TrustError(f"the CA certificate in {ca_dir} has expired", "create a new CA and re-issue every node")
    with _registry(ca_dir) as conn, transaction(conn):
        _check_names_unclaimed(conn, node_id, [n.value for n in names if isinstance(n, x509.DNSName)])
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
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)  # type: ignore[arg-type]
            .add_extension(_authority_key_id(ca_cert), critical=False)
            .add_extension(provenance.certificate_extension(signing_key), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        pem = cert.public_bytes(serialization.Encoding.PEM)
        conn.execute(
            "INSERT INTO issued (serial, node_id, role, parent, sans, not_before, not_after, fingerprint, issued_at, cert_pem)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                _serial_hex(cert.serial_number),
                node_id,
                role,
                parent,
                json.dumps([_san_text(n) for n in names]),
                _iso(cert.not_valid_before_utc),
                _iso(cert.not_valid_after_utc),
                cert.fingerprint(hashes.SHA256()).hex(),
                _iso(now),
                pem.decode(),
            ),
        )
    return pem


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


def init_ca(ca_dir: Path, name: str) -> Path:
    """A CA whose key is not encrypted (tests, demos, a CA kept on an encrypted disk)."""
    return init_ca_protected(ca_dir, name, None)


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
    write_public(paths.cert, issue_from_csr(ca_dir, csr, role, parent, days, passphrase))
    write_public(paths.ca, (ca_dir / CA_CERT).read_bytes())
