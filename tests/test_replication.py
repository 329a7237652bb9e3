"""Replication in one process: mTLS refusals and identities over real gRPC on loopback; engine
behaviour that does not involve TLS over the in-memory transport (the flows both transports must
carry alike are in test_replication_contract.py)."""

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

from lienthong.node.trust import ca
from lienthong.sync import records, transport
from lienthong.sync.child_session import Children, ChildSession
from lienthong.sync.clock import LOGICAL_BITS, HybridClock, wall_ms
from lienthong.sync.downstream import Downstream
from lienthong.sync.replication import PROTOCOL, Changes
from lienthong.sync.revocation import Revoked
from lienthong.sync.store import Store
from lienthong.sync.uplink import Uplink
from lienthong.sync.upstream import Upstream
from lienthong.sync.wire import replication_pb2 as wire
from lienthong.sync.wire import replication_pb2_grpc as wire_grpc

from .helpers import reissue
from .transports import FAST, MemoryLink, node_tls, parent, until
from .transports import uplink as memory_uplink


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

    def for_certificate(self, serial: str, der: bytes) -> Revoked | None:
        return Revoked(serial, "key_compromise", 0.0, 0.0) if serial in self.serials else None


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


async def _attempt(port: int, credentials: grpc.ChannelCredentials | None, hello_id: str = "86-28894") -> grpc.StatusCode | None:
    """Open a replication stream with the given credentials and say hello; return the failure code."""
    target = f"127.0.0.1:{port}"
    channel = grpc.aio.secure_channel(target, credentials) if credentials else grpc.aio.insecure_channel(target)
    try:
        call = wire_grpc.ReplicationStub(channel).Sync()
        await call.write(wire.Up(hello=wire.Hello(protocol=PROTOCOL, epoch="e", node_id=hello_id)))
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


def test_parent_restored_from_backup_resends_its_downward_queue(tmp_path: Path) -> None:
    """A province restored from an older backup reuses queue numbers; the child notices and still gets every definition."""

    async def main() -> None:
        child = Store.create(tmp_path / "c.db", "86-28894")
        clock = HybridClock()
        prov = Store.create(tmp_path / "86.db", "86")
        link = MemoryLink()
        async with parent(link, prov):
            prov.write_local([records.build("86", definition(f"D.{i}", "cũ")) for i in range(2)], clock)
            async with memory_uplink(link, child):
                await until(lambda: child.counts()["definition"] == 2, what="the first definitions")
                prov.backup(tmp_path / "province-backup.db")
                prov.write_local([records.build("86", definition(f"D.{i}", "cũ")) for i in range(2, 5)], clock)
                await until(lambda: child.counts()["definition"] == 5, what="the later definitions")
        prov.close()
        # The province's disk is lost; it is restored from the backup and writes new definitions.
        restored = Store.open(tmp_path / "province-backup.db")
        restored.write_local([records.build("86", definition(f"E.{i}", "mới")) for i in range(3)], clock)
        link = MemoryLink()
        async with parent(link, restored), memory_uplink(link, child):
            await until(lambda: child.counts()["definition"] == 8, what="the definitions written after the restore")
        restored.close()
        child.close()

    asyncio.run(main())


def test_tombstone_replicates_and_hides_the_record(tmp_path: Path) -> None:
    """Deleting is a new version (a tombstone) that replicates like any change; queries no longer show it."""

    async def main() -> None:
        prov = Store.create(tmp_path / "86.db", "86")
        link = MemoryLink()
        async with parent(link, prov):
            child = Store.create(tmp_path / "c.db", "86-28894")
            clock = HybridClock()
            child.write_local([records.build("86-28894", indicator(i)) for i in range(3)], clock)
            async with memory_uplink(link, child):
                await until(lambda: prov.counts()["indicator"] == 3, what="the values")
                child.write_local([records.build("86-28894", {**indicator(1), "deleted": True})], clock)
                await until(lambda: prov.counts()["indicator"] == 2, what="the tombstone")
            assert prov.record_versions() == child.record_versions()
            assert len(list(prov.iter_records(records.INDICATOR, include_deleted=True))) == 3
            child.close()
        prov.close()

    asyncio.run(main())
