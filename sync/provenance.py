"""Provable provenance: who wrote each record version, and that it is unchanged.

Every node has an Ed25519 *signing key* (`signing.key`, beside its TLS key). The
provincial CA certifies it: the node's CSR carries the public key and a proof that
the node holds the private key (an Ed25519 signature over the CSR's TLS public key);
the CA copies the public key into the node certificate under `OID_SIGNING_KEY`.

Records are *sealed*, not signed one by one (verifying an Ed25519 signature costs
about 0.1 ms; a stream carries tens of thousands of records a second). Each local
write makes one `Seal`: the SHA-256 of every record version it wrote, a sequence
number and the previous seal's hash, the origin's certificate, and one signature.
Each record names its seal (`Envelope.seal`), so one record plus its seal prove
who wrote it and that it was not changed since. A receiving node verifies each
seal's signature once, then each record with one hash and one lookup.

What is signed are exact bytes, never a message rebuilt to be verified (records
format 2, DSSE style): the seal's body carries `payload`, the inner seal exactly as
the origin serialised it once, and an Ed25519 signature over DSSE's PAE of it. A
record's hash is the SHA-256 of its envelope bytes as stored and sent, without the
citizen's personal values (`privacy.sealed_bytes`: they travel beside the body,
committed to in it), so the full record a unit handles and the redacted copy its
parent receives are proven by the same seal. Seals of format 1 (before) signed the
seal re-serialised and hashed feedback re-redacted; they are still verified so.

Definitions are accepted only under a seal whose certificate has the provincial
role. Key rotation: a renewed certificate may carry a new key; old seals carry the
certificate they were made with, so old records stay verifiable.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID
from google.protobuf.message import DecodeError

from . import clock, privacy, records, sharing
from .errors import TrustError
from .privacy import LegacyRedactor, PseudonymKey, hashing_key
from .records import Envelope
from .revocation import Revoked

# A private-use OID (ITU-T X.667 UUID arc): the node's Ed25519 record-signing key.
OID_SIGNING_KEY = x509.ObjectIdentifier("2.25.126430292168813358980719615081733183135")
SIGNING_KEY_FILE = "signing.key"
PROVINCIAL_ROLE = "provincial"
_POP_LABEL = b"lienthong signing key v1\n"
_SEAL_LABEL = b"lienthong seal v1\n"
SEAL_PAYLOAD_TYPE = b"application/vnd.lienthong.seal+protobuf; format=2"
SEAL_FORMAT = 2
# Verified seals kept in memory, counted in record entries (a seal of 10,000 records is
# about 2.5 MB of Python objects): enough for the records in flight, bounded whatever the backlog.
_SEAL_CACHE_ENTRIES = 50_000


# ---------------------------------------------------------------- keys and certificates


def signing_key_path(tls_key_path: Path) -> Path:
    """Where a node keeps its signing key: beside its TLS key."""
    return Path(tls_key_path).with_name(SIGNING_KEY_FILE)


def load_or_make_signing_key(path: Path, write_private: Callable[[Path, bytes], None]) -> ed25519.Ed25519PrivateKey:
    """The signing key at `path`, made there (mode 0600, via `write_private`) if absent."""
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError):
            raise TrustError(
                f"the signing key {path} cannot be read", "move it away to make a new one, then renew the certificate"
            ) from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise TrustError(f"the signing key {path} is not an Ed25519 key", "move it away to make a new one")
        return key
    key = ed25519.Ed25519PrivateKey.generate()
    write_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return key


def _raw_public(key: ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _spki(public_key: object) -> bytes:
    der: bytes = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined]
    return der


def csr_extension(signing_key: ed25519.Ed25519PrivateKey, tls_public_key: object) -> x509.UnrecognizedExtension:
    """The CSR extension: the signing public key and proof that its holder made this request."""
    proof = signing_key.sign(_POP_LABEL + _spki(tls_public_key))
    return x509.UnrecognizedExtension(OID_SIGNING_KEY, _raw_public(signing_key.public_key()) + proof)


def certified_signing_key(csr: x509.CertificateSigningRequest) -> bytes:
    """The signing public key a CSR asks to certify, after checking the proof of possession."""
    try:
        value = csr.extensions.get_extension_for_oid(OID_SIGNING_KEY).value
    except x509.ExtensionNotFound:
        raise TrustError(
            "the request carries no record-signing key", "make the request with this version of lienthong (`init`, `enroll`)"
        ) from None
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
    if len(raw) != 32 + 64:
        raise TrustError("the request's record-signing key is malformed", "make the request again with lienthong")
    public = ed25519.Ed25519PublicKey.from_public_bytes(raw[:32])
    try:
        public.verify(raw[32:], _POP_LABEL + _spki(csr.public_key()))
    except InvalidSignature:
        raise TrustError(
            "the request's record-signing key is not proven by its holder", "make the request again on the node with lienthong"
        ) from None
    return raw[:32]


def certificate_extension(public_raw: bytes) -> x509.UnrecognizedExtension:
    return x509.UnrecognizedExtension(OID_SIGNING_KEY, public_raw)


def signing_public_key(cert: x509.Certificate) -> ed25519.Ed25519PublicKey | None:
    try:
        value = cert.extensions.get_extension_for_oid(OID_SIGNING_KEY).value
    except x509.ExtensionNotFound:
        return None
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
    return ed25519.Ed25519PublicKey.from_public_bytes(raw) if len(raw) == 32 else None


def _attribute(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str:
    values = cert.subject.get_attributes_for_oid(oid)
    return str(values[0].value) if values else ""


# ---------------------------------------------------------------- hashing


def record_hash(raw: bytes, kind: int) -> bytes:
    """What a format-2 seal entry holds for a record version: SHA-256 of its envelope bytes as
    stored, without the detached personal values (so the full and the redacted copy agree)."""
    return hashlib.sha256(privacy.sealed_bytes(raw) if kind == records.FEEDBACK else raw).digest()


def legacy_record_hash(raw: bytes, kind: int, redact: LegacyRedactor) -> bytes:
    """Format 1: SHA-256 of the envelope with feedback re-redacted (`privacy.LegacyRedactor`)."""
    if kind == records.FEEDBACK:
        raw = redact(raw)
    return hashlib.sha256(raw).digest()


def seal_hash(seal_body: bytes) -> bytes:
    return hashlib.sha256(seal_body).digest()


def pae(payload_type: bytes, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what a format-2 seal signature covers."""
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type, len(payload), payload)


