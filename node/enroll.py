"""Enrollment: a new node gets its certificate from the province with a one-time token (DESIGN §5).

    province:  create_token(node_dir, node_id, ttl, address, fingerprint, province_id=…) -> "lt1.…"
    province:  serve_enrollment(listen, tls, ca_dir, node_dir, province_id)  (a TLS listener of its own)
    new node:  enroll(node_dir, token, key_path, cert_path, ca_path)        -> the parent's id

The new node makes its key itself (`ca.make_csr`) and sends only the CSR: the
private key never leaves it. It sends nothing at all before it has checked that
the server presents the provincial CA whose fingerprint the token carries.

Token format (what `lienthong token create` prints, one line, no spaces):

    lt1.<base64url, no padding, of a JSON object>

    a  the province's enrollment address, HOST:PORT (IPv6 as [::1]:PORT)
    f  SHA-256 of the provincial CA certificate's DER, 64 lowercase hex digits (the pin)
    i  the token id, 16 lowercase hex digits (public: it names the row on the province)
    s  the secret, 32 random bytes, base64url without padding (the province keeps only SHA-256 of it)
    n  the node id the token is bound to (the CSR's CN must be this)
    e  when the token expires, Unix seconds (the province's clock decides)
    p  the province's node id (its certificate's CN), or "" when not given

The token is not signed: changing `a` or `f` only makes the new node refuse the
server (the pin no longer matches); changing `i`, `s` or `n` only makes the
province refuse it. Whoever holds a token can enroll its node once, so it is
passed like a password, and it expires (24 h by default, 30 days at most).

Token store: `NODE_DIR/enroll.db` (SQLite) in the province's node directory, not a
table in the CA registry `issued.db`: the registry's schema and version belong to
`ca.py` (a table added behind its back would be invisible to its migrations, and a
version bump would lock older lienthong out of the registry), while tokens are
operational state of the enrollment service the running node serves, beside the
audit log that records their use. The file holds no secrets, only their hashes.

Refusals: an unknown token id and a wrong secret get the same answer (the secret is
compared in constant time); only a caller holding the right secret learns that the
token was used, expired or is for another node. Each refusal costs a fixed delay;
after `RateLimit.failures` refusals from one IP address within `window` seconds, that
address is refused (RESOURCE_EXHAUSTED) for `block` seconds, even with a right token.
Every issue and every refusal is recorded in the province's audit log as `enroll`;
attempts refused because the address is blocked are recorded once per block.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import socket
import sqlite3
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from lienthong.sync.errors import LienthongError, TrustError
from lienthong.sync.sqlite import transaction
from lienthong.sync.transport import TlsFiles
from lienthong.sync.wire import enrollment_pb2 as wire
from lienthong.sync.wire import enrollment_pb2_grpc as wire_grpc

from . import ca
from .audit import Action, AuditError, AuditLog

log = structlog.get_logger("lienthong.enroll")

TOKEN_PREFIX = "lt1."
TOKENS_FILE = "enroll.db"
SCHEMA_VERSION = 1
DEFAULT_TTL = 24 * 3600
MAX_TTL = 30 * 24 * 3600
CERT_DAYS = ca.DEFAULT_VALIDITY_DAYS
SECRET_BYTES = 32
MAX_CSR = 16 * 1024
CONNECT_TIMEOUT = 15.0
HINT_KEY = "lienthong-hint"
_TOKEN_ID = re.compile(r"[0-9a-f]{16}")
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
_BAD_TOKEN_HINT = (
    "copy the whole token (it starts with lt1.) again, or ask the province's operator for a new one (`lienthong token create`)"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    token_id    TEXT PRIMARY KEY,           -- 16 hex digits, public
    node_id     TEXT NOT NULL,              -- the only node id this token enrolls
    secret_hash TEXT NOT NULL,              -- SHA-256 (hex) of the 32-byte secret; the secret is never stored
    created     TEXT NOT NULL,              -- ISO 8601, UTC
    expires     TEXT NOT NULL,              -- ISO 8601, UTC
    used_at     TEXT,                       -- when it enrolled its node; NULL while unused
    used_by     TEXT NOT NULL DEFAULT '',   -- the IP address it was used from
    serial      TEXT NOT NULL DEFAULT ''    -- the certificate it was exchanged for (hex)
);
CREATE INDEX IF NOT EXISTS tokens_node ON tokens (node_id);
"""


