"""Sharing down: records the province shares with units below it ("chia sẻ cơ sở dữ liệu với
IOC huyện khi cần thiết", Bình Phước regulation Art. 6.3).

A **share** is a `definition` record of type `share`, written by the province (every tier
takes definitions from the province alone), keyed by its code. Its fields:

    what          indicators | reports
    period        the canonical period shared ("" in a standing rule: every period)
    indicators    indicator codes (indicators only; empty: every indicator)
    to            the unit codes it is shared with
    shared_by, created_at

Every tier routes by it (routing.py calls `share_routes` and `routes_for_child`): a record
of the shared kind and period, held at this node, goes down to the child whose subtree holds
a `to` unit — never back to the child it came from — and so on down the tiers to the nodes
answering for those units. The share itself goes only where its records go. Records travel
as they were written, with their origin and seal, so the receiving node verifies them like
any record; they arrive from the parent, so they are never sent up again (the change log's
`up` is 0 for them) and queries show them `from_above`. A node holds only what was shared
with a unit it answers for, or what passes through it to a unit below it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import records
from .errors import InputError
from .records import Envelope, Keyed

SHARE_TYPE = "share"
KINDS = {"indicators": records.INDICATOR, "reports": records.REPORT}
# How a share definition's body begins inside its envelope (field 1 `type` = "share"): lets SQL
# tell shares from other definitions without decoding them.
SHARE_MARK = b"\x0a\x05" + SHARE_TYPE.encode()

# A row to route: (rid, kind, unit, via, envelope).
Row = tuple[int, int, str, str, bytes]
Owner = Callable[[str], str]  # unit -> the direct child whose subtree holds it ('' if none)


@dataclass(frozen=True)
class Share:
    code: str
    origin: str
    what: str
    period: str
    indicators: frozenset[str]
    to: tuple[str, ...]

    @property
    def kind(self) -> int:
        return KINDS[self.what]

    def matches(self, kind: int, body: Any) -> bool:
        if kind != self.kind or (self.period and body.period != self.period):
            return False
        return not self.indicators or kind != records.INDICATOR or body.indicator in self.indicators

    def targets(self, owner: Owner) -> set[str]:
        """The children a matching record goes to: those whose subtree holds a `to` unit."""
        return {child for child in (owner(unit) for unit in self.to) if child}


def share_record(
    origin: str, what: str, period: str, indicators: Sequence[str], to: Sequence[str], shared_by: str, created_at: str, code: str = ""
) -> Keyed:
    """The `share` definition for these fields. Without `code`, the code is derived from what is
    shared with whom, so sharing the same thing again is the same record."""
    if what not in KINDS:
        raise InputError(f"{what!r} cannot be shared", "share indicators or reports", field="what")
    if not to:
        raise InputError("a share names the units it is shared with", "add --to UNIT", field="to")
    if indicators and what != "indicators":
        raise InputError("--indicator narrows indicators only", "leave it out when sharing reports", field="indicators")
    to_units = sorted({records.nfc(u) for u in to})
    codes = sorted({records.nfc(c) for c in indicators})
    if not code:
        key = json.dumps([what, period, codes, to_units], ensure_ascii=False)
        code = "CS-" + hashlib.sha256(key.encode()).hexdigest()[:12]
    fields = {"what": what, "period": period, "indicators": codes, "to": to_units, "shared_by": shared_by, "created_at": created_at}
    return records.definition(origin, {"type": SHARE_TYPE, "code": code, "fields": fields})


def from_envelope(env: Envelope) -> Share | None:
    """The share a definition envelope states, or None (another definition, or a malformed share)."""
    body = records.body_of(env)
    if body.type != SHARE_TYPE or env.deleted:
        return None
    try:
        fields = json.loads(body.json or "{}")
        what = str(fields.get("what") or "")
        if what not in KINDS:
            return None
        return Share(
            body.code,
            env.origin,
            what,
            str(fields.get("period") or ""),
            frozenset(str(c) for c in fields.get("indicators") or []),
            tuple(str(u) for u in fields.get("to") or []),
        )
    except (json.JSONDecodeError, TypeError, AttributeError):
        return None


def load(db: sqlite3.Connection) -> list[tuple[int, Share]]:
    """Every share held here, with its rid."""
    out = []
    for rid, raw in db.execute(
        "SELECT rid, envelope FROM records WHERE kind = ? AND deleted = 0 AND instr(envelope, ?) > 0", (records.DEFINITION, SHARE_MARK)
    ):
        share = from_envelope(Envelope.FromString(raw))
        if share is not None:
            out.append((rid, share))
    return out


def share_routes(db: sqlite3.Connection, owner: Owner, ids: Sequence[bytes]) -> list[tuple[str, int]]:
    """(child, rid) pairs for newly written records: shared records to the children that hold
    a unit they are shared with; a share new to a child with every record it covers held here."""
    shares = load(db)
    if not shares:
        return []
    out: list[tuple[str, int]] = []
    kinds = sorted({share.kind for _, share in shares})
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = db.execute(
            f"SELECT rid, kind, unit, via, envelope FROM records WHERE id IN ({marks}) AND kind IN ({','.join('?' * len(kinds))})",
            (*chunk, *kinds),
        ).fetchall()
        out.extend(_routes(shares, owner, rows))
        for rid, raw in db.execute(
            f"SELECT rid, envelope FROM records WHERE id IN ({marks}) AND kind = ? AND instr(envelope, ?) > 0",
            (*chunk, records.DEFINITION, SHARE_MARK),
        ).fetchall():
            share = from_envelope(Envelope.FromString(raw))
            for child in sorted(share.targets(owner) if share is not None else ()):
                assert share is not None
                # A new version of a share the child holds goes alone; a share new to it brings what it covers.
                out.extend([(child, rid)] if _had(db, child, rid) else covered(db, owner, rid, share, child))
    return out


def covered(db: sqlite3.Connection, owner: Owner, share_rid: int, share: Share, child: str) -> list[tuple[str, int]]:
    """The share's definition, then every record it covers held here, for `child`."""
    out = [(child, share_rid)]
    sql = "SELECT rid, kind, unit, via, envelope FROM records WHERE kind = ? AND deleted = 0"
    args: tuple[Any, ...] = (share.kind,)
    if share.period:
        sql += " AND instr(envelope, ?) > 0"
        args += (share.period.encode(),)
    rows = db.execute(sql + " ORDER BY rid", args).fetchall()
    out.extend((target, rid) for target, rid in _routes([(share_rid, share)], owner, rows) if target == child)
    return out


def routes_for_child(db: sqlite3.Connection, owner: Owner, child: str) -> list[tuple[str, int]]:
    """What `child` must now hold of the shares it did not hold yet (it connected first, or answers for new units)."""
    out: list[tuple[str, int]] = []
    for rid, share in load(db):
        if child in share.targets(owner) and not _had(db, child, rid):
            out.extend(covered(db, owner, rid, share, child))
    return out


def _had(db: sqlite3.Connection, child: str, rid: int) -> bool:
    return db.execute("SELECT 1 FROM downqueue WHERE child = ? AND rid = ? LIMIT 1", (child, rid)).fetchone() is not None


def _routes(shares: Iterable[tuple[int, Share]], owner: Owner, rows: Iterable[Row]) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for rid, kind, _unit, via, raw in rows:
        body = None
        for _, share in shares:
            if kind != share.kind:
                continue
            body = body if body is not None else records.body_of(Envelope.FromString(raw))
            if share.matches(kind, body):
                out.extend((child, rid) for child in share.targets(owner) if child != via)
    return out
