"""Enrollment, the province's half: a listener of its own that exchanges a one-time
token (`tokens.py`) for a certificate signed by the CA (DESIGN §5).

    province:  serve_enrollment(listen, tls, ca_dir, node_dir, province_id)  (a TLS listener of its own)

The new node's half is `enroll_client.py`. The listener authenticates the server
only (the caller has no certificate yet) and sends the CA certificate in its chain,
so the caller can check it against the fingerprint its token pins before sending.

Refusals: an unknown token id and a wrong secret get the same answer (the secret is
compared in constant time); only a caller holding the right secret learns that the
token was used, expired or is for another node. Each refusal costs a fixed delay;
after `RateLimit.failures` refusals from one IP address within `window` seconds, that
address is refused (RESOURCE_EXHAUSTED) for `block` seconds, even with a right token
(`ratelimit.py`). Every issue and every refusal is recorded in the province's audit
log as `enroll`; attempts refused because the address is blocked are recorded once
per block. The refusal's hint travels in the trailing metadata under `HINT_KEY`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from lienthong.sync.errors import LienthongError, TrustError
from lienthong.sync.sqlite import transaction
from lienthong.sync.transport import TlsFiles
from lienthong.sync.wire import enrollment_pb2 as wire
from lienthong.sync.wire import enrollment_pb2_grpc as wire_grpc

from . import ca, issue, pseudonyms, root, tokens
from .audit import Action, AuditLog
from .audit_chain import AuditError
from .ratelimit import Guard, RateLimit
from .tokens import EnrollError

log = structlog.get_logger("lienthong.enroll")

CERT_DAYS = issue.DEFAULT_VALIDITY_DAYS
MAX_CSR = 16 * 1024
HINT_KEY = "lienthong-hint"


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
        self.guard = Guard(limit or RateLimit(), monotonic)
        self._audit_log = audit
        self._clock = clock
        self._ca_pem = root.anchor_pem(self.ca_dir)  # what the new node will trust: the root

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
            details: dict[str, Any] = {"reason": exc.reason, "peer": ip, "token_id": request.token_id[:64]}
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

    def _issued_before(self, row: Any, csr_pem: bytes) -> bytes | None:
        """The certificate this used token was exchanged for, if `csr_pem` proves the caller holds
        its key (a CSR is signed by its key) and the certificate is still valid; else None.

        A node whose enrollment failed after the province spent the token (it could not write the
        certificate, the connection dropped) runs `enroll` again with the same key and gets the
        same certificate: the token stays usable for that node, and for nobody else."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
            if not csr.is_signature_valid or not row["serial"]:
                return None
            with ca.registry(self.ca_dir) as conn:
                issued = conn.execute("SELECT status, not_after, cert_pem FROM issued WHERE serial = ?", (row["serial"],)).fetchone()
            if issued is None or issued["status"] != "valid" or issued["not_after"] <= ca.iso(ca.utc_now()):
                return None
            pem: bytes = issued["cert_pem"].encode()
        except (ValueError, TrustError):
            return None
        if x509.load_pem_x509_certificate(pem).public_key() != csr.public_key():
            return None
        return pem + root.chain_for(self.ca_dir, pem)

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
        # BEGIN IMMEDIATE: one enrollment at a time, so a token is used once.
        with tokens.token_store(self.node_dir) as conn, transaction(conn):
            row = tokens.find(conn, request.token_id)
            # Compared even when the id is unknown, so the answer takes the same time.
            matches = tokens.secret_matches(row, bytes(request.secret))
            if row is None:
                invalid.reason = "unknown token id"
                raise invalid
            node_id = row["node_id"]
            if not matches:
                invalid.reason, invalid.subject = "wrong secret", node_id
                raise invalid
            if row["revoked_at"] and not row["used_at"]:
                raise _Refused(
                    f"this enrollment token was revoked at {row['revoked_at']}",
                    "ask the province's operator for a new token",
                    denied,
                    "token revoked",
                    node_id,
                )
            if row["used_at"]:
                again = self._issued_before(row, request.csr)
                if again is not None:  # the same node, same key, finishing an enrollment it could not complete
                    self._audit(node_id, {"outcome": "sent again", "peer": ip, "token_id": row["token_id"], "serial": row["serial"]})
                    log.info("enroll.sent_again", node=node_id, serial=row["serial"], peer=ip)
                    return wire.EnrollReply(certificate=again, ca_certificate=self._ca_pem, parent_id=self.province_id)
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
                cert_pem = issue.issue_from_csr(self.ca_dir, request.csr, "district", self.province_id, CERT_DAYS, self.passphrase)
            except TrustError as exc:
                if "registry" in exc.message or "has expired" in exc.message:
                    raise
                raise _Refused(exc.message, exc.hint, grpc.StatusCode.INVALID_ARGUMENT, f"CSR refused: {exc.message}", node_id) from None
            cert = x509.load_pem_x509_certificate(cert_pem)
            serial = format(cert.serial_number, "x")
            tokens.mark_used(conn, row["token_id"], now, ip, serial)
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
        secret = pseudonyms.for_ca(self.ca_dir)  # for the unit's citizens' pseudonyms: over this TLS channel, to the token's holder only
        return wire.EnrollReply(
            certificate=cert_pem,
            ca_certificate=self._ca_pem,
            parent_id=self.province_id,
            pseudonym_secret=secret.secret,
            pseudonym_key_id=secret.key_id,
        )


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