def _legacy_to_be_signed(seal: records.Seal) -> bytes:
    unsigned = records.Seal()
    unsigned.CopyFrom(seal)
    unsigned.signature = b""
    return _SEAL_LABEL + bytes(unsigned.SerializeToString(deterministic=True))


def seal_statement(body: records.Seal) -> tuple[records.Seal, bytes, int]:
    """(what the seal states, the bytes its signature covers, its format) of a seal body."""
    if body.payload:
        inner = records.Seal.FromString(body.payload)
        return inner, pae(SEAL_PAYLOAD_TYPE, body.payload), inner.format
    return body, _legacy_to_be_signed(body), 1


# ---------------------------------------------------------------- signing (the origin)


class Signer:
    """Seals this node's writes. Holds the signing key and the certificate that certifies it."""

    def __init__(
        self, node_id: str, key: ed25519.Ed25519PrivateKey, cert_pem: bytes, ca_pem: bytes, pseudonyms: PseudonymKey | None = None
    ) -> None:
        chain = x509.load_pem_x509_certificates(cert_pem)  # the node's certificate, then its issuing CA's (two-level CA)
        cert = chain[0]
        certified = signing_public_key(cert)
        if certified is None or _raw_public(certified) != _raw_public(key.public_key()):
            raise TrustError(
                "this node's certificate does not certify its signing key",
                "renew the certificate (`lienthong enroll` with a new token, or `lienthong init --ca` for a local CA)",
            )
        self.node_id = node_id
        self._key = key
        # Each seal carries the chain (DER certificates one after the other): it verifies up to
        # the root with nothing else, whichever issuing CA signed the node's certificate.
        self.cert_der = b"".join(c.public_bytes(serialization.Encoding.DER) for c in chain)
        self.pseudonyms = pseudonyms  # the province-wide pseudonym secret (None on the province's own node)

    @classmethod
    def load(cls, node_id: str, signing_key: Path, cert: Path, ca: Path) -> Signer:
        try:
            cert_pem, ca_pem = cert.read_bytes(), ca.read_bytes()
            if not signing_key.exists():
                raise FileNotFoundError(2, "missing", str(signing_key))
        except FileNotFoundError as exc:
            raise TrustError(
                f"{exc.filename} is missing: this node cannot sign what it writes", "enroll the node (`lienthong enroll`) or `init --ca`"
            ) from None
        key = load_or_make_signing_key(signing_key, lambda path, data: None)  # exists: read and checked, never made here
        pseudonyms = PseudonymKey.load(signing_key.with_name(privacy.PSEUDONYM_KEY_FILE))
        try:
            return cls(node_id, key, cert_pem, ca_pem, pseudonyms)
        except ValueError:
            raise TrustError(
                f"{cert} or {ca} is not a readable PEM certificate", "enroll the node again, or restore its tls/ folder"
            ) from None

    def seal(
        self, seal_id: bytes, seq: int, prev: bytes, version: int, epoch: str, entries: Iterable[tuple[bytes, int, bytes]]
    ) -> Envelope:
        """The seal record over `entries` ((id, version, hash) of each record version written)."""
        inner = records.Seal(
            origin=self.node_id, seq=seq, prev=prev, version=version, certificate=self.cert_der, epoch=epoch, format=SEAL_FORMAT
        )
        inner.entries.extend(records.SealEntry(id=i, version=v, hash=h) for i, v, h in entries)
        payload = inner.SerializeToString()  # serialised once: these bytes are signed, sent and stored as they are
        body = records.Seal(payload=payload, signature=self._key.sign(pae(SEAL_PAYLOAD_TYPE, payload)))
        return Envelope(
            id=seal_id, kind=records.SEAL, origin=self.node_id, unit=self.node_id, version=version, body=body.SerializeToString()
        )


