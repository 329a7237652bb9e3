"""Replication over real mTLS gRPC on loopback, in one process: flow, refusals, identity."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from structlog.testing import capture_logs

from lienthong.node.trust import ca, issue, tls
from lienthong.sync import records, transport
from lienthong.sync.clock import LOGICAL_BITS, HybridClock, wall_ms
from lienthong.sync.downstream import Downstream
from lienthong.sync.replication import Changes, Children, ChildSession, Tuning, Uplink
from lienthong.sync.store import Store
from lienthong.sync.upstream import Upstream
from lienthong.sync.wire import replication_pb2 as wire
from lienthong.sync.wire import replication_pb2_grpc as wire_grpc

from .helpers import reissue

FAST = Tuning(batch_size=50, window=3, poll_interval=0.05, backoff_initial=0.05, backoff_max=0.2)


def node_tls(ca_dir: Path, base: Path, node_id: str, role: str = "district") -> transport.TlsFiles:
    paths = tls.NodeTlsPaths(base / node_id / "ca.crt", base / node_id / "node.crt", base / node_id / "node.key")
    issue.issue_node(ca_dir, paths, node_id, role, [])
    return paths.load()


def indicator(i: int, unit: str = "86-28894") -> dict[str, object]:
    return {"kind": "indicator", "indicator": f"I.{i}", "unit": unit, "period": "2026-10", "value": i}


def expired_tls(ca_dir: Path, base: Path, node_id: str) -> transport.TlsFiles:
    """A genuine certificate from the CA for `node_id` whose validity ended yesterday."""
    good = node_tls(ca_dir, base / "expired", node_id)
    cert = reissue(good.cert, ca_dir, -31, -1).public_bytes(serialization.Encoding.PEM)
    return transport.TlsFiles(ca=good.ca, cert=cert, key=good.key)


@dataclasses.dataclass
class _Revoked:
    """The revocation list a province holds, as its serials (what `Revocations` answers)."""

    serials: frozenset[str]

    def revoked(self, serial: str) -> bool:
        return serial in self.serials


@contextlib.asynccontextmanager
async def province_with_refusals(
    tmp_path: Path, ca_dir: Path, revoked: frozenset[str] = frozenset()
) -> AsyncIterator[tuple[Store, int, list[tuple[str, str]], int]]:
    store = Store.create(tmp_path / "86.db", "86")
    refused: list[tuple[str, str]] = []
    sessions = ChildSession(store, FAST, Changes(), Children(), _Revoked(revoked))
    server, port, health = await transport.serve(
        "127.0.0.1:0",
        node_tls(ca_dir, tmp_path, "86", "provincial"),
        sessions.serve,
        lambda peer, kind, exc: refused.append((kind, exc.message)),
    )
    try:
        yield store, port, refused, server.front.backend_port
    finally:
        await transport.stop(server, health, 0)
        store.close()


@contextlib.asynccontextmanager
async def province(tmp_path: Path, ca_dir: Path) -> AsyncIterator[tuple[Store, int]]:
    async with province_with_refusals(tmp_path, ca_dir) as (store, port, _, _):
        yield store, port


@contextlib.asynccontextmanager
async def uplink(store: Store, port: int, files: transport.TlsFiles, server_name: str = "") -> AsyncIterator[Uplink]:
    link = Uplink(store, lambda: transport.connect(f"127.0.0.1:{port}", files, server_name), FAST, Changes(), f"127.0.0.1:{port}")
    task = asyncio.create_task(link.run())
    try:
        yield link
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_records_flow_up_and_definitions_down(tmp_path: Path, ca_dir: Path) -> None:
    """A child's records reach the province exactly once; the province's definitions reach the child."""

    async def main() -> None:
        async with province(tmp_path, ca_dir) as (prov, port):
            child = Store.create(tmp_path / "c.db", "86-28894")
            clock = HybridClock()
            child.write_local([records.build("86-28894", indicator(i)) for i in range(500)], clock)
            prov.write_local(
                [records.build("86", {"kind": "definition", "type": "indicator", "code": "I.1", "fields": {"name": "Một"}})], HybridClock()
            )
            async with uplink(child, port, node_tls(ca_dir, tmp_path, "86-28894")):
                await until(lambda: prov.record_versions() >= child.record_versions() and child.counts()["definition"] == 1, what="sync")
                child.write_local([records.build("86-28894", indicator(i)) for i in range(500, 520)], clock)
                await until(lambda: {v for v in child.record_versions()} <= prov.record_versions(), what="live changes")
                await until(lambda: Upstream(child).pending() == 0, what="acks persisted")
            mine = {(i, v) for i, v in child.record_versions()} - {(i, v) for i, v in prov.record_versions() if False}
            assert {x for x in prov.record_versions()} == mine  # the province holds exactly the child's records + its definition
            child.close()

    asyncio.run(main())


def test_refused_record_is_quarantined_visible_at_child_and_does_not_block(tmp_path: Path, ca_dir: Path) -> None:
    """A record the parent refuses is acknowledged as rejected, kept in quarantine, shown at the child; later records still flow."""

    async def main() -> None:
        async with province(tmp_path, ca_dir) as (prov, port):
            child = Store.create(tmp_path / "c.db", "86-28894")
            skewed = HybridClock(wall=lambda: wall_ms() + 3 * 24 * 3600 * 1000)  # the commune server's clock is 3 days ahead
            child.write_local([records.build("86-28894", indicator(1))], skewed)
            good = HybridClock()
            async with uplink(child, port, node_tls(ca_dir, tmp_path, "86-28894")):
                await until(lambda: Upstream(child).refused_count() == 1, what="the refusal at the child")
                child.write_local([records.build("86-28894", indicator(i)) for i in range(2, 40)], good)
                await until(lambda: len(prov.record_versions()) == 38, what="later records")
            refused = Upstream(child).refused()[0]
            assert refused["code"] == "clock_skew" and "clock" in refused["reason"]
            assert [q["code"] for q in Downstream(prov).quarantine()] == ["clock_skew"]
            assert Downstream(prov).children()[0]["rejected"] == 1
            child.close()

    asyncio.run(main())


async def _attempt(port: int, credentials: grpc.ChannelCredentials | None, hello_id: str = "86-28894") -> grpc.StatusCode | None:
    """Open a replication stream with the given credentials and say hello; return the failure code."""
    target = f"127.0.0.1:{port}"
    channel = grpc.aio.secure_channel(target, credentials) if credentials else grpc.aio.insecure_channel(target)
    try:
        call = wire_grpc.ReplicationStub(channel).Sync()
        await call.write(wire.Up(hello=wire.Hello(protocol=1, epoch="e", node_id=hello_id)))
        reply = await asyncio.wait_for(call.read(), 10)
        return None if reply is not grpc.aio.EOF and reply.WhichOneof("msg") == "welcome" else grpc.StatusCode.UNKNOWN
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    finally:
        await channel.close()


REFUSAL_REASONS = {
    "plaintext": "not TLS (plaintext)",
    "no_client_certificate": "no client certificate",
    "other_ca": "certificate refused: unable to get local issuer certificate",
    "expired": "certificate refused: certificate has expired",
    "revoked": "is revoked",  # refused by the replication handler, which tells the node why
}


@pytest.mark.parametrize("case", ["plaintext", "no_client_certificate", "other_ca", "expired", "revoked", "wrong_identity"])
def test_mtls_refuses_unauthenticated_peers(tmp_path: Path, ca_dir: Path, case: str) -> None:
    """Plaintext, no client certificate, another CA's certificate, an expired or a revoked certificate and a
    mismatched identity are all refused, each reported with its reason (the node audits it); nothing is stored."""
    good = node_tls(ca_dir, tmp_path, "86-28894")
    revoked = frozenset({format(x509.load_pem_x509_certificate(good.cert).serial_number, "x")}) if case == "revoked" else frozenset()

    async def main() -> None:
        async with province_with_refusals(tmp_path, ca_dir, revoked) as (prov, port, refused, _):
            other_ca = tmp_path / "other-ca"
            ca.init_ca(other_ca, "Rogue CA")
            rogue = node_tls(other_ca, tmp_path / "rogue", "86-28894")
            with capture_logs() as logs:
                if case == "plaintext":
                    code = await _attempt(port, None)
                elif case == "no_client_certificate":
                    code = await _attempt(port, grpc.ssl_channel_credentials(root_certificates=good.ca))
                elif case in ("other_ca", "expired"):
                    bad = rogue if case == "other_ca" else expired_tls(ca_dir, tmp_path, "86-29077")
                    creds = grpc.ssl_channel_credentials(root_certificates=good.ca, private_key=bad.key, certificate_chain=bad.cert)
                    code = await _attempt(port, creds)
                elif case == "revoked":
                    creds = grpc.ssl_channel_credentials(root_certificates=good.ca, private_key=good.key, certificate_chain=good.cert)
                    code = await _attempt(port, creds)
                else:
                    creds = grpc.ssl_channel_credentials(root_certificates=good.ca, private_key=good.key, certificate_chain=good.cert)
                    code = await _attempt(port, creds, hello_id="86-29077")
            if case in ("wrong_identity", "revoked"):
                assert code == grpc.StatusCode.PERMISSION_DENIED
                assert [kind for kind, _ in refused] == ["refused"], refused
                refusal = [e for e in logs if e["event"] == "link.refused"]
                if case == "revoked":
                    assert REFUSAL_REASONS[case] in refused[0][1] and refusal[0]["reason"] == "certificate revoked"
                else:
                    assert refusal and refusal[0]["claimed"] == "86-29077" and refusal[0]["peer"] == "86-28894"
            else:
                assert code == grpc.StatusCode.UNAVAILABLE
                assert [kind for kind, _ in refused] == ["handshake"], refused
                assert REFUSAL_REASONS[case] in refused[0][1], refused
            assert Downstream(prov).children() == [] and prov.record_versions() == set()
            if case == "revoked":
                return
            # A well-behaved child still gets in afterwards.
            creds = grpc.ssl_channel_credentials(root_certificates=good.ca, private_key=good.key, certificate_chain=good.cert)
            assert await _attempt(port, creds) is None

    asyncio.run(main())


def test_a_connection_around_the_tls_front_is_refused(tmp_path: Path, ca_dir: Path) -> None:
    """The gRPC server behind the TLS front listens on loopback only; a local process that connects to
    it directly, without TLS, has no identity and is refused."""

    async def main() -> None:
        async with province_with_refusals(tmp_path, ca_dir) as (prov, port, refused, backend):
            assert backend != port
            code = await _attempt(backend, None)
            assert code == grpc.StatusCode.PERMISSION_DENIED
            assert refused and "without passing its TLS front" in refused[0][1]
            assert Downstream(prov).children() == []

    asyncio.run(main())


def test_child_refuses_a_parent_with_the_wrong_identity(tmp_path: Path, ca_dir: Path) -> None:
    """A child told its parent is 86 refuses a server whose certificate names another node, and logs why."""

    async def main() -> None:
        async with province(tmp_path, ca_dir) as (prov, port):
            child = Store.create(tmp_path / "c.db", "86-28894")
            child.write_local([records.build("86-28894", indicator(1))], HybridClock())
            with capture_logs() as logs:
                async with uplink(child, port, node_tls(ca_dir, tmp_path, "86-28894"), server_name="84"):
                    await until(lambda: any(e["event"] == "link.refused" for e in logs), what="the refusal log")
            refusal = next(e for e in logs if e["event"] == "link.refused")
            assert "certificate does not name the node" in refusal["error"] and "parent.id" in refusal["hint"]
            assert prov.record_versions() == set() and Upstream(child).pending() == 1
            child.close()

    asyncio.run(main())


def test_clock_skew_bound_matches_the_store() -> None:
    """The skew bound the store enforces is the clock's (a day), expressed in versions."""
    from lienthong.sync.clock import MAX_SKEW_MS, too_far_ahead

    now = wall_ms()
    assert not too_far_ahead((now + MAX_SKEW_MS - 1000) << LOGICAL_BITS)
    assert too_far_ahead((now + MAX_SKEW_MS + 60_000) << LOGICAL_BITS)