class EnrollError(TrustError):
    """Enrollment failed or was refused; the message says why, the hint what to do."""


# ---------------------------------------------------------------- tokens


@dataclass(frozen=True)
class Token:
    """A parsed enrollment token (see the module doc for the wire format)."""

    address: str
    fingerprint: str
    token_id: str
    secret: bytes
    node_id: str
    expires: int
    province_id: str = ""

    def encode(self) -> str:
        body = {
            "a": self.address,
            "e": self.expires,
            "f": self.fingerprint,
            "i": self.token_id,
            "n": self.node_id,
            "p": self.province_id,
            "s": _b64(self.secret),
        }
        return TOKEN_PREFIX + _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_token(text: str) -> Token:
    """Read a token printed by `create_token`; EnrollError if it is malformed."""
    text = "".join(text.split())  # tolerate a token wrapped by a mail client or terminal
    if not text.startswith(TOKEN_PREFIX):
        raise EnrollError("this is not a lienthong enrollment token (it must start with lt1.)", _BAD_TOKEN_HINT)
    try:
        body = json.loads(_unb64(text[len(TOKEN_PREFIX) :]))
        if not isinstance(body, dict):
            raise ValueError("not an object")
        token = Token(
            address=_str(body["a"]),
            fingerprint=_str(body["f"]),
            token_id=_str(body["i"]),
            secret=_unb64(_str(body["s"])),
            node_id=_str(body["n"]),
            expires=body["e"],
            province_id=_str(body.get("p", "")),
        )
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise EnrollError("the enrollment token is damaged: it cannot be read", _BAD_TOKEN_HINT) from None
    problems = []
    if not _split_address(token.address):
        problems.append("its address is not HOST:PORT")
    if not _FINGERPRINT.fullmatch(token.fingerprint):
        problems.append("its CA fingerprint is not 64 hex digits")
    if not _TOKEN_ID.fullmatch(token.token_id):
        problems.append("its id is malformed")
    if len(token.secret) != SECRET_BYTES:
        problems.append("its secret has the wrong length")
    if not ca.NODE_ID.fullmatch(token.node_id):
        problems.append("its node id is not acceptable")
    if token.province_id and not ca.NODE_ID.fullmatch(token.province_id):
        problems.append("its province id is not acceptable")
    if isinstance(token.expires, bool) or not isinstance(token.expires, int):
        problems.append("its expiry is not a time")
    if problems:
        raise EnrollError(f"the enrollment token is damaged: {'; '.join(problems)}", _BAD_TOKEN_HINT)
    return token


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def _split_address(address: str) -> tuple[str, int] | None:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdecimal() or not 0 < int(port) < 65536:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
    elif not host or ":" in host or not ca.DNS_NAME.fullmatch(host):
        return None
    return host, int(port)


