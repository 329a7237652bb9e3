"""The provincial CA: its key and certificate, and its registry of what it issued.

    province:  init_ca_protected(ca_dir, name, passphrase)   -> CA_DIR/ca.key (0600) + ca.crt
    province:  load_ca(ca_dir, passphrase)                   -> the key and certificate, checked
    province:  revoke(ca_dir, node_or_serial, reason)        -> the registry says so

Every certificate this CA issues (`issue.py` signs them) is recorded in
`CA_DIR/issued.db` (SQLite), so the province can list what it issued and revoke it;
the revocation list is published as a standard X.509 CRL (`crl.py`, signed by the
CA key) and as a plain dict (`revocation_list`) for the sync layer to send downward.

Certificates are short-lived (30 days by default). Revocation is the fast path for
taking a node out; the short life bounds the damage of a key that is stolen without
anyone noticing, or of a revocation list that does not reach a node in time. Nodes
renew their own, with new keys, over the replication link (`renewal.py`).

The registry's schema is numbered migrations (`MIGRATIONS`, run by
`lienthong.sync.sqlite.migrate`); a registry written by a newer lienthong is refused.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lienthong.sync import sqlite
from lienthong.sync.errors import SchemaTooNew, TrustError
from lienthong.sync.sqlite import transaction

from ..permissions import check_private
from .root import ROOT_CERT
from .tls import CA_CERT, CA_KEY, CA_VALIDITY, write_private, write_public

REGISTRY = "issued.db"
PASSPHRASE_ENV = "LIENTHONG_CA_PASSPHRASE"

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


def _registry_v1(conn: sqlite3.Connection) -> None:
    sqlite.execute_script(conn, _SCHEMA)


def _registry_v2(conn: sqlite3.Connection) -> None:
    # A key compromise's stated time (ISO 8601 UTC), written into the CRL as its invalidity date.
    conn.execute("ALTER TABLE issued ADD COLUMN invalid_since TEXT")


# The registry's schema, version by version (`PRAGMA user_version`); append, never edit.
MIGRATIONS: dict[int, sqlite.Migration] = {1: _registry_v1, 2: _registry_v2}
_COLUMNS = (
    "serial",
    "node_id",
    "role",
    "parent",
    "sans",
    "not_before",
    "not_after",
    "fingerprint",
    "status",
    "revoked_at",
    "reason",
    "invalid_since",
)


# ---------------------------------------------------------------- the CA key


def passphrase_from_env(environ: dict[str, str] | None = None) -> bytes | None:
    """The CA passphrase from `LIENTHONG_CA_PASSPHRASE`, or None when unset or empty."""
    value = (os.environ if environ is None else environ).get(PASSPHRASE_ENV, "")
    return value.encode() if value else None


def _as_bytes(passphrase: bytes | str | None) -> bytes | None:
    if isinstance(passphrase, str):
        passphrase = passphrase.encode()
    return passphrase or None


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def iso(moment: dt.datetime) -> str:
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


def init_ca(ca_dir: Path, name: str) -> Path:
    """A CA whose key is not encrypted (tests, demos, a CA kept on an encrypted disk)."""
    return init_ca_protected(ca_dir, name, None)


def load_ca_cert(ca_dir: Path) -> x509.Certificate:
    """The CA certificate in `ca_dir` (no key needed); TrustError if there is none."""
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
    cert = load_ca_cert(ca_dir)
    try:
        data = (ca_dir / CA_KEY).read_bytes()
    except FileNotFoundError:
        raise TrustError(
            f"the CA in {ca_dir} has no private key ({CA_KEY})", "sign on the machine that holds the CA key, or restore it from backup"
        ) from None
    check_private(ca_dir / CA_KEY, "the CA key")
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
    """SHA-256 of the DER of the certificate nodes trust (a two-level CA's root, else the CA's own),
    lowercase hex: what enrollment tokens pin."""
    load_ca_cert(ca_dir)
    anchor = Path(ca_dir) / ROOT_CERT
    if anchor.exists():
        return x509.load_pem_x509_certificate(anchor.read_bytes()).fingerprint(hashes.SHA256()).hex()
    return load_ca_cert(ca_dir).fingerprint(hashes.SHA256()).hex()


# ---------------------------------------------------------------- the registry


@contextlib.contextmanager
def registry(ca_dir: Path) -> Iterator[sqlite3.Connection]:
    """The CA's registry (autocommit; wrap writes in `transaction`), created on first use;
    only in a directory that holds a CA."""
    load_ca_cert(ca_dir)
    path = Path(ca_dir) / REGISTRY
    if not path.exists():
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    conn = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        conn.row_factory = sqlite3.Row
        try:
            sqlite.migrate(conn, MIGRATIONS, f"the CA registry {path}")
        except SchemaTooNew as exc:  # a TrustError like every other registry trouble (callers catch those)
            raise TrustError(exc.message, exc.hint) from exc
        yield conn
    except sqlite3.DatabaseError as exc:
        raise TrustError(f"the CA registry {path} cannot be used: {exc}", "restore it from the CA's backup") from None
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
    with registry(ca_dir) as conn:
        return [_row(r) for r in conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM issued ORDER BY issued_at, rowid")]


def issued_pems(ca_dir: Path) -> list[str]:
    """The PEM of every certificate this CA issued (revoked ones included), oldest first."""
    with registry(ca_dir) as conn:
        return [r["cert_pem"] for r in conn.execute("SELECT cert_pem FROM issued ORDER BY issued_at, rowid")]


def ancestors(ca_dir: Path, node_id: str) -> list[str]:
    """The node's parent, grandparent, … as the registry records them (latest certificate each)."""
    parent_of = {row["node_id"]: row["parent"] for row in list_issued(ca_dir)}
    out: list[str] = []
    current = parent_of.get(node_id, "")
    while current and current not in out and current != node_id:
        out.append(current)
        current = parent_of.get(current, "")
    return out


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def _normalize_serial(text: str) -> str | None:
    cleaned = text.strip().lower().replace(":", "")
    cleaned = cleaned.removeprefix("0x")
    if not cleaned or any(c not in "0123456789abcdef" for c in cleaned):
        return None
    return serial_hex(int(cleaned, 16))


