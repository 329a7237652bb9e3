"""The node process: lifecycle, server, uplink and graceful shutdown.

    NEW → STARTING → RUNNING → STOPPING → STOPPED

`lienthong run` builds a `Node` and runs it until SIGTERM or SIGINT, which take
the same graceful path (the node is PID 1 in its container): stop accepting,
let in-flight batches finish for a few seconds, mark links down, close the store.
A lock file in the node directory (held with flock while the node runs) tells
`status` whether the node is running and which port it bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fcntl
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog

from lienthong.adapters.inbox import InboxWatcher
from lienthong.adapters.intake import Inbox, Limits, take
from lienthong.adapters.registry import Registry, UnknownAdapter
from lienthong.config.settings import Settings
from lienthong.sync import approval, provenance, read_upkeep, transport
from lienthong.sync.blobs import BLOBS, Blobs
from lienthong.sync.child_session import Children, ChildSession
from lienthong.sync.clock import HybridClock
from lienthong.sync.errors import ConfigError, LienthongError, StoreError
from lienthong.sync.files import FileLimits, Files
from lienthong.sync.privacy import Redactor, hashing_key
from lienthong.sync.provenance import Signer
from lienthong.sync.replication import RENEW_CHECK, Changes, Issuer, Tuning
from lienthong.sync.revocation import Revocations
from lienthong.sync.sharing import share_record
from lienthong.sync.store import RESTORING, Store
from lienthong.sync.uplink import Uplink
from lienthong.sync.verify_worker import verifier_for
from lienthong.sync.wire import replication_pb2 as wire

from . import disk, read_worker, sink_task
from .intake import DROP_TO_COMMIT, StoreSink
from .permissions import secure
from .trust import ca as ca_ops
from .trust.audit import AuditLog
from .trust.audit_mirror import INTERVAL as MIRROR_INTERVAL
from .trust.audit_mirror import mirror as mirror_audit
from .trust.crl import add_home, crl_path
from .trust.enroll_server import serve_enrollment
from .trust.publish import CrlPublisher, RegistryPublisher
from .trust.refusals import RefusalTally
from .trust.refusals import write as write_refusals
from .trust.renewal import NodeRenewal, issue_renewal
from .trust.tls import CA_CERT, NodeTlsPaths

STORE_FILE = "lienthong.db"
LOCK_FILE = "node.lock"
INBOX = "inbox"
STOP_GRACE = 1.0
AUDIT_HELD_MAX = 10_000  # audit entries kept in memory while the disk is full (then only counted)

log = structlog.get_logger("lienthong.node")


class State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


def tls_paths(node_dir: Path, settings: Settings) -> NodeTlsPaths:
    return NodeTlsPaths(ca=node_dir / settings.tls.ca, cert=node_dir / settings.tls.cert, key=node_dir / settings.tls.key)


def open_store(node_dir: Path, settings: Settings, *, sign: bool = True) -> Store:
    """The node's store, ready to seal what it writes and verify what it receives.

    With `sign`, a node that has no certificate and signing key yet is refused with a
    hint (a record written unsealed could never be proven, and its parent would refuse
    it); read-only tools pass `sign=False`.
    """
    store = Store.open(node_dir / STORE_FILE)
    store.write_guard = approval.check_unlocked  # approved data changes only after an un-approval
    paths = tls_paths(node_dir, settings)
    try:
        if sign:
            store.signer = Signer.load(settings.node.id, provenance.signing_key_path(paths.key), paths.cert, paths.ca)
        if paths.ca.exists():
            store.verifier = verifier_for(store, paths.ca.read_bytes())
    except BaseException:
        store.close()
        raise
    return store


def node_files(node_dir: Path, settings: Settings, store: Store) -> Files:
    """The files named by the node's records, with the size limits of its configuration."""
    mb = 1024 * 1024
    limits = FileLimits(settings.files.max_file_mb * mb, settings.files.max_node_mb * mb)
    return Files(store, Blobs(node_dir / BLOBS), limits)


def tuning(settings: Settings) -> Tuning:
    r = settings.replication
    return Tuning(r.batch_size, r.window, r.poll_interval, r.backoff_initial, r.backoff_max)


