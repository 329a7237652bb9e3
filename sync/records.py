"""Records: the kinds DESIGN §3 replicates (plus the seals that sign them, audit copies, approvals and dispute acts), their identities and their fields.

A record is a `wire.records_pb2.Envelope` (identity, provenance, version) around a
typed body. This module builds envelopes from plain fields, derives deterministic
ids from natural keys, and turns envelopes back into plain dictionaries.

Identity is deterministic: the id is the first 16 bytes of SHA-256 over the kind
and the natural key, all text NFC-normalised first, so the same fact ingested
twice (or on two nodes from two encodings) is one record. The origin node is part
of every key, which is what keeps "exactly one writer per record" true.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any, NamedTuple, Protocol

from .errors import InputError
from .fields import CODE as CODE  # re-exported: callers read them as records.X
from .fields import PERIOD as PERIOD
from .fields import code as code
from .fields import decimal_text as decimal_text
from .fields import nfc as nfc
from .fields import period as period
from .fields import text as text
from .fields import timestamp as timestamp
from .wire import records_pb2 as pb

Envelope = pb.Envelope
Seal = pb.Seal
Feedback = pb.Feedback
SealEntry = pb.SealEntry

INDICATOR = pb.KIND_INDICATOR
REPORT = pb.KIND_REPORT
FEEDBACK = pb.KIND_FEEDBACK
FEEDBACK_EVENT = pb.KIND_FEEDBACK_EVENT
DEFINITION = pb.KIND_DEFINITION
SEAL = pb.KIND_SEAL
AUDIT_ENTRY = pb.KIND_AUDIT_ENTRY
DISPUTE = pb.KIND_DISPUTE
APPROVAL = pb.KIND_APPROVAL

KIND_NAMES: dict[int, str] = {
    INDICATOR: "indicator",
    REPORT: "report",
    FEEDBACK: "feedback",
    FEEDBACK_EVENT: "feedback_event",
    DEFINITION: "definition",
    SEAL: "seal",
    AUDIT_ENTRY: "audit_entry",
    DISPUTE: "dispute",
    APPROVAL: "approval",
}
KINDS_BY_NAME = {name: kind for kind, name in KIND_NAMES.items()}
BODY_TYPES: dict[int, type[Any]] = {
    INDICATOR: pb.IndicatorValue,
    REPORT: pb.Report,
    FEEDBACK: pb.Feedback,
    FEEDBACK_EVENT: pb.FeedbackEvent,
    DEFINITION: pb.Definition,
    SEAL: pb.Seal,
    AUDIT_ENTRY: pb.AuditEntry,
    DISPUTE: pb.Dispute,
    APPROVAL: pb.Approval,
}
# The definition type of a registered node and its parent, published by the province from its CA registry.
NODE_DEFINITION = "node"
# Kinds whose writer is judged by origin alone (they are about the node, not about a unit's data).
ORIGIN_ONLY = frozenset({SEAL, AUDIT_ENTRY})
# Kinds the parent sends down to the child whose subtree holds the record's unit.
ROUTED_DOWN_BY_UNIT = frozenset({FEEDBACK, FEEDBACK_EVENT, APPROVAL})
# The steps of an approval (see `sync/approval.py`): the unit's own node's, and a level above's.
APPROVAL_OWN_ACTIONS = frozenset({"approved", "unapproved"})
APPROVAL_ABOVE_ACTIONS = frozenset({"accepted", "returned", "unaccepted"})

ID_BYTES = 16
_SEP = "\x1f"
NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
FEEDBACK_STATUSES = frozenset(
    {
        "received",
        "assigned",
        "accepted",
        "in_progress",
        "resolved",
        "closed",
        "reopened",
        "returned",
        "satisfaction",
    }
)


def record_id(kind: int, *key: str) -> bytes:
    """The deterministic id of a record of `kind` with natural key `key`."""
    material = _SEP.join([KIND_NAMES[kind], *(nfc(part) for part in key)])
    return hashlib.sha256(material.encode()).digest()[:ID_BYTES]


def fingerprint(record_id_: bytes, version: int) -> bytes:
    """Short hash naming one version of one record; used to check a resume point."""
    return hashlib.sha256(record_id_ + version.to_bytes(8, "big")).digest()[:8]


def content_hash(env: Envelope) -> bytes:
    """Hash of what a record says (not when): equal hashes mean 'unchanged'."""
    return content_hash_of(env.unit, env.agency, env.deleted, env.body)


def content_hash_of(unit: str, agency: str, deleted: bool, body: bytes) -> bytes:
    """`content_hash` of an envelope with these fields (one hash call: a file's rows are hashed before their envelopes exist)."""
    return hashlib.sha256(f"{unit}\x1f{agency}\x1f{'1' if deleted else '0'}\x1f".encode() + body).digest()[:8]


class Keyed(NamedTuple):
    """A record before its version is assigned: id, kind, unit, agency, body.

    A named tuple, not a dataclass: a file's every row becomes one, and it is made in about
    0.6 µs instead of 1.5 µs (frozen dataclass)."""

    id: bytes
    kind: int
    unit: str
    agency: str
    body: bytes
    deleted: bool = False

    def envelope(self, origin: str, version: int, seal: bytes = b"") -> Envelope:
        return Envelope(
            id=self.id,
            kind=self.kind,  # type: ignore[arg-type]
            origin=origin,
            unit=self.unit,
            agency=self.agency,
            version=version,
            deleted=self.deleted,
            body=self.body,
            seal=seal,
        )


class RecordReader(Protocol):
    """What reads stored records (a `store.Store`), for modules that only read."""

    def iter_records(self, kind: int | None = None, unit: str | None = None, include_deleted: bool = False) -> Iterator[Envelope]: ...


# ---------------------------------------------------------------- builders


def indicator_value(origin: str, fields: Mapping[str, Any]) -> Keyed:
    """Indicator value keyed by indicator, unit, period, disaggregation, origin, agency."""
    body = pb.IndicatorValue(
        indicator=code(fields, "indicator"),
        period=period(fields),
        value=decimal_text(fields, "value"),
        disaggregation=code(fields, "disaggregation", required=False),
        comment=text(fields, "comment", required=False),
        follow_up=bool(fields.get("follow_up", False)),
    )
    unit, agency = code(fields, "unit"), code(fields, "agency", required=False)
    rid = record_id(INDICATOR, body.indicator, unit, body.period, body.disaggregation, origin, agency)
    return Keyed(rid, INDICATOR, unit, agency, body.SerializeToString(deterministic=True), bool(fields.get("deleted")))


def report(origin: str, fields: Mapping[str, Any]) -> Keyed:
    """Report keyed by type, unit and period (or its source id), and its origin."""
    body = pb.Report(
        report_type=code(fields, "report_type"),
        period=period(fields),
        title=text(fields, "title"),
        submitted_at=timestamp(fields, "submitted_at"),
        summary=text(fields, "summary", required=False),
        signed_by=text(fields, "signed_by", required=False),
        source_id=code(fields, "source_id", required=False),
    )
    for item in fields.get("attachments") or []:
        if not isinstance(item, Mapping):
            raise InputError("each attachment must be an object", "give name, sha256 and size", field="attachments")
        body.attachments.add(name=text(item, "name"), sha256=code(item, "sha256"), size=int(item.get("size", 0)))
    unit, agency = code(fields, "unit"), code(fields, "agency", required=False)
    key = body.source_id or _SEP.join((body.report_type, body.period))
    rid = record_id(REPORT, key, unit, origin, agency)
    return Keyed(rid, REPORT, unit, agency, body.SerializeToString(deterministic=True), bool(fields.get("deleted")))


def feedback(origin: str, fields: Mapping[str, Any]) -> Keyed:
    """Citizen feedback keyed by its source system (agency) and ticket id."""
    citizen = fields.get("citizen") or {}
    if not isinstance(citizen, Mapping):
        raise InputError("'citizen' must be an object", "give name, phone and email", field="citizen")
    body = pb.Feedback(
        source_id=code(fields, "source_id"),
        category=code(fields, "category"),
        category_name=text(fields, "category_name", required=False),
        description=text(fields, "description"),
        received_at=timestamp(fields, "received_at"),
        address=text(fields, "address", required=False),
        media_url=text(fields, "media_url", required=False),
        due_at=timestamp(fields, "due_at", required=False),
        assigned_unit=code(fields, "assigned_unit", required=False),
        citizen=pb.Person(
            name=text(citizen, "name", required=False),
            phone=text(citizen, "phone", required=False),
            email=text(citizen, "email", required=False),
        ),
    )
    if fields.get("lat") is not None and fields.get("lon") is not None:
        try:
            body.lat, body.lon, body.has_location = float(fields["lat"]), float(fields["lon"]), True
        except (TypeError, ValueError):
            raise InputError("'lat'/'lon' must be numbers", "write them as JSON numbers", field="lat") from None
    unit, agency = code(fields, "unit"), code(fields, "agency", required=False)
    rid = feedback_id(origin, agency, body.source_id)
    return Keyed(rid, FEEDBACK, unit, agency, body.SerializeToString(deterministic=True))


def feedback_id(origin: str, agency: str, source_id: str) -> bytes:
    return record_id(FEEDBACK, agency, source_id, origin)


def event_item_id(event_env: Envelope) -> bytes:
    """The record id of the feedback item a `feedback_event` envelope names exactly."""
    body = body_of(event_env)
    return feedback_id(body.feedback_origin, event_env.agency, body.feedback)


def feedback_event(origin: str, fields: Mapping[str, Any]) -> Keyed:
    """An immutable event in a feedback item's life, keyed by item, status, time, actor."""
    status = text(fields, "status", limit=32).lower().replace(" ", "_")
    if status not in FEEDBACK_STATUSES:
        raise InputError(
            f"'status' is not a feedback status (got {status!r})",
            "use one of " + ", ".join(sorted(FEEDBACK_STATUSES)),
            field="status",
            code="bad_status",
        )
    body = pb.FeedbackEvent(
        feedback=code(fields, "feedback"),
        status=status,
        at=timestamp(fields, "at"),
        note=text(fields, "note", required=False),
        unit=code(fields, "assigned_unit", required=False),
        feedback_origin=code(fields, "feedback_origin", required=False) or origin,
    )
    rating = fields.get("rating")
    if rating is not None:
        if not isinstance(rating, int) or isinstance(rating, bool) or not 1 <= rating <= 5:
            raise InputError("'rating' must be a whole number from 1 to 5", "write e.g. 4", field="rating")
        body.rating = rating
    unit, agency = code(fields, "unit"), code(fields, "agency", required=False)
    rid = record_id(FEEDBACK_EVENT, body.feedback_origin, body.feedback, body.status, body.at, origin, agency)
    return Keyed(rid, FEEDBACK_EVENT, unit, agency, body.SerializeToString(deterministic=True))


def definition(origin: str, fields: Mapping[str, Any]) -> Keyed:
    """A definition (indicator, report type, unit, ...) written by the province."""

    payload = fields.get("fields", {})
    if not isinstance(payload, Mapping):
        raise InputError("'fields' must be an object", "give the definition's fields as a JSON object", field="fields")
    body = pb.Definition(
        type=code(fields, "type"),
        code=code(fields, "code"),
        json=json.dumps(payload, ensure_ascii=False, sort_keys=True, default=_json_number),
    )
    unit = code(fields, "unit", required=False) or origin
    rid = record_id(DEFINITION, body.type, body.code, origin)
    return Keyed(rid, DEFINITION, unit, "", body.SerializeToString(deterministic=True), bool(fields.get("deleted")))


def audit_entry(origin: str, unit: str, entry: Mapping[str, Any]) -> Keyed:
    """A copy of one entry of `origin`'s audit log (fields as `audit_chain.Entry.to_dict`), keyed
    by origin, seq and hash: never replaced, so a rewritten entry shows as a second one."""
    details = entry["details"]
    body = pb.AuditEntry(
        seq=int(entry["seq"]),
        time=str(entry["time"]),
        actor=str(entry["actor"]),
        action=str(entry["action"]),
        subject=str(entry["subject"]),
        details=details if isinstance(details, str) else canonical_json(details),
        prev_hash=str(entry["prev_hash"]),
        hash=str(entry["hash"]),
    )
    rid = record_id(AUDIT_ENTRY, origin, str(body.seq), body.hash)
    return Keyed(rid, AUDIT_ENTRY, unit, "", body.SerializeToString(deterministic=True))


def dispute(origin: str, fields: Mapping[str, Any]) -> Keyed:
    """An act in a dispute on a figure (sync/disputes.py), keyed by thread (the record, for the
    opening act), action, time, origin and agency. Fields as `disputes.act_fields` makes them."""
    body = pb.Dispute(
        thread=bytes.fromhex(str(fields.get("thread") or "")),
        action=text(fields, "action", limit=32),
        at=timestamp(fields, "at"),
        note=text(fields, "note", required=False),
        record=bytes.fromhex(text(fields, "record", limit=64)),
        record_origin=code(fields, "record_origin"),
        record_kind=int(fields.get("record_kind") or 0),  # type: ignore[arg-type]
        record_unit=code(fields, "record_unit"),
        record_version=int(fields.get("record_version") or 0),
        thread_origin=code(fields, "thread_origin", required=False) or origin,
        value=text(fields, "value", required=False, limit=1_000),
    )
    unit, agency = code(fields, "unit"), code(fields, "agency", required=False)
    return Keyed(dispute_id(body, origin, agency), DISPUTE, unit, agency, body.SerializeToString(deterministic=True))


def dispute_id(body: Any, origin: str, agency: str) -> bytes:
    """A dispute act's id; the opening act's is the thread's id."""
    return record_id(DISPUTE, (body.thread or body.record).hex(), body.action, body.at, origin, agency)


def approval(origin: str, fields: Mapping[str, Any]) -> Keyed:
    """A step in the approval of a data set of a unit for a period, keyed by data set, period,
    unit and origin (each writer's latest step replaces its earlier one)."""
    action = text(fields, "action", limit=16)
    if action not in APPROVAL_OWN_ACTIONS | APPROVAL_ABOVE_ACTIONS:
        raise InputError(
            f"'action' is not an approval step (got {action!r})",
            "use one of " + ", ".join(sorted(APPROVAL_OWN_ACTIONS | APPROVAL_ABOVE_ACTIONS)),
            field="action",
            code="bad_action",
        )
    body = pb.Approval(
        dataset=code(fields, "dataset"),
        period=period(fields),
        action=action,
        reason=text(fields, "reason", required=action in {"returned", "unapproved", "unaccepted"}),
        by=text(fields, "by", required=False),
        at=timestamp(fields, "at"),
    )
    unit = code(fields, "unit")
    rid = record_id(APPROVAL, body.dataset, body.period, unit, origin)
    return Keyed(rid, APPROVAL, unit, "", body.SerializeToString(deterministic=True))


def canonical_json(value: Any) -> str:
    """Sorted-key compact JSON with non-ASCII text unescaped (the audit log's hashed form)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def expected_id(env: Envelope) -> bytes | None:
    """The id an envelope's natural key gives (the builders' derivation), or None for kinds
    whose id is not derived (seals). A received record whose id differs is refused: its
    writer is trying to overwrite another record."""
    body = body_of(env)
    if env.kind == INDICATOR:
        return record_id(INDICATOR, body.indicator, env.unit, body.period, body.disaggregation, env.origin, env.agency)
    if env.kind == REPORT:
        key = body.source_id or _SEP.join((body.report_type, body.period))
        return record_id(REPORT, key, env.unit, env.origin, env.agency)
    if env.kind == FEEDBACK:
        return feedback_id(env.origin, env.agency, body.source_id)
    if env.kind == FEEDBACK_EVENT:
        return record_id(FEEDBACK_EVENT, body.feedback_origin, body.feedback, body.status, body.at, env.origin, env.agency)
    if env.kind == DEFINITION:
        return record_id(DEFINITION, body.type, body.code, env.origin)
    if env.kind == AUDIT_ENTRY:
        return record_id(AUDIT_ENTRY, env.origin, str(body.seq), body.hash)
    if env.kind == DISPUTE:
        return dispute_id(body, env.origin, env.agency)
    if env.kind == APPROVAL:
        return record_id(APPROVAL, body.dataset, body.period, env.unit, env.origin)
    return None


def _json_number(value: object) -> object:
    """Decimals (how JSON Lines numbers are read, to keep their digits) back into JSON numbers."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


