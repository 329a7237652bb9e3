"""Citizen feedback from Open311 GeoReport v2 JSON (`open311`), e.g. the provincial 1022 hotline.

A file is a JSON array of service requests (or an object whose `service_requests`
is that array), streamed one request at a time. Each request becomes one `feedback`
record:

    service_request_id  -> source_id             service_code     -> category
    agency_responsible  -> unit, assigned_unit   service_name     -> category_name
    description         -> description           requested_datetime -> received_at
    address             -> address               lat / long       -> lat / lon
    media_url           -> media_url             expected_datetime  -> due_at
    first_name + last_name, phone, email -> citizen {name, phone, email}  (personal data)

A request with no `agency_responsible` (not dispatched yet) is about this node's own
unit (`context.origin`) and has no assigned unit.

A request with neither `description` nor `requested_datetime` is a status update
for an item the node already holds (typically one the province dispatched, dropped
by the unit's own system): only its status events are taken, and they find their
item by its ticket id (sync/feedback.py).

Each entry of the `notes` status-history extension (`{datetime, description, type}`)
becomes one `feedback_event`: submitted/received -> received, assigned -> assigned
(with the assigned unit: the note's `agency_responsible`, else the request's),
accepted/acknowledged, in_progress ("in progress", "in-progress"), resolved (its
description is the result), closed, reopened, returned (the note's
`agency_responsible`, if any, is the unit suggested instead), satisfaction (the
citizen's `rating`, 1 to 5). A note of another type is refused as a row error; the
other notes and the request are still taken.

The request's own `status` may be `open`, `closed` or one of the extended statuses
above. When it names a status that no note records (typically `closed` without a
closed note), an event with that status is added at `updated_datetime` with the
`status_notes`. `open` adds nothing.

Numbers written with a leading zero (`"service_code": 006`, as in the GeoReport
spec's own example) are not JSON: the whole file is refused, saying where and how to
fix it. Row line numbers are the line where the request's `{` is.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lienthong.sync import records
from lienthong.sync.errors import InputError

from . import messages
from .base import ParseContext, Row
from .parsing import JsonStream, json_text

NOTE_TYPES = {
    "submitted": "received",
    "received": "received",
    "assigned": "assigned",
    "accepted": "accepted",
    "acknowledged": "accepted",
    "in_progress": "in_progress",
    "in progress": "in_progress",
    "in-progress": "in_progress",
    "resolved": "resolved",
    "closed": "closed",
    "reopened": "reopened",
    "returned": "returned",
    "satisfaction": "satisfaction",
}
REQUEST_STATUSES = dict(NOTE_TYPES, open="")  # "open" adds no event
_ALLOWED = "submitted, received, assigned, accepted, in_progress, resolved, closed, reopened, returned, satisfaction"


def _status_key(value: Any) -> str:
    return " ".join(value.strip().lower().split()) if isinstance(value, str) else ""


class Open311Adapter:
    """Citizen feedback and its status history from Open311 GeoReport v2 JSON."""

    name = "open311"
    version = "1.0"
    description = "Phản ánh của người dân từ Open311 GeoReport v2 (JSON) / citizen feedback from Open311 GeoReport v2 JSON"
    kinds = frozenset({"feedback", "feedback_event"})

    def claims(self, path: Path, head: bytes) -> bool:
        try:
            name = path.name.lower()
            if not name.endswith(".json") or name.endswith(".report.json"):
                return False
            start = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
            return start in (b"[", b"{") and (b'"service_request_id"' in head or b'"service_requests"' in head)
        except Exception:
            return False

    def parse(self, path: Path, context: ParseContext) -> Iterator[Row]:
        seen = other = False  # service requests / top-level content that is not one
        for event, payload, line in JsonStream(path, stream_key="service_requests", fmt="Open311 JSON").events():
            if event in ("element", "item"):
                seen = True
                yield from _request(line, payload, context)
            else:
                other = True
        if other and not seen:
            # [] and {"service_requests": []} are valid and empty; anything else is not Open311.
            raise messages.refused(
                "wrong_shape",
                file=path.name,
                format="Open311",
                detail_vi="tệp phải là một danh sách JSON [...] các phản ánh (service requests)",
                detail_en="the file must be a JSON array of service requests",
            )


def _request(line: int, request: Any, context: ParseContext) -> Iterator[Row]:
    if not isinstance(request, dict):
        yield Row(line, error=messages.row_error(line, "", "not_object"))
        return
    responsible = json_text(request.get("agency_responsible"))
    unit = responsible if isinstance(responsible, str) and responsible.strip() else context.origin
    names = [request.get(key) for key in ("first_name", "last_name")]
    citizen = {
        "name": " ".join(part.strip() for part in names if isinstance(part, str) and part.strip()),
        "phone": json_text(request.get("phone")),
        "email": request.get("email"),
    }
    fields: dict[str, Any] = {
        "source_id": json_text(request.get("service_request_id")),
        "unit": unit,
        "agency": context.agency,
        "category": json_text(request.get("service_code")),
        "category_name": request.get("service_name"),
        "description": request.get("description"),
        "received_at": request.get("requested_datetime"),
        "address": request.get("address"),
        "lat": request.get("lat"),
        "lon": request.get("long", request.get("lon")),
        "media_url": request.get("media_url"),
        "due_at": request.get("expected_datetime"),
        "assigned_unit": responsible,
        "citizen": {key: value for key, value in citizen.items() if value},
    }
    update_only = _absent(request.get("description")) and _absent(request.get("requested_datetime"))
    if not update_only:
        try:
            yield Row(line, record=records.feedback(context.origin, fields))
        except InputError as exc:
            yield Row(line, error=messages.from_input_error(line, exc, fields))
            return  # its status history would describe a request that was not taken

    source_id = fields["source_id"]
    recorded: set[str] = set()
    notes = request.get("notes") or []
    if not isinstance(notes, list):
        yield Row(line, error=messages.row_error(line, "notes", "invalid", value=notes))
        notes = []
    for note in notes:
        if not isinstance(note, dict):
            yield Row(line, error=messages.row_error(line, "status", "invalid", value=note))
            continue
        kind = note.get("type")
        status = NOTE_TYPES.get(_status_key(kind))
        if not status:
            yield Row(
                line, error=messages.row_error(line, "status", "bad_status", value=kind if kind is not None else "", allowed=_ALLOWED)
            )
            continue
        recorded.add(status)
        if status == "assigned":
            assigned = json_text(note.get("agency_responsible")) or responsible
        else:
            assigned = json_text(note.get("agency_responsible")) if status == "returned" else None
        rating = note.get("rating") if status == "satisfaction" else None
        if status == "satisfaction" and rating is None:
            yield Row(line, error=messages.row_error(line, "rating", "missing"))
            continue
        yield _event(line, context, source_id, unit, status, note.get("datetime"), note.get("description"), assigned, rating)

    state = request.get("status")
    if state is None or state == "":
        return
    status = REQUEST_STATUSES.get(_status_key(state))
    if status is None:
        yield Row(line, error=messages.row_error(line, "status", "bad_status", value=state, allowed="open, closed, " + _ALLOWED))
        return
    if status and status not in recorded:
        updated = request.get("updated_datetime")
        if updated is None or updated == "":
            yield Row(line, error=messages.row_error(line, "updated_datetime", "missing"))
            return
        assigned = responsible if status == "assigned" else None
        yield _event(line, context, source_id, unit, status, updated, request.get("status_notes"), assigned)


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _event(
    line: int, context: ParseContext, source_id: Any, unit: str, status: str, at: Any, note: Any, assigned: Any, rating: Any = None
) -> Row:
    fields = {
        "feedback": source_id,
        "status": status,
        "at": at,
        "note": note,
        "unit": unit,
        "agency": context.agency,
        "assigned_unit": assigned,
        "rating": rating,
    }
    try:
        return Row(line, record=records.feedback_event(context.origin, fields))
    except InputError as exc:
        return Row(line, error=messages.from_input_error(line, exc, fields))
