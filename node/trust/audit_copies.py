"""The audit entries other nodes sent up (`audit_entry` records, see `audit_mirror.py`), per
node, and what they prove about each node's audit log.

For each origin node the held copies are checked as a chain:

- each copy must match its own hash (the hash rule of `audit_chain.py`); one that does not
  was forged or damaged on the way (`forged`);
- two copies at one seq with different hashes mean the node's log was rewritten after the
  first was reported (`rewritten`);
- a copy whose `prev_hash` is not the hash held for the seq before it means the log was
  rewritten between the two reports (`rewritten`).

Seqs not held yet (still on their way, or the node stopped before sending them) are listed as
`missing`; they are not damage. The node's head, as last reported, is the highest seq held
and its hash: on the node, `lienthong audit verify --head SEQ:HASH` proves that nothing at or
below it has changed since (the hash of an entry commits to every entry before it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from lienthong.sync import records
from lienthong.sync.store import Store

from .audit_chain import canonical, entry_hash, format_head


@dataclass
class NodeAudit:
    """What this node holds of one node's audit log."""

    node: str
    unit: str
    entries: list[dict[str, Any]] = field(default_factory=list)  # by seq, then hash
    problems: list[dict[str, Any]] = field(default_factory=list)
    missing: list[list[int]] = field(default_factory=list)  # [first, last] seq ranges not held

    @property
    def head(self) -> tuple[int, str] | None:
        return (self.entries[-1]["seq"], self.entries[-1]["hash"]) if self.entries else None

    def as_dict(self, limit: int | None = None) -> dict[str, Any]:
        head = self.head
        shown = self.entries if limit is None else self.entries[-limit:] if limit else []
        return {
            "node": self.node,
            "unit": self.unit,
            "entries": len(self.entries),
            "head": None if head is None else {"seq": head[0], "hash": head[1]},
            "head_text": None if head is None else format_head(head),
            "intact": not self.problems,
            "complete": not self.missing,
            "problems": self.problems,
            "missing": self.missing,
            "events": [{**e, "details": _details(e["details"])} for e in reversed(shown)],
        }


def _details(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def held(store: Store, unit: str | None = None) -> list[NodeAudit]:
    """Every node's copied audit entries held in `store` (only node or unit `unit` if given), checked."""
    nodes: dict[str, NodeAudit] = {}
    for env in store.iter_records(records.AUDIT_ENTRY):
        if unit is not None and unit not in (env.origin, env.unit):
            continue
        body = records.body_of(env)
        node = nodes.setdefault(env.origin, NodeAudit(env.origin, env.unit))
        node.entries.append(
            {
                "seq": body.seq,
                "time": body.time,
                "actor": body.actor,
                "action": body.action,
                "subject": body.subject,
                "details": body.details,
                "prev_hash": body.prev_hash,
                "hash": body.hash,
            }
        )
    for node in nodes.values():
        node.entries.sort(key=lambda e: (e["seq"], e["time"], e["hash"]))
        check(node)
    return sorted(nodes.values(), key=lambda n: n.node)


def check(node: NodeAudit) -> None:
    """Fill `node.problems` and `node.missing` from its entries (sorted by seq)."""
    by_seq: dict[int, list[dict[str, Any]]] = {}
    for e in node.entries:
        by_seq.setdefault(e["seq"], []).append(e)
        try:
            details = json.loads(e["details"])
            matches = (
                canonical(details) == e["details"]
                and entry_hash(e["seq"], e["time"], e["actor"], e["action"], e["subject"], details, e["prev_hash"]) == e["hash"]
            )
        except ValueError:
            matches = False
        if not matches:
            node.problems.append({"seq": e["seq"], "problem": "forged", "reason": f"the copy of entry {e['seq']} does not match its hash"})
    expected = 1
    for seq in sorted(by_seq):
        if seq > expected:
            node.missing.append([expected, seq - 1])
        expected = seq + 1
        copies = by_seq[seq]
        if len({c["hash"] for c in copies}) > 1:
            node.problems.append(
                {
                    "seq": seq,
                    "problem": "rewritten",
                    "reason": f"entry {seq} was reported with {len(copies)} different hashes: "
                    "the node's audit log was rewritten after it was first reported",
                }
            )
        before = by_seq.get(seq - 1)
        if before and not {c["prev_hash"] for c in copies} <= {b["hash"] for b in before}:
            node.problems.append(
                {
                    "seq": seq,
                    "problem": "rewritten",
                    "reason": f"entry {seq} does not follow entry {seq - 1} as it was reported: "
                    f"the node's audit log was rewritten at or before entry {seq - 1}",
                }
            )
