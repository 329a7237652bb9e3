"""The CA's revocation list: a standard X.509 CRL, `CA_DIR/ca.crl.pem`, signed by the CA key.

    province:  revoke(ca_dir, node_or_serial, reason)   (`ca.py`: the registry says so)
    province:  write_crl(ca_dir)                        -> CA_DIR/ca.crl.pem, the next CRL number
    any node:  read_crl(path, ca_cert_pem)              -> the revoked serials, signature checked

The province's node publishes each new version to the nodes below (`publish.py`).

Who enforces it: the CA's home, the provincial node made with `init --ca` (its `tls.crl`
names this file) or configured with `tls.ca_dir` (the list is found there). Each such node
is recorded in `CA_DIR/homes.json` (`add_home`), and a running one says in its run lock
which list it watches, so `lienthong ca revoke` can warn when no running node enforces it
(`enforcing_homes`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from lienthong.sync import provenance
from lienthong.sync.errors import TrustError
from lienthong.sync.revocation import normalize, reason_code

from . import ca, root
from .tls import write_public

CRL_FILE = "ca.crl.pem"
HOMES_FILE = "homes.json"  # the node directories that enforce this CA's list
# A CRL must be rewritten (`write_crl`) before this; readers may refuse a stale one.
CRL_NEXT_UPDATE = dt.timedelta(days=7)

# Not reasons for a permanent revocation: no code (RFC 5280 says to omit it), a hold, a release.
_NOT_REVOCATION = (x509.ReasonFlags.unspecified, x509.ReasonFlags.certificate_hold, x509.ReasonFlags.remove_from_crl)


def _crl_reason(reason: str) -> x509.ReasonFlags | None:
    """The CRL reason code named by `reason` ('key_compromise', 'superseded', ...), if any."""
    wanted = re.sub(r"[^a-z]", "", reason.lower())
    for flag in x509.ReasonFlags:
        if flag not in _NOT_REVOCATION and re.sub(r"[^a-z]", "", flag.value.lower()) == wanted:
            return flag
    return None


def write_crl(ca_dir: Path, passphrase: bytes | None = None, next_update: dt.timedelta = CRL_NEXT_UPDATE) -> Path:
    """Write `CA_DIR/ca.crl.pem`: an X.509 CRL of every revoked serial, signed by the CA key.

    A revocation reason that names an RFC 5280 reason code (e.g. 'key_compromise',
    'superseded', 'cessation_of_operation') is carried as the entry's reason code.
    Each CRL gets the next CRL number. Returns the path written.
    """
    ca_dir = Path(ca_dir)
    key, cert = ca.load_ca(ca_dir, passphrase)
    now = ca.utc_now()
    number, rows = ca.next_crl(ca_dir)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(cert.subject)
        .last_update(now)
        .next_update(now + next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(ca.authority_key_id(cert), critical=False)
    )
    for row in rows:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(int(row["serial"], 16))
            .revocation_date(dt.datetime.fromisoformat(row["revoked_at"]))
        )
        flag = _crl_reason(row["reason"])
        if flag is not None:
            entry = entry.add_extension(x509.CRLReason(flag), critical=False)
        if row["invalid_since"]:  # a stated compromise time (RFC 5280 invalidity date)
            entry = entry.add_extension(x509.InvalidityDate(dt.datetime.fromisoformat(row["invalid_since"])), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    crl = builder.sign(key, hashes.SHA256())
    write_public(ca_dir / CRL_FILE, crl.public_bytes(serialization.Encoding.PEM))
    return ca_dir / CRL_FILE


def read_crl(path: Path, ca_cert_pem: bytes) -> list[str]:
    """The revoked serials of the CRL at `path`, after checking the CA signed it."""
    return [entry["serial"] for entry in read_crl_entries(path, ca_cert_pem)]


def read_crl_entries(path: Path, ca_cert_pem: bytes) -> list[dict[str, str]]:
    """Each revoked certificate of the CRL at `path` (signature checked), sorted by serial:
    serial, reason (the CRL reason code, e.g. key_compromise; '' when none is stated),
    revoked_at and, when the CRL states one, invalid_since (its invalidity date: when the
    key is known or suspected to have been compromised)."""
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise TrustError(f"cannot read the revocation list {path}: {exc}", "rewrite it with `lienthong ca revoke`") from None
    anchor = x509.load_pem_x509_certificate(ca_cert_pem)
    # A two-level CA's list is signed by its issuing CA, which the root (the node's anchor) certified.
    signers = [anchor, *(i for i in root.issuers(path.parent) if provenance.issued_by(i, [], anchor))]
    if not any(crl.issuer == s.subject and crl.is_signature_valid(s.public_key()) for s in signers):  # type: ignore[arg-type]
        raise TrustError(f"the revocation list {path} is not signed by this node's CA", "use the CRL written by this province's CA")
    entries = []
    for revoked in crl:
        entry = {
            "serial": normalize(format(revoked.serial_number, "x")),
            "reason": "",
            "revoked_at": revoked.revocation_date_utc.isoformat(),
        }
        for ext in revoked.extensions:
            if isinstance(ext.value, x509.CRLReason):
                entry["reason"] = reason_code(ext.value.reason.name)
            elif isinstance(ext.value, x509.InvalidityDate):
                entry["invalid_since"] = ext.value.invalidity_date_utc.isoformat()
        entries.append(entry)
    return sorted(entries, key=lambda e: e["serial"])


def crl_path(node_dir: Path, crl: str, ca_dir: str) -> Path | None:
    """The revocation list a node watches: `tls.crl` when set, else its CA's list when it is
    the CA's home (`tls.ca_dir` set), else None. Relative paths are inside `node_dir`."""
    if crl:
        return node_dir / crl
    if ca_dir:
        return node_dir / ca_dir / CRL_FILE
    return None


def _homes(ca_dir: Path) -> list[str]:
    try:
        homes = json.loads((ca_dir / HOMES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [str(h) for h in homes] if isinstance(homes, list) else []


def add_home(ca_dir: Path, node_dir: Path) -> None:
    """Record that the node in `node_dir` enforces this CA's list (best effort: a CA folder that
    cannot be written, a read-only copy, only loses `ca revoke`'s warning)."""
    homes = _homes(ca_dir)
    home = str(Path(node_dir).absolute())
    if home in homes:
        return
    with contextlib.suppress(OSError):
        write_public(ca_dir / HOMES_FILE, json.dumps([*homes, home], indent=1).encode())


def enforcing_homes(ca_dir: Path, running_info: Callable[[Path], dict[str, Any] | None]) -> list[str]:
    """The recorded homes running now and watching this CA's list (`running_info` reads a node's run lock)."""
    wanted = str((Path(ca_dir) / CRL_FILE).resolve())
    out = []
    for home in _homes(ca_dir):
        info = running_info(Path(home)) or {}
        if info.get("crl") and str(Path(info["crl"]).resolve()) == wanted:
            out.append(home)
    return out