def parse_ttl(text: str) -> int:
    """'24h', '90m', '2d', '3600s' or '3600' as seconds; EnrollError if not acceptable."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text.lower())
    if not match:
        raise EnrollError(f"{text!r} is not a duration", "write it like 24h, 90m, 2d or 3600s")
    seconds = int(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
    _check_ttl(seconds)
    return seconds


def _check_ttl(seconds: int) -> None:
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 60 <= seconds <= MAX_TTL:
        raise EnrollError(f"a token must live between a minute and {MAX_TTL // 86400} days (got {seconds!r} s)", "the default is 24h")


@contextlib.contextmanager
def _tokens(node_dir: Path) -> Iterator[sqlite3.Connection]:
    """The token store, created (mode 0600) on first use."""
    node_dir = Path(node_dir)
    if not node_dir.is_dir():
        raise EnrollError(
            f"no node directory at {node_dir}", "create the province's node first with `lienthong init`, or give the right --dir"
        )
    path = node_dir / TOKENS_FILE
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise EnrollError(f"the token store {path} cannot be opened: {exc}", "check the node directory's permissions") from None
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=30000")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise EnrollError(f"the token store {path} was written by a newer lienthong", "use that version on this node")
        if version < SCHEMA_VERSION:
            conn.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        yield conn
    except sqlite3.Error as exc:
        raise EnrollError(f"the token store {path} cannot be used: {exc}", "check free disk space and the file's permissions") from None
    finally:
        conn.close()


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC).isoformat()


def _hash(secret: bytes) -> str:
    return hashlib.sha256(secret).hexdigest()


def create_token(
    node_dir: Path,
    node_id: str,
    ttl_seconds: int,
    address: str,
    ca_fingerprint: str,
    *,
    province_id: str = "",
    now: float | None = None,
) -> str:
    """Make a one-time token that enrolls `node_id` within `ttl_seconds`; returns its text.

    `node_dir` is the province's node directory (the token store is `enroll.db` there);
    `address` is where its enrollment listener is reached (HOST:PORT, as the new node
    sees it); `ca_fingerprint` is `ca.ca_fingerprint(CA_DIR)`; `province_id` is the
    province's node id, which the new node then requires of the server's certificate.
    """
    if not ca.NODE_ID.fullmatch(node_id):
        raise EnrollError(
            f"node id {node_id!r} is not acceptable", "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    if province_id and not ca.NODE_ID.fullmatch(province_id):
        raise EnrollError(f"province id {province_id!r} is not acceptable", "give the province node's id from its lienthong.toml")
    if node_id == province_id:
        raise EnrollError(f"node {node_id!r} is the province itself", "make tokens for the province's children")
    if not _split_address(address):
        raise EnrollError(
            f"{address!r} is not an address the new node can reach", "give HOST:PORT of the enrollment listener, e.g. ioc.example.vn:7444"
        )
    fingerprint = ca_fingerprint.strip().lower().replace(":", "")
    if not _FINGERPRINT.fullmatch(fingerprint):
        raise EnrollError(f"{ca_fingerprint!r} is not a SHA-256 fingerprint", "use ca.ca_fingerprint(CA_DIR)")
    _check_ttl(ttl_seconds)
    created = int(time.time() if now is None else now)
    expires = created + ttl_seconds
    secret = secrets.token_bytes(SECRET_BYTES)
    token_id = secrets.token_hex(8)
    with _tokens(node_dir) as conn, transaction(conn):
        conn.execute(
            "INSERT INTO tokens (token_id, node_id, secret_hash, created, expires) VALUES (?, ?, ?, ?, ?)",
            (token_id, node_id, _hash(secret), _iso(created), _iso(expires)),
        )
    return Token(address, fingerprint, token_id, secret, node_id, expires, province_id).encode()


def list_tokens(node_dir: Path) -> list[dict[str, Any]]:
    """Every token made on this node, oldest first (never a secret): token_id, node_id,
    created, expires, used_at (None while unused), used_by, serial."""
    with _tokens(node_dir) as conn:
        rows = conn.execute("SELECT token_id, node_id, created, expires, used_at, used_by, serial FROM tokens ORDER BY created, rowid")
        return [dict(r) for r in rows]


# ---------------------------------------------------------------- province: the service


@dataclass(frozen=True)
class RateLimit:
    """Guessing limits per peer IP address: after `failures` refusals within `window`
    seconds, refuse that address for `block` seconds; every refusal waits `delay` first."""

    failures: int = 5
    window: float = 60.0
    block: float = 60.0
    delay: float = 0.5


@dataclass
class _Peer:
    failures: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0
    block_audited: bool = False


class _Guard:
    """Failure counts per IP address, in memory (a restart forgets them)."""

    MAX_PEERS = 10_000

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._peers: dict[str, _Peer] = {}
        self._lock = threading.Lock()

    def blocked(self, ip: str) -> tuple[bool, bool]:
        """(blocked now, first refusal of this block: audit it)."""
        with self._lock:
            peer = self._peers.get(ip)
            if peer is None or peer.blocked_until <= self._clock():
                return False, False
            first = not peer.block_audited
            peer.block_audited = True
            return True, first

    def failed(self, ip: str) -> bool:
        """Count a refusal; True if it starts a block."""
        with self._lock:
            now = self._clock()
            if len(self._peers) >= self.MAX_PEERS and ip not in self._peers:
                self._prune(now)
            peer = self._peers.setdefault(ip, _Peer())
            peer.failures.append(now)
            while peer.failures and peer.failures[0] <= now - self.limit.window:
                peer.failures.popleft()
            if len(peer.failures) >= self.limit.failures:
                peer.failures.clear()
                peer.blocked_until = now + self.limit.block
                peer.block_audited = False
                return True
            return False

    def _prune(self, now: float) -> None:
        for ip in [
            ip for ip, p in self._peers.items() if p.blocked_until <= now and (not p.failures or p.failures[-1] <= now - self.limit.window)
        ]:
            del self._peers[ip]
        while len(self._peers) >= self.MAX_PEERS:  # still full: forget the oldest
            del self._peers[next(iter(self._peers))]


class _Refused(LienthongError):
    def __init__(self, message: str, hint: str, code: grpc.StatusCode, reason: str, subject: str = "") -> None:
        super().__init__(message, hint)
        self.code = code
        self.reason = reason  # for the audit log: precise, never shown to the caller
        self.subject = subject


def _peer_ip(peer: str) -> str:
    """'ipv4:127.0.0.1:5000' -> '127.0.0.1'; 'ipv6:[::1]:5000' -> '::1'."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rpartition("]")[0].lstrip("[") or rest
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    return peer


class EnrollmentServicer(wire_grpc.EnrollmentServicer):
    """Checks the token and signs the CSR; see the module doc for the rules."""

    def __init__(
        self,
        ca_dir: Path,
        node_dir: Path,
        province_id: str,
        *,
        passphrase: bytes | None = None,
        limit: RateLimit | None = None,
        audit: AuditLog | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ca_dir = Path(ca_dir)
        self.node_dir = Path(node_dir)
        self.province_id = province_id
        self.passphrase = passphrase
        self.guard = _Guard(limit or RateLimit(), monotonic)
        self._audit_log = audit
        self._clock = clock
        self._ca_pem = (self.ca_dir / ca.CA_CERT).read_bytes()

    # -- audit

    def _audit(self, subject: str, details: dict[str, Any]) -> None:
        if self._audit_log is not None:
            self._audit_log.append(Action.ENROLL, subject, details, actor=self.province_id)
            return
        with contextlib.closing(AuditLog.open(self.node_dir, actor=self.province_id)) as audit_log:
            audit_log.append(Action.ENROLL, subject, details)

    def _audit_refusal(self, subject: str, details: dict[str, Any]) -> None:
        try:
            self._audit(subject, {"outcome": "refused", **details})
        except AuditError as exc:  # the request is refused anyway; say so in the log
            log.error("enroll.audit_failed", error=exc.message, **details)

    # -- the RPC

    async def Enroll(self, request: wire.EnrollRequest, context: grpc.aio.ServicerContext) -> wire.EnrollReply:  # noqa: N802 (gRPC's name)
        ip = _peer_ip(context.peer())
        blocked, first = self.guard.blocked(ip)
        if blocked:
            if first:
                await asyncio.to_thread(
                    self._audit_refusal, request.token_id[:64], {"reason": "rate limited", "peer": ip, "token_id": request.token_id[:64]}
                )
            await self._abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "too many failed enrollment attempts came from this address; the province refuses it for a while",
                f"wait {int(self.guard.limit.block)} seconds, check the token, and try once",
            )
        try:
            return await asyncio.to_thread(self._enroll, request, ip)
        except _Refused as exc:
            started = self.guard.failed(ip)
            details = {"reason": exc.reason, "peer": ip, "token_id": request.token_id[:64]}
            if started:
                details["blocked_for"] = self.guard.limit.block
            await asyncio.to_thread(self._audit_refusal, exc.subject or request.token_id[:64], details)
            await asyncio.sleep(self.guard.limit.delay)
            await self._abort(context, exc.code, exc.message, exc.hint)
        except LienthongError as exc:  # the province's own trouble (CA key, audit log, disk): not the caller's fault
            log.error("enroll.failed", error=exc.message, hint=exc.hint, peer=ip)
            await self._abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                "the province cannot enroll nodes right now",
                "try again later, or tell the province's operator",
            )
        raise AssertionError("unreachable")  # abort raises

    @staticmethod
    async def _abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str, hint: str) -> None:
        context.set_trailing_metadata(((HINT_KEY, hint),))
        await context.abort(code, message)

    def _enroll(self, request: wire.EnrollRequest, ip: str) -> wire.EnrollReply:
        denied = grpc.StatusCode.PERMISSION_DENIED
        invalid = _Refused(
            "the enrollment token is not valid", "copy the whole token again, or ask the province's operator for a new one", denied, ""
        )
        if len(request.csr) > MAX_CSR:
            raise _Refused(
                "the certificate request is too large", "make it with `lienthong enroll`", grpc.StatusCode.INVALID_ARGUMENT, "oversized CSR"
            )
        now = self._clock()
        with _tokens(self.node_dir) as conn, transaction(conn):  # BEGIN IMMEDIATE: one enrollment at a time, so a token is used once
            row = (
                conn.execute("SELECT * FROM tokens WHERE token_id = ?", (request.token_id,)).fetchone()
                if _TOKEN_ID.fullmatch(request.token_id)
                else None
            )
            # Compare even when the id is unknown, so the answer takes the same time.
            matches = hmac.compare_digest(_hash(bytes(request.secret)), row["secret_hash"] if row else "0" * 64)
            if row is None:
                invalid.reason = "unknown token id"
                raise invalid
            node_id = row["node_id"]
            if not matches:
                invalid.reason, invalid.subject = "wrong secret", node_id
                raise invalid
            if row["used_at"]:
                raise _Refused(
                    f"this enrollment token was already used, at {row['used_at']}",
                    "each token enrolls one node once: ask the province's operator for a new token",
                    denied,
                    "token already used",
                    node_id,
                )
            if now >= dt.datetime.fromisoformat(row["expires"]).timestamp():
                raise _Refused(
                    f"this enrollment token expired at {row['expires']}",
                    "ask the province's operator for a new token (and check this machine's clock)",
                    denied,
                    "token expired",
                    node_id,
                )
            try:
                csr = x509.load_pem_x509_csr(request.csr)
                cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
                csr_id = str(cns[0].value) if len(cns) == 1 else ""
            except ValueError:
                raise _Refused(
                    "the certificate request is not a PEM CSR",
                    "enroll with `lienthong enroll`, which makes it",
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "malformed CSR",
                    node_id,
                ) from None
            if csr_id != node_id:
                raise _Refused(
                    f"the certificate request is for node {csr_id!r}, but this token enrolls node {node_id!r}",
                    f"enroll with node id {node_id!r}, or ask for a token for this node",
                    denied,
                    f"CSR names {csr_id[:64]!r}",
                    node_id,
                )
            ca.load_ca(self.ca_dir, self.passphrase)  # the CA's own trouble (key, passphrase) is not the caller's: raised as is
            try:
                cert_pem = ca.issue_from_csr(self.ca_dir, request.csr, "district", self.province_id, CERT_DAYS, self.passphrase)
            except TrustError as exc:
                if "registry" in exc.message or "has expired" in exc.message:
                    raise
                raise _Refused(exc.message, exc.hint, grpc.StatusCode.INVALID_ARGUMENT, f"CSR refused: {exc.message}", node_id) from None
            cert = x509.load_pem_x509_certificate(cert_pem)
            serial = format(cert.serial_number, "x")
            conn.execute(
                "UPDATE tokens SET used_at = ?, used_by = ?, serial = ? WHERE token_id = ?", (_iso(now), ip, serial, row["token_id"])
            )
            try:
                # Audited before the token is spent; if the log cannot be written, nothing is handed out.
                self._audit(
                    node_id,
                    {
                        "outcome": "issued",
                        "peer": ip,
                        "token_id": row["token_id"],
                        "serial": serial,
                        "role": "district",
                        "parent": self.province_id,
                        "not_after": cert.not_valid_after_utc.isoformat(),
                    },
                )
            except AuditError:
                with contextlib.suppress(LienthongError):
                    ca.revoke(self.ca_dir, serial, "enrollment not audited")
                raise
        log.info("enroll.issued", node=node_id, serial=serial, peer=ip)
        return wire.EnrollReply(certificate=cert_pem, ca_certificate=self._ca_pem, parent_id=self.province_id)


