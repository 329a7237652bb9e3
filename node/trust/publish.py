"""What the province's node publishes from its CA into its store, for every node below.

    CrlPublisher       the revocation list (`crl.py`) as a `revocation_list` definition
    RegistryPublisher  each certified node's parent (`ca.py`'s registry) as a `node` definition

The operator revokes with `lienthong ca revoke CA_DIR ...`, which rewrites the signed
CRL `CA_DIR/ca.crl.pem`. A node whose `tls.crl` points at that file checks it every
half second; when it changes, the node verifies it against the CA certificate and
writes it as a `revocation_list` definition, which flows down to every node below.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import structlog

from lienthong.sync import records
from lienthong.sync.clock import HybridClock
from lienthong.sync.errors import TrustError
from lienthong.sync.records import NODE_DEFINITION
from lienthong.sync.revocation import DEFINITION_TYPE
from lienthong.sync.store import Store

from . import ca, root
from .crl import read_crl_entries

log = structlog.get_logger("lienthong.crl")

# The node registry is read again when its file changed, else at least this often (seconds).
REGISTRY_REREAD = 60.0
# A file changed less than this long ago (ns) may change again within its modification time's tick.
REGISTRY_SETTLE_NS = 2_000_000_000
# The registry's file as RegistryPublisher saw it: (inode, size, mtime_ns), None when not there.
_Stamp = tuple[int, int, int] | None


class CrlPublisher:
    """Watches the CRL file and publishes each new version as a definition record."""

    def __init__(self, store: Store, path: Path, ca_cert_pem: bytes, ca_dir: Path | None = None) -> None:
        self.store = store
        self.path = path
        self.ca = ca_cert_pem
        self.ca_dir = ca_dir  # the CA's home: its root's CRL (revoked issuing CAs) is published too
        self.clock = HybridClock(store.max_version())
        self._mtime: tuple[int, int] = (-1, -1)

    def _mtimes(self) -> tuple[int, int] | None:
        """The two lists' modification times (0: not there); None when neither exists."""
        own = self.path.stat().st_mtime_ns if self.path.exists() else 0
        root_crl = self.ca_dir / root.ROOT_CRL if self.ca_dir is not None else None
        issuers = root_crl.stat().st_mtime_ns if root_crl is not None and root_crl.exists() else 0
        return (own, issuers) if own or issuers else None

    def check(self) -> bool:
        """Publish the CRL if the file changed; returns whether a new list was written."""
        mtime = self._mtimes()
        if mtime is None or mtime == self._mtime:
            return False
        self._mtime = mtime
        try:
            entries = read_crl_entries(self.path, self.ca) if mtime[0] else []
            serials = [entry["serial"] for entry in entries]
            issuers = self._issuers()
        except TrustError as exc:
            log.error("crl.refused", file=str(self.path), error=exc.message, hint=exc.hint)
            return False
        # `serials` for nodes of earlier versions; `entries` say why and since when (revocation.Revoked);
        # `issuers`: issuing CAs the root revoked (revocation.RevokedIssuer).
        listed: dict[str, object] = {"serials": serials, "entries": entries}
        if issuers:
            listed["issuers"] = issuers
        fields = {
            "kind": "definition",
            "type": DEFINITION_TYPE,
            "code": "crl",
            "fields": {**listed, "read_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")},
        }
        keyed = records.build(self.store.node_id, fields)
        current = next((e for e in self.store.iter_records(records.DEFINITION) if e.id == keyed.id), None)
        if current is not None and records.body_of(current).json and _published(current) == listed:
            return False
        self.store.write_local([keyed], self.clock)
        log.info("crl.published", revoked=len(serials), file=str(self.path))
        return True

    def _issuers(self) -> list[dict[str, object]]:
        if self.ca_dir is None or not root.is_two_level(self.ca_dir):
            return []
        return root.compromised_issuers(self.ca_dir, ca.issued_pems(self.ca_dir))


def _published(env: records.Envelope) -> dict[str, object]:
    fields = json.loads(records.body_of(env).json or "{}")
    fields.pop("read_at", None)
    return dict(fields)


class RegistryPublisher:
    """On the province that is the CA's home: publishes each node the CA certified with a
    parent as a `node` definition, so every tier can check that a record's origin is the
    sending child or one of its descendants (not just whoever sent it first)."""

    def __init__(self, store: Store, ca_dir: Path) -> None:
        self.store = store
        self.ca_dir = ca_dir
        self.clock = HybridClock(store.max_version())
        self._published: dict[str, str] = {}
        self._seen: _Stamp = None  # the registry's file when last read
        self._read_by = 0.0  # read again by then (monotonic) whatever the file says

    def _registry_file(self) -> _Stamp:
        """The registry database's inode, size and modification time (None: not there yet). It
        is written in rollback-journal mode: every committed write changes this file."""
        try:
            st = (self.ca_dir / ca.REGISTRY).stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def check(self) -> bool:
        """Publish the nodes certified with a parent since the last check; returns whether any was.

        The node checks every half second, and reading the registry costs about 7 ms per
        thousand certified nodes: it is read only when its file changed, when it
        changed too recently for its modification time to tell (another write within the
        same clock tick), and at least every REGISTRY_REREAD seconds."""
        stamp = self._registry_file()
        settled = stamp is None or stamp[2] < time.time_ns() - REGISTRY_SETTLE_NS
        if stamp is not None and stamp == self._seen and time.monotonic() < self._read_by:
            return False
        wanted = {row["node_id"]: row["parent"] for row in ca.list_issued(self.ca_dir) if row["status"] == "valid" and row["parent"]}
        if wanted == self._published:
            self._remember(stamp, settled)
            return False
        new = {node: parent for node, parent in wanted.items() if self._published.get(node) != parent}
        fields = [
            {"kind": "definition", "type": NODE_DEFINITION, "code": node, "fields": {"parent": parent}} for node, parent in new.items()
        ]
        summary = self.store.write_local([records.build(self.store.node_id, f) for f in fields], self.clock)
        self._published = wanted
        self._remember(stamp, settled)
        if summary.imported or summary.updated:
            log.info("registry.published", nodes=summary.imported + summary.updated)
        return bool(summary.imported or summary.updated)

    def _remember(self, stamp: _Stamp, settled: bool) -> None:
        """The registry was read whole as its file was: skip it until that changes."""
        self._seen = stamp if settled else None
        self._read_by = time.monotonic() + REGISTRY_REREAD
