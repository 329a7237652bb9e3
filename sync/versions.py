"""What a store holds of given records, read inside the writer's transaction: each one's stored
version and content hash (what a write or an arriving batch is compared with), and the version
at which a record was first written, carried by its later versions."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from . import records
from .records import Envelope


def existing_versions(db: sqlite3.Connection, ids: Sequence[bytes]) -> dict[bytes, tuple[int, bytes]]:
    """id -> (stored version, content hash) of those of `ids` the store holds."""
    found: dict[bytes, tuple[int, bytes]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for rid, version, chash in db.execute(f"SELECT id, version, chash FROM records WHERE id IN ({marks})", chunk):
            found[rid] = (version, chash)
    return found


def carry_first_versions(db: sqlite3.Connection, envelopes: Sequence[Envelope], stored: dict[bytes, int]) -> None:
    """A new version of a record this node holds (not withdrawn) carries the version at which it
    was first written (`Envelope.first_version`): a node that only receives the later version
    still judges timeliness on the first (completeness.py)."""
    ids = [env.id for env in envelopes if env.id in stored and env.kind != records.SEAL]
    firsts: dict[bytes, int] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for rid, deleted, raw in db.execute(f"SELECT id, deleted, envelope FROM records WHERE id IN ({','.join('?' * len(chunk))})", chunk):
            if not deleted:
                before = Envelope.FromString(raw)
                firsts[rid] = before.first_version or before.version
    for env in envelopes:
        first = firsts.get(env.id)
        if first is not None and not env.deleted and first < env.version:
            env.first_version = first
