"""The child's end of replication: one stream to the parent, kept open with backoff; the
child's change log goes up on it and the parent's downward queue comes down (see
`replication` for the protocol and its guarantees)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from typing import Any

from .batch import OutBatch, Refusal
from .clock import HybridClock, wall_ms
from .errors import EpochChanged, HandshakeRefused, ProtocolError, ReplicationError, StoreError
from .file_transfer import FILE_MESSAGES, FilePeer, FileWatch, node_files
from .files import Files
from .replication import (
    CLOCK_WARN_MS,
    PROTOCOL,
    RENEW_CHECK,
    RENEW_RETRY,
    RENEW_TIMEOUT,
    RETRY_CHECK,
    RETRY_REFUSED,
    Changes,
    Renewal,
    Tuning,
    WindowedSender,
    batch_message,
    clock_offset,
    first_done,
    log,
)
from .store import VIA_PARENT, Store
from .stream import Connect, Stream
from .upstream import Upstream
from .wire import replication_pb2 as wire


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
        files: Files | None = None,
    ) -> None:
        self.store = store
        # Files named by what the parent sends down are fetched from it; it fetches ours (file_transfer.py).
        self.files = node_files(store, files)
        self._file_peer: FilePeer | None = None
        self.up = Upstream(store)
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
                await asyncio.to_thread(self.up.set_refusal, exc.message)
            except ReplicationError as exc:
                self.log.warning("link.down", error=exc.message)
            except StoreError as exc:
                # This node's own disk or store (full, say): said in words, and the link tried again
                # with backoff; nothing unwritten was acknowledged, so it is sent again.
                self.log.error("store.write_failed", error=exc.message, hint=exc.hint)
            except Exception:
                # A bug, not a link failure: say so loudly, but keep the node syncing.
                self.log.exception("link.failed")
            finally:
                if self.connected:
                    self.connected = False
                    # In contact until now: health counts the parent's silence from here. A full disk
                    # must not end the uplink (and the node with it): the flag is set again next session.
                    try:
                        await asyncio.to_thread(self.up.set_uplink, connected=0, last_contact=time.time())
                    except StoreError as exc:
                        self.log.error("link.state_unsaved", error=exc.message, hint=exc.hint)
            if time.monotonic() - started > 10:
                delay = self._tuning.backoff_initial  # it was up for a while: start the backoff over
            # Full jitter keeps 170 children from reconnecting in step after an outage.
            await asyncio.sleep(random.uniform(0, delay) if delay else 0)
            delay = min(max(delay * 2, self._tuning.backoff_initial), self._tuning.backoff_max)

    def _fetch_up(self, seq: int, limit: int) -> OutBatch | None:
        """The next batch up, with citizens' personal data replaced when the sharing policy says so."""
        batch = self.up.changes_after(seq, limit)
        if batch is None or self.redact is None or not batch.feedback:
            return batch
        personal = set(batch.feedback)
        envelopes = [self.redact(raw) if raw in personal else raw for raw in batch.envelopes]
        return OutBatch(batch.after, batch.last, envelopes, batch.fingerprint)

    async def _session(self, stream: Stream) -> None:
        store = self.store
        down_epoch, down_applied, down_fingerprint = self.up.down_cursor()
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
                    wall_ms=wall_ms(),
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
        await asyncio.to_thread(self.up.restoring_until, welcome.down_head)
        known_parent = self.up.uplink_state()["parent_id"]
        if known_parent and welcome.parent_id != known_parent:
            raise HandshakeRefused(
                f"the node at {self.address} is {welcome.parent_id!r}, but this node's parent is {known_parent!r}",
                "use `lienthong reparent` to move this node to a new parent",
            )
        if (welcome.down_epoch, welcome.down_from) != (down_epoch, down_applied):
            # The parent restarts its downward queue (its epoch changed, or it was restored).
            await asyncio.to_thread(self.up.set_uplink, down_epoch=welcome.down_epoch, down_applied=welcome.down_from, down_fingerprint=b"")
        offset = clock_offset(welcome.wall_ms)
        if offset is not None and abs(offset) > CLOCK_WARN_MS:
            self.log.warning("clock.off", parent_clock_offset_s=round(offset / 1000), hint="set this machine's clock right (NTP)")
        await asyncio.to_thread(
            self.up.set_uplink,
            clock_offset_ms=offset,
            parent_id=welcome.parent_id,
            address=self.address,
            connected=1,
            acked=welcome.applied,
            last_contact=time.time(),
        )
        self.connected = True
        if self.up.refusal() is not None:
            await asyncio.to_thread(self.up.set_refusal, None)
        self.log = self.log.bind(peer=welcome.parent_id)
        self.log.info("link.up", resume_from=welcome.applied, head=store.head(), down_applied=down_applied)
        window = welcome.window or self._tuning.window
        tuning = Tuning(**{**self._tuning.__dict__, "window": min(window, self._tuning.window)})

        async def send(batch: OutBatch) -> None:
            await stream.send(wire.Up(batch=batch_message(batch)))

        async def send_file(which: str, message: Any) -> None:
            await stream.send(wire.Up(**{which: message}))

        sender = WindowedSender(self._fetch_up, send, welcome.applied, tuning, self._changes)
        self._file_peer = FilePeer(FileWatch(self.files, self._changes, self.log), VIA_PARENT, send_file, self.log)
        tasks = [asyncio.create_task(sender.run()), asyncio.create_task(self._receive(stream, sender, welcome.down_epoch))]
        tasks.append(asyncio.create_task(self._file_peer.run()))
        tasks.append(asyncio.create_task(self._retry_refused()))
        if self._renewal is not None:
            tasks.append(asyncio.create_task(self._keep_certificate()))
        self._stream = stream
        self._linked.set()
        try:
            await first_done(tasks)
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

    async def _retry_refused(self) -> None:
        """Send again what the parent refused for a reason this node may have corrected since
        (its clock, its certificate, a unit not yet defined): when the session starts, when the
        definitions changed (the province defined the unit), and every RETRY_REFUSED seconds."""
        marker, last = None, -RETRY_REFUSED
        while True:
            now_marker = await asyncio.to_thread(self.store.definition_marker)
            if now_marker != marker or time.monotonic() - last >= RETRY_REFUSED:
                marker, last = now_marker, time.monotonic()
                queued = await asyncio.to_thread(self.up.retry_refused, HybridClock(self.store.latest_version()))
                if queued:
                    self.log.info("refused.retried", records=queued)
                    self._changes.notify()
            await asyncio.sleep(RETRY_CHECK)

    async def _keep_certificate(self) -> None:
        """Renew this node's certificate over the stream when most of its life is over."""
        assert self._renewal is not None
        while True:
            wait = RENEW_CHECK
            if await asyncio.to_thread(self._renewal.due):
                request = await asyncio.to_thread(self._renewal.request)
                reply = await self.renew(request)
                if reply.certificate:
                    await asyncio.to_thread(self._renewal.install, reply.certificate, reply.pseudonym_secret)
                    self.log.info("certificate.renewed")
                    await asyncio.to_thread(self._audit, "cert.renewed", self.store.node_id, {"by": "parent"})
                else:
                    self.log.warning("certificate.renewal_refused", error=reply.error)
                    wait = RENEW_RETRY
            await asyncio.sleep(wait)

    async def _receive(self, stream: Stream, sender: WindowedSender, parent_epoch: str) -> None:
        pending_acked = pending_records = flushed_sent = 0
        pending_refusals: list[Refusal] = []
        last_flush = time.monotonic()

        async def flush() -> None:
            nonlocal pending_records, pending_refusals, last_flush, flushed_sent
            sent = sender.sent_records - flushed_sent
            await asyncio.to_thread(self.up.record_acks, pending_acked, pending_records, sent, pending_refusals)
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
                        self.up.apply_from_parent, parent_epoch, batch.after, batch.last, list(batch.records), batch.last_fingerprint
                    )
                    await stream.send(wire.Up(down_ack=wire.DownAck(last=batch.last)))
                    self._changes.notify()
                    for r in refusals:
                        details = {"id": r.id.hex(), "version": r.version, "code": r.code, "reason": r.reason, "from": "parent"}
                        self.log.warning("record.refused", **details)
                        await asyncio.to_thread(self._audit, "record.refused", "parent", details)
                    self.log.info("batch.received", last=batch.last, records=n, refused=len(refusals))
                elif which in FILE_MESSAGES and self._file_peer is not None:
                    self._file_peer.handle(which, message)
                else:
                    raise ProtocolError(f"unexpected message {which!r} from the parent", "it reconnects by itself")
        finally:
            if pending_acked or sender.sent_records > flushed_sent:
                await flush()


# ====================================================================== parent side
