"""Hybrid logical clock (Kulkarni et al.) packed into one 64-bit integer.

A version is `milliseconds << 16 | counter`: it orders like wall time when clocks
agree, stays strictly increasing on one node whatever the wall clock does, and is
always greater than any version the node has seen. Versions decide which write
of a record wins (single writer per record, DESIGN §3) and order feedback events.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

LOGICAL_BITS = 16
MAX_VERSION = (1 << 64) - 1
# A peer's clock may run ahead; versions further ahead than this are refused
# rather than dragging this node's clock into the future.
MAX_SKEW_MS = 24 * 3600 * 1000


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def physical_ms(version: int) -> int:
    """Milliseconds since the epoch carried by a version."""
    return version >> LOGICAL_BITS


def too_far_ahead(version: int, now_ms: int | None = None) -> bool:
    """Whether a version claims a time further ahead of ours than MAX_SKEW_MS."""
    return physical_ms(version) > (wall_ms() if now_ms is None else now_ms) + MAX_SKEW_MS


class HybridClock:
    """Thread-safe hybrid logical clock.

    `now()` returns a version greater than every version this clock returned or
    observed. `observe(v)` folds in a version seen from elsewhere. Persist nothing:
    a node seeds the clock from the highest version in its store at start-up, unless
    that version is further ahead of the wall clock than MAX_SKEW_MS.
    """

    def __init__(self, last: int = 0, wall: Callable[[], int] = wall_ms) -> None:
        # A seed from a clock that ran ahead (a node started with its clock days off) is not
        # followed: versions would stay in the future after the clock is fixed, and every
        # parent would refuse them. The store replaces such versions on the next write.
        self._last = 0 if too_far_ahead(last, wall()) else last
        self._wall = wall
        self._lock = threading.Lock()

    def now(self) -> int:
        with self._lock:
            candidate = self._wall() << LOGICAL_BITS
            self._last = candidate if candidate > self._last else self._last + 1
            return self._last

    def reserve(self, count: int) -> int:
        """The first of `count` consecutive versions, each as `now()` would have returned it in turn
        (one lock and one wall-clock read for a whole batch of a file's records)."""
        with self._lock:
            candidate = self._wall() << LOGICAL_BITS
            first = candidate if candidate > self._last else self._last + 1
            self._last = first + max(count, 1) - 1
            return first

    def observe(self, version: int) -> None:
        with self._lock:
            if version > self._last and not too_far_ahead(version, self._wall()):
                self._last = version

    @property
    def last(self) -> int:
        return self._last