@contextlib.contextmanager
def run_lock(node_dir: Path) -> Iterator[Path]:
    """Hold the node directory's run lock; refuses a second node on one directory."""
    path = node_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        info = running_info(node_dir) or {}
        raise LienthongError(
            f"a node is already running on {node_dir} (pid {info.get('pid', '?')})",
            "stop it first, or use `lienthong status` to see it",
        ) from None
    # A node killed with SIGKILL left its ports in the file: nobody may read them as this run's.
    os.ftruncate(fd, 0)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)


def _write_run_info(path: Path, text: str) -> None:
    """What `status` and the tests read to find this run's ports; a full disk is said in words."""
    try:
        path.write_text(text)
    except OSError as exc:
        raise StoreError(
            f"the node cannot write {path}: {exc.strerror}", f"free space on the disk that holds {path.parent} (df -h), then start it again"
        ) from None


def running_info(node_dir: Path) -> dict[str, Any] | None:
    """What the running node wrote into its lock file, or None if no node runs."""
    path = node_dir / LOCK_FILE
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = path.read_text() or "{}"
            try:
                info: dict[str, Any] = json.loads(text)
            except json.JSONDecodeError:
                info = {}
            return info
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def own_units(settings: Settings) -> list[str]:
    return list(settings.node.units) or [settings.node.id]


def inboxes(node_dir: Path, settings: Settings) -> dict[str, Inbox]:
    """The inboxes the configuration pins (others are found as folders of inbox/)."""
    out = {}
    for agency, section in settings.inbox.items():
        path = Path(section.path) if section.path else node_dir / INBOX / agency
        out[agency] = Inbox(
            agency, path if path.is_absolute() else node_dir / path, section.adapter, section.atomic, section.poll_seconds, section.sheet
        )
    return out


def start_intake(node_dir: Path, settings: Settings, store: Store, loop: asyncio.AbstractEventLoop, changes: Changes) -> InboxWatcher:
    """Watch the inbox folders; every file taken is committed, then the uplink is woken."""
    registry = Registry()
    for agency, inbox in inboxes(node_dir, settings).items():
        if inbox.adapter:
            try:
                registry.get(inbox.adapter)
            except UnknownAdapter as exc:
                raise ConfigError(f"inbox.{agency}.adapter: {exc}", "use a name from `lienthong adapters list`") from None
    sink = StoreSink(store, HybridClock(store.max_version()), node_dir, own_units(settings), settings.node.mode == "provincial")
    limits = Limits(max_file_bytes=settings.ingest.max_file_mb * 1024 * 1024)

    def handle(path: Path, inbox: Inbox) -> None:
        try:
            dropped = path.lstat().st_mtime  # when the agency system finished writing it
        except OSError:
            dropped = None
        take(path, inbox, registry, sink, settings.node.id, limits)
        if dropped is not None:  # taken or refused, its receipt is committed now
            DROP_TO_COMMIT.observe(max(time.time() - dropped, 0.0))
        loop.call_soon_threadsafe(changes.notify)

    watcher = InboxWatcher(
        node_dir / INBOX, inboxes(node_dir, settings), handle, settings.ingest.settle_seconds, settings.ingest.rescan_seconds
    )
    watcher.start()
    return watcher


async def _keep_revocations(
    revocations: Revocations, crl: CrlPublisher | None, registry: RegistryPublisher | None, changes: Changes, audit_log: AuditLog
) -> None:
    """Publish a changed CRL and node registry (province) and reload the revocation lists the store holds;
    each change of the list this node enforces is a security event in its audit log."""
    while True:
        before = revocations.serials
        if crl is not None and await asyncio.to_thread(crl.check):
            changes.notify()  # the new list goes down to the children at once
        if registry is not None and await asyncio.to_thread(registry.check):
            changes.notify()
        if await asyncio.to_thread(revocations.refresh):
            log.info("revocations.loaded", revoked=len(revocations))
            added, removed = sorted(revocations.serials - before), sorted(before - revocations.serials)
            details = {"revoked": len(revocations), "added": added[:100], "removed": removed[:100]}
            await asyncio.to_thread(audit_log.append, "revocations.loaded", "crl", details)
        await asyncio.sleep(0.5)


