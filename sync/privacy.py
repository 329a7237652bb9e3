"""Personal data in citizen feedback (Decree 13/2023/NĐ-CP on personal data protection).

By default the citizen's name, phone and e-mail do not leave a unit upward: the
province sees a keyed hash (a *pseudonym*) instead, so it can still see that two
items came from the same person without learning who. They do go down, in full,
to the unit that must handle the case (records sent downward are not touched). A
node may be configured to send them upward (`sharing.personal_data_upward = true`),
for a unit whose policy allows it.

Records format 2 (what this version writes). When a node seals a feedback record
(`commit`), each personal value moves out of the body into the envelope's
`personal` disclosures (value + random salt), and the body keeps, per field, a
salted SHA-256 commitment and the pseudonym. The seal hashes the envelope bytes as
stored, without `personal` (`sealed_bytes`); redaction on the way up drops
`personal` from the bytes (`Redactor`), so the redacted copy is byte for byte what
the seal hashed, and the full copy proves its values against the commitments.

The pseudonym key is the province-wide *pseudonym secret* (`PseudonymKey`): made
by `lienthong ca init` beside the CA, handed to each unit at enrollment, kept by
the unit mode 0600 (`tls/pseudonym.key`), and never held by the province's own
node, which receives the pseudonyms. Each pseudonym names its key id, so
pseudonyms compare within one key generation. See docs/security.md.

Records format 1 (written before): the values were in the body, and redaction
replaced them with a hash keyed from the province's CA certificate (`hashing_key`,
`LegacyRedactor`). That key is public, so those pseudonyms could be reversed by
guessing; they are still produced for format-1 records (their seals hash that form).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path

from . import records
from .errors import TrustError
from .records import Envelope

PREFIX = "hmac-sha256:"
FIELDS = ("name", "phone", "email")
PSEUDONYM_KEY_FILE = "pseudonym.key"
_LABEL = b"lienthong personal data v1"
_COMMIT_LABEL = b"lienthong personal v2\n"
_KEY_ID_LABEL = b"lienthong pseudonym key id\n"
_PERSONAL_FIELD = 25  # Envelope.personal
SALT_BYTES = 16


# ---------------------------------------------------------------- the pseudonym secret


@dataclass(frozen=True)
class PseudonymKey:
    """The province-wide secret that keys citizens' pseudonyms, and its public id."""

    key_id: str
    secret: bytes

    @classmethod
    def generate(cls) -> PseudonymKey:
        return cls.of(os.urandom(32))

    @classmethod
    def of(cls, secret: bytes) -> PseudonymKey:
        return cls(hashlib.sha256(_KEY_ID_LABEL + secret).hexdigest()[:8], secret)

    def to_file(self) -> bytes:
        return json.dumps({"key_id": self.key_id, "secret": self.secret.hex()}).encode() + b"\n"

    @classmethod
    def load(cls, path: Path) -> PseudonymKey | None:
        """The key in `path`, or None if there is no such file."""
        try:
            data = json.loads(path.read_bytes())
            key = cls.of(bytes.fromhex(data["secret"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            raise TrustError(f"the pseudonym key {path} cannot be read", "restore it from the CA's copy (CA_DIR/pseudonym.key)") from None
        if key.key_id != data.get("key_id"):
            raise TrustError(f"the pseudonym key {path} is damaged (its key id does not match)", "restore it from the CA's copy")
        return key


def hashing_key(ca_certificate_pem: bytes) -> bytes:
    """Format 1's key, derived from the public CA certificate (kept to redact format-1 records)."""
    return hashlib.sha256(_LABEL + ca_certificate_pem).digest()


def pseudonym(key: bytes, value: str, key_id: str = "") -> str:
    """The keyed hash that stands for a personal value (normalised: trimmed, lower case);
    `hmac-sha256:KEY_ID:…` under a pseudonym secret, `hmac-sha256:…` in format 1."""
    digest = hmac.new(key, value.strip().lower().encode(), hashlib.sha256).hexdigest()
    return PREFIX + (f"{key_id}:" if key_id else "") + digest[:32]


def commitment(field: str, salt: bytes, value: str) -> bytes:
    return hashlib.sha256(_COMMIT_LABEL + field.encode() + b"\n" + salt + value.encode()).digest()


# ---------------------------------------------------------------- format 2: commit, strip, check


def commit(env: Envelope, key: PseudonymKey | None) -> None:
    """Move a feedback envelope's personal values into its disclosures (in place), leaving
    commitments and (with `key`) pseudonyms in the body. Called once, by the writer."""
    if env.kind != records.FEEDBACK:
        return
    body = records.Feedback.FromString(env.body)
    person = body.citizen
    if not any(getattr(person, f) for f in FIELDS):
        return
    for field in FIELDS:
        value = getattr(person, field)
        if not value:
            continue
        salt = os.urandom(SALT_BYTES)
        setattr(body.citizen_commitment, field, commitment(field, salt, value))
        setattr(person, field, pseudonym(key.secret, value, key.key_id) if key else "")
        env.personal.add(field=field, value=value, salt=salt)
    env.body = body.SerializeToString(deterministic=True)


def _varint(raw: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = raw[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def sealed_bytes(raw: bytes) -> bytes:
    """The envelope bytes a format-2 seal hashes: `raw` exactly, without its top-level
    `personal` fields (cut out of the wire bytes, never re-serialised)."""
    if b"\xca\x01" not in raw:  # the tag of field 25, length-delimited: the common case is one scan in C
        return raw
    out = bytearray()
    i, end = 0, len(raw)
    try:
        while i < end:
            start = i
            key, i = _varint(raw, i)
            wire_type = key & 7
            if wire_type == 0:
                _, i = _varint(raw, i)
            elif wire_type == 1:
                i += 8
            elif wire_type == 2:
                length, i = _varint(raw, i)
                i += length
            elif wire_type == 5:
                i += 4
            else:
                return raw  # not an envelope this version writes: hashed as is (and so refused)
            if key >> 3 != _PERSONAL_FIELD:
                out += raw[start:i]
    except IndexError:
        return raw
    return bytes(out) if i == end else raw


def disclosure_problem(env: Envelope) -> str:
    """Why the disclosed personal values do not match the signed commitments ('' when they do)."""
    if not env.personal:
        return ""
    if env.kind != records.FEEDBACK:
        return "only citizen feedback may carry personal data beside its body"
    committed = records.Feedback.FromString(env.body).citizen_commitment
    seen = set()
    for item in env.personal:
        if item.field not in FIELDS or item.field in seen:
            return f"the record discloses an unexpected personal field {item.field!r}"
        seen.add(item.field)
        if not hmac.compare_digest(getattr(committed, item.field), commitment(item.field, item.salt, item.value)):
            return f"the citizen's {item.field} was altered after its origin signed it"
    return ""


# ---------------------------------------------------------------- redaction on the way up


class LegacyRedactor:
    """Format 1: replaces personal values in the body with hashes keyed by `hashing_key`."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def __call__(self, raw: bytes) -> bytes:
        env = Envelope.FromString(raw)
        if env.kind != records.FEEDBACK:
            return raw
        body = records.body_of(env)
        citizen = body.citizen
        if not (citizen.name or citizen.phone or citizen.email):
            return raw
        for field in FIELDS:
            value = getattr(citizen, field)
            if value and not value.startswith(PREFIX):
                setattr(citizen, field, pseudonym(self.key, value))
        env.body = body.SerializeToString(deterministic=True)
        return env.SerializeToString()


class Redactor:
    """What leaves a unit upward: format-2 feedback without its disclosures (bytes cut, the
    seal's hash unchanged); format-1 feedback redacted the old way (`legacy_key`)."""

    def __init__(self, legacy_key: bytes) -> None:
        self.legacy = LegacyRedactor(legacy_key)

    def __call__(self, raw: bytes) -> bytes:
        stripped = sealed_bytes(raw)
        if stripped is not raw:
            return stripped
        env = Envelope.FromString(raw)
        if env.kind != records.FEEDBACK or records.Feedback.FromString(env.body).HasField("citizen_commitment"):
            return raw
        return self.legacy(raw)
