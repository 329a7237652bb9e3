"""Files on a replication stream: the node fetches, chunk by chunk, the files its peer's records
name and it lacks, and gives the peer the chunks it asks for (see docs/files.md).

Both ends of a stream (the child's `Uplink`, the parent's `ChildSession`) run one `FilePeer`.
Flow control: the fetcher asks for one chunk (`FileWant`) and asks for the next only once it
has written the answer (`FileChunk`), so at most one chunk is in flight each way on a stream
and a batch of records never waits behind more than one chunk. Memory is a chunk per stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from .blobs import BLOBS, CHUNK, Blobs, valid
from .errors import LienthongError, ProtocolError, StoreError
from .files import Files, Want
from .replication import first_done
from .wire import replication_pb2 as wire

# How long an idle fetcher waits before looking for work again (it wakes at once when records
# arrive or the peer says a file is ready); how long it waits for a chunk before asking again.
FILE_POLL = 2.0
CHUNK_TIMEOUT = 30.0
# Asks from the peer waiting to be answered, at most (a peer keeps one in flight).
ASKS = 8
MISSING, REFUSED = "missing", "refused"

Send = Callable[[str, Any], Awaitable[None]]  # ("file_want" | "file_chunk" | "file_ready", message)


class FileWatch:
    """What the file fetchers of all of a node's streams share: one scan of the change log per
    store change (or FILE_POLL), not one per stream, and a signal that wakes the fetchers when a
    file may have become theirs to fetch. A province with 1,000 children idle on files would
    otherwise wake 1,000 fetchers at every batch any child sent, each asking the store twice."""

    def __init__(self, files: Files, changes: Any, log: Any) -> None:
        self.files = files
        self._changes = changes
        self._log = log
        self._wants = asyncio.Event()
        self._peers = 0
        self._scanner: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def joined(self) -> AsyncIterator[None]:
        """While a stream's file peer runs: the scanner runs while any does."""
        self._peers += 1
        if self._scanner is None or self._scanner.done():
            self._scanner = asyncio.create_task(self._scan())
        try:
            yield
        finally:
            self._peers -= 1
            if self._peers == 0 and self._scanner is not None:
                self._scanner.cancel()
                await asyncio.gather(self._scanner, return_exceptions=True)
                self._scanner = None

    async def _scan(self) -> None:
        poked = -1
        try:
            while True:
                generation = self._changes.generation
                try:
                    for refusal in await asyncio.to_thread(self.files.scan):
                        self._log.warning("file.refused", **refusal, hint="raise the limit in [files] if the file is wanted here")
                except LienthongError as exc:  # the store busy, the disk full: scanned again at the next change or poll
                    self._log.warning("file.scan_failed", error=exc.message, hint=exc.hint)
                if poked != self.files.wants_changes:  # also what another thread noted (`Files.may_give` scans)
                    poked = self.files.wants_changes
                    self.poke()
                if generation == self._changes.generation:
                    await self._changes.wait(FILE_POLL)
        finally:
            self.poke()  # ended by an error: the idle fetchers wake to end their streams with it

    def poke(self) -> None:
        """Wake the idle fetchers: the ones whose `Files.wants_version` moved ask the store again."""
        self._wants.set()
        self._wants = asyncio.Event()

    async def idle(self, source: str, seen: int, soonest: float | None) -> None:
        """Wait until `source`'s wants moved past `seen`, or its soonest retry is due."""
        while self.files.wants_version(source) == seen:
            scanner = self._scanner
            if scanner is not None and scanner.done() and not scanner.cancelled() and (error := scanner.exception()) is not None:
                raise error
            left = None if soonest is None else soonest - time.time()
            if left is not None and left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._wants.wait()


