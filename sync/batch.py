"""What travels on a link: a batch of envelopes covering a stretch of a change log
or a downward queue, and the refusals that come back for it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Refusal:
    """A record refused by the receiving node, with a machine code and a reason."""

    id: bytes
    version: int
    code: str
    reason: str


@dataclass(frozen=True)
class InBatch:
    """A batch received from a child: it covers the child's log (after, last]."""

    after: int
    last: int
    fingerprint: bytes
    raws: Sequence[bytes]


@dataclass(frozen=True)
class OutBatch:
    """A batch to send: it covers log sequences (after, last] and carries the
    envelopes among them that the receiver needs."""

    after: int
    last: int
    envelopes: list[bytes]
    fingerprint: bytes
    # The envelopes among them that are citizen feedback (personal data may need redacting).
    feedback: list[bytes] = dataclasses.field(default_factory=list)
