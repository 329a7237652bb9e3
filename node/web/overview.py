"""/api/v1/node: the node, its parent link, its children with their connection state, and the
silent units — direct subordinate units that never connected, or not within `[web] silence_minutes`."""

from __future__ import annotations

import datetime as dt
from typing import Any

from lienthong.sync.downstream import Downstream
from lienthong.sync.upstream import Upstream

from .api import Scope, record_counts


def _iso(ts: float | None) -> str | None:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds") if ts else None


def overview(console: Any, scope: Scope, now: float) -> dict[str, Any]:
    settings, store = console.settings, console.store
    running = console.runtime
    silence = settings.web.silence_minutes * 60
    down = Downstream(store)
    children = []
    for child in down.children():
        if scope.units is not None and child["child"] not in scope.units:
            continue
        contact = child["last_contact"]
        children.append(
            {
                "id": child["child"],
                "connected": bool(child["connected"]),
                "last_contact": _iso(contact),
                "last_contact_age_s": round(now - contact, 1) if contact else None,
                "applied": child["applied"],
                "received": child["received"],
                "rejected": child["rejected"],
                "queued_down": child["queued"],
                "quarantined": store.reader().execute("SELECT count(*) FROM quarantine WHERE child = ?", (child["child"],)).fetchone()[0],
                "silent": not child["connected"] and (not contact or now - contact > silence),
            }
        )
    seen = {c["id"] for c in children}
    expected = [
        (code, name, level)
        for code, name, level in store.reader().execute(
            "SELECT code, name, level FROM units WHERE parent = ? ORDER BY code", (settings.node.id,)
        )
        if scope.units is None or code in scope.units
    ]
    silent = [{"unit": code, "name": name, "level": level, "never_connected": True} for code, name, level in expected if code not in seen]
    names = {code: name for code, name, _ in expected}
    silent += [
        {"unit": c["id"], "name": names.get(c["id"], ""), "never_connected": False, "last_contact": c["last_contact"]}
        for c in children
        if c["silent"]
    ]
    for c in children:
        c["name"] = names.get(c["id"], "")
    parent = None
    if settings.parent.address and not scope.units and not scope.agencies:
        up = Upstream(store)
        state = up.uplink_state()
        parent = {
            "address": settings.parent.address,
            "id": state["parent_id"] or settings.parent.id or None,
            "connected": bool(state["connected"]),
            "last_contact": _iso(state["last_contact"]),
            "last_contact_age_s": round(now - state["last_contact"], 1) if state["last_contact"] else None,
            "pending": up.pending(),
            "refused": up.refused_count(),
        }
    return {
        "node": {
            "id": settings.node.id,
            "name": settings.node.name,
            "mode": settings.node.mode,
            "port": running.get("port"),
            "web_port": running.get("web_port"),
            "records": record_counts(store) if not scope.units and not scope.agencies else None,
        },
        "parent": parent,
        "children": children,
        "silent_units": silent,
        "silence_minutes": settings.web.silence_minutes,
    }