SERVER_OPTIONS = [("grpc.max_receive_message_length", 64 * 1024), ("grpc.max_send_message_length", 64 * 1024)]


async def start_server(listen: str, tls: TlsFiles, servicer: EnrollmentServicer) -> tuple[grpc.aio.Server, int]:
    """Start the enrollment listener with `servicer`; returns the server and its bound port.

    Server authentication only: the caller has no certificate yet. The chain sent is the
    node's certificate followed by the CA certificate, so the caller can pin the CA.
    """
    server = grpc.aio.server(options=SERVER_OPTIONS)
    wire_grpc.add_EnrollmentServicer_to_server(servicer, server)
    chain = tls.cert.rstrip(b"\n") + b"\n" + tls.ca
    credentials = grpc.ssl_server_credentials([(tls.key, chain)], root_certificates=None, require_client_auth=False)
    try:
        port = server.add_secure_port(listen, credentials)
    except RuntimeError:
        port = 0
    if port == 0:
        raise EnrollError(f"cannot listen for enrollments on {listen}", "choose a free port or stop the program that holds it")
    await server.start()
    return server, port


async def serve_enrollment(
    listen: str,
    tls: TlsFiles,
    ca_dir: Path,
    node_dir: Path,
    province_id: str,
    *,
    passphrase: bytes | None = None,
    limit: RateLimit | None = None,
    audit: AuditLog | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Start the province's enrollment listener (a port of its own, apart from replication).

    `tls` is the province node's own TLS files; `ca_dir` holds the CA key, which must be
    readable (with `passphrase`, default `LIENTHONG_CA_PASSPHRASE`): checked now, so a
    missing key fails at start rather than at the first enrollment. `audit`: the node's
    open audit log, if it has one (otherwise one is opened per event in `node_dir`).
    Stop it with `await server.stop(grace)`.
    """
    if passphrase is None:
        passphrase = ca.passphrase_from_env()
    ca.load_ca(ca_dir, passphrase)
    if ca.ca_fingerprint(ca_dir) != x509.load_pem_x509_certificate(tls.ca).fingerprint(hashes.SHA256()).hex():
        raise EnrollError(f"the CA in {ca_dir} is not the CA this node trusts", "give the CA directory that issued this node's certificate")
    servicer = EnrollmentServicer(ca_dir, node_dir, province_id, passphrase=passphrase, limit=limit, audit=audit)
    return await start_server(listen, tls, servicer)


# ---------------------------------------------------------------- new node: the client


def fetch_pinned_ca(address: str, fingerprint: str, province_id: str = "", timeout: float = CONNECT_TIMEOUT) -> tuple[bytes, str]:
    """Read the certificate chain the server at `address` presents, WITHOUT trusting it,
    and keep it only if it holds the CA with this SHA-256 fingerprint and a provincial
    node certificate issued by that CA (named `province_id`, when given).

    Returns (CA certificate PEM, the server's node id). Nothing is sent but a TLS
    handshake. Python 3.11/3.12 expose the unverified chain only on the private
    `SSLSocket._sslobj`; 3.13 made it public.
    """
    split = _split_address(address)
    if split is None:
        raise EnrollError(f"{address!r} is not HOST:PORT", _BAD_TOKEN_HINT)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # on purpose: the pin below is the check
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection(split, timeout=timeout) as raw, context.wrap_socket(raw) as conn:
            if hasattr(conn, "get_unverified_chain"):  # Python 3.13+
                ders = [bytes(c) for c in conn.get_unverified_chain()]
            else:
                ders = [c.public_bytes(ssl._ssl.ENCODING_DER) for c in conn._sslobj.get_unverified_chain() or []]  # type: ignore[attr-defined,union-attr]
    except (OSError, ssl.SSLError) as exc:
        raise EnrollError(
            f"cannot reach the province's enrollment service at {address}: {exc}",
            "check the network and that the address in the token is reachable from here",
        ) from None
    pinned = [der for der in ders if hmac.compare_digest(hashlib.sha256(der).hexdigest(), fingerprint)]
    if not pinned or not ders:
        raise EnrollError(
            f"the server at {address} does not present the provincial CA the token pins ({fingerprint[:16]}…); nothing was sent",
            "the token was altered or the address is wrong, or the connection is intercepted: ask the province's operator for a new token",
        )
    ca_cert = x509.load_der_x509_certificate(pinned[0])
    try:
        leaf = x509.load_der_x509_certificate(ders[0])
        leaf.verify_directly_issued_by(ca_cert)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise EnrollError(
            f"the server at {address} presents a certificate the pinned CA did not issue ({type(exc).__name__}); nothing was sent",
            "the connection may be intercepted: tell the province's operator",
        ) from None
    names = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    units = leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    server_id = str(names[0].value) if len(names) == 1 else ""
    role = str(units[0].value) if len(units) == 1 else ""
    if role != "provincial" or not server_id or (province_id and server_id != province_id):
        raise EnrollError(
            f"the server at {address} is node {server_id!r} ({role or 'no role'}), not the provincial node {province_id or ''} the token names; nothing was sent",
            "check the address in the token with the province's operator",
        )
    return ca_cert.public_bytes(serialization.Encoding.PEM), server_id


def _write_public(path: Path, data: bytes) -> None:
    """A certificate: mode 0644, written to a temporary file and renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o644)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _rpc_error(exc: grpc.RpcError, address: str) -> EnrollError:
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else "") or ""
    hint = ""
    for key, value in (exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None) or ():
        if key == HINT_KEY:
            hint = value if isinstance(value, str) else value.decode()
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT):
        return EnrollError(f"the province refused the enrollment: {details}", hint or "ask the province's operator for a new token")
    if code == grpc.StatusCode.UNAVAILABLE and hint:
        return EnrollError(f"the province could not enroll this node: {details}", hint)
    return EnrollError(
        f"the enrollment call to {address} failed ({code.name if code else 'error'}): {details}",
        "check the network and try again; the token is still good unless the province says otherwise",
    )