def _renewal_issuer(ca_dir: Path | None, revocations: Revocations, audit_log: AuditLog, uplinks: list[Uplink]) -> Issuer:
    """How this node answers a child's certificate renewal: issue it (the CA's home), or pass it
    up its own stream (a middle tier)."""

    async def issue(child: str, request: Any) -> Any:
        if ca_dir is not None:
            reply = await asyncio.to_thread(issue_renewal, ca_dir, child, request, ca_ops.passphrase_from_env(), revocations.revoked)
        elif uplinks:
            reply = await uplinks[0].renew(request)
        else:
            reply = wire.RenewReply(node_id=request.node_id, error="this node has no CA and no parent to renew through")
        action = "cert.renew" if reply.certificate else "cert.renew_refused"
        details = {"via": child, "issued_here": ca_dir is not None, **({"error": reply.error} if reply.error else {})}
        await asyncio.to_thread(audit_log.append, action, request.node_id, details)
        return reply

    return issue


async def _renew_own_certificate(renewal: NodeRenewal, ca_dir: Path, audit_log: AuditLog) -> None:
    """The CA's home renews its own certificate from its own CA, when due."""
    while True:
        if await asyncio.to_thread(renewal.due):
            request = await asyncio.to_thread(renewal.request)
            reply = await asyncio.to_thread(issue_renewal, ca_dir, renewal.node_id, request, ca_ops.passphrase_from_env())
            if reply.certificate:
                await asyncio.to_thread(renewal.install, reply.certificate)
                await asyncio.to_thread(audit_log.append, "cert.renew", renewal.node_id, {"via": "own CA"})
                log.info("certificate.renewed", node=renewal.node_id)
            else:
                log.warning("certificate.renewal_refused", error=reply.error)
        await asyncio.sleep(RENEW_CHECK)


async def _audit_refusals(tally: RefusalTally, audit_log: AuditLog) -> None:
    """Every window, the refused handshakes counted by `tally` go to the audit log: one entry per
    source and reason, written off the event loop."""
    while True:
        await asyncio.sleep(tally.window)
        entries = tally.take()
        if entries:
            await asyncio.to_thread(write_refusals, entries, audit_log.append)
            log.info("connection.refused_summary", entries=len(entries), refusals=sum(d["count"] for _, d in entries))


async def _send_audit_up(store: Store, audit_log: AuditLog, unit: str, changes: Changes) -> None:
    """Copy new audit entries into the store (sealed records that replicate up), every few seconds."""
    while True:
        try:
            if await asyncio.to_thread(mirror_audit, store, audit_log, unit):
                changes.notify()
        except LienthongError as exc:
            log.error("audit.mirror_failed", error=exc.message, hint=exc.hint)
        await asyncio.sleep(MIRROR_INTERVAL)


def write_standing_shares(store: Store, settings: Settings) -> int:
    """Write the province's standing shares ([sharing] shares) as share definitions; a rule
    unchanged since the last start is the same record, unchanged. Returns how many are new or changed."""
    from lienthong.adapters.periods import canonical

    if settings.node.mode != "provincial" or not settings.sharing.shares:
        return 0
    keyed = [
        share_record(store.node_id, r.what, canonical(r.period) if r.period else "", r.indicators, r.to, "lienthong.toml", "")
        for r in settings.sharing.shares
    ]
    summary = store.write_local(keyed, HybridClock(store.max_version()))
    return summary.imported + summary.updated


