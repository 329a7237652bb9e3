"""Revoked certificates, as this node knows them, and what a revocation does to the past.

The province's CA publishes a signed X.509 CRL; the provincial node turns it into a
`revocation_list` definition record, which flows down to every node like any
definition. Every node that accepts children refuses, at the handshake and
within a second on a live stream, a peer whose certificate serial is listed.

A revocation is not retroactive by itself; it is judged by its reason (`Revoked`):

- a key compromise (`key_compromise`, `ca_compromise`, and a revocation that states no
  reason) invalidates every seal made with the key that no parent witnessed before
  the compromise (its stated time, else the revocation time): whoever holds a stolen
  key can sign with any date, so only a witness's time counts;
- every routine reason (`superseded`, `cessation_of_operation`, `affiliation_changed`,
  `privilege_withdrawn`, free text) ends the key's use at the revocation time: seals
  made before it stay valid, later ones are refused.

The witness is the node that received the seal from its child: it stores, with the
seal, when it stored it (`store.witnessed_at`).

An issuing CA whose key was stolen is revoked by the offline root (`ca rotate-issuing
--reason key_compromise`, the root's CRL). The CA's home publishes it in the same list,
with the issuing certificate and the serials of every certificate the CA itself issued
under it (`honoured`, from its registry): those keep working until their nodes renew onto
the new issuing CA; any other certificate that key signed was made by whoever stole it and
is refused at the handshake and in seals like a compromised certificate (`for_certificate`).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from . import records

DEFINITION_TYPE = "revocation_list"
COMPROMISE_REASONS = frozenset({"", "unspecified", "key_compromise", "ca_compromise", "aa_compromise"})


def reason_code(reason: str) -> str:
    """'Key Compromise', 'keyCompromise', 'key_compromise' -> 'key_compromise'."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", reason.strip()).lower().replace(" ", "_").replace("-", "_")


@dataclass(frozen=True)
class Revoked:
    """One revoked certificate: why, since when, and from when its key is not to be trusted."""

    serial: str
    reason: str
    revoked_at: float  # Unix seconds
    invalid_since: float  # a compromise: the stated compromise time, else revoked_at
    issuer: str = ""  # set when the certificate is refused because its issuing CA (this serial) was revoked

    @property
    def compromise(self) -> bool:
        return self.reason in COMPROMISE_REASONS

    def refuses(self, signed_at: float, witnessed_at: float | None) -> str:
        """Why a seal made under this certificate at `signed_at` (its own claim), and stored by a
        parent at `witnessed_at` (None: no witness), is not valid; '' when it stays valid."""
        when = _show(self.invalid_since if self.compromise else self.revoked_at)
        why = self.reason or "no reason stated, taken as a key compromise"
        if self.issuer:  # the CA never issued it: no witness makes it genuine
            return (
                f"the seal is signed under certificate {self.serial}, which the province's CA never issued: it was made with"
                f" the key of issuing CA {self.issuer}, revoked by the root ({why}) from {when}"
            )
        if self.compromise:
            if witnessed_at is not None and witnessed_at < self.invalid_since:
                return ""
            seen = "no witness stored it before then" if witnessed_at is None else f"it was first stored here at {_show(witnessed_at)}"
            return f"the seal is signed under certificate {self.serial}, revoked ({why}) from {when}, and {seen}"
        if signed_at < self.revoked_at or (witnessed_at is not None and witnessed_at < self.revoked_at):
            return ""
        return f"the seal is signed under certificate {self.serial} at {_show(signed_at)}, after its revocation ({why}) at {when}"

    def as_dict(self) -> dict[str, str]:
        return {
            "serial": self.serial,
            "reason": self.reason,
            "revoked_at": _iso(self.revoked_at),
            "invalid_since": _iso(self.invalid_since),
        }

    @classmethod
    def from_dict(cls, entry: dict[str, str]) -> Revoked:
        revoked_at = _seconds(entry.get("revoked_at", ""))
        since = _seconds(entry.get("invalid_since", "")) if entry.get("invalid_since") else revoked_at
        return cls(normalize(entry["serial"]), reason_code(entry.get("reason", "")), revoked_at, min(since, revoked_at))


class DefinitionSource(Protocol):
    """What holds the revocation lists (a `store.Store`)."""

    def definition_marker(self) -> tuple[int, int]: ...

    def iter_records(
        self, kind: int | None = None, unit: str | None = None, include_deleted: bool = False
    ) -> Iterator[records.Envelope]: ...


