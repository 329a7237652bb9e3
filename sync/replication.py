"""The replication engine (DESIGN §4), independent of the transport.

A child runs an `Uplink`: it opens one stream to its parent and, on it, sends
batches of its change log and applies the parent's downward queue. A parent runs
`ChildSession.serve` for each child stream. Both sides send through a
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
import concurrent.futures
import contextlib
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from .errors import EpochChanged, HandshakeRefused, ProtocolError, ReplicationError
from .records import NODE_ID
from .revocation import Revocations
from .store import InBatch, OutBatch, Refusal, Store
from .stream import Connect, Peer, Stream
from .wire import replication_pb2 as wire

PROTOCOL = 1
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

log = structlog.get_logger("lienthong.sync")


class Renewal(Protocol):
    """The node's own certificate, renewed over its replication stream (see node/renewal.py)."""

    def due(self) -> bool:
        """Whether the certificate should be renewed now (most of its life is over)."""
        ...

    def request(self) -> Any:
        """A `wire.RenewRequest` for new keys, proven by the current certificate and signing key."""
        ...

    def install(self, certificate: bytes) -> None:
        """Put the new keys and `certificate` in place and start signing with the new key."""
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

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that
        # arrives as the event is set, and a cancelled sender then polls on forever.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._event.wait()


class WindowedSender:
    """Sends batches fetched from the store with at most `window` unacknowledged."""

    def __init__(
        self,
        fetch: Callable[[int, int], OutBatch | None],
        send: Callable[[OutBatch], Awaitable[None]],
        cursor: int,
        tuning: Tuning,
        changes: Changes,
    ) -> None:
        self._fetch = fetch
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
            batch = await asyncio.to_thread(self._fetch, self.cursor, self._tuning.batch_size)
            if batch is None:
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


def _batch_message(batch: OutBatch) -> wire.Batch:
    return wire.Batch(after=batch.after, last=batch.last, records=batch.envelopes, last_fingerprint=batch.fingerprint)


async def _first(tasks: list[asyncio.Task[None]]) -> None:
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


# ====================================================================== child side


