"""The OpenAPI 3.1 description of the read API, served at /api/v1/openapi.json (docs/api.md says the same in prose)."""

from __future__ import annotations

from typing import Any


def _param(name: str, description: str, required: bool = False, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema or {"type": "string"}}


PAGE = [
    _param("limit", "Items per page, 1-1000 (default 100).", schema={"type": "integer", "minimum": 1, "maximum": 1000}),
    _param("offset", "Items to skip (default 0).", schema={"type": "integer", "minimum": 0}),
]
UNIT = _param("unit", "Only this unit (a unit code).")
SUBTREE = _param("subtree", "With unit: the units below it too.", schema={"type": "boolean"})
PERIOD = _param("period", "A period: 2026-10, 2026Q3, 2026S1, 2026, a week 2026W05 or a day 2026-10-31.")
AGENCY = _param("agency", "Only this agency's data.")
ERROR = {
    "description": "A refused request: {error: {code, message, hint}}",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
PAGED = {
    "description": "A page: {items, total, limit, offset}",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Page"}}},
}


def _get(summary: str, params: list[dict[str, Any]], ok: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": params,
            "responses": {"200": ok or PAGED, "400": ERROR, "401": ERROR, "403": ERROR},
        }
    }


OBJECT = {"description": "A JSON object", "content": {"application/json": {"schema": {"type": "object"}}}}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "lienthong read API",
        "version": "1",
        "description": "What a lienthong node holds: indicator values, reports and completeness, citizen feedback, "
        "inbox receipts, the node's links. Sessions: POST /login (form: name, password) sets an HttpOnly cookie; "
        "writes carry the session's CSRF token (GET /api/v1/me) in X-CSRF-Token.",
    },
    "paths": {
        "/api/v1/node": _get("The node, its parent link, its children and the silent units.", [], OBJECT),
        "/api/v1/me": _get("The account asking: name, role, scope, CSRF token.", [], OBJECT),
        "/api/v1/units": _get(
            "The unit registry.", [_param("parent", "Children of this unit."), _param("level", "Units of this level."), *PAGE]
        ),
        "/api/v1/indicators": _get("Indicator values.", [UNIT, SUBTREE, PERIOD, AGENCY, _param("indicator", "Indicator code."), *PAGE]),
        "/api/v1/indicators/rollup": _get(
            "The roll-up of a period down the unit hierarchy (format=csv|dhis2 or download=1: a file).",
            [{**PERIOD, "required": True}, UNIT, AGENCY, _param("format", "json (default), csv or dhis2.")],
            OBJECT,
        ),
        "/api/v1/reports": _get(
            "Reports with their files.", [UNIT, SUBTREE, PERIOD, AGENCY, _param("report_type", "Report type code."), *PAGE]
        ),
        "/api/v1/completeness": _get(
            "Completeness and timeliness of a period (as `lienthong reports completeness --json`).",
            [{**PERIOD, "required": True}, UNIT, _param("report_type", "Report type code."), _param("level", "Unit level.")],
            OBJECT,
        ),
        "/api/v1/feedback": _get(
            "Feedback items, overdue first.",
            [
                _param("unit", "Items this unit must handle."),
                AGENCY,
                _param("state", "received, assigned, accepted, in_progress, resolved, closed, reopened, returned"),
                _param("category", "Category code."),
                _param("open", "Only open items.", schema={"type": "boolean"}),
                _param("overdue", "Only overdue items.", schema={"type": "boolean"}),
                *PAGE,
            ],
        ),
        "/api/v1/feedback/counts": _get("Open and overdue feedback, and items per state.", [], OBJECT),
        "/api/v1/feedback/{item}": {
            "get": {
                "summary": "One item with its full history (as `lienthong feedback show --json`).",
                "parameters": [{"name": "item", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": OBJECT, "403": ERROR, "404": ERROR},
            }
        },
        "/api/v1/feedback/{item}/events": {
            "post": {
                "summary": "Assign, reassign or update an item (operator role; the CLI's rules; audited).",
                "parameters": [{"name": "item", "in": "path", "required": True, "schema": {"type": "string"}}],
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["status"],
                                "properties": {
                                    "status": {"type": "string"},
                                    "unit": {"type": "string"},
                                    "note": {"type": "string"},
                                    "result": {"type": "string"},
                                    "rating": {"type": "integer"},
                                },
                            }
                        }
                    }
                },
                "responses": {"200": OBJECT, "400": ERROR, "403": ERROR, "404": ERROR, "409": ERROR},
            }
        },
        "/api/v1/approvals": {
            "post": {
                "summary": "Approve, accept, return, un-approve or un-accept a unit's data set for a period "
                "(operator role; the rules of `lienthong approve`; recorded with the account's name; audited).",
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["unit", "dataset", "period", "action"],
                                "properties": {
                                    "unit": {"type": "string"},
                                    "dataset": {"type": "string"},
                                    "period": {"type": "string"},
                                    "action": {"type": "string", "enum": ["approve", "accept", "return", "unapprove", "unaccept"]},
                                    "reason": {"type": "string"},
                                },
                            }
                        }
                    }
                },
                "responses": {"200": OBJECT, "400": ERROR, "403": ERROR, "409": ERROR},
            }
        },
        "/api/v1/files": _get(
            "Files taken from the inboxes, newest first, with refused rows.", [AGENCY, _param("status", "success, warning, error"), *PAGE]
        ),
        "/api/v1/audit": _get("The audit log, newest first (unscoped admin accounts).", PAGE),
    },
    "components": {
        "schemas": {
            "Error": {
                "type": "object",
                "properties": {
                    "error": {
                        "type": "object",
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "hint": {"type": "string"}},
                    }
                },
            },
            "Page": {
                "type": "object",
                "properties": {
                    "items": {"type": "array", "items": {"type": "object"}},
                    "total": {"type": "integer"},
                    "limit": {"type": "integer"},
                    "offset": {"type": "integer"},
                },
            },
        }
    },
}
