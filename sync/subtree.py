"""Subtrees: which child of this node answers for a node or a unit.

Who owns what comes from the province's signed definitions and from what this node
knows first-hand, never from which child named a unit first (DESIGN §8):

- the node tree: `node` definitions (node -> parent) the province publishes from its
  CA registry;
- this node's direct children: the node ids their TLS certificates prove;
- nodes relayed by a child: an origin that is in no definition, first seen in records
  a child relayed (its seals prove the origin; `child_origins` remembers the child);
- the unit registry: `unit` definitions (unit -> parent unit).

A unit belongs to the nearest node among itself and its registry ancestors (a ward
belongs to its commune's node). A unit that resolves to no node is unknown: a record
naming it waits until the province defines it.

Everything is read through the connection given, so inside the writer's transaction
definitions written in that same transaction count.
"""

from __future__ import annotations

import json
import sqlite3

from . import records
from .errors import InputError
from .records import Envelope
from .units import Units


class Subtrees:
    """A snapshot of who answers for what, as seen from node `me`."""

    def __init__(self, me: str, tree: dict[str, str], units: Units, children: set[str], relayed: dict[str, str]) -> None:
        self.me = me
        self.tree = tree
        self.units = units
        self.children = children
        self.relayed = relayed
        self._unit_owner: dict[str, str] = {}  # memo: a snapshot never changes, but for `relay`

    @classmethod
    def load(cls, db: sqlite3.Connection, me: str) -> Subtrees:
        tree: dict[str, str] = {}
        unit_envs: list[Envelope] = []
        for (raw,) in db.execute("SELECT envelope FROM records WHERE kind = ? AND deleted = 0 ORDER BY rid", (records.DEFINITION,)):
            env = Envelope.FromString(raw)
            body = records.body_of(env)
            if body.type == records.NODE_DEFINITION:
                try:
                    tree[body.code] = str(json.loads(body.json or "{}").get("parent") or "")
                except json.JSONDecodeError:
                    continue
            elif body.type == "unit":
                unit_envs.append(env)
        try:
            units = Units.from_envelopes(unit_envs)
        except InputError:
            units = Units([])  # a malformed unit definition must not stop replication; `status` names it
        children = {c for (c,) in db.execute("SELECT child FROM children")}
        relayed = {o: c for o, c in db.execute("SELECT origin, child FROM child_origins")}
        return cls(me, tree, units, children, relayed)

    @staticmethod
    def marker(db: sqlite3.Connection) -> tuple[int, ...]:
        """Changes whenever anything `load` reads changes (cheap: definitions are few)."""
        defs = db.execute("SELECT count(*), coalesce(max(version), 0) FROM records WHERE kind = ?", (records.DEFINITION,)).fetchone()
        children = db.execute("SELECT count(*) FROM children").fetchone()
        relayed = db.execute("SELECT count(*) FROM child_origins").fetchone()
        return (defs[0], defs[1], children[0], relayed[0])

    def known(self, node: str) -> bool:
        return node == self.me or node in self.children or node in self.tree or node in self.relayed

    def child_for_node(self, node: str) -> str:
        """The direct child whose subtree holds `node`, connected or not yet ('' for this node
        itself, or a node outside every child's subtree)."""
        if node == self.me or not node:
            return ""
        if node in self.children:
            return node
        current, seen = node, set()
        while current and current not in seen:
            seen.add(current)
            parent = self.tree.get(current, "")
            if parent == self.me:
                return current  # a child by the province's definitions, whether or not it has connected
            if parent in self.children:
                return parent
            current = parent
        return self.relayed.get(node, "")

    def node_of_unit(self, unit: str) -> str:
        """The node that answers for `unit`: the nearest known node among the unit and its ancestors ('' if none)."""
        owner = self._unit_owner.get(unit)
        if owner is None:
            owner = next((code for code in (unit, *self.units.ancestors(unit)) if self.known(code)), "")
            self._unit_owner[unit] = owner
        return owner

    def relay(self, origin: str, child: str) -> None:
        """Remember that `child` relays `origin` (a node no definition names)."""
        self.relayed[origin] = child
        self._unit_owner.clear()

    def child_for_unit(self, unit: str) -> str:
        """The direct child whose subtree holds `unit` ('' when it is this node's own or unknown)."""
        node = self.node_of_unit(unit)
        return self.child_for_node(node) if node else ""
