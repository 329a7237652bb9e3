"""Routing: which child must receive what, filling the parent's downward queue.

- Definitions go to every child (never back to the one that sent them).
- Citizen feedback and its events go to the child whose subtree holds the record's
  unit; an event also to the child holding its item's unit; an `assigned` event
  also to the child holding the newly assigned unit, with the item's whole history
  when that child did not hold it yet.
- A child that connects for the first time, or names a unit or node for the first time, is
  queued the feedback it must now hold (`queue_feedback_for`), what was shared with its
  units, and the acts of disputes its nodes are a party to.
- Acts of a dispute on a figure go to the child holding the disputed record's origin
  and to the child holding the node that opened the thread (sync/disputes.py).
- An approval step (sync/approval.py) goes to the child whose subtree holds its unit, never back
  to the child it came from: the level above's acceptance or return reaches the unit's node.
- Records the province shared (`share` definitions, sharing.py) go to the child whose
  subtree holds a unit they are shared with, and the share with them; nowhere else.

Which child holds a unit comes from `subtree.Subtrees`: the province's node and unit
definitions and the children this node knows, never from which child named the unit
first. A child not yet connected is still the one its units' feedback is queued for;
it receives it when it comes. Every function here
works on the writer's connection inside the writer's transaction, so a unit defined
in the same transaction as a feedback item routes that item.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from . import disputes, records, sharing
from .records import Envelope
from .subtree import Subtrees

# A feedback row to route: (rid, kind, unit, via, envelope).
FeedbackRow = tuple[int, int, str, str, bytes]


class Router:
    """Fills the downward queue of the node `node_id`."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    def route(self, db: sqlite3.Connection, ids: Sequence[bytes]) -> None:
        """Queue newly written records (by id) for the children that must receive them."""
        if not ids:
            return
        children = [c for (c,) in db.execute("SELECT child FROM children")]
        if not children and not _may_have_children(db, self.node_id):
            return
        queue: list[tuple[str, int]] = []
        feedback_rows: list[FeedbackRow] = []
        owners: _Owners | None = None
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for rid, kind, unit, via, raw, shared in db.execute(
                f"SELECT r.rid, r.kind, r.unit, r.via, CASE WHEN r.kind = ? THEN NULL ELSE r.envelope END, "
                f"r.kind = ? AND instr(r.envelope, ?) > 0 FROM records r WHERE r.id IN ({marks}) AND r.kind IN (?, ?, ?, ?, ?)",
                (
                    records.DEFINITION,
                    records.DEFINITION,
                    sharing.SHARE_MARK,
                    *chunk,
                    records.DEFINITION,
                    records.FEEDBACK,
                    records.FEEDBACK_EVENT,
                    records.DISPUTE,
                    records.APPROVAL,
                ),
            ):
                if kind == records.DISPUTE:
                    owners = owners or _Owners(db, self.node_id)
                    queue.extend((c, rid) for c in sorted(disputes.routes(Envelope.FromString(raw), owners.child_for_node)) if c != via)
                elif kind == records.DEFINITION:
                    if not shared:  # a share goes only where its records go (below)
                        queue.extend((c, rid) for c in children if c != via)
                else:
                    feedback_rows.append((rid, kind, unit, via, raw))
        if feedback_rows:
            queue.extend(self.feedback_routes(db, feedback_rows))
        queue.extend(sharing.share_routes(db, _Owners(db, self.node_id), ids))
        queue = list(dict.fromkeys(queue))  # a record queued twice for one child is sent once
        ordered: list[tuple[str, int]] = sorted(queue, key=_by_rid)
        db.executemany("INSERT INTO downqueue(child, rid) VALUES (?, ?)", ordered)

    def route_shared(self, db: sqlite3.Connection, ids: Sequence[bytes]) -> None:
        """Queue records received from a child for the children they were shared with (sharing.py)."""
        queue: list[tuple[str, int]] = sorted(dict.fromkeys(sharing.share_routes(db, _Owners(db, self.node_id), ids)), key=_by_rid)
        db.executemany("INSERT INTO downqueue(child, rid) VALUES (?, ?)", queue)

    def queue_feedback_for(self, db: sqlite3.Connection, child: str) -> None:
        """`child` holds new units: queue the feedback it must now hold — items of its units,
        their events, and items assigned to its units before it first connected, with their history —
        and the dispute acts its nodes are a party to."""
        rows = db.execute(
            "SELECT rid, kind, unit, via, envelope FROM records WHERE kind IN (?, ?) AND via != ? ORDER BY rid",
            (records.FEEDBACK, records.FEEDBACK_EVENT, child),
        ).fetchall()
        queued = {rid for (rid,) in db.execute("SELECT rid FROM downqueue WHERE child = ?", (child,))}
        wanted = sorted({rid for target, rid in self.feedback_routes(db, rows) if target == child} - queued)
        db.executemany("INSERT INTO downqueue(child, rid) VALUES (?, ?)", [(child, rid) for rid in wanted])
        queued.update(wanted)
        # And what was shared with its units (sharing.py), the share's definition first.
        owners = _Owners(db, self.node_id)
        shared = [rid for _, rid in sharing.routes_for_child(db, owners, child) if rid not in queued]
        db.executemany("INSERT INTO downqueue(child, rid) VALUES (?, ?)", [(child, rid) for rid in dict.fromkeys(shared)])
        queued.update(shared)
        # And the acts of disputes it is a party to (its nodes' records questioned, or its nodes' questions).
        acts = [
            rid
            for rid, raw in db.execute(
                "SELECT rid, envelope FROM records WHERE kind = ? AND via != ? ORDER BY rid", (records.DISPUTE, child)
            )
            if rid not in queued and child in disputes.routes(Envelope.FromString(raw), owners.child_for_node)
        ]
        db.executemany("INSERT INTO downqueue(child, rid) VALUES (?, ?)", [(child, rid) for rid in acts])

    def feedback_routes(self, db: sqlite3.Connection, rows: Iterable[FeedbackRow]) -> list[tuple[str, int]]:
        """(child, rid) pairs to queue for feedback items and events. Never back to the child it came from."""
        owners = _Owners(db, self.node_id)
        out: list[tuple[str, int]] = []
        for rid, kind, unit, via, raw in rows:
            targets = {owners(unit)}
            if kind == records.FEEDBACK_EVENT:
                env = Envelope.FromString(raw)
                body = records.body_of(env)
                item = db.execute(
                    "SELECT rid, unit, via, envelope FROM records WHERE id = ? AND kind = ?", (records.event_item_id(env), records.FEEDBACK)
                ).fetchone()
                if item is not None:
                    targets.add(owners(item[1]))
                if body.status == "assigned" and body.unit:
                    new = owners(body.unit)
                    targets.add(new)
                    if item is not None and new and new != owners(item[1]):
                        out.extend((new, h_rid) for h_rid, h_via in _history(db, item) if h_via != new)
            out.extend((child, rid) for child in sorted(targets) if child and child != via)
        return out