BUILDERS = {
    "indicator": indicator_value,
    "report": report,
    "feedback": feedback,
    "feedback_event": feedback_event,
    "definition": definition,
}  # not approvals: they are steps an operator takes (`lienthong approve`), never lines of an agency's file


def build(origin: str, fields: Mapping[str, Any]) -> Keyed:
    """Build a record from canonical fields (one JSON Lines object)."""
    kind = fields.get("kind")
    builder = BUILDERS.get(kind) if isinstance(kind, str) else None
    if builder is None:
        raise InputError(
            f"'kind' must be one of {', '.join(BUILDERS)} (got {kind!r})",
            "set 'kind' on every line",
            field="kind",
            code="bad_kind",
        )
    return builder(origin, fields)


# ---------------------------------------------------------------- reading back


def body_of(env: Envelope) -> Any:
    """The typed body; for feedback, with the citizen's values where the envelope discloses them
    (records format 2 keeps them beside the body, see `privacy.py`)."""
    body = BODY_TYPES[env.kind]()
    body.ParseFromString(env.body)
    for item in env.personal if env.kind == FEEDBACK else ():
        if item.field in ("name", "phone", "email"):
            setattr(body.citizen, item.field, item.value)
    return body


def plain_body(env: Envelope) -> bytes:
    """The body as its builder made it (a feedback's values back in place, no commitments):
    what is written again under a new version and sealed anew."""
    if env.kind != FEEDBACK or not env.body:
        return env.body
    body = body_of(env)
    body.ClearField("citizen_commitment")
    return bytes(body.SerializeToString(deterministic=True))


