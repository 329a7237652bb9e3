"""The two transports the replication engine runs on, behind one test harness.

`MemoryLink` wires a parent's handler to children in memory (sync/memory_transport.py);
`GrpcLink` serves it over real mTLS gRPC on 127.0.0.1 port 0, with a CA made in the test and a
cuttable TCP proxy in front. Scenarios written against `Link` run unchanged over both
(tests/test_replication_contract.py), the way litestream runs one suite over every replica client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

from lienthong.node.trust import issue, tls
from lienthong.sync import transport
from lienthong.sync.child_session import Children, ChildSession
from lienthong.sync.errors import LienthongError
from lienthong.sync.memory_transport import MemoryTransport
from lienthong.sync.replication import Changes, Tuning
from lienthong.sync.store import Store
from lienthong.sync.stream import Connect, Handler
from lienthong.sync.uplink import Uplink

from .helpers import WAIT_SCALE, TcpProxy

FAST = Tuning(batch_size=50, window=3, poll_interval=0.05, backoff_initial=0.05, backoff_max=0.2)
PARENT = "86"

Refused = list[tuple[str, str]]  # (kind, message) the parent's server reported


class Link(Protocol):
    """A parent's server on one transport, and how its children reach it."""

    name: str

    def serving(
        self, handler: Handler, on_refused: Callable[[str, str, LienthongError], None]
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Serve `handler` for every child stream while the context is open."""
        ...

    def connect(self, node_id: str) -> Connect:
        """How the child `node_id` opens its stream (its identity as its certificate gives it)."""
        ...

    def cut(self) -> None:
        """Drop every open stream at once, both ways, as a network fault would."""
        ...


class MemoryLink:
    name = "memory"

    def __init__(self) -> None:
        self._server: MemoryTransport | None = None

    @contextlib.asynccontextmanager
    async def serving(self, handler: Handler, on_refused: Callable[[str, str, LienthongError], None]) -> AsyncIterator[None]:
        self._server = MemoryTransport(handler, on_refused)
        try:
            yield
        finally:
            self._server.cut()

    def connect(self, node_id: str) -> Connect:
        assert self._server is not None, "serve first"
        server = self._server
        return lambda: server.connect(node_id)

    def cut(self) -> None:
        assert self._server is not None
        self._server.cut()


def node_tls(ca_dir: Path, base: Path, node_id: str, role: str = "district") -> transport.TlsFiles:
    """A certificate and key for `node_id`, issued by the test's CA."""
    paths = tls.NodeTlsPaths(base / node_id / "ca.crt", base / node_id / "node.crt", base / node_id / "node.key")
    issue.issue_node(ca_dir, paths, node_id, role, [])
    return paths.load()


class GrpcLink:
    name = "grpc"

    def __init__(self, tmp_path: Path, ca_dir: Path) -> None:
        self._base = tmp_path / "tls"
        self._ca_dir = ca_dir
        self._files: dict[str, transport.TlsFiles] = {}
        self._proxy: TcpProxy | None = None

    def _tls(self, node_id: str, role: str = "district") -> transport.TlsFiles:
        if node_id not in self._files:
            self._files[node_id] = node_tls(self._ca_dir, self._base / role, node_id, role)
        return self._files[node_id]

    @contextlib.asynccontextmanager
    async def serving(self, handler: Handler, on_refused: Callable[[str, str, LienthongError], None]) -> AsyncIterator[None]:
        server, port, health = await transport.serve("127.0.0.1:0", self._tls(PARENT, "provincial"), handler, on_refused)
        self._proxy = TcpProxy(port)
        try:
            yield
        finally:
            self._proxy.close()
            await transport.stop(server, health, 0)

    def connect(self, node_id: str) -> Connect:
        assert self._proxy is not None, "serve first"
        address, files = f"127.0.0.1:{self._proxy.port}", self._tls(node_id)
        return lambda: transport.connect(address, files)

    def cut(self) -> None:
        assert self._proxy is not None
        self._proxy.cut()


@contextlib.asynccontextmanager
async def parent(link: Link, store: Store, revocations: Any = None, files: Any = None) -> AsyncIterator[Refused]:
    """`store` serving its children over `link` (a `ChildSession` per stream); yields what it refused."""
    refused: Refused = []
    sessions = ChildSession(store, FAST, Changes(), Children(), revocations, files=files)
    try:
        async with link.serving(sessions.serve, lambda address, kind, exc: refused.append((kind, exc.message))):
            yield refused
    finally:
        await sessions.close()  # its verifying process, when the store verifies seals


@contextlib.asynccontextmanager
async def uplink(link: Link, store: Store, **options: Any) -> AsyncIterator[Uplink]:
    """`store`'s `Uplink` to the parent on `link`, running while the context is open."""
    up = Uplink(store, link.connect(store.node_id), FAST, Changes(), f"{link.name}:{PARENT}", **options)
    task = asyncio.create_task(up.run())
    try:
        yield up
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll `predicate` in the event loop until it is truthy; fail after `timeout` seconds (times `WAIT_SCALE`)."""
    timeout *= WAIT_SCALE
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := predicate()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
    return value