def _may_have_children(db: sqlite3.Connection, node_id: str) -> bool:
    """Whether any definition may name this node (as a parent): a cheap byte search that can
    only err towards routing (a leaf node with no children skips routing entirely)."""
    return (
        db.execute(
            "SELECT 1 FROM records WHERE kind = ? AND instr(envelope, ?) > 0 LIMIT 1", (records.DEFINITION, node_id.encode())
        ).fetchone()
        is not None
    )


def _by_rid(entry: tuple[str, int]) -> int:
    return entry[1]


class _Owners:
    """Which child's subtree holds a unit, looked up once per routing pass."""

    def __init__(self, db: sqlite3.Connection, node_id: str) -> None:
        self.db, self.node_id = db, node_id
        self.cache: dict[str, str] = {}
        self.subtrees: Subtrees | None = None

    def __call__(self, unit: str) -> str:
        if not unit or unit == self.node_id:
            return ""
        if unit not in self.cache:
            if self.subtrees is None:
                self.subtrees = Subtrees.load(self.db, self.node_id)
            self.cache[unit] = self.subtrees.child_for_unit(unit)
        return self.cache[unit]

    def child_for_node(self, node: str) -> str:
        if self.subtrees is None:
            self.subtrees = Subtrees.load(self.db, self.node_id)
        return self.subtrees.child_for_node(node)


def _history(db: sqlite3.Connection, item: tuple[int, str, str, bytes]) -> list[tuple[int, str]]:
    """The item's record and every event of it held here, as (rid, via)."""
    env = Envelope.FromString(item[3])
    source_id = records.body_of(env).source_id
    out = [(item[0], item[2])]
    for rid, via, raw in db.execute(
        "SELECT rid, via, envelope FROM records WHERE kind = ? AND instr(envelope, ?) > 0 ORDER BY rid",
        (records.FEEDBACK_EVENT, source_id.encode()),
    ):
        event = Envelope.FromString(raw)
        body = records.body_of(event)
        if body.feedback != source_id:
            continue
        key = records.event_item_id(event)
        if key == env.id or db.execute("SELECT 1 FROM records WHERE id = ?", (key,)).fetchone() is None:
            out.append((rid, via))
    return out
