"""gRPC transport for replication: the only module of the core that touches grpc.

`serve` runs the parent's mTLS server and hands each child stream, with the node
id taken from the child's certificate, to a handler. `connect` opens the child's
stream to its parent. Both translate gRPC failures into `ReplicationError`s here,
at this one boundary, with a sentence an operator can act on. It implements the
seam of stream.py (`Stream`, `Connect`, `Handler`); memory_transport.py is its fake.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .errors import HandshakeRefused, LienthongError, ProtocolError, ReplicationError, TrustError
from .stream import Handler, Peer, Stream, parent_could_not
from .tls_front import TlsFront, Verified
from .wire import replication_pb2 as wire
from .wire import replication_pb2_grpc as wire_grpc

# Large enough for a batch of 500 records of a few KB each; a record larger than
# this is refused by the adapter long before it reaches the wire.
MAX_MESSAGE = 64 * 1024 * 1024
# How long a connection that bypassed the TLS front gets to send its first message before the refusal.
FIRST_MESSAGE_WAIT_S = 5.0
# How long a child leaving its stream waits for the parent's handler to see the end before cancelling
# (as long as the in-memory transport gives a handler: `memory_transport.LEAVE_GRACE`).
LEAVE_WAIT_S = 5.0
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    # Detect a dead link within ~30 s even when no data flows.
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
SERVER_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


@dataclass(frozen=True)
class TlsFiles:
    """PEM bytes of the CA that signs every node, this node's certificate and key."""

    ca: bytes
    cert: bytes
    key: bytes


class _GrpcStream:
    """`stream.Stream` over one gRPC bidirectional call (either side); gRPC errors become `ReplicationError`s."""

    def __init__(self, read: Callable[[], Awaitable[Any]], write: Callable[[Any], Awaitable[None]]) -> None:
        self._read = read
        self._write = write
        self._lock = asyncio.Lock()

    async def send(self, message: Any) -> None:
        async with self._lock:
            try:
                await self._write(message)
            except grpc.aio.AioRpcError as exc:
                raise _translate(exc) from None
            except asyncio.InvalidStateError:
                # gRPC already finished the call (the link was reset under us).
                raise ReplicationError("the stream ended while sending", "it reconnects by itself") from None

    async def recv(self) -> Any | None:
        try:
            message = await self._read()
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc) from None
        return None if message is grpc.aio.EOF else message


def _translate(exc: grpc.aio.AioRpcError) -> ReplicationError:
    code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return HandshakeRefused(f"the parent refused this node: {details}", "check this node's certificate and id")
    if code == grpc.StatusCode.UNAVAILABLE:
        lowered = details.lower()
        if "hostname verification" in lowered or "no match found for server name" in lowered:
            return HandshakeRefused(
                f"the parent's certificate does not name the node this one expects: {details}",
                "check parent.address and parent.id in lienthong.toml against the parent's certificate",
            )
        if "socket closed" in lowered or "connection reset" in lowered or "broken pipe" in lowered:
            return ReplicationError(f"the connection to the parent dropped: {details}", "it reconnects by itself")
        if any(word in lowered for word in ("ssl", "tls", "handshake", "certificate", "verif", "unauthenticated")):
            return HandshakeRefused(
                f"the TLS handshake with the parent failed: {details}",
                "check that both nodes' certificates come from the same provincial CA and are still valid",
            )
        return ReplicationError(f"the parent is unreachable: {details}", "check the parent's address and the network")
    if code == grpc.StatusCode.ABORTED:
        return parent_could_not(details)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return ProtocolError(f"the peer dropped the stream: {details}", "it reconnects by itself")
    return ReplicationError(f"the stream failed ({code.name}): {details}", "it reconnects by itself")


# ---------------------------------------------------------------- child side


@contextlib.asynccontextmanager
async def connect(address: str, tls: TlsFiles, server_name: str = "") -> AsyncIterator[Stream]:
    """Open the replication stream to the parent at `address` over mTLS.

    `server_name`, when given, is the identity the parent's certificate must
    carry; otherwise the certificate must match the host in `address`.
    """
    credentials = grpc.ssl_channel_credentials(root_certificates=tls.ca, private_key=tls.key, certificate_chain=tls.cert)
    options: list[tuple[str, int | str]] = list(CHANNEL_OPTIONS)
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    channel = grpc.aio.secure_channel(address, credentials, options=options)
    try:
        call = wire_grpc.ReplicationStub(channel).Sync()
        yield _GrpcStream(call.read, call.write)
        await _leave(call)
    finally:
        await channel.close(grace=None)


