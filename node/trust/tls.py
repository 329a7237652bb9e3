"""A node's TLS files: where they are, how they are written, what they say.

The CA itself (making it, revoking) is `ca.py`; signing requests is `issue.py`.
The node id a peer presents is always read from its verified certificate.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from lienthong.sync.errors import TrustError
from lienthong.sync.transport import TlsFiles

CA_KEY = "ca.key"
CA_CERT = "ca.crt"
CA_VALIDITY = dt.timedelta(days=3650)
NODE_FILE_MODE = 0o600  # everything in a node's directory (node/permissions.py)


@dataclass(frozen=True)
class NodeTlsPaths:
    ca: Path
    cert: Path
    key: Path

    def load(self) -> TlsFiles:
        try:
            return TlsFiles(ca=self.ca.read_bytes(), cert=self.cert.read_bytes(), key=self.key.read_bytes())
        except FileNotFoundError as exc:
            raise TrustError(
                f"TLS file {exc.filename} is missing", "issue the node a certificate with `lienthong init --ca CA_DIR`"
            ) from None


def write_private(path: Path, data: bytes) -> None:
    """Write a private key: mode 0600 from the first byte, then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.rename(path)


def write_public(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a certificate or request: a temporary file, then renamed into place.

    0644 by default, whatever the umask (the CA's certificate and revocation list are read
    by nodes that may run as another user); a node's own files pass `NODE_FILE_MODE`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)
        f.write(data)
    tmp.rename(path)


def certificate_summary(path: Path) -> dict[str, str]:
    """Node id, role and expiry of the certificate at `path`, for `status`."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ou = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return {
        "node_id": str(cn[0].value) if cn else "",
        "role": str(ou[0].value) if ou else "",
        "not_after": cert.not_valid_after_utc.isoformat(),
    }
