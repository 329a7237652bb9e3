"""Guessing limits for the enrollment service, per peer IP address.

Each refusal costs the caller a fixed delay (`RateLimit.delay`); after
`RateLimit.failures` refusals from one IP address within `window` seconds, that
address is refused for `block` seconds, even with a right token. The counts are
kept in memory (a restart forgets them), for at most `Guard.MAX_PEERS` addresses.
Thread-safe: the service counts from worker threads.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RateLimit:
    """Guessing limits per peer IP address: after `failures` refusals within `window`
    seconds, refuse that address for `block` seconds; every refusal waits `delay` first."""

    failures: int = 5
    window: float = 60.0
    block: float = 60.0
    delay: float = 0.5


@dataclass
class _Peer:
    failures: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0
    block_audited: bool = False


class Guard:
    """Failure counts per IP address, in memory (a restart forgets them)."""

    MAX_PEERS = 10_000

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._peers: dict[str, _Peer] = {}
        self._lock = threading.Lock()

    def blocked(self, ip: str) -> tuple[bool, bool]:
        """(blocked now, first refusal of this block: audit it)."""
        with self._lock:
            peer = self._peers.get(ip)
            if peer is None or peer.blocked_until <= self._clock():
                return False, False
            first = not peer.block_audited
            peer.block_audited = True
            return True, first

    def failed(self, ip: str) -> bool:
        """Count a refusal; True if it starts a block."""
        with self._lock:
            now = self._clock()
            if len(self._peers) >= self.MAX_PEERS and ip not in self._peers:
                self._prune(now)
            peer = self._peers.setdefault(ip, _Peer())
            peer.failures.append(now)
            while peer.failures and peer.failures[0] <= now - self.limit.window:
                peer.failures.popleft()
            if len(peer.failures) >= self.limit.failures:
                peer.failures.clear()
                peer.blocked_until = now + self.limit.block
                peer.block_audited = False
                return True
            return False

    def _prune(self, now: float) -> None:
        for ip in [
            ip for ip, p in self._peers.items() if p.blocked_until <= now and (not p.failures or p.failures[-1] <= now - self.limit.window)
        ]:
            del self._peers[ip]
        while len(self._peers) >= self.MAX_PEERS:  # still full: forget the oldest
            del self._peers[next(iter(self._peers))]