def definition(code: str, name: str) -> dict[str, object]:
    return {"kind": "definition", "type": "indicator", "code": code, "fields": {"name": name}}


def test_parent_restored_from_backup_resends_its_downward_queue(tmp_path: Path, ca_dir: Path) -> None:
    """A province restored from an older backup reuses queue numbers; the child notices and still gets every definition."""

    async def main() -> None:
        child = Store.create(tmp_path / "c.db", "86-28894")
        child_tls = node_tls(ca_dir, tmp_path, "86-28894")
        clock = HybridClock()
        async with province(tmp_path, ca_dir) as (prov, port):
            prov.write_local([records.build("86", definition(f"D.{i}", "cũ")) for i in range(2)], clock)
            async with uplink(child, port, child_tls):
                await until(lambda: child.counts()["definition"] == 2, what="the first definitions")
                prov.backup(tmp_path / "province-backup.db")
                prov.write_local([records.build("86", definition(f"D.{i}", "cũ")) for i in range(2, 5)], clock)
                await until(lambda: child.counts()["definition"] == 5, what="the later definitions")
        # The province's disk is lost; it is restored from the backup and writes new definitions.
        (tmp_path / "86.db").unlink()
        (tmp_path / "province-backup.db").rename(tmp_path / "86.db")
        restored = Store.open(tmp_path / "86.db")
        restored.write_local([records.build("86", definition(f"E.{i}", "mới")) for i in range(3)], clock)
        restored.close()
        async with restarted_province(tmp_path, ca_dir) as (prov, port), uplink(child, port, child_tls):
            await until(lambda: child.counts()["definition"] == 8, what="the definitions written after the restore")
        child.close()

    asyncio.run(main())


