"""Decoding and verifying what children send, in a process of its own.

A province applies a child's batch in two halves: admission (decode every envelope, check its
shape, recompute its id, verify its seal: `admission.prepare`) and the write (`Downstream.
apply_batches`). Both are Python and a node's threads share one interpreter lock, so a verifying
thread beside the writer did not run at once with it. Here admission runs in a worker process
that holds its own read connection to the store and its own `provenance.Verifier`, built as the
node builds its own (`verifier_for`): the writer gets the other core.

    python -m lienthong.sync.verify_worker STORE      (frames on stdin and stdout)

Each frame is a 4-byte big-endian length and a pickle. The node sends the CA's certificate
(PEM) first, then `(sender, raws, now)` per batch; the worker answers each batch, in order,
with `("ok", prepared)` (each envelope named by its place in the batch: `_indexed`) or
`("error", message, hint)`. It exits when its stdin closes: when the
node stops, and when the node dies, so it never outlives it. A worker that dies ends the
sessions waiting on it (their children reconnect) and the next batch starts a new one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import pickle
import struct
import sys
from pathlib import Path
from typing import IO, Any

import structlog

from . import admission
from .admission import Prepared
from .errors import LienthongError, ReplicationError
from .provenance import Verifier
from .revocation import Revocations, Revoked
from .store import Store

log = structlog.get_logger("lienthong.sync")

_LENGTH = struct.Struct(">I")
STOP_WAIT = 5.0  # seconds a stopping worker gets to exit once its stdin is closed


def verifier_for(store: Store, ca_pem: bytes) -> Verifier:
    """What a node verifies received records with: the CA, the seals in `store`, the revocation
    lists held in it (re-read when they change) and when each seal was witnessed."""
    revocations = Revocations(store)

    def revocation(serial: str, der: bytes) -> Revoked | None:
        revocations.refresh()  # cheap unless a revocation list changed; once per seal
        return revocations.for_certificate(serial, der)

    return Verifier(ca_pem, store.envelope, revocation, store.witnessed_at)


class VerifyWorker:
    """The node's end: `prepare` sends a batch to the worker and waits for its admission."""

    def __init__(self, store_path: Path, ca_pem: bytes) -> None:
        self._path = store_path
        self._ca_pem = ca_pem
        self._proc: asyncio.subprocess.Process | None = None
        self._answers: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one writer of frames at a time: answers come back in order
        self._closing = False

    async def start(self) -> None:
        """Start the worker now (it imports while the node starts), not with the first batch."""
        async with self._lock:
            await self._running()

    async def prepare(self, sender: str, raws: list[bytes], now: float) -> Prepared:
        async with self._lock:
            proc = await self._running()
            assert proc.stdin is not None
            answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._answers.append(answer)
            try:
                _send(proc.stdin, (sender, raws, now))
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the worker died: its reader fails every answer still owed
        reply = await answer
        if reply[0] == "error":
            raise ReplicationError(reply[1], reply[2])
        return _restored(reply[1], raws)

    async def _running(self) -> asyncio.subprocess.Process:
        # A worker is replaced only once its reader has failed every answer it owed: each worker has
        # its own queue of answers, so no reply is ever matched to another worker's request.
        if self._proc is not None and self._reader is not None and not self._reader.done():
            return self._proc
        self._answers = collections.deque()
        # A session of its own: Ctrl+C in a terminal stops the node, which then closes the pipe.
        self._closing = False
        self._proc = proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "lienthong.sync.verify_worker",
            str(self._path),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        _send(proc.stdin, self._ca_pem)
        self._reader = asyncio.create_task(self._read(proc, proc.stdout, self._answers))
        return proc

    async def _read(
        self, proc: asyncio.subprocess.Process, out: asyncio.StreamReader, answers: collections.deque[asyncio.Future[Any]]
    ) -> None:
        code: int | None = None
        try:
            while True:
                try:
                    (length,) = _LENGTH.unpack(await out.readexactly(_LENGTH.size))
                    reply = pickle.loads(await out.readexactly(length))
                except asyncio.IncompleteReadError:
                    break
                if answers:
                    answer = answers.popleft()
                    if not answer.done():
                        answer.set_result(reply)
            code = await proc.wait()
        finally:
            while answers:
                answer = answers.popleft()
                if not answer.done():
                    answer.set_exception(
                        ReplicationError(
                            f"the process verifying received records ended (exit code {code})", "the child reconnects by itself"
                        )
                    )
        if not self._closing:
            log.warning("verify.worker_exited", code=code, hint="started again with the next batch; the children reconnect")

    async def close(self) -> None:
        """Stop the worker (it exits when its stdin closes; killed if it does not)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        self._closing = True
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), STOP_WAIT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


# A prepared row holds its envelope's bytes last (admission.Row), a quarantine row too. The node
# holds them already: the worker answers with their place in the batch instead (half the bytes
# through the pipe, and no second copy of each envelope in the node while the batch waits).
def _indexed(prepared: Prepared, raws: list[bytes]) -> Prepared:
    place = {id(raw): i for i, raw in enumerate(raws)}
    rows, refusals, quarantined = prepared
    return (
        [(*r[:-1], place[id(r[-1])]) for r in rows],
        refusals,
        [(*q[:-1], place.get(id(q[-1]), q[-1])) for q in quarantined],  # b"" (too large, not kept) stays
    )


def _restored(prepared: Prepared, raws: list[bytes]) -> Prepared:
    rows, refusals, quarantined = prepared
    return (
        [(*r[:-1], raws[r[-1]]) for r in rows],
        refusals,
        [(*q[:-1], raws[q[-1]] if isinstance(q[-1], int) else q[-1]) for q in quarantined],
    )


def _send(stream: Any, value: object) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(data)) + data)


def _receive(stream: IO[bytes]) -> Any:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    data = stream.read(length)
    if len(data) < length:
        return None
    return pickle.loads(data)


def main(argv: list[str]) -> int:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    ca_pem = _receive(stdin)
    if ca_pem is None:
        return 0
    try:
        store = Store.open(Path(argv[0]))
    except LienthongError as exc:  # said by the node as the session's end; one line here, no traceback
        print(f"lienthong verify worker: {exc.message} ({exc.hint})", file=sys.stderr)
        return 1
    try:
        verifier = verifier_for(store, ca_pem)
        while (request := _receive(stdin)) is not None:
            sender, raws, now = request
            try:
                reply: tuple[Any, ...] = ("ok", _indexed(admission.prepare(sender, raws, now, verifier), raws))
            except LienthongError as exc:  # the store unreadable (a damaged file): the session ends in words
                reply = ("error", exc.message, exc.hint)
            _send(stdout, reply)
            stdout.flush()
    finally:
        with contextlib.suppress(LienthongError):
            store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
