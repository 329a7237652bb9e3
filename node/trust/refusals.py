"""Refused TLS handshakes, counted per source and reason within a window, so that a flood of
probes from the internet makes a bounded number of audit entries.

Anyone who can reach a node's port can make it refuse a handshake (a plaintext probe, a port
scanner, a client without a certificate). Writing each refusal to the audit log would let them
fill the disk and hold the event loop on fsyncs. Instead the TLS front reports every refusal to
`RefusalTally.add`, which only counts (no I/O, safe on the event loop). Every `window` seconds,
and when the node stops, `take` hands back one aggregate per (source address, reason) seen —
count, first and last time — and starts a new window; the node appends those to the audit log
from a worker thread (`write`).

Bounds: at most `max_keys` aggregates per window. Refusals beyond that (a flood from many
addresses at once) are folded into one aggregate whose source is `*`, which says how many
distinct sources it holds. So the audit log grows by at most `max_keys + 1` entries per window,
whatever the flood.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

WINDOW = 60.0  # seconds between audit entries for one source and reason
MAX_KEYS = 100  # aggregates per window before the rest are folded into one
OTHERS = "*"  # the source of the folded aggregate


@dataclass
class _Count:
    count: int
    first: float
    last: float
    sources: set[str] = field(default_factory=set)


def source_of(address: str) -> str:
    """The host of 'host:port' (a probe's port changes with every connection; its host does not)."""
    host, sep, port = address.rpartition(":")
    return host.strip("[]") if sep and port.isdigit() else address


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


class RefusalTally:
    """Counts refused handshakes per (source, reason) for the current window. Event-loop only
    (not thread-safe): `add` and `take` are called from the loop that runs the TLS front;
    `write` the aggregates `take` returns from a worker thread."""

    def __init__(self, window: float = WINDOW, max_keys: int = MAX_KEYS, clock: Callable[[], float] = time.time) -> None:
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        self._counts: dict[tuple[str, str], _Count] = {}
        self.total = 0  # refusals counted since the node started

    def add(self, address: str, reason: str) -> bool:
        """Count one refusal; True when it is the first of its source and reason in this window
        (the caller logs that one; the rest are summed into the window's audit entry)."""
        now = self._clock()
        source = source_of(address)
        self.total += 1
        key = (source, reason)
        if key not in self._counts and len(self._counts) >= self.max_keys:
            key = (OTHERS, "")
        entry = self._counts.get(key)
        if entry is None:
            self._counts[key] = _Count(1, now, now, {source})
            return key[0] != OTHERS
        entry.count += 1
        entry.last = now
        if key[0] == OTHERS:
            entry.sources.add(source)
        return False

    def take(self) -> list[tuple[str, dict[str, Any]]]:
        """The window's aggregates as (subject, details) audit entries, and a new window."""
        counts, self._counts = self._counts, {}
        out = []
        for (source, reason), c in counts.items():
            details: dict[str, Any] = {"stage": "handshake", "count": c.count, "first": _iso(c.first), "last": _iso(c.last)}
            if source == OTHERS:
                details["error"] = f"refused handshakes from more sources than the {self.max_keys} counted one by one"
                details["sources"] = len(c.sources)
            else:
                details["error"] = reason
            out.append((source, details))
        return out


def write(entries: list[tuple[str, dict[str, Any]]], append: Callable[[str, str, dict[str, Any]], Any]) -> None:
    """Append aggregates that `take` returned, as `connection.refused` entries. Call it from a
    worker thread: appends wait for fsync."""
    for subject, details in entries:
        append("connection.refused", subject, details)