def enroll(
    node_dir: Path,
    token: str,
    key_path: Path,
    cert_path: Path,
    ca_path: Path,
    *,
    hosts: list[str] | None = None,
    expect_node_id: str = "",
    timeout: float = CONNECT_TIMEOUT,
) -> str:
    """Enroll this node with the province named in `token`; returns the province's node id.

    Makes (or reuses) the key at `key_path` (mode 0600, never sent), pins the CA by the
    token's fingerprint before sending anything, sends the CSR and the token, checks the
    certificate it gets back and writes it to `cert_path` and the CA to `ca_path` (0644).
    Relative paths are taken inside `node_dir`. `hosts`: extra DNS names / IP addresses
    for the certificate (besides the node id, localhost, 127.0.0.1 and ::1).
    `expect_node_id`: refuse a token made for another node id (the configured one).
    Blocking: call it from a thread when an event loop runs.
    """
    node_dir = Path(node_dir)
    key_path, cert_path, ca_path = (p if Path(p).is_absolute() else node_dir / p for p in (key_path, cert_path, ca_path))
    parsed = parse_token(token)
    if expect_node_id and parsed.node_id != expect_node_id:
        raise EnrollError(
            f"this token enrolls node {parsed.node_id!r}, but this node is {expect_node_id!r}",
            "use the token made for this node, or ask the province's operator for one",
        )
    ca_pem, server_id = fetch_pinned_ca(parsed.address, parsed.fingerprint, parsed.province_id, timeout)
    csr_pem = ca.make_csr(key_path, parsed.node_id, ["localhost", "127.0.0.1", "::1", *(hosts or [])])
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    options = [("grpc.ssl_target_name_override", server_id), ("grpc.max_receive_message_length", 64 * 1024)]
    with grpc.secure_channel(parsed.address, credentials, options=options) as channel:
        try:
            reply = wire_grpc.EnrollmentStub(channel).Enroll(
                wire.EnrollRequest(token_id=parsed.token_id, secret=parsed.secret, csr=csr_pem), timeout=timeout
            )
        except grpc.RpcError as exc:
            raise _rpc_error(exc, parsed.address) from None
    _check_reply(reply, parsed, csr_pem, server_id)
    _write_public(ca_path, reply.ca_certificate)
    _write_public(cert_path, reply.certificate)
    return reply.parent_id


