"""An in-memory transport for the replication engine: the seam of stream.py, without sockets.

    parent = MemoryTransport(sessions.serve)
    uplink = Uplink(store, lambda: parent.connect("86-28894"), tuning, changes, "memory")
    ...
    parent.cut()  # drop every open stream, both ways, as a network fault would

It keeps the `Stream` contract: FIFO per direction; at most `buffer` messages waiting per
direction (a peer that does not read holds the sender back); each message copied through its
wire bytes; a handler's error raised at the child as the gRPC transport raises it; leaving
`connect` ends the handler's side as gRPC does (its `recv` returns None, its sends fail). Like httpx's `MockTransport`
it ships in the package, so tests (and anyone embedding the engine) can run it without TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from .errors import HandshakeRefused, LienthongError, ProtocolError, ReplicationError, TrustError
from .stream import Handler, Peer, parent_could_not

BUFFER = 16  # messages waiting per direction before `send` waits (gRPC's flow-control window)
LEAVE_GRACE = 5.0  # seconds a handler has to return once its child left, before it is cancelled


class _Channel:
    """One direction of a stream: a bounded FIFO that can be ended (cleanly) or failed."""

    def __init__(self, bound: int) -> None:
        self.items: deque[Any] = deque()
        self.bound = bound
        self.ended = False  # the writer is done: the reader gets None once drained
        self.gone = False  # the reader is done: writing fails
        self.error: ReplicationError | None = None
        self._changed = asyncio.Event()

    def changed(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def put(self, message: Any) -> None:
        while len(self.items) >= self.bound and self.error is None and not self.gone:
            await self._changed.wait()
        if self.error is not None:
            raise self.error
        if self.gone or self.ended:
            raise ReplicationError("the stream ended while sending", "it reconnects by itself")
        self.items.append(message)
        self.changed()

    async def get(self) -> Any | None:
        while not self.items and self.error is None and not self.ended:
            await self._changed.wait()
        if self.error is not None:
            raise self.error  # a cut loses what was still buffered, as a reset socket does
        if not self.items:
            return None
        message = self.items.popleft()
        self.changed()
        return message


class MemoryStream:
    """One end of an in-memory stream pair (see `pipe`); implements `stream.Stream`."""

    def __init__(self, incoming: _Channel, outgoing: _Channel) -> None:
        self._incoming, self._outgoing = incoming, outgoing
        self._lock = asyncio.Lock()

    async def send(self, message: Any) -> None:
        async with self._lock:  # several tasks may send; one message at a time, in order
            # Through the wire bytes: the receiver gets its own copy, as over a socket.
            await self._outgoing.put(type(message).FromString(message.SerializeToString()))

    async def recv(self) -> Any | None:
        return await self._incoming.get()

    def end(self) -> None:
        """This end is done (a handler returned): the peer reads what was sent, then None; its sends fail."""
        self._outgoing.ended = self._incoming.gone = True
        self._outgoing.changed()
        self._incoming.changed()

    def fail(self, error: ReplicationError) -> None:
        """Fail both directions: every waiting and later `send`/`recv` at either end raises `error`."""
        for channel in (self._incoming, self._outgoing):
            if channel.error is None:
                channel.error = error
                channel.changed()


def pipe(buffer: int = BUFFER) -> tuple[MemoryStream, MemoryStream]:
    """Two connected ends: what one sends the other receives, in order."""
    a_to_b, b_to_a = _Channel(buffer), _Channel(buffer)
    return MemoryStream(b_to_a, a_to_b), MemoryStream(a_to_b, b_to_a)


def _as_seen_by_child(exc: LienthongError) -> ReplicationError:
    """What the gRPC transport makes of a handler's error at the child (transport._Servicer, then _translate)."""
    if isinstance(exc, HandshakeRefused | TrustError):
        return HandshakeRefused(f"the parent refused this node: {exc.message}", "check this node's certificate and id")
    if isinstance(exc, ProtocolError):
        return ProtocolError(f"the peer dropped the stream: {exc.message}", "it reconnects by itself")
    if isinstance(exc, ReplicationError):
        return ReplicationError(f"the parent is unreachable: {exc.message}", "check the parent's address and the network")
    return parent_could_not(exc.message)


class MemoryTransport:
    """A parent's replication server in memory: each `connect` runs `handler` on a new stream pair.

    `on_refused(address, kind, error)` hears what the gRPC server reports the same way: kind
    "refused" (HandshakeRefused, TrustError), "protocol", "link" or "node".
    """

    def __init__(self, handler: Handler, on_refused: Callable[[str, str, LienthongError], None] | None = None) -> None:
        self._handler = handler
        self._on_refused = on_refused or (lambda address, kind, exc: None)
        self._open: set[MemoryStream] = set()
        self.connections = 0

    @contextlib.asynccontextmanager
    async def connect(self, node_id: str, serial: str = "1") -> AsyncIterator[MemoryStream]:
        """Open a stream as the child `node_id` (its identity, as its certificate would give it)."""
        child, parent = pipe()
        self.connections += 1
        address = f"memory:{self.connections}"
        task = asyncio.create_task(self._serve(Peer(node_id, serial), address, parent))
        self._open.add(child)
        try:
            yield child
        finally:
            self._open.discard(child)
            child.end()  # as gRPC ends the call: the handler's recv returns None, its sends fail
            await asyncio.wait({task}, timeout=LEAVE_GRACE)
            task.cancel()  # a handler that does not notice is cancelled
            await asyncio.gather(task, return_exceptions=True)

    async def _serve(self, peer: Peer, address: str, stream: MemoryStream) -> None:
        try:
            await self._handler(peer, address, stream)
        except (HandshakeRefused, TrustError) as exc:
            self._on_refused(address, "refused", exc)
            stream.fail(_as_seen_by_child(exc))
        except ProtocolError as exc:
            self._on_refused(address, "protocol", exc)
            stream.fail(_as_seen_by_child(exc))
        except ReplicationError as exc:
            self._on_refused(address, "link", exc)
            stream.end()
        except LienthongError as exc:
            self._on_refused(address, "node", exc)
            stream.fail(_as_seen_by_child(exc))
        else:
            stream.end()

    def cut(self) -> int:
        """Drop every open stream at once, both ways (a network fault); returns how many."""
        streams = list(self._open)
        for child in streams:
            child.fail(ReplicationError("the connection to the parent dropped: cut", "it reconnects by itself"))
        return len(streams)


__all__ = ["MemoryStream", "MemoryTransport", "pipe"]
