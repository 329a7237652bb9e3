"""Certificates that renew themselves: a node's side and the CA's side.

Node certificates live 30 days (`issue.DEFAULT_VALIDITY_DAYS`). Once two thirds of its
life is over, a node makes new keys — a TLS key and a record-signing key, so every
renewal is also a key rotation — and sends the request over its replication stream
(sync/replication.py `Uplink.renew`). The request is proven by the current
certificate and signed by the current signing key: a middle tier that passes a
child's request up cannot swap in keys of its own. The CA's home checks all that
and issues; the node puts the new files in place and signs with the new key from
then on. Records sealed under the old key keep verifying: each seal carries the
certificate it was made with.

A node that stays offline past its certificate's expiry cannot renew (its parent
refuses the expired handshake): it enrolls again with a new token.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtensionOID, NameOID

from lienthong.sync import provenance
from lienthong.sync.errors import TrustError
from lienthong.sync.privacy import PSEUDONYM_KEY_FILE, PseudonymKey
from lienthong.sync.store import Store
from lienthong.sync.wire import replication_pb2 as wire

from . import ca, issue, pseudonyms, root
from .tls import NODE_FILE_MODE, NodeTlsPaths, write_private, write_public

RENEW_AFTER = 2 / 3  # of a certificate's life


def _pem(key: Any) -> bytes:
    pem: bytes = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem


def renewal_due(cert_pem: bytes, now: dt.datetime | None = None) -> bool:
    cert = x509.load_pem_x509_certificate(cert_pem)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return (now or dt.datetime.now(dt.UTC)) >= start + (end - start) * RENEW_AFTER


class NodeRenewal:
    """This node's certificate and keys, renewed when due (the `sync.replication.Renewal` seam)."""

    def __init__(self, node_id: str, paths: NodeTlsPaths, store: Store) -> None:
        self.node_id = node_id
        self.paths = paths
        self.store = store
        self._pending: tuple[ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey] | None = None

    def due(self) -> bool:
        return renewal_due(self.paths.cert.read_bytes())

    def request(self) -> wire.RenewRequest:
        current = x509.load_pem_x509_certificate(self.paths.cert.read_bytes())
        tls_key, signing_key = ec.generate_private_key(ec.SECP256R1()), ed25519.Ed25519PrivateKey.generate()
        try:
            names = current.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
        except x509.ExtensionNotFound:
            names = x509.SubjectAlternativeName([x509.DNSName(self.node_id)])
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.node_id)]))
            .add_extension(names, critical=False)
            .add_extension(provenance.csr_extension(signing_key, tls_key.public_key()), critical=False)
            .sign(tls_key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
        )
        current_signing = serialization.load_pem_private_key(provenance.signing_key_path(self.paths.key).read_bytes(), password=None)
        assert isinstance(current_signing, ed25519.Ed25519PrivateKey)
        self._pending = (tls_key, signing_key)
        return wire.RenewRequest(
            node_id=self.node_id,
            csr=csr,
            current_certificate=current.public_bytes(serialization.Encoding.DER),
            proof=current_signing.sign(csr),
        )

    def install(self, certificate: bytes, pseudonym_secret: bytes = b"") -> None:
        if self._pending is None:
            raise TrustError("a renewed certificate arrived that this node did not ask for", "it asks again by itself")
        tls_key, signing_key = self._pending
        cert = x509.load_pem_x509_certificate(certificate)
        certified = provenance.signing_public_key(cert)
        if cert.public_key() != tls_key.public_key() or certified is None or certified != signing_key.public_key():
            raise TrustError("the renewed certificate is not for the keys this node made", "it asks again by itself")
        # New files beside the old, then renamed into place together: a crash leaves one
        # consistent set (the renamed ones), never a key without its certificate.
        signing_path = provenance.signing_key_path(self.paths.key)
        staged = [(self.paths.key, _pem(tls_key)), (signing_path, _pem(signing_key))]
        for path, data in staged:
            write_private(path.with_name(path.name + ".new"), data)
        write_public(self.paths.cert.with_name(self.paths.cert.name + ".new"), certificate, NODE_FILE_MODE)
        for path in (self.paths.key, signing_path, self.paths.cert):
            path.with_name(path.name + ".new").rename(path)
        secret = PseudonymKey.of(pseudonym_secret) if pseudonym_secret else PseudonymKey.load(self.paths.key.with_name(PSEUDONYM_KEY_FILE))
        if pseudonym_secret and secret is not None:
            pseudonyms.install(secret, self.paths.key.parent)  # a rotated secret reaches the unit with its certificate
        self.store.signer = provenance.Signer(self.node_id, signing_key, certificate, self.paths.ca.read_bytes(), secret)
        self._pending = None


def issue_renewal(ca_dir: Path, sender: str, request: Any, passphrase: bytes | None, revoked: Any = None) -> wire.RenewReply:
    """The CA's answer to a RenewRequest that `sender` (a direct child) passed: a new
    certificate for the same node id, role and parent, or the reason why not."""
    node_id = request.node_id
    try:
        anchor = x509.load_pem_x509_certificate(root.anchor_pem(ca_dir))
        # Issued by any issuing CA this root made (a node renews onto the current one after a rotation).
        known = b"".join(c.public_bytes(serialization.Encoding.DER) for c in root.issuers(ca_dir))
        current = provenance.check_certificate(provenance.split_der(request.current_certificate)[0] + known, anchor)
        if current.problem:
            raise TrustError(f"the current certificate is not valid: {current.problem}", "enroll the node again with a new token")
        if current.node_id != node_id:
            raise TrustError(
                f"the current certificate is {current.node_id!r}'s, not {node_id!r}'s", "renew with the node's own certificate"
            )
        if dt.datetime.now(dt.UTC) > current.not_after:
            raise TrustError(f"the certificate of {node_id} has expired", "enroll the node again with a new token")
        registry = {row["serial"]: row for row in ca.list_issued(ca_dir)}
        row = registry.get(current.serial)
        if row is None or row["status"] != "valid" or (revoked is not None and revoked(current.serial)):
            raise TrustError(f"certificate {current.serial} of {node_id} is revoked or unknown", "the province must enroll the node again")
        try:
            current.key.verify(request.proof, request.csr)  # type: ignore[union-attr]
        except InvalidSignature:
            raise TrustError("the renewal request is not signed by the node's current signing key", "the node asks again") from None
        if sender != node_id and sender not in ca.ancestors(ca_dir, node_id):
            raise TrustError(f"node {sender} may not pass on a renewal for {node_id}", "a node renews through its own parent")
        csr = x509.load_pem_x509_csr(request.csr)
        names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if [str(n.value) for n in names] != [node_id]:
            raise TrustError(f"the renewal request is not for {node_id}", "the node asks again")
        pem = issue.issue_from_csr(ca_dir, request.csr, current.role, row["parent"], issue.DEFAULT_VALIDITY_DAYS, passphrase)
    except TrustError as exc:
        return wire.RenewReply(node_id=node_id, error=exc.message)
    except ValueError as exc:
        return wire.RenewReply(node_id=node_id, error=f"the renewal request cannot be read: {exc}")
    secret = pseudonyms.for_ca(ca_dir).secret if current.role == "district" else b""  # never to the province's node
    return wire.RenewReply(node_id=node_id, certificate=pem, pseudonym_secret=secret)