def new_seal_id() -> bytes:
    return os.urandom(records.ID_BYTES)


# ---------------------------------------------------------------- verifying (every receiver)


@dataclass(frozen=True)
class SealInfo:
    origin: str
    seq: int
    role: str
    serial: str
    entries: dict[tuple[bytes, int], bytes]
    body_hash: bytes  # what was verified: another body under the same id must be verified anew
    prev: bytes = b""
    format: int = SEAL_FORMAT


@dataclass(frozen=True)
class CertInfo:
    node_id: str
    role: str
    serial: str
    key: ed25519.Ed25519PublicKey | None
    not_before: dt.datetime
    not_after: dt.datetime
    problem: str
    der: bytes = b""  # the certificate itself, for a revoked issuing CA's check


Problem = tuple[str, str]


class Verifier:
    """Checks seals and the records they cover, before a node stores anything received.

    `lookup(id)` returns a stored envelope (to find seals that arrived earlier);
    `revocation(serial, der)` says whether and why a certificate is revoked (`Revoked`);
    `witnessed(seal id)` when this node stored a seal its child sent (Unix seconds; a seal
    arriving now is witnessed now). Thread-compatible: one verifier per applying thread.
    """

    def __init__(
        self,
        ca_pem: bytes,
        lookup: Callable[[bytes], bytes | None],
        revocation: Callable[[str, bytes], Revoked | None] | None = None,
        witnessed: Callable[[bytes], float | None] | None = None,
    ) -> None:
        self._ca = x509.load_pem_x509_certificate(ca_pem)
        self.ca_pem = ca_pem  # what a verifying worker process builds its own verifier from (verify_worker.py)
        self._lookup = lookup
        self._revocation = revocation or (lambda serial, der: None)
        self._witnessed = witnessed or (lambda seal_id: None)
        self.legacy_redact = LegacyRedactor(hashing_key(ca_pem))
        self._seals: collections.OrderedDict[bytes, SealInfo] = collections.OrderedDict()
        self._cached = 0  # entries in the cached seals
        self._lock = threading.Lock()  # the verifying thread and the parent link may share a verifier
        self._certs: dict[bytes, CertInfo] = {}

    def check(self, env: Envelope, raw: bytes) -> Problem | None:
        """None if `env` may be stored, else (code, reason)."""
        if env.kind == records.SEAL:
            return self._check_seal(env)
        if not env.seal:
            return "unsigned", f"the record carries no seal: node {env.origin} did not sign it"
        info = self._seal(env.seal)
        if info is None:
            return "unsealed", "the seal that signs this record is not here; its origin must send the seal first"
        if info.origin != env.origin:
            return "bad_signature", f"the record names origin {env.origin} but its seal was made by {info.origin}"
        expected = info.entries.get((env.id, env.version))
        if expected is None:
            return "bad_signature", "this version of the record is not among those its seal signs"
        if info.format == SEAL_FORMAT:
            if expected != record_hash(raw, env.kind):
                return "bad_signature", "the record was altered after its origin signed it"
            if env.personal and (problem := privacy.disclosure_problem(env)):
                return "bad_signature", problem
        elif expected != legacy_record_hash(raw, env.kind, self.legacy_redact):
            return "bad_signature", "the record was altered after its origin signed it"
        if env.kind == records.DEFINITION and info.role != PROVINCIAL_ROLE and records.body_of(env).type != sharing.SHARE_TYPE:
            # A share is the one definition any tier writes, for its own subtree; it travels down only
            # (admission refuses one from a child), so what reaches a node came from a tier above it.
            return "unauthorized_definition", f"definitions are accepted only from the province; node {env.origin} signed this one"
        return None

    def seal_info(self, env: Envelope, witnessed_at: float | None = None) -> tuple[SealInfo | None, Problem | None]:
        """Check a seal record on its own; its facts if it verifies. `witnessed_at`: when this
        node stored it from a child (None: unknown), for a revoked certificate's judgement."""
        try:
            outer = records.Seal.FromString(env.body)
            body, signed_bytes, version = seal_statement(outer)
        except DecodeError:
            return None, ("malformed", "the seal cannot be read")
        if version not in (1, SEAL_FORMAT):
            return None, ("malformed", f"the seal is in format {version}, which this version of lienthong does not know")
        if body.origin != env.origin or body.version != env.version:
            return None, ("bad_signature", "the seal's envelope does not match what it signs")
        cert = self._certificate(body.certificate)
        if cert.problem:
            return None, ("untrusted_key", cert.problem)
        if cert.node_id != body.origin:
            return None, ("bad_signature", f"the seal for origin {body.origin} is signed with node {cert.node_id}'s key")
        signed_at = dt.datetime.fromtimestamp(clock.physical_ms(body.version) / 1000, dt.UTC)
        if not cert.not_before <= signed_at <= cert.not_after:
            return None, ("expired_key", f"the seal was made at {signed_at:%Y-%m-%d %H:%M} UTC, outside its certificate's validity")
        revoked = self._revocation(cert.serial, cert.der)
        if revoked is not None and (why := revoked.refuses(signed_at.timestamp(), witnessed_at)):
            return None, ("revoked_key", why)
        try:
            cert.key.verify(outer.signature, signed_bytes)  # type: ignore[union-attr]
        except InvalidSignature:
            return None, ("bad_signature", "the seal's signature does not verify: it was altered or forged")
        entries = {(e.id, e.version): e.hash for e in body.entries}
        info = SealInfo(body.origin, body.seq, cert.role, cert.serial, entries, seal_hash(env.body), body.prev, version)
        return info, None

    def _check_seal(self, env: Envelope) -> Problem | None:
        with self._lock:
            known = self._seals.get(env.id)
        if known is not None and known.body_hash == seal_hash(env.body):
            return None  # this very seal was verified already
        info, problem = self.seal_info(env, time.time())  # arriving now: witnessed now
        if info is not None:
            self._remember(env.id, info)
        return problem

    def _remember(self, seal_id: bytes, info: SealInfo) -> None:
        with self._lock:
            self._seals[seal_id] = info
            self._cached += len(info.entries)
            while self._cached > _SEAL_CACHE_ENTRIES and len(self._seals) > 1:
                _, dropped = self._seals.popitem(last=False)
                self._cached -= len(dropped.entries)

    def _seal(self, seal_id: bytes) -> SealInfo | None:
        with self._lock:
            info = self._seals.get(seal_id)
            if info is not None:
                self._seals.move_to_end(seal_id)
        if info is not None:
            return info
        raw = self._lookup(seal_id)
        if raw is None:
            return None
        info, _ = self.seal_info(Envelope.FromString(raw), self._witnessed(seal_id))
        if info is not None:
            self._remember(seal_id, info)
        return info

    def _certificate(self, der: bytes) -> CertInfo:
        fingerprint = hashlib.sha256(der).digest()
        cached = self._certs.get(fingerprint)
        if cached is not None:
            return cached
        cert = check_certificate(der, self._ca)
        self._certs[fingerprint] = cert
        return cert


