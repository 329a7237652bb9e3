"""The two-level CA: an offline root that signs an issuing CA kept at the province.

    CA_DIR/root.key, root.crt   the root: signs issuing CAs (and their revocation list) only;
                                its key leaves the machine after `ca init` (docs/security.md)
    CA_DIR/ca.key, ca.crt       the issuing CA (a year): signs node certificates, the node CRL,
                                renewals and enrollments, with the root key absent
    CA_DIR/issuers/SERIAL.crt   every issuing certificate the root made, so certificates issued
                                before a rotation keep verifying
    CA_DIR/root.crl.pem         the root's CRL: issuing CAs revoked as compromised

    province:  init_two_level(ca_dir, name, passphrase)      `lienthong ca init`
    province:  rotate_issuing(ca_dir, passphrase, reason)    `lienthong ca rotate-issuing` (root key present)
    any:       anchor_pem(ca_dir), chain_for(ca_dir, leaf)   what nodes trust, what they present

Nodes trust the root (their `tls/ca.crt`) and present their certificate followed by the
issuing CA's (`tls/node.crt`), in every handshake and in every seal, so replacing the
issuing CA changes nothing a node trusts: nodes move to the new one when they renew.

A CA directory made before this (one self-signed `ca.crt` and its key, no `root.crt`) is a
single-level CA and keeps working as it did: its `ca.crt` is both anchor and issuer.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lienthong.sync import provenance
from lienthong.sync.errors import TrustError

from ..permissions import check_private
from .tls import CA_CERT, CA_KEY, write_private, write_public

ROOT_KEY = "root.key"
ROOT_CERT = "root.crt"
ROOT_CRL = "root.crl.pem"
ISSUERS = "issuers"
ROOT_VALIDITY = dt.timedelta(days=20 * 365)
ISSUING_VALIDITY = dt.timedelta(days=365)
ROTATE_REASONS = ("superseded", "key_compromise")


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def _ca_cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    signer: ec.EllipticCurvePrivateKey,
    life: dt.timedelta,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    not_after = now + life if issuer is None else min(now + life, issuer.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1 if issuer is None else 0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    return builder.sign(signer, hashes.SHA256())


def is_two_level(ca_dir: Path) -> bool:
    return (Path(ca_dir) / ROOT_CERT).exists()


def _new_issuing(ca_dir: Path, root_key: ec.EllipticCurvePrivateKey, root: x509.Certificate, passphrase: bytes | None) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = str(root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"{name} (issuing {stamp})"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "lienthong")]
    )
    cert = _ca_cert(subject, key, root, root_key, ISSUING_VALIDITY)
    write_public(ca_dir / ISSUERS / f"{cert.serial_number:x}.crt", _pem(cert))
    write_private(ca_dir / CA_KEY, _key_pem(key, passphrase))
    write_public(ca_dir / CA_CERT, _pem(cert))
    return cert


def init_two_level(ca_dir: Path, name: str, passphrase: bytes | None) -> x509.Certificate:
    """The root (20 years) and its first issuing CA (a year) in `ca_dir`; returns the root certificate."""
    ca_dir = Path(ca_dir)
    if (ca_dir / CA_KEY).exists() or (ca_dir / ROOT_CERT).exists():
        raise TrustError(f"a CA already exists in {ca_dir}", "use it, or choose another directory")
    if not name.strip():
        raise TrustError("the CA needs a name", "give it one, e.g. the province's name")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "lienthong")])
    root = _ca_cert(subject, key, None, key, ROOT_VALIDITY)
    write_private(ca_dir / ROOT_KEY, _key_pem(key, passphrase))
    write_public(ca_dir / ROOT_CERT, _pem(root))
    _new_issuing(ca_dir, key, root, passphrase)
    return root


def _load_root(ca_dir: Path, passphrase: bytes | None) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    if not is_two_level(ca_dir):
        raise TrustError(
            f"the CA in {ca_dir} has one level (no {ROOT_CERT})", "make a two-level CA with `lienthong ca init` in a new folder"
        )
    path = ca_dir / ROOT_KEY
    if not path.exists():
        raise TrustError(
            f"the root key {path} is not here (it is kept offline)",
            f"bring it back from its offline medium into {ca_dir} for this ceremony",
        )
    check_private(path, "the root key")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=passphrase)
    except TypeError:
        raise TrustError(
            f"the root key in {ca_dir} is protected by a passphrase and none was given", "set LIENTHONG_CA_PASSPHRASE"
        ) from None
    except ValueError:
        raise TrustError(
            f"the root key in {ca_dir} cannot be read (wrong passphrase?)", "set LIENTHONG_CA_PASSPHRASE to its passphrase"
        ) from None
    root = x509.load_pem_x509_certificate((ca_dir / ROOT_CERT).read_bytes())
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != root.public_key():
        raise TrustError(f"the root key and certificate in {ca_dir} do not belong together", "restore both from the same backup")
    return key, root


def rotate_issuing(ca_dir: Path, passphrase: bytes | None, reason: str = "superseded") -> tuple[x509.Certificate, x509.Certificate]:
    """Replace the issuing CA (the root key must be present); returns (old, new).

    The old issuing certificate stays in `issuers/` so what it issued keeps verifying; its key
    is deleted. With reason `key_compromise` it is also revoked in the root's CRL."""
    ca_dir = Path(ca_dir)
    if reason not in ROTATE_REASONS:
        raise TrustError(f"reason {reason!r} is not known", f"use one of: {', '.join(ROTATE_REASONS)}")
    root_key, root = _load_root(ca_dir, passphrase)
    old = x509.load_pem_x509_certificate((ca_dir / CA_CERT).read_bytes())
    new = _new_issuing(ca_dir, root_key, root, passphrase)
    if reason == "key_compromise":
        revoked = _root_crl_entries(ca_dir) | {old.serial_number}
        now = dt.datetime.now(dt.UTC)
        builder = x509.CertificateRevocationListBuilder().issuer_name(root.subject).last_update(now).next_update(now + ISSUING_VALIDITY)
        for serial in sorted(revoked):
            entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now)
            builder = builder.add_revoked_certificate(
                entry.add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False).build()
            )
        write_public(ca_dir / ROOT_CRL, builder.sign(root_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return old, new


def _root_crl_entries(ca_dir: Path) -> set[int]:
    path = ca_dir / ROOT_CRL
    if not path.exists():
        return set()
    return {r.serial_number for r in x509.load_pem_x509_crl(path.read_bytes())}


def revoked_issuers(ca_dir: Path) -> list[str]:
    """Serials (hex) of the issuing CAs the root revoked, its CRL's signature checked."""
    path = Path(ca_dir) / ROOT_CRL
    if not path.exists():
        return []
    crl = x509.load_pem_x509_crl(path.read_bytes())
    root = x509.load_pem_x509_certificate((Path(ca_dir) / ROOT_CERT).read_bytes())
    if crl.issuer != root.subject or not crl.is_signature_valid(root.public_key()):  # type: ignore[arg-type]
        raise TrustError(f"the root's revocation list {path} is not signed by the root", "restore it from the CA's backup")
    return [format(r.serial_number, "x") for r in crl]


def compromised_issuers(ca_dir: Path, issued_pems: list[str]) -> list[dict[str, object]]:
    """What nodes need to refuse certificates made with a stolen issuing key: each issuing CA
    the root revoked (serial, reason, time, its certificate) and, of `issued_pems` (what the
    CA's registry holds), the serials it signed, which stay honoured until their nodes renew."""
    revoked = set(revoked_issuers(ca_dir))
    if not revoked:
        return []
    crl = x509.load_pem_x509_crl((Path(ca_dir) / ROOT_CRL).read_bytes())
    when = {format(r.serial_number, "x"): r.revocation_date_utc for r in crl}
    issued = [x509.load_pem_x509_certificate(pem.encode()) for pem in issued_pems]
    out: list[dict[str, object]] = []
    for issuer in issuers(ca_dir):
        serial = format(issuer.serial_number, "x")
        if serial not in revoked:
            continue
        signed = [format(c.serial_number, "x") for c in issued if provenance.signed_by(c, issuer)]
        moment = when[serial].isoformat(timespec="seconds")
        out.append(
            {
                "serial": serial,
                "reason": "key_compromise",
                "revoked_at": moment,
                "invalid_since": moment,
                "certificate": _pem(issuer).decode(),
                "honoured": signed,
            }
        )
    return out


def anchor_pem(ca_dir: Path) -> bytes:
    """What nodes trust: the root certificate, or a single-level CA's own certificate."""
    ca_dir = Path(ca_dir)
    return (ca_dir / (ROOT_CERT if is_two_level(ca_dir) else CA_CERT)).read_bytes()


def issuers(ca_dir: Path) -> list[x509.Certificate]:
    """Every issuing certificate this CA used (the current one first); empty for a single-level CA."""
    ca_dir = Path(ca_dir)
    if not is_two_level(ca_dir):
        return []
    current = x509.load_pem_x509_certificate((ca_dir / CA_CERT).read_bytes())
    others = [x509.load_pem_x509_certificate(p.read_bytes()) for p in sorted((ca_dir / ISSUERS).glob("*.crt"))]
    return [current, *(c for c in others if c != current)]


def chain_for(ca_dir: Path, leaf_pem: bytes) -> bytes:
    """The issuing certificate to present after `leaf_pem` (empty for a single-level CA)."""
    leaf = x509.load_pem_x509_certificate(leaf_pem)
    anchor = x509.load_pem_x509_certificate(anchor_pem(ca_dir))
    for issuer in issuers(ca_dir):
        if provenance.issued_by(leaf, [issuer], anchor):
            return _pem(issuer)
    return b""