@contextlib.asynccontextmanager
async def restarted_province(tmp_path: Path, ca_dir: Path) -> AsyncIterator[tuple[Store, int]]:
    store = Store.open(tmp_path / "86.db")
    paths = tls.NodeTlsPaths(tmp_path / "86" / "ca.crt", tmp_path / "86" / "node.crt", tmp_path / "86" / "node.key")
    sessions = ChildSession(store, FAST, Changes(), Children())
    server, port, health = await transport.serve("127.0.0.1:0", paths.load(), sessions.serve, lambda *a: None)
    try:
        yield store, port
    finally:
        await transport.stop(server, health, 0)
        store.close()


def test_tombstone_replicates_and_hides_the_record(tmp_path: Path, ca_dir: Path) -> None:
    """Deleting is a new version (a tombstone) that replicates like any change; queries no longer show it."""

    async def main() -> None:
        async with province(tmp_path, ca_dir) as (prov, port):
            child = Store.create(tmp_path / "c.db", "86-28894")
            clock = HybridClock()
            child.write_local([records.build("86-28894", indicator(i)) for i in range(3)], clock)
            async with uplink(child, port, node_tls(ca_dir, tmp_path, "86-28894")):
                await until(lambda: prov.counts()["indicator"] == 3, what="the values")
                child.write_local([records.build("86-28894", {**indicator(1), "deleted": True})], clock)
                await until(lambda: prov.counts()["indicator"] == 2, what="the tombstone")
            assert prov.record_versions() == child.record_versions()
            assert len(list(prov.iter_records(records.INDICATOR, include_deleted=True))) == 3
            child.close()

    asyncio.run(main())