class Uplink:
    """The child's end: keeps one stream to the parent open, reconnecting with
    exponential backoff and jitter, and never gives up while the node runs."""

    def __init__(
        self,
        store: Store,
        connect: Connect,
        tuning: Tuning,
        changes: Changes,
        address: str,
        redact: Callable[[bytes], bytes] | None = None,
        audit: Callable[[str, str, dict[str, Any]], Any] | None = None,
        renewal: Renewal | None = None,
    ) -> None:
        self.store = store
        # Records refused from the parent go to the node's audit log.
        self._audit = audit or (lambda action, subject, details: None)
        self._renewal = renewal
        self._stream: Stream | None = None
        self._linked = asyncio.Event()  # set while a session with the parent is up
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._connect = connect
        self._tuning = tuning
        self._changes = changes
        self.address = address
        self.redact = redact
        self.connected = False
        self.log = log.bind(peer="parent", address=address)

    async def run(self) -> None:
        delay = self._tuning.backoff_initial
        while True:
            started = time.monotonic()
            try:
                async with self._connect() as stream:
                    await self._session(stream)
                self.log.info("link.closed", reason="the parent closed the stream")
            except EpochChanged as exc:
                self.log.warning("link.epoch_changed", error=exc.message)
                delay = 0.0
            except HandshakeRefused as exc:
                self.log.error("link.refused", error=exc.message, hint=exc.hint)
            except ReplicationError as exc:
                self.log.warning("link.down", error=exc.message)
            except Exception:
                # A bug, not a link failure: say so loudly, but keep the node syncing.
                self.log.exception("link.failed")
            finally:
                if self.connected:
                    self.connected = False
                    await asyncio.to_thread(self.store.set_uplink, connected=0)
            if time.monotonic() - started > 10:
                delay = self._tuning.backoff_initial  # it was up for a while: start the backoff over
            # Full jitter keeps 170 children from reconnecting in step after an outage.
            await asyncio.sleep(random.uniform(0, delay) if delay else 0)
            delay = min(max(delay * 2, self._tuning.backoff_initial), self._tuning.backoff_max)

    def _fetch_up(self, seq: int, limit: int) -> OutBatch | None:
        """The next batch up, with citizens' personal data replaced when the sharing policy says so."""
        batch = self.store.changes_after(seq, limit)
        if batch is None or self.redact is None or not batch.feedback:
            return batch
        personal = set(batch.feedback)
        envelopes = [self.redact(raw) if raw in personal else raw for raw in batch.envelopes]
        return OutBatch(batch.after, batch.last, envelopes, batch.fingerprint)

    async def _session(self, stream: Stream) -> None:
        store = self.store
        down_epoch, down_applied, down_fingerprint = store.down_cursor()
        await stream.send(
            wire.Up(
                hello=wire.Hello(
                    protocol=PROTOCOL,
                    epoch=store.epoch,
                    head=store.head(),
                    down_epoch=down_epoch,
                    down_applied=down_applied,
                    down_fingerprint=down_fingerprint,
                    node_id=store.node_id,
                )
            )
        )
        first = await stream.recv()
        if first is None or first.WhichOneof("msg") != "welcome":
            raise ProtocolError("the parent did not answer the handshake", "check that the address is a lienthong node")
        welcome = first.welcome
        if welcome.epoch != store.epoch:
            raise ProtocolError("the parent answered for another epoch", "it reconnects by itself")
        if welcome.applied > store.head() or await asyncio.to_thread(store.fingerprint_at, welcome.applied) != welcome.applied_fingerprint:
            epoch = await asyncio.to_thread(store.mint_epoch)
            raise EpochChanged(
                f"the parent holds {welcome.applied} entries of this node's change log that this store does not match "
                f"(restored from a backup?); new epoch {epoch}, resending everything",
            )
        known_parent = store.uplink_state()["parent_id"]
        if known_parent and welcome.parent_id != known_parent:
            raise HandshakeRefused(
                f"the node at {self.address} is {welcome.parent_id!r}, but this node's parent is {known_parent!r}",
                "use `lienthong reparent` to move this node to a new parent",
            )
        if (welcome.down_epoch, welcome.down_from) != (down_epoch, down_applied):
            # The parent restarts its downward queue (its epoch changed, or it was restored).
            await asyncio.to_thread(store.set_uplink, down_epoch=welcome.down_epoch, down_applied=welcome.down_from, down_fingerprint=b"")
        await asyncio.to_thread(
            store.set_uplink,
            parent_id=welcome.parent_id,
            address=self.address,
            connected=1,
            acked=welcome.applied,
            last_contact=time.time(),
        )
        self.connected = True
        self.log = self.log.bind(peer=welcome.parent_id)
        self.log.info("link.up", resume_from=welcome.applied, head=store.head(), down_applied=down_applied)
        window = welcome.window or self._tuning.window
        tuning = Tuning(**{**self._tuning.__dict__, "window": min(window, self._tuning.window)})

        async def send(batch: OutBatch) -> None:
            await stream.send(wire.Up(batch=_batch_message(batch)))

        sender = WindowedSender(self._fetch_up, send, welcome.applied, tuning, self._changes)
        tasks = [asyncio.create_task(sender.run()), asyncio.create_task(self._receive(stream, sender, welcome.down_epoch))]
        if self._renewal is not None:
            tasks.append(asyncio.create_task(self._keep_certificate()))
        self._stream = stream
        self._linked.set()
        try:
            await _first(tasks)
        finally:
            self._stream = None
            self._linked.clear()
            for future in self._waiting.values():
                if not future.done():
                    future.set_result(wire.RenewReply(error="the link to the parent dropped"))
            self._waiting.clear()

    async def renew(self, request: Any) -> Any:
        """Send a RenewRequest up this node's stream (its own, or one passed up from a child)
        and return the parent's RenewReply."""
        if self._stream is None:
            # A child's request may come while this node is (re)connecting: wait for the link.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._linked.wait(), RENEW_TIMEOUT)
        stream = self._stream
        if stream is None:
            return wire.RenewReply(node_id=request.node_id, error="this node is not connected to its parent now; retry later")
        if request.node_id in self._waiting:
            return wire.RenewReply(node_id=request.node_id, error="a renewal for this node is already on its way")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[request.node_id] = future
        try:
            await stream.send(wire.Up(renew=request))
            return await asyncio.wait_for(future, RENEW_TIMEOUT)
        except TimeoutError:
            return wire.RenewReply(node_id=request.node_id, error="the parent did not answer the renewal in time")
        finally:
            self._waiting.pop(request.node_id, None)

    async def _keep_certificate(self) -> None:
        """Renew this node's certificate over the stream when most of its life is over."""
        assert self._renewal is not None
        while True:
            wait = RENEW_CHECK
            if await asyncio.to_thread(self._renewal.due):
                request = await asyncio.to_thread(self._renewal.request)
                reply = await self.renew(request)
                if reply.certificate:
                    await asyncio.to_thread(self._renewal.install, reply.certificate)
                    self.log.info("certificate.renewed")
                    await asyncio.to_thread(self._audit, "cert.renewed", self.store.node_id, {"by": "parent"})
                else:
                    self.log.warning("certificate.renewal_refused", error=reply.error)
                    wait = RENEW_RETRY
            await asyncio.sleep(wait)

    async def _receive(self, stream: Stream, sender: WindowedSender, parent_epoch: str) -> None:
        store = self.store
        pending_acked = pending_records = flushed_sent = 0
        pending_refusals: list[Refusal] = []
        last_flush = time.monotonic()

        async def flush() -> None:
            nonlocal pending_records, pending_refusals, last_flush, flushed_sent
            sent = sender.sent_records - flushed_sent
            await asyncio.to_thread(store.record_acks, pending_acked, pending_records, sent, pending_refusals)
            pending_records, pending_refusals, last_flush, flushed_sent = 0, [], time.monotonic(), flushed_sent + sent

        try:
            while True:
                message = await stream.recv()
                if message is None:
                    return
                which = message.WhichOneof("msg")
                if which == "ack":
                    ack = message.ack
                    batches, n = sender.acknowledge(ack.last)
                    pending_acked, pending_records = ack.last, pending_records + n
                    pending_refusals.extend(Refusal(r.id, r.version, r.code, r.reason) for r in ack.rejected)
                    for r in ack.rejected:
                        self.log.warning("record.refused_by_parent", record=r.id.hex(), code=r.code, reason=r.reason)
                    self.log.info("batch.acked", last=ack.last, batches=batches, records=n, refused=len(ack.rejected))
                    # Persist at most twice a second while busy, and at once when caught up,
                    # so `status` shows the truth within half a second.
                    if pending_refusals or not sender.inflight or time.monotonic() - last_flush > 0.5:
                        await flush()
                elif which == "renewed":
                    future = self._waiting.get(message.renewed.node_id)
                    if future is not None and not future.done():
                        future.set_result(message.renewed)
                elif which == "batch":
                    batch = message.batch
                    n, refusals = await asyncio.to_thread(
                        store.apply_from_parent, parent_epoch, batch.after, batch.last, list(batch.records), batch.last_fingerprint
                    )
                    await stream.send(wire.Up(down_ack=wire.DownAck(last=batch.last)))
                    self._changes.notify()
                    for r in refusals:
                        details = {"id": r.id.hex(), "version": r.version, "code": r.code, "reason": r.reason, "from": "parent"}
                        self.log.warning("record.refused", **details)
                        await asyncio.to_thread(self._audit, "record.refused", "parent", details)
                    self.log.info("batch.received", last=batch.last, records=n, refused=len(refusals))
                else:
                    raise ProtocolError(f"unexpected message {which!r} from the parent", "it reconnects by itself")
        finally:
            if pending_acked or sender.sent_records > flushed_sent:
                await flush()