def to_dict(env: Envelope) -> dict[str, Any]:
    """The canonical fields of a record, plus origin, version and id (hex)."""
    from google.protobuf.json_format import MessageToDict

    out: dict[str, Any] = {"kind": KIND_NAMES.get(env.kind, "unknown")}
    body = MessageToDict(body_of(env), preserving_proto_field_name=True, always_print_fields_with_no_presence=False)
    body.pop("citizen_commitment", None)
    if env.kind == FEEDBACK_EVENT and "unit" in body:
        body["assigned_unit"] = body.pop("unit")
    if env.kind == DEFINITION:
        body["fields"] = json.loads(body.pop("json", "{}") or "{}")
    if env.kind == DISPUTE:
        for name in ("thread", "record"):
            body[name] = getattr(body_of(env), name).hex()
        body["record_kind"] = KIND_NAMES.get(body_of(env).record_kind, "")
    if env.kind == INDICATOR:
        number = Decimal(body.get("value", "0"))
        body["value"] = int(number) if number == number.to_integral() else float(number)
    out.update({k: v for k, v in body.items() if v != {}})  # no empty objects (a feedback without citizen data)
    out["unit"] = env.unit
    if env.agency:
        out["agency"] = env.agency
    if env.deleted:
        out["deleted"] = True
    out["origin"] = env.origin
    out["version"] = env.version
    out["id"] = env.id.hex()
    return out