def _check_reply(reply: wire.EnrollReply, token: Token, csr_pem: bytes, server_id: str) -> None:
    hint = "tell the province's operator; the token may have been spent, so ask for a new one"
    try:
        ca_cert = x509.load_pem_x509_certificate(reply.ca_certificate)
        cert = x509.load_pem_x509_certificate(reply.certificate)
    except ValueError:
        raise EnrollError("the province's reply holds no readable certificate", hint) from None
    if ca_cert.fingerprint(hashes.SHA256()).hex() != token.fingerprint:
        raise EnrollError("the province replied with another CA than the token pins", hint)
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (InvalidSignature, ValueError, TypeError):
        raise EnrollError("the certificate the province sent was not issued by the pinned CA", hint) from None
    csr = x509.load_pem_x509_csr(csr_pem)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if cert.public_key() != csr.public_key() or len(cns) != 1 or cns[0].value != token.node_id:
        raise EnrollError(f"the certificate the province sent is not for this node's key and id {token.node_id!r}", hint)
    if reply.parent_id != server_id:
        raise EnrollError(f"the province says it is {reply.parent_id!r} but its certificate names {server_id!r}", hint)


__all__ = [
    "CERT_DAYS",
    "DEFAULT_TTL",
    "TOKENS_FILE",
    "EnrollError",
    "EnrollmentServicer",
    "RateLimit",
    "Token",
    "create_token",
    "enroll",
    "fetch_pinned_ca",
    "list_tokens",
    "parse_token",
    "parse_ttl",
    "serve_enrollment",
    "start_server",
]
