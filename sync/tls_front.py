"""The mTLS front door of a node's replication server: every handshake seen, every refusal named.

gRPC's own TLS refuses a bad client inside its C core, where the node cannot see
it: no log line, no audit entry. So the node terminates TLS itself (Python's `ssl`,
OpenSSL underneath): TLS 1.2 or newer, a client certificate from the provincial CA
required, ALPN h2. A refused handshake — plaintext, no certificate, another CA, an
expired certificate, an old protocol — is reported to `on_refused` with
the peer's address and OpenSSL's reason, which the node logs and audits. An
accepted connection is piped to the gRPC server listening on loopback only, and
the verified peer is remembered under the loopback port the pipe connects from:
the gRPC servicer asks `identity(context.peer())` who is really there. A local
process connecting to the loopback port directly has no identity and is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import structlog

from .errors import LienthongError, ReplicationError

HANDSHAKE_TIMEOUT = 10.0
# What the front holds of one connection at most, per direction and stage: one TLS record's
# plaintext (16 KiB). Bigger buffers only move bytes out of the kernel's socket buffers (not
# counted in the node's memory) into the node's own while gRPC's flow control holds a
# stream back: at 64 KiB reads and asyncio's defaults (256 KiB per recv, 64 KiB write
# high-water) a province with 200 streaming children held ~1.2 MB per connection here.
CHUNK = 16 * 1024

log = structlog.get_logger("lienthong.sync")


@dataclass(frozen=True)
class Verified:
    """Who completed the handshake: the certificate's common name and serial (hex)."""

    node_id: str
    serial: str
    address: str = ""  # the peer's own address, as the front saw it
    certificate: bytes = b""  # the peer's certificate (DER)


Refused = Callable[[str, str], None]  # (peer address, reason)


def _context(files: Any) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.set_alpn_protocols(["h2"])
    ctx.load_verify_locations(cadata=files.ca.decode())
    # The ssl module loads a key pair from files only: a private temporary directory, gone at once.
    with tempfile.TemporaryDirectory(prefix="lienthong-tls-") as tmp:
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert.write_bytes(files.cert)
        key.touch(mode=0o600)
        key.write_bytes(files.key)
        ctx.load_cert_chain(cert, key)
    return ctx


def _verified(ssl_object: ssl.SSLObject, address: str) -> Verified:
    cert = ssl_object.getpeercert() or {}
    rdns = cast(tuple[tuple[tuple[str, str], ...], ...], cert.get("subject", ()))
    subject = {name: value for rdn in rdns for name, value in rdn}
    serial = format(int(str(cert.get("serialNumber", "0")), 16), "x")
    return Verified(str(subject.get("commonName", "")), serial, address, ssl_object.getpeercert(binary_form=True) or b"")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate refused: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        text = (exc.reason or str(exc)).lower().replace("_", " ")
        if "no certificate" in text or "peer did not return a certificate" in text:
            return "no client certificate"
        if "http request" in text or "wrong version number" in text:
            return "not TLS (plaintext)"
        if "unsupported protocol" in text or "version" in text:
            return f"TLS version refused ({text})"
        return f"TLS handshake failed: {text}"
    if isinstance(exc, TimeoutError):
        return "TLS handshake timed out"
    return f"connection dropped during the TLS handshake: {exc}"


