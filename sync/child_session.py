"""The parent's end of replication: one session per child stream, a registry of live
sessions, batches verified ahead of the writer and applied in group commits (see
`replication` for the protocol and its guarantees)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any

from .batch import InBatch, OutBatch
from .clock import wall_ms
from .downstream import Downstream
from .errors import HandshakeRefused, LienthongError, ProtocolError, ReplicationError
from .file_transfer import FILE_MESSAGES, FilePeer, FileWatch, node_files
from .files import Files
from .records import NODE_ID
from .replication import (
    ADMITTED,
    CLOCK_WARN_MS,
    GROUP_ROWS,
    PROTOCOL,
    REVOCATION_CHECK,
    Changes,
    Issuer,
    QueueHead,
    Tuning,
    WindowedSender,
    batch_message,
    clock_offset,
    first_done,
    log,
)
from .revocation import Revocations
from .store import Store
from .stream import Peer, Stream
from .verify_worker import VerifyWorker
from .wire import replication_pb2 as wire

# Tries to record that a child's stream ended (the writer may be busy with a batch in its thread).
DISCONNECT_TRIES = 5


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
        reported_to: Iterable[str] = (),
        files: Files | None = None,
    ) -> None:
        self.store = store
        # Files named by what children send up are fetched from them; they fetch what comes down (file_transfer.py).
        self.files = node_files(store, files)
        self._file_watch = FileWatch(self.files, changes, log)  # one for all children's streams
        self.down = Downstream(store, reported_to)
        # Answers children's certificate renewals (the CA's home issues; a middle tier passes them up).
        self._issuer = issuer
        self._renewals: set[asyncio.Task[None]] = set()
        # What children send is decoded and verified ahead of the writing thread: in a process of its
        # own when the node verifies seals (verify_worker.py: the writer gets the other core), else
        # (a bare store) on one thread.
        self._worker = VerifyWorker(store.path, store.verifier.ca_pem) if store.verifier is not None else None
        self._verifying = (
            concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lienthong-verify") if self._worker is None else None
        )
        self._admission = asyncio.Semaphore(ADMITTED)
        self._tuning = tuning
        self._changes = changes
        self._children = children
        self._revocations = revocations
        # Security events (refused records, revoked peers cut off) go to the node's audit log.
        self._audit = audit or (lambda action, subject, details: None)
        # One read of the downward queue's head for all sessions, not one fetch per child per change.
        self._down_head = QueueHead(self.down.queue_head, changes, tuning.poll_interval)

    async def start(self) -> None:
        """Start verifying before the first child connects (its first batch waits for no process start)."""
        if self._worker is not None:
            await self._worker.start()

    async def close(self) -> None:
        """Stop verifying (once the sessions have ended): the worker process, the thread."""
        if self._worker is not None:
            await self._worker.close()
        if self._verifying is not None:
            self._verifying.shutdown(wait=False)

    async def serve(self, peer: Peer, address: str, stream: Stream) -> None:
        """Serve a child whose identity (`peer.node_id`, `peer.serial`) the transport took from its certificate."""
        store = self.store
        child = peer.node_id
        bound = log.bind(peer=child, address=address)
        revoked = self._revocations.for_certificate(peer.serial, peer.certificate) if self._revocations is not None else None
        if revoked is not None:
            reason = f"issued with the key of revoked issuing CA {revoked.issuer}" if revoked.issuer else "certificate revoked"
            bound.error("link.refused", reason=reason, serial=peer.serial)
            await asyncio.to_thread(self._audit, "connection.refused", child, {"reason": reason, "serial": peer.serial})
            if revoked.issuer:
                raise HandshakeRefused(
                    f"the certificate of {child} (serial {peer.serial}) was not issued by the province's CA: it was made with the"
                    f" key of issuing CA {revoked.issuer}, which the root revoked",
                    "the province must enroll this node again",
                )
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
            offset = clock_offset(hello.wall_ms)
            await asyncio.to_thread(self.down.register_child, child, address, offset)
            state = await asyncio.to_thread(self.down.child_state, child)
            if state.epoch and state.epoch != hello.epoch:
                resent = await asyncio.to_thread(self.down.resend_to_restored, child, hello.epoch)
                bound.warning("link.child_restored", epoch=hello.epoch, resent=resent)
            applied, fingerprint = (state.applied, state.fingerprint) if state.epoch == hello.epoch else (0, b"")
            down_cursor = hello.down_applied if hello.down_epoch == store.epoch else 0
            if down_cursor and await asyncio.to_thread(self.down.down_fingerprint, child, down_cursor) != hello.down_fingerprint:
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
                        wall_ms=wall_ms(),
                        down_head=await asyncio.to_thread(self.down.down_head, child),
                    )
                )
            )
            if offset is not None and abs(offset) > CLOCK_WARN_MS:
                bound.warning("clock.off", child_clock_offset_s=round(offset / 1000), hint="the child's clock must be set right (NTP)")
            bound.info("link.up", epoch=hello.epoch, resume_from=applied, child_head=hello.head, down_from=down_cursor)

            async def send(batch: OutBatch) -> None:
                await stream.send(wire.Down(batch=batch_message(batch)))

            def fetch(seq: int, limit: int) -> OutBatch | None:
                return self.down.down_after(child, seq, limit)

            async def send_file(which: str, message: Any) -> None:
                await stream.send(wire.Down(**{which: message}))

            sender = WindowedSender(fetch, send, down_cursor, self._tuning, self._changes, self._down_head)
            files = FilePeer(self._file_watch, child, send_file, bound)
            await first_done(
                [
                    asyncio.create_task(sender.run()),
                    asyncio.create_task(self._receive(child, hello.epoch, stream, sender, bound, files)),
                    asyncio.create_task(self._watch_revocation(peer, bound)),
                    asyncio.create_task(files.run()),
                ]
            )
            bound.info("link.closed", reason="the child closed the stream")
        finally:
            self._children.release(child)
            if child not in self._children.live:
                await self._mark_disconnected(child, bound)

    async def _mark_disconnected(self, child: str, bound: Any) -> None:
        """Say the child is gone, even while the writer is busy (a batch still applying in its
        thread): a failed write here would leave `status` showing a dead link as up."""
        for attempt in range(DISCONNECT_TRIES):
            try:
                await asyncio.to_thread(self.down.set_child, child, connected=0, last_contact=time.time())
                return
            except LienthongError as exc:
                if attempt == DISCONNECT_TRIES - 1:
                    bound.error("link.state_unsaved", error=exc.message, hint=exc.hint)
                    return
            await asyncio.sleep(0.2 * (attempt + 1))

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
        while self._revocations.for_certificate(peer.serial, peer.certificate) is None:
            await asyncio.sleep(REVOCATION_CHECK)
        bound.error("link.cut", reason="certificate revoked", serial=peer.serial)
        details = {"reason": "certificate revoked while connected", "serial": peer.serial}
        await asyncio.to_thread(self._audit, "connection.refused", peer.node_id, details)
        raise HandshakeRefused(f"the certificate of {peer.node_id} was revoked", "the province must issue this node a new certificate")

    async def _receive(self, child: str, epoch: str, stream: Stream, sender: WindowedSender, bound: Any, files: FilePeer) -> None:
        """Apply the child's batches; all that have arrived are applied in one transaction."""
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
                        prepared: asyncio.Future[Any] = (
                            asyncio.ensure_future(self._worker.prepare(child, raws, time.time()))
                            if self._worker is not None
                            else loop.run_in_executor(self._verifying, self.down.prepare, child, raws)
                        )
                        outstanding.add(prepared)
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
        outstanding: set[asyncio.Future[Any]] = set()  # batches verified or being verified, not yet taken
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
                    elif which in FILE_MESSAGES:
                        files.handle(which, message)
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
                    outstanding.difference_update(preparing)
                    try:
                        results = await asyncio.to_thread(self.down.apply_batches, child, epoch, batches, verified)
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
            # Batches verified for a session that ended: not awaited, their failures not raised again.
            for pending in list(outstanding):
                pending.cancel()
            await asyncio.gather(*outstanding, return_exceptions=True)
            for _ in range(held[0]):
                self._admission.release()