async def _leave(call: Any) -> None:
    """End the call the way a peer that is done ends it: half-close, let the parent's handler read the
    end (and finish), then cancel whatever is left. Cancelling at once raced the half-close: on a
    loaded machine the parent's handler was cancelled before it read the end it was owed."""
    with contextlib.suppress(grpc.RpcError, asyncio.InvalidStateError, TimeoutError):
        await call.done_writing()
        async with asyncio.timeout(LEAVE_WAIT_S):
            while await call.read() is not grpc.aio.EOF:
                pass  # the parent's last words to a child that is leaving: nothing to act on
    call.cancel()


# ---------------------------------------------------------------- parent side


class _Servicer(wire_grpc.ReplicationServicer):
    def __init__(
        self,
        handler: Handler,
        on_refused: Callable[[str, str, LienthongError], None],
        identify: Callable[[str], Verified | None],
    ) -> None:
        self._handler = handler
        self._on_refused = on_refused
        self._identify = identify

    async def Sync(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:  # type: ignore[override]  # noqa: N802 (gRPC's name; the aio servicer returns by writing to `context`)
        grpc_peer = context.peer()
        verified = self._identify(grpc_peer)
        peer = verified.address if verified else grpc_peer
        try:
            if verified is None:
                # Take the peer's first message before refusing: a client whose write is still in
                # flight when the stream is reset records its own INTERNAL error in place of ours.
                with contextlib.suppress(asyncio.TimeoutError, grpc.RpcError):
                    await asyncio.wait_for(context.read(), FIRST_MESSAGE_WAIT_S)
                raise TrustError("a connection reached the replication server without passing its TLS front", "connect with mTLS")
            await self._handler(
                Peer(verified.node_id, verified.serial, verified.certificate), peer, _GrpcStream(context.read, context.write)
            )
        except (HandshakeRefused, TrustError) as exc:
            self._on_refused(peer, "refused", exc)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, exc.message)
        except ProtocolError as exc:
            self._on_refused(peer, "protocol", exc)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, exc.message)
        except ReplicationError as exc:
            self._on_refused(peer, "link", exc)
        except LienthongError as exc:
            # Anything else the node knows how to say (its store, a bad definition): said to the
            # child in one sentence, not a gRPC traceback.
            self._on_refused(peer, "node", exc)
            await context.abort(grpc.StatusCode.ABORTED, exc.message)


@dataclass
class Server:
    """The running replication server: the TLS front and the gRPC server behind it."""

    grpc_server: grpc.aio.Server
    front: TlsFront


async def serve(
    listen: str,
    tls: TlsFiles | Callable[[], TlsFiles],
    handler: Handler,
    on_refused: Callable[[str, str, LienthongError], None],
) -> tuple[Server, int, health.HealthServicer]:
    """Start the mTLS replication server; returns it, its bound port and its health service.

    TLS is terminated by the node's own front (tls_front.py): every connection must
    present a certificate from the CA, and every refused handshake (plaintext, no
    certificate, another CA, expired, TLS below 1.2) is reported to
    `on_refused` with kind "handshake". Given a loader instead of files, a renewed
    certificate is served from the next connection on.
    """
    loader: Callable[[], TlsFiles] = (lambda: tls) if isinstance(tls, TlsFiles) else tls
    loader()  # unreadable files fail here, before anything listens

    def handshake_refused(address: str, reason: str) -> None:
        on_refused(address, "handshake", HandshakeRefused(reason, "the peer needs a valid certificate from the provincial CA"))

    server = grpc.aio.server(options=SERVER_OPTIONS)
    # A revoked certificate passes the front: the replication handler refuses it with
    # PERMISSION_DENIED and the reason, so the revoked node learns why (and it is audited there).
    front = TlsFront(loader, 0, handshake_refused)
    wire_grpc.add_ReplicationServicer_to_server(_Servicer(handler, on_refused, front.identity), server)
    health_servicer = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    backend = server.add_insecure_port("127.0.0.1:0")  # loopback only, reached through the front
    front.backend_port = backend
    await server.start()
    try:
        port = await front.start(listen)
    except BaseException:
        await server.stop(None)
        raise
    await _set_serving(health_servicer, True)
    return Server(server, front), port, health_servicer


async def _set_serving(servicer: Any, serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    result = servicer.set("", status)
    if asyncio.iscoroutine(result):
        await result
    result = servicer.set("lienthong.v1.Replication", status)
    if asyncio.iscoroutine(result):
        await result


async def stop(server: Server, health_servicer: Any, grace: float) -> None:
    await _set_serving(health_servicer, False)
    await server.front.stop()
    await server.grpc_server.stop(grace)


__all__ = ["Handler", "Peer", "Server", "TlsFiles", "connect", "serve", "stop", "wire"]