# ====================================================================== parent side


class Children:
    """The parent's registry of live child sessions: one per child; a new stream
    from the same child replaces the old one (a half-open link after a cut)."""

    def __init__(self) -> None:
        self.live: dict[str, asyncio.Task[Any]] = {}

    async def take_over(self, child: str) -> None:
        old = self.live.get(child)
        current = asyncio.current_task()
        if old is not None and old is not current and not old.done():
            old.cancel()
            with contextlib.suppress(BaseException):
                await old
        if current is not None:
            self.live[child] = current

    def release(self, child: str) -> None:
        if self.live.get(child) is asyncio.current_task():
            del self.live[child]


class ChildSession:
    """The parent's end of one child's stream."""

    def __init__(
        self,
        store: Store,
        tuning: Tuning,
        changes: Changes,
        children: Children,
        revocations: Revocations | None = None,
        audit: Callable[[str, str, dict[str, Any]], Any] | None = None,
        issuer: Issuer | None = None,
    ) -> None:
        self.store = store
        # Answers children's certificate renewals (the CA's home issues; a middle tier passes them up).
        self._issuer = issuer
        self._renewals: set[asyncio.Task[None]] = set()
        # One thread decodes and verifies what children send, ahead of the writing thread.
        self._verifying = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lienthong-verify")
        self._admission = asyncio.Semaphore(ADMITTED)
        self._tuning = tuning
        self._changes = changes
        self._children = children
        self._revocations = revocations
        # Security events (refused records, revoked peers cut off) go to the node's audit log.
        self._audit = audit or (lambda action, subject, details: None)

    async def serve(self, peer: Peer, address: str, stream: Stream) -> None:
        """Serve a child whose identity (`peer.node_id`, `peer.serial`) the transport took from its certificate."""
        store = self.store
        child = peer.node_id
        bound = log.bind(peer=child, address=address)
        if self._revocations is not None and self._revocations.revoked(peer.serial):
            bound.error("link.refused", reason="certificate revoked", serial=peer.serial)
            await asyncio.to_thread(self._audit, "connection.refused", child, {"reason": "certificate revoked", "serial": peer.serial})
            raise HandshakeRefused(
                f"the certificate of {child} (serial {peer.serial}) is revoked", "the province must issue this node a new certificate"
            )
        if not NODE_ID.match(child):
            raise HandshakeRefused(f"the certificate's node id {child!r} is not valid", "issue the node a new certificate")
        if child == store.node_id:
            raise HandshakeRefused(f"a peer presented this node's own identity {child!r}", "each node needs its own certificate")
        first = await stream.recv()
        if first is None or first.WhichOneof("msg") != "hello":
            raise ProtocolError(f"child {child} did not start with a handshake", "upgrade lienthong on the child")
        hello = first.hello
        if hello.protocol != PROTOCOL:
            raise HandshakeRefused(
                f"child {child} speaks protocol {hello.protocol}, this node {PROTOCOL}", "run the same lienthong version"
            )
        if hello.node_id and hello.node_id != child:
            bound.error("link.refused", claimed=hello.node_id, reason="identity mismatch")
            raise HandshakeRefused(
                f"the peer claims to be {hello.node_id!r} but its certificate says {child!r}",
                "use the certificate issued to this node",
            )
        await self._children.take_over(child)
        try:
            await asyncio.to_thread(store.register_child, child, address)
            state = await asyncio.to_thread(store.child_state, child)
            applied, fingerprint = (state.applied, state.fingerprint) if state.epoch == hello.epoch else (0, b"")
            down_cursor = hello.down_applied if hello.down_epoch == store.epoch else 0
            if down_cursor and await asyncio.to_thread(store.down_fingerprint, child, down_cursor) != hello.down_fingerprint:
                # This store was restored from an older copy: its queue numbers no longer
                # mean what the child applied. Send everything again (applying is idempotent).
                bound.warning("link.down_queue_reset", child_cursor=down_cursor)
                down_cursor = 0
            await stream.send(
                wire.Down(
                    welcome=wire.Welcome(
                        protocol=PROTOCOL,
                        parent_id=store.node_id,
                        epoch=hello.epoch,
                        applied=applied,
                        applied_fingerprint=fingerprint,
                        down_epoch=store.epoch,
                        window=self._tuning.window,
                        down_from=down_cursor,
                    )
                )
            )
            bound.info("link.up", epoch=hello.epoch, resume_from=applied, child_head=hello.head, down_from=down_cursor)

            async def send(batch: OutBatch) -> None:
                await stream.send(wire.Down(batch=_batch_message(batch)))

            def fetch(seq: int, limit: int) -> OutBatch | None:
                return store.down_after(child, seq, limit)

            sender = WindowedSender(fetch, send, down_cursor, self._tuning, self._changes)
            await _first(
                [
                    asyncio.create_task(sender.run()),
                    asyncio.create_task(self._receive(child, hello.epoch, stream, sender, bound)),
                    asyncio.create_task(self._watch_revocation(peer, bound)),
                ]
            )
            bound.info("link.closed", reason="the child closed the stream")
        finally:
            self._children.release(child)
            if child not in self._children.live:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(store.set_child, child, connected=0, last_contact=time.time())

    async def _renew(self, child: str, request: Any, stream: Stream, bound: Any) -> None:
        if self._issuer is None:
            reply = wire.RenewReply(node_id=request.node_id, error=f"node {self.store.node_id} cannot renew certificates")
        else:
            reply = await self._issuer(child, request)
        bound.info("certificate.renewal", node=request.node_id, issued=bool(reply.certificate), error=reply.error)
        with contextlib.suppress(ReplicationError):
            await stream.send(wire.Down(renewed=reply))

    async def _watch_revocation(self, peer: Any, bound: Any) -> None:
        """End a live session within half a second of its certificate being revoked."""
        if self._revocations is None:
            await asyncio.Event().wait()
            return
        while not self._revocations.revoked(peer.serial):
            await asyncio.sleep(REVOCATION_CHECK)
        bound.error("link.cut", reason="certificate revoked", serial=peer.serial)
        details = {"reason": "certificate revoked while connected", "serial": peer.serial}
        await asyncio.to_thread(self._audit, "connection.refused", peer.node_id, details)
        raise HandshakeRefused(f"the certificate of {peer.node_id} was revoked", "the province must issue this node a new certificate")

    async def _receive(self, child: str, epoch: str, stream: Stream, sender: WindowedSender, bound: Any) -> None:
        """Apply the child's batches; all that have arrived are applied in one transaction."""
        store = self.store
        inbox: asyncio.Queue[Any] = asyncio.Queue()

        async def read() -> None:
            # Everything the stream yields goes through the queue, its failure too,
            # so the applying loop below always wakes up and the session ends.
            try:
                while True:
                    message = await stream.recv()
                    if message is not None and message.WhichOneof("msg") == "batch":
                        # Decode and verify each batch as it arrives, on the verifying thread, while
                        # the previous group is being written: the two overlap on two cores. At most
                        # ADMITTED batches of all children wait here at once: a child over the limit
                        # is not read from until others are written (gRPC flow control holds it back),
                        # so memory stays bounded however many children send at once.
                        await self._admission.acquire()
                        held[0] += 1
                        raws = list(message.batch.records)
                        prepared = loop.run_in_executor(self._verifying, store.prepare, child, raws)
                        await inbox.put((message, prepared))
                        continue
                    await inbox.put((message, None))
                    if message is None:
                        return
            except BaseException as exc:
                await inbox.put((exc, None))
                raise

        loop = asyncio.get_running_loop()
        held = [0]  # admitted batches of this session not yet written
        reader = asyncio.create_task(read())
        try:
            while True:
                message, prepared = await inbox.get()
                group: list[Any] = []
                preparing: list[asyncio.Future[Any]] = []
                rows = 0
                while message is not None:
                    if isinstance(message, BaseException):
                        raise message
                    which = message.WhichOneof("msg")
                    if which == "batch":
                        group.append(message.batch)
                        preparing.append(prepared)
                        rows += len(message.batch.records)
                    elif which == "down_ack":
                        sender.acknowledge(message.down_ack.last)
                    elif which == "renew":
                        task = asyncio.create_task(self._renew(child, message.renew, stream, bound))
                        self._renewals.add(task)
                        task.add_done_callback(self._renewals.discard)
                    else:
                        raise ProtocolError(f"unexpected message {which!r} from child {child}", "it reconnects by itself")
                    if rows >= GROUP_ROWS or inbox.empty():
                        break
                    message, prepared = inbox.get_nowait()
                if group:
                    batches = [InBatch(b.after, b.last, b.last_fingerprint, list(b.records)) for b in group]
                    verified = [await p for p in preparing]
                    try:
                        results = await asyncio.to_thread(store.apply_batches, child, epoch, batches, verified)
                    finally:
                        for _ in group:
                            held[0] -= 1
                            self._admission.release()
                    for batch, refusals in zip(group, results, strict=True):
                        rejected = [wire.Rejection(id=r.id, version=r.version, code=r.code, reason=r.reason) for r in refusals]
                        await stream.send(wire.Down(ack=wire.Ack(last=batch.last, rejected=rejected)))
                        for r in refusals:
                            bound.warning("record.quarantined", record=r.id.hex(), code=r.code, reason=r.reason)
                            details = {"record": r.id.hex(), "version": r.version, "code": r.code, "reason": r.reason}
                            await asyncio.to_thread(self._audit, "record.refused", child, details)
                    self._changes.notify()
                    bound.info("batch.applied", last=group[-1].last, batches=len(group), records=rows, refused=sum(map(len, results)))
                if message is None:
                    return
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            for _ in range(held[0]):
                self._admission.release()
