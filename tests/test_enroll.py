"""Enrollment over real TLS gRPC on loopback: one-time tokens, the CA pin, refusals, guessing limits."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import sqlite3
import stat
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from lienthong.node.trust import ca, enroll_client, enroll_server, issue, ratelimit, tls, tokens
from lienthong.node.trust.audit import AuditLog
from lienthong.sync.privacy import PSEUDONYM_KEY_FILE, PseudonymKey
from lienthong.sync.wire import enrollment_pb2 as wire
from lienthong.sync.wire import enrollment_pb2_grpc as wire_grpc

FAST = ratelimit.RateLimit(failures=5, window=60.0, block=60.0, delay=0.0)
CHILD = "86-28894"


@dataclass
class Province:
    node_dir: Path
    ca_dir: Path
    port: int
    calls: list[wire.EnrollRequest]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def token(self, node_id: str = CHILD, ttl: int = 3600, **kwargs: object) -> str:
        return tokens.create_token(self.node_dir, node_id, ttl, self.address, ca.ca_fingerprint(self.ca_dir), province_id="86", **kwargs)

    def refusals(self) -> list[dict[str, object]]:
        with contextlib.closing(AuditLog.open(self.node_dir)) as log:
            return [e.details for e in log.entries() if e.action == "enroll" and e.details.get("outcome") == "refused"]

    def enroll_entries(self) -> list[dict[str, object]]:
        with contextlib.closing(AuditLog.open(self.node_dir)) as log:
            assert log.verify().ok
            return [e.details for e in log.entries() if e.action == "enroll"]


@contextlib.asynccontextmanager
async def province(
    tmp_path: Path, ca_dir: Path, monkeypatch: pytest.MonkeyPatch, limit: ratelimit.RateLimit = FAST
) -> AsyncIterator[Province]:
    """The province's enrollment listener (via `serve_enrollment`), recording every Enroll call it receives."""
    node_dir = tmp_path / "86"
    paths = tls.NodeTlsPaths(node_dir / "tls" / "ca.crt", node_dir / "tls" / "node.crt", node_dir / "tls" / "node.key")
    issue.issue_node(ca_dir, paths, "86", "provincial", [])
    calls: list[wire.EnrollRequest] = []
    original = enroll_server.EnrollmentServicer.Enroll

    async def recording(self: enroll_server.EnrollmentServicer, request: wire.EnrollRequest, context: grpc.aio.ServicerContext) -> object:
        calls.append(request)
        return await original(self, request, context)

    monkeypatch.setattr(enroll_server.EnrollmentServicer, "Enroll", recording)
    server, port = await enroll_server.serve_enrollment("127.0.0.1:0", paths.load(), ca_dir, node_dir, "86", limit=limit)
    try:
        yield Province(node_dir, ca_dir, port, calls)
    finally:
        await server.stop(0)


async def enroll_node(node_dir: Path, token: str, **kwargs: object) -> str:
    """What `lienthong enroll --dir DIR TOKEN` runs (blocking, so in a thread beside the server)."""
    return await asyncio.to_thread(
        enroll_client.enroll, node_dir, token, Path("tls/node.key"), Path("tls/node.crt"), Path("tls/ca.crt"), **kwargs
    )


async def refused(node_dir: Path, token: str, **kwargs: object) -> str:
    with pytest.raises(tokens.EnrollError) as info:
        await enroll_node(node_dir, token, **kwargs)
    assert info.value.hint
    return info.value.message


