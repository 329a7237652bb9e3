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
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

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

    @property
    def compromise(self) -> bool:
        return self.reason in COMPROMISE_REASONS

    def refuses(self, signed_at: float, witnessed_at: float | None) -> str:
        """Why a seal made under this certificate at `signed_at` (its own claim), and stored by a
        parent at `witnessed_at` (None: no witness), is not valid; '' when it stays valid."""
        when = _show(self.invalid_since if self.compromise else self.revoked_at)
        why = self.reason or "no reason stated, taken as a key compromise"
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
        self._seen: tuple[int, int] = (-1, -1)
        self._lock = threading.Lock()

    def refresh(self) -> bool:
        """Reload if a revocation list changed; returns whether anything changed."""
        marker = self._store.definition_marker()
        with self._lock:
            if marker == self._seen:
                return False
        entries: dict[str, Revoked] = {}
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
        with self._lock:
            changed = entries != self._entries
            self._entries, self._seen = entries, marker
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

    def __len__(self) -> int:
        return len(self._entries)


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
