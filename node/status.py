"""What `lienthong status` reports, read from the node directory alone.

It works whether or not the node runs: link states come from the store, and a
link is shown connected only while the node process holds its run lock.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from lienthong.config.settings import Settings
from lienthong.sync import completeness
from lienthong.sync import feedback as feedback_items
from lienthong.sync.downstream import Downstream
from lienthong.sync.errors import LienthongError
from lienthong.sync.replication import CLOCK_WARN_MS
from lienthong.sync.schedule import Schedules, today_in_vietnam
from lienthong.sync.store import Store
from lienthong.sync.units import Units
from lienthong.sync.upstream import Upstream

from . import sink_task
from .disk import disk_state
from .runtime import STORE_FILE, node_files, own_units, running_info, tls_paths
from .trust import ca, tokens
from .trust.tls import certificate_summary


def iso(ts: float | None) -> str | None:
    if not ts:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def reports_owed(store: Store, settings: Settings, today: dt.date | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """The reports this node's units owe for the previous, current and next periods, and the
    definitions that could not be read (shown, so that status itself never fails on them)."""
    try:
        units = Units.from_store(store)
        schedules = Schedules.from_store(store)
    except LienthongError as exc:
        return [], [exc.message]
    own = own_units(settings)
    owed = completeness.owed(units, schedules, completeness.submissions(store, own), own, today or today_in_vietnam())
    return owed, [problem.message for problem in schedules.problems]


def clock_warning(whose: str, offset_ms: int | None, than: str) -> str | None:
    """'this node's clock is 2 days ahead of its parent's; …' when two clocks disagree by more than a minute."""
    if offset_ms is None or abs(offset_ms) <= CLOCK_WARN_MS:
        return None
    seconds = abs(offset_ms) / 1000
    amount = (
        f"{seconds / 86400:.1f} days"
        if seconds >= 86400
        else f"{seconds / 3600:.1f} hours"
        if seconds >= 3600
        else f"{seconds / 60:.0f} minutes"
    )
    direction = "ahead of" if offset_ms > 0 else "behind"
    return f"{whose} is {amount} {direction} {than}: records it seals may be refused; set the clock right (NTP)"


def _enrolled(node_dir: Path, settings: Settings) -> list[str]:
    """Node ids that enrolled here with a token (the province's enroll.db), and those its CA
    issued a valid certificate naming this node as their parent (none when it has neither)."""
    out: list[str] = []
    try:
        if (node_dir / tokens.TOKENS_FILE).exists():  # never made here by a read
            out += [row["node_id"] for row in tokens.list_tokens(node_dir) if row["used_at"]]
        ca_dir = node_dir / settings.tls.ca_dir if settings.tls.ca_dir else None
        if ca_dir is not None and (ca_dir / ca.REGISTRY).exists():
            out += [r["node_id"] for r in ca.list_issued(ca_dir) if r["status"] == "valid" and r["parent"] == settings.node.id]
    except LienthongError:
        pass  # status shows what it can read; `ca list` and `token list` name the trouble
    return out


def subordinates(node_dir: Path, settings: Settings, store: Store, children: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """Every unit under this node, connected or not: the units registered under its own units, the
    nodes that enrolled here and the children that ever connected; the silent ones first (never
    connected, then the longest silent), as an operator looks for them."""
    own = own_units(settings)
    names: dict[str, tuple[str, str]] = {}
    marks = ",".join("?" * len(own))
    for code, name, level in store.reader().execute(
        f"SELECT code, name, level FROM units WHERE parent IN ({marks}) AND (valid_to IS NULL OR valid_to = '' OR valid_to >= ?)",
        [*own, dt.datetime.now(dt.UTC).date().isoformat()],
    ):
        names[code] = (name, level)
    links = {c["id"]: c for c in children}
    silence = settings.web.silence_minutes * 60
    out = []
    for unit in sorted({*names, *_enrolled(node_dir, settings), *links} - set(own)):
        link = links.get(unit)
        contact = link["last_contact"] if link else None
        age = now - dt.datetime.fromisoformat(contact).timestamp() if contact else None
        connected = bool(link and link["connected"])
        out.append(
            {
                "id": unit,
                "name": names.get(unit, ("", ""))[0],
                "level": names.get(unit, ("", ""))[1],
                "registered": unit in names,
                "connected": connected,
                "last_contact": contact,
                "never_connected": contact is None,
                "silent": not connected and (age is None or age > silence),
                "applied": link["applied"] if link else 0,
            }
        )
    out.sort(key=lambda u: (not u["silent"], not u["never_connected"], u["last_contact"] or "", u["id"]))
    return out


def collect(node_dir: Path, settings: Settings) -> dict[str, Any]:
    running = running_info(node_dir)
    store = Store.open(node_dir / STORE_FILE)
    try:
        cert_path = tls_paths(node_dir, settings).cert
        certificate = certificate_summary(cert_path) if cert_path.exists() else None
        head = store.head()
        upstream, down = Upstream(store), Downstream(store)
        out: dict[str, Any] = {
            "node": {
                "id": settings.node.id,
                "name": settings.node.name,
                "mode": settings.node.mode,
                "running": running is not None,
                "pid": running.get("pid") if running else None,
                "listen": settings.server.listen or None,
                "port": running.get("port") if running else None,
                "enroll_port": (running.get("enroll_port") or None) if running else None,
                "web_port": (running.get("web_port") or None) if running else None,
                "epoch": store.epoch,
                "head": head,
                "certificate": certificate,
            },
            "records": store.counts(),
            "parent": None,
            "children": [],
            "quarantine": down.quarantine(),
            "ingest": {**store.file_totals(), "recent": [{**f, "at": iso(f["at"])} for f in store.recent_files()]},
            "disk": disk_state(store.path, settings.store.min_free_mb),
        }
        # Files named by records held here and still arriving: down from the parent, up from the children.
        out["files"] = node_files(node_dir, settings, store).pending()
        out["reports_owed"], out["schedule_problems"] = reports_owed(store, settings)
        out["feedback"] = feedback_items.status_summary(store, dt.datetime.now(dt.UTC))
        out["sink"] = sink_task.state_of(node_dir, settings, head)
        if settings.parent.address:
            up = upstream.uplink_state()
            out["parent"] = {
                "address": settings.parent.address,
                "id": up["parent_id"] or None,
                "connected": bool(running and up["connected"]),
                "last_contact": iso(up["last_contact"]),
                "pending": upstream.pending(),
                "acked": up["acked"],
                "sent": up["sent"],
                "acknowledged": up["acked_records"],
                "received": up["received"],
                "down_applied": up["down_applied"],
                "refused": upstream.refused_count(),
                "refused_records": upstream.refused(),
                # This node's clock minus its parent's, at the last handshake (positive: ahead).
                "clock_offset_s": None if up["clock_offset_ms"] is None else round(-up["clock_offset_ms"] / 1000),
                "clock_warning": clock_warning(
                    "this node's clock", None if up["clock_offset_ms"] is None else -up["clock_offset_ms"], "its parent's"
                ),
            }
        for child in down.children():
            out["children"].append(
                {
                    "id": child["child"],
                    "connected": bool(running and child["connected"]),
                    "last_contact": iso(child["last_contact"]),
                    "applied": child["applied"],
                    "epoch": child["epoch"],
                    "received": child["received"],
                    "rejected": child["rejected"],
                    "queued_down": child["queued"],
                    "address": child["address"],
                    # The child's clock minus this node's, at its last handshake (positive: ahead).
                    "clock_offset_s": None if child["clock_offset_ms"] is None else round(child["clock_offset_ms"] / 1000),
                    "clock_warning": clock_warning(f"node {child['child']}'s clock", child["clock_offset_ms"], "this node's"),
                }
            )
        # The unit registry is read from the read tables, which follow the records (a stopped node's
        # ingest left them behind): caught up first, a no-op while the node runs and keeps them.
        store.fresh_read_tables()
        out["units"] = subordinates(node_dir, settings, store, out["children"], time.time())
        return out
    finally:
        store.close()
