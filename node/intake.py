"""The node's side of ingestion: the store as the adapters' sink, and the
watched inbox folders running inside `lienthong run`."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import Histogram

from lienthong.adapters.base import Definitions
from lienthong.sync import records
from lienthong.sync.catalogue import Catalogue
from lienthong.sync.clock import HybridClock
from lienthong.sync.errors import StoreError
from lienthong.sync.store import FileWriter, Store

BLOBS = "blobs"
BLOB_MODE = 0o600  # citizens' attachments: the node's user only (node/permissions.py)
BLOB_DIR_MODE = 0o700

# Seconds from an agency file's last write (its mtime) to the commit of its records and receipt
# (a refused file's receipt too); shown at /metrics (registered there, not in prometheus-client's global registry).
DROP_TO_COMMIT = Histogram(
    "lienthong_inbox_drop_to_commit_seconds",
    "Seconds from an inbox file's last write to the commit of its records and receipt.",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600),
    registry=None,
)


class _Writer:
    def __init__(self, inner: FileWriter) -> None:
        self._inner = inner

    def write(self, keyed: list[records.Keyed]) -> None:
        self._inner.write(keyed)

    @property
    def counts(self) -> tuple[int, int, int]:
        s = self._inner.summary
        return s.imported, s.updated, s.unchanged

    @property
    def ledger(self) -> dict[str, object] | None:
        return self._inner.ledger

    @ledger.setter
    def ledger(self, value: dict[str, object] | None) -> None:
        self._inner.ledger = value


class StoreSink:
    """Commits ingested files into the node's store (one transaction per file)."""

    def __init__(self, store: Store, clock: HybridClock, node_dir: Path, own_units: list[str], provincial: bool = True) -> None:
        self.store = store
        self.provincial = provincial
        self._definitions: tuple[tuple[int, int], Definitions] | None = None
        self.clock = clock
        self.blobs = node_dir / BLOBS
        self.own_units = frozenset(own_units)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_Writer]:
        with self.store.file_transaction(self.clock) as writer:
            yield _Writer(writer)

    def ingested(self, sha256: str) -> dict[str, object] | None:
        return self.store.ingested(sha256)

    def record_refusal(self, ledger: dict[str, object]) -> None:
        self.store.record_refused_file(ledger)

    def definitions(self) -> Definitions:
        """What the province sent down, read again only when a definition changed (called per file)."""
        marker = self.store.definition_marker()
        if self._definitions is None or marker != self._definitions[0]:
            self._definitions = (marker, self._read_definitions())
        return self._definitions[1]

    def _read_definitions(self) -> Definitions:
        units: dict[str, str] = {}
        indicators: set[str] = set()
        report_types: set[str] = set()
        for env in self.store.iter_records(records.DEFINITION):
            body = records.body_of(env)
            fields = json.loads(body.json or "{}")
            if body.type == "unit":
                units[body.code] = str(fields.get("parent") or "")
            elif body.type == "indicator":
                indicators.add(body.code)
            elif body.type in ("report_type", "report_schedule"):
                report_types.add(str(fields.get("report_type") or body.code))
        catalogue = Catalogue.from_store(self.store) if indicators else None

        def check_value(code: str, period: str) -> tuple[str, str, str] | None:
            refusal = catalogue.check_value(code, period) if catalogue is not None else None
            return (refusal.code, refusal.message_vi, refusal.message_en) if refusal is not None else None

        return Definitions(
            units, frozenset(indicators), frozenset(report_types), self.own_units, check_value=check_value, may_define=self.provincial
        )

    def store_blob(self, path: Path) -> str:
        """Copy `path` into blobs/ab/abcdef… named by the SHA-256 of the bytes read (temp file, then rename).

        Only `path.open("rb")` reads it: for an inbox attachment that is the descriptor opened
        without following links (adapters/held.py), so what is hashed is what was read and a
        name swapped for a link afterwards is never followed. Blobs are 0600 (the node's own
        user), their folders 0700."""
        self.blobs.mkdir(mode=BLOB_DIR_MODE, exist_ok=True)
        h = hashlib.sha256()
        fd, name = tempfile.mkstemp(prefix=".incoming-", dir=self.blobs)
        tmp = Path(name)
        try:
            os.fchmod(fd, BLOB_MODE)
            with os.fdopen(fd, "wb") as dst, path.open("rb") as src:
                for block in iter(lambda: src.read(1 << 20), b""):
                    h.update(block)
                    dst.write(block)
                dst.flush()
                os.fsync(dst.fileno())
            digest = h.hexdigest()
            final = self.blobs / digest[:2] / digest
            final.parent.mkdir(mode=BLOB_DIR_MODE, exist_ok=True)
            if final.exists():
                tmp.unlink()
            else:
                os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StoreError(f"the disk holding {self.blobs} is full: the file was not taken", "free space on that disk") from None
            raise
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return digest
