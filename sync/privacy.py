"""Personal data in citizen feedback (Decree 13/2023/NĐ-CP on personal data protection).

By default the citizen's name, phone and e-mail do not leave a unit upward: before a
feedback record is sent to the parent they are replaced by a keyed hash, so the
province can still see that two items came from the same person without learning
who. They do go down, in full, to the unit that must handle the case (records sent
downward are not touched). A node may be configured to send them upward
(`sharing.personal_data_upward = true`), for a unit whose policy allows it.

The key is derived from the province's CA certificate, which every node of the
province holds: the same phone number hashes the same at every commune, and the
hash means nothing outside the province.
"""

from __future__ import annotations

import hashlib
import hmac

from . import records
from .records import Envelope

PREFIX = "hmac-sha256:"
_LABEL = b"lienthong personal data v1"


def hashing_key(ca_certificate_pem: bytes) -> bytes:
    return hashlib.sha256(_LABEL + ca_certificate_pem).digest()


def pseudonym(key: bytes, value: str) -> str:
    """The keyed hash that stands for a personal value (normalised: trimmed, lower case)."""
    digest = hmac.new(key, value.strip().lower().encode(), hashlib.sha256).hexdigest()
    return PREFIX + digest[:32]


class Redactor:
    """Replaces personal data in feedback envelopes sent upward."""

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
        for field in ("name", "phone", "email"):
            value = getattr(citizen, field)
            if value and not value.startswith(PREFIX):
                setattr(citizen, field, pseudonym(self.key, value))
        env.body = body.SerializeToString(deterministic=True)
        return env.SerializeToString()