class FilePeer:
    """The files of one stream. `peer` is '^' on the child's side (the parent), the child's id on the parent's."""

    def __init__(self, watch: FileWatch, peer: str, send: Send, log: Any) -> None:
        self.watch = watch
        self.files = watch.files
        self.peer = peer
        self._send = send
        self.log = log
        self._replies: asyncio.Queue[Any] = asyncio.Queue()
        self._asks: asyncio.Queue[Any] = asyncio.Queue(ASKS)
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._owed: set[str] = set()  # files the peer asked for that this node did not hold yet
        self._allowed: set[str] = set()
        self._telling: set[asyncio.Task[None]] = set()

    def handle(self, which: str, message: Any) -> None:
        """Take a file message the stream's reader received (never blocks the reader)."""
        if which == "file_chunk":
            self._replies.put_nowait(message.file_chunk)
        elif which == "file_ready":
            self._ready.put_nowait(message.file_ready.sha256)
        elif which == "file_want":
            try:
                self._asks.put_nowait(message.file_want)
            except asyncio.QueueFull:
                raise ProtocolError(f"the peer asked for more than {ASKS} file chunks at once", "it reconnects by itself") from None

    async def run(self) -> None:
        self.files.arrived.add(self._on_arrived)
        try:
            async with self.watch.joined():
                await first_done(
                    [asyncio.create_task(self._fetch()), asyncio.create_task(self._give()), asyncio.create_task(self._readied())]
                )
        finally:
            self.files.arrived.discard(self._on_arrived)
            for task in self._telling:
                task.cancel()

    # ------------------------------------------------------------ fetching what this node lacks

    async def _fetch(self) -> None:
        await asyncio.to_thread(self.files.retry_now, self.peer)  # a new session: ask again for everything now
        while True:
            seen = self.files.wants_version(self.peer)  # read before asking: a want noted meanwhile moves it
            want, soonest = await asyncio.to_thread(self.files.due, self.peer)
            if want is None:
                await self.watch.idle(self.peer, seen, soonest)
                continue
            try:
                await self._fetch_chunk(want)
            except (StoreError, OSError) as exc:  # this node's disk (full, unwritable): the records go on; the file waits
                error = exc.message if isinstance(exc, StoreError) else f"a file arriving cannot be written: {exc}"
                self.log.error("file.write_failed", sha256=want.sha256, error=error, hint="check the disk and the node's blobs/ folder")
                with contextlib.suppress(LienthongError):
                    await asyncio.to_thread(self.files.later, want.sha256, error, 60.0)
                # Not at once again even when the store could not note the pause.
                await self.watch.idle(self.peer, self.files.wants_version(self.peer), time.time() + FILE_POLL)

    async def _fetch_chunk(self, want: Want) -> None:
        blobs = self.files.blobs
        if await asyncio.to_thread(blobs.has, want.sha256):  # it arrived by another stream, or before a crash noted it
            await asyncio.to_thread(self.files.done, want.sha256)
            return
        offset = await asyncio.to_thread(blobs.received, want.sha256)
        if offset < want.size:
            await self._send("file_want", wire.FileWant(sha256=want.sha256, offset=offset, length=CHUNK))
            reply = await self._reply(want.sha256, offset)
            if reply is None:
                return  # no answer in time: ask again
            if reply.error:
                if reply.error == MISSING:
                    await asyncio.to_thread(self.files.later, want.sha256, f"the sender does not hold {want.name} yet")
                else:
                    reason = f"the sender refused to give {want.name}: {reply.error}"
                    self.log.warning("file.refused_by_peer", sha256=want.sha256, reason=reply.error)
                    await asyncio.to_thread(self.files.later, want.sha256, reason, 60.0)
                return
            if reply.size != want.size or offset + len(reply.data) > want.size or not reply.data:
                await asyncio.to_thread(blobs.discard, want.sha256)
                reason = f"the sender holds {reply.size} bytes of {want.name}, the sealed record says {want.size}"
                self.log.warning("file.size_mismatch", sha256=want.sha256, reason=reason)
                await asyncio.to_thread(self.files.later, want.sha256, reason, 60.0)
                return
            offset = await asyncio.to_thread(blobs.append, want.sha256, offset, reply.data)
        if offset >= want.size:
            if await asyncio.to_thread(blobs.finish, want.sha256):
                await asyncio.to_thread(self.files.done, want.sha256)
                self.log.info("file.received", sha256=want.sha256, name=want.name, size=want.size, origin=want.origin)
                for listener in list(self.files.arrived):
                    listener(want.sha256)
            else:
                reason = f"{want.name} as received does not match the SHA-256 its record was sealed with: fetched again"
                self.log.warning("file.mismatch", sha256=want.sha256, name=want.name, origin=want.origin)
                await asyncio.to_thread(self.files.later, want.sha256, reason)

    async def _reply(self, sha256: str, offset: int) -> Any | None:
        """The answer to the chunk just asked for (late answers to earlier asks are dropped)."""
        deadline = time.monotonic() + CHUNK_TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            try:
                async with asyncio.timeout(left):
                    reply = await self._replies.get()
            except TimeoutError:
                return None
            if reply.sha256 == sha256 and reply.offset == offset:
                return reply
        return None

    async def _readied(self) -> None:
        """The peer now holds a file it lacked when asked: ask again at once."""
        while True:
            sha256 = await self._ready.get()
            if valid(sha256):
                await asyncio.to_thread(self.files.retry_now, None, sha256)
                self.watch.poke()

    # ------------------------------------------------------------ giving what the peer asks for

    async def _give(self) -> None:
        while True:
            ask = await self._asks.get()
            chunk = wire.FileChunk(sha256=ask.sha256, offset=ask.offset)
            if ask.sha256 not in self._allowed and not await asyncio.to_thread(self.files.may_give, ask.sha256, self.peer):
                chunk.error = REFUSED
                self.log.warning("file.ask_refused", sha256=ask.sha256[:80], reason="no record the peer may hold names it")
            elif not await asyncio.to_thread(self.files.blobs.has, ask.sha256):
                self._allowed.add(ask.sha256)
                self._owed.add(ask.sha256)
                chunk.error = MISSING
            else:
                self._allowed.add(ask.sha256)
                try:
                    chunk.data, chunk.size = await asyncio.to_thread(self.files.blobs.read, ask.sha256, ask.offset, ask.length or CHUNK)
                except OSError:
                    chunk.error = MISSING
            await self._send("file_chunk", chunk)

    def _on_arrived(self, sha256: str) -> None:
        if sha256 in self._owed:
            self._owed.discard(sha256)
            task = asyncio.get_running_loop().create_task(self._tell_ready(sha256))
            self._telling.add(task)
            task.add_done_callback(self._telling.discard)

    async def _tell_ready(self, sha256: str) -> None:
        with contextlib.suppress(LienthongError):
            await self._send("file_ready", wire.FileReady(sha256=sha256))


FILE_MESSAGES = frozenset({"file_want", "file_chunk", "file_ready"})


def node_files(store: Any, files: Files | None) -> Files:
    """`files`, or the files of the node directory that holds `store` (its `blobs/` folder) with the default limits."""
    return files if files is not None else Files(store, Blobs(store.path.parent / BLOBS))
