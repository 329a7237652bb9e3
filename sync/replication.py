"""The replication engine (DESIGN §4), independent of the transport.

A child runs an `Uplink` (uplink.py): it opens one stream to its parent and, on it,
sends batches of its change log and applies the parent's downward queue. A parent runs
`ChildSession.serve` (child_session.py) for each child stream. This module holds what
both ends share: the protocol's constants, the tuning, the change signal, and the
`WindowedSender`. Both sides send through a
`WindowedSender`: at most `window` unacknowledged batches in flight, read from
SQLite only as the window opens, so memory does not grow with the backlog.

Exactly-once effect from at-least-once delivery:

- The parent applies a batch and stores the child's checkpoint in one SQLite
  transaction, then acknowledges. On reconnect the handshake resumes from that
  checkpoint; anything sent twice is a version-guarded no-op.
- The child checks the parent's checkpoint against its own log (a fingerprint of
  the entry at that sequence). If they differ the child was restored from an
  older copy: it mints a new epoch and everything is sent again.
- The same holds downward, with the child's cursor stored with the data.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from .batch import OutBatch
from .clock import wall_ms
from .errors import ProtocolError
from .wire import replication_pb2 as wire

# 2: records format 2 (seals over exact payload bytes, detached personal data; issue #10). A
# node of another protocol is refused at the handshake, so no record of a format the other
# end cannot verify is ever sent, refused or quarantined: upgrade every node of a province.
PROTOCOL = 2
# Rows applied in one transaction at most (group commit across consecutive batches).
GROUP_ROWS = 20_000
# Batches received from all children and not yet written, at most (memory bound at the parent).
ADMITTED = 24
# How often a live child session re-checks its certificate against the revocation list.
REVOCATION_CHECK = 0.5
# Certificate renewal: how often a node checks whether its certificate is due, how
# long it waits for the answer, and how soon it retries after a refusal.
RENEW_CHECK = 3600.0
RENEW_TIMEOUT = 60.0
RENEW_RETRY = 600.0
# How often a child sends again what its parent refused for a correctable reason (and sooner
# when definitions change: checked every RETRY_CHECK seconds).
RETRY_REFUSED = 1800.0
RETRY_CHECK = 5.0

# A peer whose clock differs from ours by more than this is shown in `status` and logged.
CLOCK_WARN_MS = 60_000

log = structlog.get_logger("lienthong.sync")


def clock_offset(peer_wall_ms: int) -> int | None:
    """The peer's clock minus ours in ms, as measured at a handshake (None if the peer does not say).
    The network delay adds at most a round trip, far below what matters (minutes, days)."""
    return peer_wall_ms - wall_ms() if peer_wall_ms else None


class Renewal(Protocol):
    """The node's own certificate, renewed over its replication stream (see node/trust/renewal.py)."""

    def due(self) -> bool:
        """Whether the certificate should be renewed now (most of its life is over)."""
        ...

    def request(self) -> Any:
        """A `wire.RenewRequest` for new keys, proven by the current certificate and signing key."""
        ...

    def install(self, certificate: bytes, pseudonym_secret: bytes = b"") -> None:
        """Put the new keys and `certificate` in place and start signing with the new key (and
        keying pseudonyms with `pseudonym_secret`, when the CA sent its current one)."""
        ...


Issuer = Callable[[str, Any], Awaitable[Any]]  # (sending child, RenewRequest) -> RenewReply


@dataclass(frozen=True)
class Tuning:
    batch_size: int = 4000
    window: int = 8
    poll_interval: float = 0.2
    backoff_initial: float = 0.5
    backoff_max: float = 30.0


class Changes:
    """In-process 'the store changed' signal; senders also poll for writes made
    by other processes (the CLI's `ingest`)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.generation = 0  # how many times notified: what was read before may be stale

    def notify(self) -> None:
        self.generation += 1
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that
        # arrives as the event is set, and a cancelled sender then polls on forever.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._event.wait()


class QueueHead:
    """The last sequence of a queue shared by many senders (the parent's downward queue, one
    sequence over all children), read at most once per store change and poll interval for
    all of them. A sender whose fetch came back empty skips the next one while the head has
    not moved: with 1,000 children, every group commit woke 1,000 senders that each queried
    the store (a thread hop and a query per child per commit, and 5,000 a second idle)."""

    def __init__(self, read: Callable[[], int], changes: Changes, max_age: float) -> None:
        self._read = read
        self._changes = changes
        self._max_age = max_age
        self._value = 0
        self._read_at = -1.0
        self._generation = -1
        self._lock = asyncio.Lock()

    async def current(self) -> int:
        async with self._lock:
            now = asyncio.get_running_loop().time()
            if self._generation != self._changes.generation or now - self._read_at >= self._max_age:
                generation = self._changes.generation  # taken before the read: a later change reads again
                self._value = await asyncio.to_thread(self._read)
                self._read_at, self._generation = now, generation
            return self._value

    @property
    def current_generation(self) -> int:
        """The store change the head was last read after."""
        return self._generation


class WindowedSender:
    """Sends batches fetched from the store with at most `window` unacknowledged."""

    def __init__(
        self,
        fetch: Callable[[int, int], OutBatch | None],
        send: Callable[[OutBatch], Awaitable[None]],
        cursor: int,
        tuning: Tuning,
        changes: Changes,
        head: QueueHead | None = None,
    ) -> None:
        self._fetch = fetch
        # Sequences only grow (rows are never deleted): nothing new for us while the head is where
        # it was when our fetch came back empty.
        self._head = head
        self._empty_at: int | None = None
        self._send = send
        self.cursor = cursor
        self._tuning = tuning
        self._changes = changes
        self.inflight: deque[tuple[int, int]] = deque()  # (last seq, records)
        self.sent_records = 0
        self._room = asyncio.Event()
        self._room.set()

    async def run(self) -> None:
        while True:
            if len(self.inflight) >= self._tuning.window:
                self._room.clear()
                await self._room.wait()
                continue
            head = await self._head.current() if self._head is not None else None
            if head is not None and head == self._empty_at:
                await self._changes.wait(self._tuning.poll_interval)
                continue
            batch = await asyncio.to_thread(self._fetch, self.cursor, self._tuning.batch_size)
            if batch is None:
                self._empty_at = head
                await self._changes.wait(self._tuning.poll_interval)
                continue
            self.inflight.append((batch.last, len(batch.envelopes)))
            self.cursor = batch.last
            await self._send(batch)
            self.sent_records += len(batch.envelopes)

    def acknowledge(self, last: int) -> tuple[int, int]:
        """Drop in-flight batches up to `last`; returns (batches, records) acknowledged."""
        if not self.inflight or self.inflight[0][0] > last:
            raise ProtocolError(f"acknowledgement for {last} matches no batch in flight", "the link reconnects by itself")
        batches = records = 0
        while self.inflight and self.inflight[0][0] <= last:
            records += self.inflight.popleft()[1]
            batches += 1
        self._room.set()
        return batches, records


def batch_message(batch: OutBatch) -> wire.Batch:
    return wire.Batch(after=batch.after, last=batch.last, records=batch.envelopes, last_fingerprint=batch.fingerprint)


async def first_done(tasks: list[asyncio.Task[None]]) -> None:
    """Wait until one task ends, cancel the rest, and re-raise the first error."""
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
