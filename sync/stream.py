"""The seam between the replication engine and whatever carries its messages.

The engine (replication.py) sees a transport as three things only:

- a `Stream`: one bidirectional, ordered message stream between a child and its parent;
- a `Connect`: how a child opens its stream (an async context manager; leaving it ends the stream);
- a `Handler`: what a parent runs for each child stream, told who the child is (`Peer`).

Two transports implement it: transport.py (mTLS gRPC, the real one) and
memory_transport.py (an in-process pair for tests). tests/test_replication_contract.py
runs the same replication scenarios over both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import ReplicationError


class Stream(Protocol):
    """One bidirectional replication stream.

    Messages are the protobuf messages of `lienthong.v1` (`wire.Up` from child to parent,
    `wire.Down` from parent to child); the receiver gets its own copy.

    - Ordering: messages arrive in the order they were sent, each exactly once, or the stream
      fails: nothing is dropped, reordered or repeated silently within one stream. Nothing is
      ever carried over from one stream to the next (a resend after a reconnect is the engine's
      business, made harmless by version-guarded applies).
    - Backpressure: `send` returns once the message is handed to the transport, and waits while
      the peer is not reading (flow control); it never buffers without bound.
    - Concurrency: `send` may be called from several tasks at once (writes are serialised);
      `recv` is called by one task at a time.
    - End: `recv` returns None once the peer ended the stream cleanly, after every message it
      sent before: the parent's handler returned, or the child left its `Connect` context. Once
      the peer ended, `send` raises `ReplicationError`. A parent's handler that goes on after its
      child left may be cancelled (`asyncio.CancelledError` inside it).
    - Errors: both raise `ReplicationError` (or a subclass) when the link fails or the stream is
      over: `HandshakeRefused` when the peer refused this node (the parent's handler raised
      `HandshakeRefused`/`TrustError`), `ProtocolError` when the peer dropped the stream for a
      protocol violation, plain `ReplicationError` for a dropped link. Never a transport's own
      exception type.
    """

    async def send(self, message: Any) -> None:
        """Send one message; see the class docstring for ordering, backpressure and errors."""
        ...

    async def recv(self) -> Any | None:
        """The next message, or None when the peer ended the stream cleanly."""
        ...


@dataclass(frozen=True)
class Peer:
    """Who is at the other end, from its verified certificate (never from what it says)."""

    node_id: str
    serial: str  # certificate serial, lowercase hex
    certificate: bytes = b""  # the certificate (DER), for a revoked issuing CA's check


# The child side: opening the stream may already fail with `ReplicationError` (unreachable,
# refused handshake); leaving the context ends the stream.
Connect = Callable[[], contextlib.AbstractAsyncContextManager[Stream]]

# The parent side: (peer from the certificate, peer's address, stream). Returning ends the
# stream cleanly; raising a `LienthongError` ends it with that error, which the child's
# `Stream` raises translated (`HandshakeRefused` stays `HandshakeRefused`, and so on).
Handler = Callable[[Peer, str, Stream], Awaitable[None]]

__all__ = ["Connect", "Handler", "Peer", "Stream"]


def parent_could_not(details: str) -> ReplicationError:
    """What a child is told when its parent met a problem of its own (its disk, its store) while
    taking what the child sent: the same words over every transport."""
    return ReplicationError(
        f"the parent could not take what this node sent: {details}",
        "the parent's operator must fix that; this node sends it again by itself",
    )
