"""The `records` table as every writer fills it: the upsert that stores a record version only when
it is newer than the stored one and from the record's own origin (single writer: applying a batch
twice changes nothing), and the row it takes. The node's own writes (local_write.py) and what
arrives from a peer (upstream.py, downstream.py) store through it.
"""

from __future__ import annotations

from typing import Any

from .records import Envelope

# Where a stored version came from (`records.via`): this node, its parent, else the child's id.
VIA_LOCAL = ""
VIA_PARENT = "^"

UPSERT = """
INSERT INTO records(id, kind, origin, unit, agency, version, deleted, chash, via, envelope)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(id) DO UPDATE SET
    kind = excluded.kind, unit = excluded.unit, agency = excluded.agency,
    version = excluded.version, deleted = excluded.deleted, chash = excluded.chash,
    via = excluded.via, envelope = excluded.envelope
WHERE excluded.version > records.version AND excluded.origin = records.origin
"""


def row(env: Envelope, chash: bytes, via: str, raw: bytes) -> tuple[Any, ...]:
    """The values of `UPSERT` for one envelope (`raw`: its bytes as stored)."""
    return (env.id, env.kind, env.origin, env.unit, env.agency, env.version, env.deleted, chash, via, raw)