class TlsFront:
    """Accepts mTLS connections on `listen` and pipes them to `backend_port` on loopback."""

    def __init__(
        self,
        tls: Callable[[], Any],
        backend_port: int,
        on_refused: Refused,
    ) -> None:
        self._tls = tls
        self.backend_port = backend_port
        self._on_refused = on_refused
        self._files: Any = None
        self._ctx: ssl.SSLContext | None = None
        self._peers: dict[int, Verified] = {}
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self, listen: str) -> int:
        address, _, port = listen.rpartition(":")
        host = address.strip("[]") or None
        try:
            self._server = await asyncio.start_server(self._accept, host, int(port), reuse_address=True, limit=CHUNK)
        except OSError as exc:
            raise ReplicationError(
                f"cannot listen on {listen}: {exc.strerror}", "choose a free port or stop the program that holds it"
            ) from None
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    def identity(self, grpc_peer: str) -> Verified | None:
        """The verified peer behind a gRPC connection from our own pipe ('ipv4:127.0.0.1:PORT')."""
        address, _, port = grpc_peer.rpartition(":")
        if not port.isdigit() or address not in ("ipv4:127.0.0.1", "ipv6:[::1]"):
            return None
        return self._peers.get(int(port))

    def _context(self) -> ssl.SSLContext:
        try:
            files = self._tls()  # re-read on each connection: a renewed certificate is served at once
            if self._ctx is None or files != self._files:
                self._ctx, self._files = _context(files), files
        except (LienthongError, ssl.SSLError, ValueError, OSError):
            if self._ctx is None:
                raise
            # Mid-renewal (a new key beside the old certificate for a moment): keep serving
            # with what we have; the next connection reads the files again.
        return self._ctx

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)
        peername = writer.get_extra_info("peername")
        address = f"{peername[0]}:{peername[1]}" if peername else "?"
        verified: Verified | None = None
        try:
            tls = _TlsStream(self._context(), reader, writer)
            try:
                await asyncio.wait_for(tls.handshake(), HANDSHAKE_TIMEOUT)
            except (ssl.SSLError, ConnectionError, TimeoutError, OSError) as exc:
                self._on_refused(address, _reason(exc))
                return
            verified = _verified(tls.ssl_object, address)
            await self._pipe(tls, verified)
        except asyncio.CancelledError:
            # `stop` ends every connection by cancelling its task. This task is the connection's
            # top level (asyncio's server started it and nothing awaits its result but `stop`):
            # it ends normally, with one line, because Python 3.11's stream server prints a
            # traceback for a connection task that ends cancelled.
            if verified is not None:
                log.info("tls_front.closed", peer=verified.node_id, address=address, reason="the node is stopping")
        finally:
            writer.close()

    async def _pipe(self, tls: _TlsStream, verified: Verified) -> None:
        try:
            back_reader, back_writer = await asyncio.open_connection("127.0.0.1", self.backend_port, limit=CHUNK)
        except OSError as exc:
            log.error("tls_front.backend_unreachable", error=str(exc))
            return
        _small_buffers(tls.writer)
        _small_buffers(back_writer)
        local_port = back_writer.get_extra_info("sockname")[1]
        self._peers[local_port] = verified
        try:
            await _first_done(_copy(tls.read, back_writer.write, back_writer.drain), _copy(back_reader.read, tls.write, tls.drain))
        finally:
            self._peers.pop(local_port, None)
            back_writer.close()


class _TlsStream:
    """TLS over an asyncio stream with OpenSSL memory buffers: the handshake's failure is ours to see."""

    def __init__(self, ctx: ssl.SSLContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.ssl_object = ctx.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._reader, self._writer = reader, writer

    @property
    def writer(self) -> asyncio.StreamWriter:
        return self._writer

    def _flush(self) -> None:
        if pending := self._outgoing.read():
            self._writer.write(pending)

    async def _fill(self) -> None:
        data = await self._reader.read(CHUNK)
        if not data:
            self._incoming.write_eof()
        else:
            self._incoming.write(data)

    async def handshake(self) -> None:
        while True:
            try:
                self.ssl_object.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                await self._writer.drain()
                if self._incoming.eof:
                    raise ConnectionResetError("the peer closed the connection") from None
                await self._fill()
                continue
            except ssl.SSLError:
                self._flush()  # the alert tells the peer why
                with contextlib.suppress(ConnectionError, OSError):
                    await self._writer.drain()
                raise
            self._flush()
            await self._writer.drain()
            return

    async def read(self, n: int) -> bytes:
        while True:
            try:
                data = self.ssl_object.read(n)
            except ssl.SSLWantReadError:
                self._flush()  # session tickets, key updates
                if self._incoming.eof:
                    return b""
                await self._fill()
                continue
            except ssl.SSLZeroReturnError:
                return b""
            self._flush()
            return data

    def write(self, data: bytes) -> None:
        self.ssl_object.write(data)
        self._flush()

    async def drain(self) -> None:
        await self._writer.drain()


def _small_buffers(writer: asyncio.StreamWriter) -> None:
    """Hold at most CHUNK of a connection in the front's buffers: a write waits for the peer
    beyond it, and a read takes CHUNK from the kernel at a time (asyncio's selector transport
    takes `max_size`, 256 KiB, per recv; the reader stops reading at twice its limit)."""
    transport = writer.transport
    transport.set_write_buffer_limits(high=CHUNK)
    if hasattr(transport, "max_size"):
        transport.max_size = CHUNK


async def _copy(read: Callable[[int], Any], write: Callable[[bytes], None], drain: Callable[[], Any]) -> None:
    with contextlib.suppress(ConnectionError, OSError, ssl.SSLError):
        while data := await read(CHUNK):
            write(data)
            await drain()


async def _first_done(*coroutines: Any) -> None:
    tasks = [asyncio.create_task(c) for c in coroutines]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