def split_der(blob: bytes) -> list[bytes]:
    """DER certificates written one after the other, apart (each is one ASN.1 SEQUENCE)."""
    out = []
    while blob:
        if len(blob) < 2 or blob[0] != 0x30:
            raise ValueError("not a DER certificate")
        size, head = blob[1], 2
        if size & 0x80:
            count = size & 0x7F
            if not 1 <= count <= 4 or len(blob) < 2 + count:
                raise ValueError("not a DER certificate")
            size, head = int.from_bytes(blob[2 : 2 + count], "big"), 2 + count
        if len(blob) < head + size:
            raise ValueError("a DER certificate is cut short")
        out.append(blob[: head + size])
        blob = blob[head + size :]
    return out


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    if cert.issuer != issuer.subject or not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    try:
        key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))  # type: ignore[arg-type]
    except InvalidSignature:
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def issued_by(cert: x509.Certificate, intermediates: Iterable[x509.Certificate], anchor: x509.Certificate) -> bool:
    """Whether `anchor` issued `cert`, directly (a single-level CA) or through one of
    `intermediates` that it certified as a CA (a two-level CA's issuing CA)."""
    if signed_by(cert, anchor):
        return True
    return any(_is_ca(i) and signed_by(i, anchor) and signed_by(cert, i) for i in intermediates)


def check_certificate(der: bytes, ca: x509.Certificate) -> CertInfo:
    """A node certificate's facts, and `problem` set when this CA did not issue it or it certifies no signing key.

    `der` is the certificate, optionally followed by the issuing CA's (DER, one after the other)."""
    epoch = dt.datetime.fromtimestamp(0, dt.UTC)
    try:
        chain = [x509.load_der_x509_certificate(part) for part in split_der(der)]
        cert = chain[0]
    except (ValueError, IndexError):
        return CertInfo("", "", "", None, epoch, epoch, "the seal's certificate cannot be read")
    serial = format(cert.serial_number, "x")
    node_id, role = _attribute(cert, NameOID.COMMON_NAME), _attribute(cert, NameOID.ORGANIZATIONAL_UNIT_NAME)
    key = signing_public_key(cert)
    problem = "" if issued_by(cert, chain[1:], ca) else "the seal's certificate was not issued by this province's CA"
    if key is None and not problem:
        problem = "the seal's certificate certifies no signing key"
    der_leaf = cert.public_bytes(serialization.Encoding.DER)
    return CertInfo(node_id, role, serial, key, cert.not_valid_before_utc, cert.not_valid_after_utc, problem, der_leaf)
