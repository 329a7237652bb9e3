"""Admission: what a node checks in a received envelope before it may be stored.

Checks here need no database: decoding, shape, the clock, and the sender's seal
(through the store's `provenance.Verifier`). They run outside the write lock, on a
verifying thread ahead of the writer (see `downstream.Downstream.prepare`). What
needs the store — whether the sender may speak for the record's origin and unit,
and whether a version is newer — is checked by the writer inside its transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.message import DecodeError

from . import clock, disputes, provenance, records, sharing
from .batch import Refusal
from .records import Envelope
from .records_table import row
from .store import VIA_PARENT

# Refusals the sender can correct: its clock, its certificate, a unit the province has not
# defined yet. The sender keeps such records and sends them again (`Upstream.retry_refused`);
# every other refusal is final and the record stays in the receiver's quarantine.
CORRECTABLE = frozenset({"clock_skew", "expired_key", "unsealed", "unknown_unit"})

# The largest record a node takes from a peer. Records are small (text fields are capped
# at 10,000 characters; files travel as blobs named by their hash): anything larger is a
# peer misbehaving, refused without keeping its bytes. Seals list every record version of
# one write (about 60 bytes each) and are bounded by the transport's message size instead.
MAX_RECORD_BYTES = 256 * 1024

# A decoded and checked batch: (rows to store, refusals, quarantine rows).
# A row is (id, kind, origin, unit, agency, version, deleted, chash, via, envelope).
Row = tuple[Any, ...]
Prepared = tuple[list[Row], list[Refusal], list[Row]]


def prepare(sender: str, raws: Sequence[bytes], now: float, verifier: provenance.Verifier | None) -> Prepared:
    """Decode, shape-check and verify a batch from `sender` (a child id, or `VIA_PARENT`)."""
    parse = Envelope.FromString
    check = verifier.check if verifier is not None else None
    rows: list[Row] = []
    refusals: list[Refusal] = []
    quarantined: list[Row] = []
    for raw in raws:
        try:
            env = parse(raw)
        except DecodeError:
            refusals.append(Refusal(b"", 0, "malformed", "the record is not a valid lienthong envelope"))
            continue
        if len(raw) > MAX_RECORD_BYTES and env.kind != records.SEAL:
            reason = f"the record is {len(raw):,} bytes; at most {MAX_RECORD_BYTES:,} are taken"
            refusals.append(Refusal(env.id, env.version, "too_large", reason))
            quarantined.append((sender, env.id, env.version, "too_large", reason, now, b""))
            continue
        problem = shape_problem(env)
        if problem is None and sender != VIA_PARENT and env.kind == records.DEFINITION and sharing.SHARE_MARK in raw:
            problem = "unauthorized_definition", "a share goes down to the units below the node that made it, never up to a parent"
        if problem is None and check is not None:
            problem = check(env, raw)
        if problem is not None:
            refusals.append(Refusal(env.id, env.version, *problem))
            quarantined.append((sender, env.id, env.version, problem[0], problem[1], now, raw))
            continue
        rows.append(row(env, b"", sender, raw))
    return rows, refusals, quarantined


def shape_problem(env: Envelope) -> tuple[str, str] | None:
    """Why a received envelope cannot be stored, or None."""
    if len(env.id) != records.ID_BYTES:
        return "malformed", "the record id is not 16 bytes"
    if env.kind not in records.KIND_NAMES:
        return "unknown_kind", f"record kind {env.kind} is not known to this node"
    if not records.NODE_ID.match(env.origin):
        return "malformed", "the record has no valid origin node"
    if not env.unit:
        return "malformed", "the record names no unit"
    if env.version == 0:
        return "malformed", "the record has no version"
    try:
        expected = records.expected_id(env)
    except DecodeError:
        return "malformed", "the record's body cannot be read"
    if expected is not None and expected != env.id:
        return "id_mismatch", "the record's id is not the one its natural key gives: it would overwrite another record"
    if env.kind == records.DISPUTE:
        problem = disputes.writer_problem(env)  # who may write which act: checked on every link, both ways
        if problem is not None:
            return problem
    if clock.too_far_ahead(env.version):
        return "clock_skew", "the record's version is more than a day ahead of this node's clock; check the sender's clock"
    return None
