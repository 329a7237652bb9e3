"""Revoked certificates, as this node knows them.

The province's CA publishes a signed X.509 CRL; the provincial node turns it into a
`revocation_list` definition record, which flows down to every node like any
definition. Every node that accepts children refuses, at the handshake and
within a second on a live stream, a peer whose certificate serial is listed.
"""

from __future__ import annotations

import json
import threading

from . import records
from .store import Store

DEFINITION_TYPE = "revocation_list"


class Revocations:
    """The set of revoked certificate serials (lowercase hex, no leading zeros).

    `refresh()` re-reads the revocation lists held in the store (cheap when nothing
    changed); `revoked(serial)` is a set lookup, safe from any thread.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._serials: frozenset[str] = frozenset()
        self._seen: tuple[int, int] = (-1, -1)
        self._lock = threading.Lock()

    def refresh(self) -> bool:
        """Reload if a revocation list changed; returns whether anything changed."""
        marker = self._store.definition_marker()
        with self._lock:
            if marker == self._seen:
                return False
        serials: set[str] = set()
        for env in self._store.iter_records(records.DEFINITION):
            body = records.body_of(env)
            if body.type == DEFINITION_TYPE:
                serials.update(normalize(s) for s in json.loads(body.json or "{}").get("serials", []))
        with self._lock:
            changed = serials != self._serials
            self._serials, self._seen = frozenset(serials), marker
        return changed

    @property
    def serials(self) -> frozenset[str]:
        """The revoked serials as this node knows them now (normalized hex)."""
        return self._serials

    def revoked(self, serial: str) -> bool:
        return normalize(serial) in self._serials

    def __len__(self) -> int:
        return len(self._serials)


def normalize(serial: str) -> str:
    return serial.lower().replace(":", "").removeprefix("0x").lstrip("0") or "0"