class Revocations:
    """The revoked certificates (serials: lowercase hex, no leading zeros).

    `refresh()` re-reads the revocation lists held in the store (cheap when nothing
    changed); `revoked(serial)` is a set lookup, `entry(serial)` says why and since when;
    both are safe from any thread. A list published before reasons were carried names
    serials only: those are taken as compromised since the beginning (as they were judged then).
    """

    def __init__(self, store: DefinitionSource) -> None:
        self._store = store
        self._entries: dict[str, Revoked] = {}
        self._issuers: list[RevokedIssuer] = []
        self._seen: tuple[int, int] = (-1, -1)
        self._lock = threading.Lock()

    def refresh(self) -> bool:
        """Reload if a revocation list changed; returns whether anything changed."""
        marker = self._store.definition_marker()
        with self._lock:
            if marker == self._seen:
                return False
        entries: dict[str, Revoked] = {}
        issuers: list[RevokedIssuer] = []
        for env in self._store.iter_records(records.DEFINITION):
            body = records.body_of(env)
            if body.type != DEFINITION_TYPE:
                continue
            fields = json.loads(body.json or "{}")
            for serial in fields.get("serials", []):
                entries.setdefault(normalize(serial), Revoked(normalize(serial), "", 0.0, 0.0))
            for item in fields.get("entries", []):
                entry = Revoked.from_dict(item)
                entries[entry.serial] = entry
            issuers.extend(filter(None, map(RevokedIssuer.from_dict, fields.get("issuers", []))))
        with self._lock:
            changed = entries != self._entries or issuers != self._issuers
            self._entries, self._issuers, self._seen = entries, issuers, marker
        return changed

    @property
    def serials(self) -> frozenset[str]:
        """The revoked serials as this node knows them now (normalized hex)."""
        with self._lock:
            return frozenset(self._entries)

    def revoked(self, serial: str) -> bool:
        return normalize(serial) in self._entries

    def entry(self, serial: str) -> Revoked | None:
        return self._entries.get(normalize(serial))

    def for_certificate(self, serial: str, der: bytes) -> Revoked | None:
        """Why the certificate (`der`, serial `serial`) is not to be trusted: its own revocation,
        or a revoked issuing CA's key signed it and the CA never issued it; None if neither."""
        own = self.entry(serial)
        if own is not None or not der:
            return own
        with self._lock:
            issuers = self._issuers
        if not issuers:
            return None
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            return None
        return next((found for issuer in issuers if (found := issuer.refuses(cert)) is not None), None)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class RevokedIssuer:
    """An issuing CA the root revoked as compromised, and the certificates the CA itself issued under it."""

    entry: Revoked
    certificate: str  # PEM (compared, so a changed list is seen)
    honoured: frozenset[str]
    key: ec.EllipticCurvePublicKey = field(compare=False)

    @classmethod
    def from_dict(cls, item: dict[str, object]) -> RevokedIssuer | None:
        try:
            cert = x509.load_pem_x509_certificate(str(item["certificate"]).encode())
        except (KeyError, ValueError):
            return None
        key = cert.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return None
        entry = Revoked.from_dict({k: str(v) for k, v in item.items() if k in ("serial", "reason", "revoked_at", "invalid_since")})
        honoured = frozenset(normalize(str(s)) for s in item.get("honoured", []) or [])  # type: ignore[attr-defined]
        return cls(entry, str(item["certificate"]), honoured, key)

    def refuses(self, cert: x509.Certificate) -> Revoked | None:
        serial = format(cert.serial_number, "x")
        if serial in self.honoured:
            return None
        algorithm = cert.signature_hash_algorithm
        if algorithm is None:
            return None
        try:  # whatever names it carries, the signature says which key made it
            self.key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algorithm))
        except InvalidSignature:
            return None
        e = self.entry
        return Revoked(serial, e.reason or "key_compromise", e.revoked_at, e.invalid_since, issuer=e.serial)


def normalize(serial: str) -> str:
    return serial.lower().replace(":", "").removeprefix("0x").lstrip("0") or "0"


def _seconds(text: str) -> float:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return 0.0
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="seconds")


def _show(seconds: float) -> str:
    return f"{dt.datetime.fromtimestamp(seconds, dt.UTC):%Y-%m-%d %H:%M:%S} UTC"
