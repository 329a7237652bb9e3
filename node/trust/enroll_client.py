"""Enrollment, the new node's half: exchange a one-time token for a certificate (DESIGN §5).

    new node:  enroll(node_dir, token, key_path, cert_path, ca_path)   -> the parent's id

The new node makes its key itself (`issue.make_csr`) and sends only the CSR: the
private key never leaves it. It sends nothing at all before it has checked that
the server presents the provincial CA whose fingerprint the token (`tokens.py`)
carries. The province's half is `enroll_server.py`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import ssl
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from lienthong.sync.wire import enrollment_pb2 as wire
from lienthong.sync.wire import enrollment_pb2_grpc as wire_grpc

from . import enroll_server, issue, tokens
from .tokens import EnrollError

CONNECT_TIMEOUT = 15.0


def fetch_pinned_ca(address: str, fingerprint: str, province_id: str = "", timeout: float = CONNECT_TIMEOUT) -> tuple[bytes, str]:
    """Read the certificate chain the server at `address` presents, WITHOUT trusting it,
    and keep it only if it holds the CA with this SHA-256 fingerprint and a provincial
    node certificate issued by that CA (named `province_id`, when given).

    Returns (CA certificate PEM, the server's node id). Nothing is sent but a TLS
    handshake. Python 3.11/3.12 expose the unverified chain only on the private
    `SSLSocket._sslobj`; 3.13 made it public.
    """
    split = tokens.split_address(address)
    if split is None:
        raise EnrollError(f"{address!r} is not HOST:PORT", tokens.BAD_TOKEN_HINT)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # on purpose: the pin below is the check
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection(split, timeout=timeout) as raw, context.wrap_socket(raw) as conn:
            if hasattr(conn, "get_unverified_chain"):  # Python 3.13+
                ders = [bytes(c) for c in conn.get_unverified_chain()]
            else:
                ders = [c.public_bytes(ssl._ssl.ENCODING_DER) for c in conn._sslobj.get_unverified_chain() or []]  # type: ignore[attr-defined]
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
        if key == enroll_server.HINT_KEY:
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
    parsed = tokens.parse_token(token)
    if expect_node_id and parsed.node_id != expect_node_id:
        raise EnrollError(
            f"this token enrolls node {parsed.node_id!r}, but this node is {expect_node_id!r}",
            "use the token made for this node, or ask the province's operator for one",
        )
    ca_pem, server_id = fetch_pinned_ca(parsed.address, parsed.fingerprint, parsed.province_id, timeout)
    csr_pem = issue.make_csr(key_path, parsed.node_id, ["localhost", "127.0.0.1", "::1", *(hosts or [])])
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
    return str(reply.parent_id)


def _check_reply(reply: wire.EnrollReply, token: tokens.Token, csr_pem: bytes, server_id: str) -> None:
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