def revoke(ca_dir: Path, node_id_or_serial: str, reason: str = "", invalid_since: dt.datetime | None = None) -> list[str]:
    """Revoke every valid certificate of a node id, or the one with this serial (hex).
    `invalid_since`: for a key compromise, when the key is known or suspected to have been
    compromised (seals not witnessed before it are refused; default: the revocation time).

    Returns the serials revoked now (empty if they already were). Rewrite the CRL
    afterwards with `crl.write_crl`, which needs the CA key.
    """
    target = node_id_or_serial.strip()
    serial = _normalize_serial(target)
    with registry(ca_dir) as conn, transaction(conn):
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
        now = iso(utc_now())
        since = iso(min(invalid_since, utc_now())) if invalid_since is not None else None
        conn.executemany(
            "UPDATE issued SET status = 'revoked', revoked_at = ?, reason = ?, invalid_since = ? WHERE serial = ?",
            [(now, reason.strip(), since, s) for s in serials],
        )
        return serials


def revocation_list(ca_dir: Path) -> dict[str, Any]:
    """The revoked certificates, for the sync layer to send downward (unsigned; see `crl.write_crl`).

    {"issuer": CA fingerprint, "updated": when this list was made (ISO UTC),
     "revoked": [{"serial", "node_id", "revoked_at", "reason"}, ...]}
    """
    fingerprint = ca_fingerprint(ca_dir)
    with registry(ca_dir) as conn:
        rows = conn.execute(
            "SELECT serial, node_id, revoked_at, reason FROM issued WHERE status = 'revoked' ORDER BY revoked_at, rowid"
        ).fetchall()
    return {"issuer": fingerprint, "updated": iso(utc_now()), "revoked": [dict(r) for r in rows]}


def check_names_unclaimed(conn: sqlite3.Connection, node_id: str, extra_dns: list[str]) -> None:
    """Refuse names that would let one node's certificate pass for another node.

    Peers check a parent's certificate by host name (the node id as a DNS name), so a
    node may not be given another node's id as a DNS name, nor take an id already
    given to another node as a DNS name; node ids differing only in case are refused
    too (DNS names are case-insensitive). Run it in the transaction that records the
    certificate (`record_issued`).
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


def record_issued(
    conn: sqlite3.Connection, cert: x509.Certificate, node_id: str, role: str, parent: str, sans: list[str], issued_at: dt.datetime
) -> bytes:
    """Record a certificate just signed (inside the caller's transaction); returns its PEM.
    `sans` are its names as text: "DNS:name", "IP:address"."""
    pem = cert.public_bytes(serialization.Encoding.PEM)
    conn.execute(
        "INSERT INTO issued (serial, node_id, role, parent, sans, not_before, not_after, fingerprint, issued_at, cert_pem)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            serial_hex(cert.serial_number),
            node_id,
            role,
            parent,
            json.dumps(sans),
            iso(cert.not_valid_before_utc),
            iso(cert.not_valid_after_utc),
            cert.fingerprint(hashes.SHA256()).hex(),
            iso(issued_at),
            pem.decode(),
        ),
    )
    return pem


def next_crl(ca_dir: Path) -> tuple[int, list[sqlite3.Row]]:
    """For a new CRL (`crl.write_crl`): its number (the registry counts them, 1, 2, …) and
    every revoked certificate's serial, revoked_at, reason and invalid_since, in the order revoked."""
    with registry(ca_dir) as conn, transaction(conn):
        rows = conn.execute(
            "SELECT serial, revoked_at, reason, invalid_since FROM issued WHERE status = 'revoked' ORDER BY rowid"
        ).fetchall()
        number_row = conn.execute("SELECT value FROM meta WHERE key = 'crl_number'").fetchone()
        number = int(number_row[0]) + 1 if number_row else 1
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('crl_number', ?)", (str(number),))
    return number, rows


def authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """The extension naming this CA in what it signs (certificates, CRLs)."""
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]