class Node:
    """One lienthong node, run in the foreground by `run()`."""

    async def _start_console(self, store: Store, audit_log: AuditLog, changes: Changes) -> Any:
        """Start the console, when `lienthong run` gave this node one (`console`, node/web/app.py's
        `start_for_node`: the shell's web package is wired in by the CLI, so runtime does not import it)."""
        if self.console is None or not self.settings.web.listen:
            return None
        return await self.console(self, store, audit_log, changes)

    def __init__(self, node_dir: Path, settings: Settings, console: Any = None) -> None:
        self.dir = node_dir
        self.console = console
        self.settings = settings
        self.state = State.NEW
        self.port = 0
        self.enroll_port = 0
        self.web_port = 0
        self._stop = asyncio.Event()
        self.log = log.bind(node=settings.node.id)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        self.state = State.STARTING
        settings = self.settings
        opened = await asyncio.to_thread(secure, self.dir)
        if opened:
            shown = [str(p.relative_to(self.dir)) if p != self.dir else "." for p in opened[:10]]
            self.log.warning("permissions.closed", count=len(opened), paths=shown, hint="they were readable by other users; now 0600/0700")
        with run_lock(self.dir) as lock_path:
            store = open_store(self.dir, settings)
            if store.node_id != settings.node.id:
                store.close()
                raise StoreError(
                    f"the store in {self.dir} belongs to node {store.node_id!r}, the config says {settings.node.id!r}",
                    "put node.id back, or create a new node directory",
                )
            store.mark_all_disconnected()
            if store.restoring():
                if settings.parent.address:
                    self.log.warning(
                        "node.restoring", hint="restored from a backup: it writes again once its parent has sent back its records"
                    )
                else:
                    store.delete_meta(RESTORING)  # a top node has no parent to take anything back from
            if written := write_standing_shares(store, settings):
                self.log.info("shares.written", shares=written)
            paths = tls_paths(self.dir, settings)
            tls = paths.load()
            audit_log = AuditLog.open(self.dir, actor=settings.node.id)
            audit_log.hold_when_full(AUDIT_HELD_MAX)  # a full disk must not stop the node or lose its audit trail
            renewal = NodeRenewal(settings.node.id, paths, store)
            ca_dir = self.dir / settings.tls.ca_dir if settings.tls.ca_dir else None
            uplinks: list[Uplink] = []
            changes = Changes()
            files = node_files(self.dir, settings, store)  # one per node: every stream fetches and gives through it
            tune = tuning(settings)
            server = health = None
            sessions: ChildSession | None = None
            crl_file: Path | None = None
            enroll_server = None
            intake = None
            web_runner = None
            children = Children()
            tally = RefusalTally()
            tasks: list[asyncio.Task[None]] = []
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
            try:
                if settings.server.listen:
                    revocations = Revocations(store)
                    revocations.refresh()
                    crl_file = crl_path(self.dir, settings.tls.crl, settings.tls.ca_dir)
                    home = crl_file.parent if crl_file is not None and (crl_file.parent / CA_CERT).exists() else None
                    crl = CrlPublisher(store, crl_file, tls.ca, home) if crl_file is not None else None
                    if home is not None:
                        add_home(home, self.dir)
                    registry = RegistryPublisher(store, self.dir / settings.tls.ca_dir) if settings.tls.ca_dir else None
                    # Publish once before accepting children: no child is judged on stale lists.
                    for publisher in (crl, registry):
                        if publisher is not None:
                            await asyncio.to_thread(publisher.check)
                    revocations.refresh()
                    tasks.append(asyncio.create_task(_keep_revocations(revocations, crl, registry, changes, audit_log), name="revocations"))
                    issuer = _renewal_issuer(ca_dir, revocations, audit_log, uplinks)
                    # A subordinate node's children may report about its own units (a health station
                    # about its commune); the province's own units are written by the province alone.
                    reported_to = own_units(settings) if settings.node.mode != "provincial" else []
                    sessions = ChildSession(store, tune, changes, children, revocations, audit_log.append, issuer, reported_to, files)
                    await sessions.start()

                    def refused(peer: str, kind: str, exc: LienthongError) -> None:
                        if isinstance(exc, StoreError):  # this node's own disk or store: the operator must act
                            self.log.error("store.write_failed", peer_address=peer, error=exc.message, hint=exc.hint)
                            return
                        if kind == "handshake":
                            # Anyone who reaches the port can cause these: counted here, audited
                            # once per source and reason per window (see trust/refusals.py).
                            if tally.add(peer, exc.message):
                                self.log.warning("link.refused", peer_address=peer, kind=kind, error=exc.message, hint=exc.hint)
                            return
                        self.log.warning("link.refused", peer_address=peer, kind=kind, error=exc.message, hint=exc.hint)
                        if kind == "refused":
                            audit_log.append("connection.refused", peer, {"error": exc.message, "stage": kind})

                    tasks.append(asyncio.create_task(_audit_refusals(tally, audit_log), name="refusals"))

                    server, self.port, health = await transport.serve(settings.server.listen, paths.load, sessions.serve, refused)
                # The read tables follow the records in the background, not in their commits.
                # In a process of their own: another core than the apply path (node/read_worker.py).
                tasks.append(asyncio.create_task(read_worker.keep_up(store.path, changes, self.log), name="read-tables"))
                intake = start_intake(self.dir, settings, store, loop, changes)
                tasks.append(
                    asyncio.create_task(disk.watch(store.path, settings.store.min_free_mb, self.log, audit_log.flush), name="disk")
                )
                if settings.server.enroll_listen:
                    if not settings.tls.ca_dir:
                        raise ConfigError(
                            "server.enroll_listen: enrollment needs tls.ca_dir (the CA that signs new nodes)",
                            "set tls.ca_dir, or empty server.enroll_listen",
                        )
                    enroll_server, self.enroll_port = await serve_enrollment(
                        settings.server.enroll_listen, tls, self.dir / settings.tls.ca_dir, self.dir, settings.node.id, audit=audit_log
                    )
                    self.log.info("enrollment.listening", listen=settings.server.enroll_listen, port=self.enroll_port)
                if settings.parent.address:
                    address, name = settings.parent.address, settings.parent.id

                    def connect() -> contextlib.AbstractAsyncContextManager[Any]:
                        return transport.connect(address, paths.load(), name)  # a renewed certificate from the next connection on

                    redact = None if settings.sharing.personal_data_upward else Redactor(hashing_key(tls.ca))
                    uplink = Uplink(store, connect, tune, changes, address, redact, audit_log.append, None if ca_dir else renewal, files)
                    uplinks.append(uplink)
                    tasks.append(asyncio.create_task(uplink.run(), name="uplink"))
                tasks.append(asyncio.create_task(_send_audit_up(store, audit_log, own_units(settings)[0], changes), name="audit"))
                if ca_dir is not None:
                    tasks.append(asyncio.create_task(_renew_own_certificate(renewal, ca_dir, audit_log), name="renewal"))
                if settings.sink.postgres.dsn:  # its own thread and store connection (node/sink_task.py)
                    tasks.append(asyncio.create_task(sink_task.run(self.dir, store.path, settings, self.log), name="sink"))
                web_runner = await self._start_console(store, audit_log, changes)
                _write_run_info(
                    lock_path,
                    json.dumps(
                        {
                            "pid": os.getpid(),
                            "port": self.port,
                            "listen": settings.server.listen,
                            "enroll_port": self.enroll_port,
                            "web_port": self.web_port,
                            "started": time.time(),
                            "crl": str(crl_file) if crl_file is not None else "",
                        }
                    ),
                )
                self.state = State.RUNNING
                self.log.info(
                    "node.running",
                    mode=settings.node.mode,
                    listen=settings.server.listen,
                    port=self.port,
                    enroll_port=self.enroll_port,
                    web_port=self.web_port,
                    parent=settings.parent.address,
                    pid=os.getpid(),
                )
                waiter = asyncio.create_task(self._stop.wait())
                await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
                for task in tasks:
                    if task.done() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
            except sqlite3.DatabaseError as exc:
                # A read anywhere met the store's files changed under it (or the disk failing): in words.
                raise store.explain(exc) from None
            finally:
                self.state = State.STOPPING
                self.log.info("node.stopping")
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                if intake is not None:
                    # The file being taken finishes its transaction; the rest wait for the next start.
                    await asyncio.to_thread(intake.stop)
                if server is not None:
                    # Child sessions are endless streams: end them (an applying batch
                    # finishes its transaction in its worker thread), then the server.
                    live = list(children.live.values())
                    for session in live:
                        session.cancel()
                    await asyncio.gather(*live, return_exceptions=True)
                    await transport.stop(server, health, STOP_GRACE)
                if sessions is not None:
                    await sessions.close()  # its verifying process
                if enroll_server is not None:
                    await enroll_server.stop(STOP_GRACE)
                # The last window's refused handshakes, counted since the last audit entry.
                await asyncio.to_thread(write_refusals, tally.take(), audit_log.append)
                if web_runner is not None:
                    await web_runner.cleanup()
                await read_upkeep.catch_up(store)  # what the last writes added: the tables stop in step
                store.mark_all_disconnected()
                store.close()
                audit_log.close()
                self.state = State.STOPPED
                self.log.info("node.stopped")