async def raw_enroll(prov: Province, token_id: str, secret: bytes, csr: bytes) -> grpc.StatusCode:
    """One Enroll call made by hand (as a guesser would), over TLS verified against the CA."""
    creds = grpc.ssl_channel_credentials(root_certificates=(prov.ca_dir / "ca.crt").read_bytes())
    async with grpc.aio.secure_channel(prov.address, creds, options=[("grpc.ssl_target_name_override", "86")]) as channel:
        try:
            await wire_grpc.EnrollmentStub(channel).Enroll(wire.EnrollRequest(token_id=token_id, secret=secret, csr=csr), timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def with_fields(token: str, **changes: object) -> str:
    body = json.loads(base64.urlsafe_b64decode(token[4:] + "=" * (-len(token[4:]) % 4)))
    body.update(changes)
    return "lt1." + base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()


def test_token_format_round_trips_and_store_keeps_no_secret(tmp_path: Path, ca_dir: Path) -> None:
    node_dir = tmp_path / "86"
    node_dir.mkdir()
    text = tokens.create_token(node_dir, CHILD, tokens.parse_ttl("24h"), "ioc.example.vn:7444", ca.ca_fingerprint(ca_dir), province_id="86")
    token = tokens.parse_token(text)
    assert text.startswith("lt1.") and token.node_id == CHILD and token.province_id == "86" and token.address == "ioc.example.vn:7444"
    assert token.fingerprint == ca.ca_fingerprint(ca_dir) and len(token.secret) == 32
    assert abs(token.expires - (time.time() + 86400)) < 5
    assert tokens.parse_token(text[:40] + "\n" + text[40:]) == token  # a wrapped token still reads
    [row] = tokens.list_tokens(node_dir)
    assert row["token_id"] == token.token_id and row["used_at"] is None
    stored = (node_dir / tokens.TOKENS_FILE).read_bytes()
    assert token.secret not in stored and base64.urlsafe_b64encode(token.secret).rstrip(b"=") not in stored
    assert stat.S_IMODE((node_dir / tokens.TOKENS_FILE).stat().st_mode) == 0o600
    for bad in ("", "lt2.abc", "lt1.!!!", "lt1." + base64.urlsafe_b64encode(b"[1]").decode(), with_fields(text, f="00" * 10)):
        with pytest.raises(tokens.EnrollError):
            tokens.parse_token(bad)
    for ttl in ("0", "31d", "soon"):
        with pytest.raises(tokens.EnrollError):
            tokens.parse_ttl(ttl)


def test_token_store_from_a_newer_lienthong_is_refused(tmp_path: Path, ca_dir: Path) -> None:
    """A token store at a schema version this lienthong does not know is an EnrollError with a hint."""
    node_dir = tmp_path / "86"
    node_dir.mkdir()
    tokens.create_token(node_dir, CHILD, 3600, "ioc.example.vn:7444", ca.ca_fingerprint(ca_dir), province_id="86")
    with contextlib.closing(sqlite3.connect(node_dir / tokens.TOKENS_FILE)) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(tokens.EnrollError, match="newer than this lienthong understands") as info:
        tokens.list_tokens(node_dir)
    assert "upgrade" in info.value.hint


def test_enroll_happy_path_key_never_leaves_the_node(tmp_path: Path, ca_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with province(tmp_path, ca_dir, monkeypatch) as prov:
            child = tmp_path / "child"
            assert await enroll_node(child, prov.token()) == "86"
            key = child / "tls" / "node.key"
            cert = x509.load_pem_x509_certificate((child / "tls" / "node.crt").read_bytes())
            ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
            assert (child / "tls" / "ca.crt").read_bytes() == (ca_dir / "ca.crt").read_bytes()
            cert.verify_directly_issued_by(ca_cert)
            assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CHILD
            assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "district"
            private = serialization.load_pem_private_key(key.read_bytes(), None)
            assert cert.public_key() == private.public_key()
            assert stat.S_IMODE(key.stat().st_mode) == 0o600
            assert stat.S_IMODE((child / "tls" / "node.crt").stat().st_mode) == 0o600  # nothing in a node dir is for others
            # What reached the province: one CSR for that key, never the key.
            [call] = prov.calls
            csr = x509.load_pem_x509_csr(call.csr)
            assert csr.public_key() == private.public_key() and csr.is_signature_valid
            assert b"PRIVATE KEY" not in call.SerializeToString()
            key_body = b"".join(key.read_bytes().splitlines()[1:-1])[48:]  # past the P-256 PKCS#8 header every such key shares
            scalar = private.private_numbers().private_value.to_bytes(32, "big")
            for directory in (prov.node_dir, ca_dir):
                for path in directory.rglob("*"):
                    if path.is_file():
                        data = path.read_bytes()
                        assert key_body not in data.replace(b"\n", b"") and scalar not in data, path
            # Recorded: the certificate in the CA registry, the token spent, the audit entry.
            issued = [r for r in ca.list_issued(ca_dir) if r["node_id"] == CHILD]
            assert len(issued) == 1 and issued[0]["parent"] == "86" and issued[0]["serial"] == format(cert.serial_number, "x")
            [row] = tokens.list_tokens(prov.node_dir)
            assert row["used_at"] and row["serial"] == issued[0]["serial"] and row["used_by"] == "127.0.0.1"
            [entry] = prov.enroll_entries()
            assert entry["outcome"] == "issued" and entry["serial"] == issued[0]["serial"]
            # The enrolled node's files load as a node's TLS files, ready for `run`.
            tls.NodeTlsPaths(child / "tls" / "ca.crt", child / "tls" / "node.crt", key).load()
            # The province-wide pseudonym secret came over the enrollment channel: kept 0600 by the unit,
            # equal to the CA's, and nowhere in the province node's own directory.
            secret = child / "tls" / PSEUDONYM_KEY_FILE
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600
            assert PseudonymKey.load(secret) == PseudonymKey.load(ca_dir / PSEUDONYM_KEY_FILE) is not None
            assert not list(prov.node_dir.rglob(PSEUDONYM_KEY_FILE))

    asyncio.run(main())


def test_reused_token_is_refused_and_audited(tmp_path: Path, ca_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with province(tmp_path, ca_dir, monkeypatch) as prov:
            token = prov.token()
            await enroll_node(tmp_path / "child", token)
            message = await refused(tmp_path / "again", token)
            assert "already used" in message
            assert not (tmp_path / "again" / "tls" / "node.crt").exists()
            assert [r["reason"] for r in prov.refusals()] == ["token already used"]
            assert len([r for r in ca.list_issued(ca_dir) if r["node_id"] == CHILD]) == 1

    asyncio.run(main())


def test_concurrent_use_of_one_token_enrolls_once(tmp_path: Path, ca_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with province(tmp_path, ca_dir, monkeypatch) as prov:
            token = prov.token()
            barrier = threading.Barrier(4)

            def attempt(i: int) -> str:
                barrier.wait()
                try:
                    return enroll_client.enroll(tmp_path / f"c{i}", token, Path("k"), Path("c"), Path("a"))
                except tokens.EnrollError as exc:
                    return exc.message

            results = await asyncio.gather(*(asyncio.to_thread(attempt, i) for i in range(4)))
            assert sorted(results)[0] == "86" and results.count("86") == 1, results
            assert len([r for r in ca.list_issued(ca_dir) if r["node_id"] == CHILD]) == 1
            assert len(prov.refusals()) == 3

    asyncio.run(main())


def test_expired_token_is_refused(tmp_path: Path, ca_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with province(tmp_path, ca_dir, monkeypatch) as prov:
            token = prov.token(ttl=3600, now=time.time() - 7200)
            assert "expired" in await refused(tmp_path / "child", token)
            assert [r["reason"] for r in prov.refusals()] == ["token expired"]
            assert tokens.list_tokens(prov.node_dir)[0]["used_at"] is None

    asyncio.run(main())


def test_revoked_token_is_refused(tmp_path: Path, ca_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A token withdrawn with `token revoke` enrolls nothing; the refusal is audited as such."""

    async def main() -> None:
        async with province(tmp_path, ca_dir, monkeypatch) as prov:
            token = prov.token()
            tokens.revoke_token(prov.node_dir, tokens.parse_token(token).token_id)
            assert "revoked" in await refused(tmp_path / "child", token)
            assert [r["reason"] for r in prov.refusals()] == ["token revoked"]
            assert [t["state"] for t in tokens.list_tokens(prov.node_dir)] == ["revoked"]

    asyncio.run(main())


def test_token_for_another_node_is_refused(tmp_path: Path, ca_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with province(tmp_path, ca_dir, monkeypatch) as prov:
            text = prov.token(CHILD)
            # The client refuses a token made for another node than the one configured…
            assert "enrolls node" in await refused(tmp_path / "other", text, expect_node_id="86-99999")
            assert prov.calls == []
            # …and the province refuses a CSR whose CN is not the token's node id.
            token = tokens.parse_token(text)
            csr = issue.make_csr(tmp_path / "other.key", "86-99999", [])
            assert await raw_enroll(prov, token.token_id, token.secret, csr) == grpc.StatusCode.PERMISSION_DENIED
            assert [r["reason"] for r in prov.refusals()] == ["CSR names '86-99999'"]
            assert not [r for r in ca.list_issued(ca_dir) if r["node_id"] == "86-99999"]
            # The token is not spent by the refusal: its own node still enrolls with it.
            assert await enroll_node(tmp_path / "child", text) == "86"

    asyncio.run(main())


def test_forged_tokens_are_refused(tmp_path: Path, ca_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with province(tmp_path, ca_dir, monkeypatch) as prov:
            good = prov.token()
            wrong_secret = with_fields(good, s=base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode())
            assert "not valid" in await refused(tmp_path / "a", wrong_secret)
            random_id = with_fields(good, i=secrets.token_hex(8))
            assert "not valid" in await refused(tmp_path / "b", random_id)
            assert [r["reason"] for r in prov.refusals()] == ["wrong secret", "unknown token id"]
            assert len(prov.calls) == 2

            # A tampered fingerprint: the client stops at the pin and sends nothing (no call, no key made).
            other = tmp_path / "other-ca"
            ca.init_ca(other, "Rogue CA")
            for forged in (with_fields(good, f=ca.ca_fingerprint(other)), with_fields(good, p="86-rogue")):
                message = await refused(tmp_path / "c", forged)
                assert "nothing was sent" in message
            assert len(prov.calls) == 2 and len(prov.refusals()) == 2
            assert not (tmp_path / "c" / "tls" / "node.key").exists()
            # Malformed tokens never reach the network.
            for bad in ("lt1.garbage", good[:-10], "hello"):
                await refused(tmp_path / "d", bad)
            assert len(prov.calls) == 2
            # The real token was never spent.
            assert await enroll_node(tmp_path / "child", good) == "86"

    asyncio.run(main())


def test_guessing_is_rate_limited(tmp_path: Path, ca_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    limit = ratelimit.RateLimit(failures=5, window=60.0, block=1.5, delay=0.05)

    async def main() -> None:
        async with province(tmp_path, ca_dir, monkeypatch, limit) as prov:
            good = prov.token()
            token = tokens.parse_token(good)
            csr = issue.make_csr(tmp_path / "guess.key", CHILD, [])
            codes = [await raw_enroll(prov, token.token_id, secrets.token_bytes(32), csr) for _ in range(6)]
            assert codes == [grpc.StatusCode.PERMISSION_DENIED] * 5 + [grpc.StatusCode.RESOURCE_EXHAUSTED]
            # Even the right token is refused while the address is blocked…
            assert await raw_enroll(prov, token.token_id, token.secret, csr) == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "too many failed" in await refused(tmp_path / "child", good)
            reasons = [r["reason"] for r in prov.refusals()]
            assert reasons == ["wrong secret"] * 5 + ["rate limited"]  # the block is audited once
            assert prov.refusals()[4]["blocked_for"] == 1.5
            assert tokens.list_tokens(prov.node_dir)[0]["used_at"] is None
            # …and accepted once the block has passed.
            await asyncio.sleep(1.6)
            assert await enroll_node(tmp_path / "child", good) == "86"

    asyncio.run(main())


def test_serve_enrollment_refuses_a_foreign_ca_dir(tmp_path: Path, ca_dir: Path) -> None:
    node_dir = tmp_path / "86"
    paths = tls.NodeTlsPaths(node_dir / "tls" / "ca.crt", node_dir / "tls" / "node.crt", node_dir / "tls" / "node.key")
    issue.issue_node(ca_dir, paths, "86", "provincial", [])
    other = tmp_path / "other-ca"
    ca.init_ca(other, "Another CA")

    async def main() -> None:
        with pytest.raises(tokens.EnrollError, match="not the CA this node trusts"):
            await enroll_server.serve_enrollment("127.0.0.1:0", paths.load(), other, node_dir, "86")

    asyncio.run(main())


def test_a_failed_enrollment_leaves_the_token_usable(tmp_path: Path, ca_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The province spent the token but the node could not write its certificate: the same command
    again (same key) gets the same certificate; a caller with another key is still refused."""

    async def main() -> None:
        async with province(tmp_path, ca_dir, monkeypatch) as prov:
            token = prov.token()
            child = tmp_path / "child"
            blocker = child / "tls" / "node.crt"
            blocker.mkdir(parents=True)
            (blocker / "in-the-way").write_text("x")  # the certificate cannot be written: a folder holds its name
            message = await refused(child, token)
            assert "cannot be written" in message
            [row] = tokens.list_tokens(prov.node_dir)
            assert row["used_at"]  # the province did spend it
            (blocker / "in-the-way").unlink()
            blocker.rmdir()
            assert await enroll_node(child, token) == "86"
            cert = x509.load_pem_x509_certificate((child / "tls" / "node.crt").read_bytes())
            assert format(cert.serial_number, "x") == row["serial"]  # the same certificate, sent again
            assert len([r for r in ca.list_issued(ca_dir) if r["node_id"] == CHILD]) == 1
            assert "already used" in await refused(tmp_path / "thief", token)  # another key: refused
            assert [e["outcome"] for e in prov.enroll_entries()] == ["issued", "sent again", "refused"]

    asyncio.run(main())
