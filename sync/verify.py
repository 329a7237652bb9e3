"""Re-verify a whole store offline: `lienthong verify`.

Every record must be covered by a valid seal of its origin (see provenance.py), and
its stored bytes must hash to what the seal says. For the origins whose records
reach this node from below (its own records and its descendants'), the chain of
seals must also be whole: numbered 1, 2, 3 … without a gap, each naming the one
before, no two seals with the same number (a fork: the origin sealed two
histories — a restore from an old backup, or a rewrite), and every record version a
seal lists must be here (or superseded by a later version): nothing omitted.
Records that reached this node from its parent are checked only for their seals:
a node receives just its share of what its parent holds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import provenance, records
from .records import Envelope
from .revocation import Revoked
from .store import VIA_PARENT, Store


@dataclass(frozen=True)
class Finding:
    code: str
    origin: str
    reason: str
    id: str = ""
    kind: str = ""
    unit: str = ""

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}


@dataclass
class Report:
    records: int = 0
    seals: int = 0
    audit_entries: int = 0  # copies of audit-log entries (verified like records, counted apart from the data)
    origins: dict[str, dict[str, int]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "seals": self.seals,
            "audit_entries": self.audit_entries,
            "origins": self.origins,
            "findings": [f.as_dict() for f in self.findings],
        }


@dataclass
class _Chain:
    """One origin's seals as this store holds them."""

    by_seq: dict[int, list[tuple[bytes, bytes]]] = field(default_factory=lambda: defaultdict(list))  # seq -> [(hash, prev)]
    below: bool = False


def verify_store(store: Store, ca_pem: bytes, revocation: Callable[[str, bytes], Revoked | None] | None = None) -> Report:
    """Re-check `store`. A record whose seal fails is not reported again on its own: the seal's
    finding names the cause once and counts the records it leaves unproven."""
    verifier = provenance.Verifier(ca_pem, store.envelope, revocation, store.witnessed_at)
    report = Report()
    chains: dict[str, _Chain] = defaultdict(_Chain)
    sealed: dict[str, dict[tuple[bytes, int], bytes]] = defaultdict(dict)  # origin -> (id, version) -> seal id
    failed: dict[bytes, int] = {}  # seal id -> its finding
    unproven: dict[bytes, int] = defaultdict(int)  # seal id -> records it leaves unproven
    db = store.db.conn
    for seal_id, origin, via, raw in db.execute(
        "SELECT id, origin, via, envelope FROM records WHERE kind = ? ORDER BY rid", (records.SEAL,)
    ):
        report.seals += 1
        env = Envelope.FromString(raw)
        info, problem = verifier.seal_info(env, store.witnessed_at(seal_id))
        chain = chains[origin]
        chain.below = chain.below or via != VIA_PARENT
        if problem is not None:
            failed[seal_id] = len(report.findings)
            report.findings.append(Finding(problem[0], origin, f"seal: {problem[1]}", seal_id.hex(), "seal", env.unit))
            continue
        assert info is not None
        chain.by_seq[info.seq].append((provenance.seal_hash(env.body), info.prev))
        for key in info.entries:
            sealed[origin][key] = seal_id
    stored: dict[bytes, int] = {}
    for rid, kind, origin, unit, version, via, raw in db.execute(
        "SELECT id, kind, origin, unit, version, via, envelope FROM records WHERE kind != ? ORDER BY rid", (records.SEAL,)
    ):
        counts = report.origins.setdefault(origin, {"records": 0, "seals": 0})
        if kind == records.AUDIT_ENTRY:
            report.audit_entries += 1
            counts["audit_entries"] = counts.get("audit_entries", 0) + 1
        else:
            report.records += 1
            counts["records"] += 1
        if via != VIA_PARENT:
            chains[origin].below = True
            stored[rid] = version
        env = Envelope.FromString(raw)
        if env.seal in failed:  # one finding per cause: the seal's
            unproven[env.seal] += 1
            continue
        problem = verifier.check(env, raw)
        if problem is not None:
            report.findings.append(Finding(problem[0], origin, problem[1], rid.hex(), records.KIND_NAMES.get(kind, str(kind)), unit))
    for seal_id, count in unproven.items():
        finding = report.findings[failed[seal_id]]
        report.findings[failed[seal_id]] = Finding(
            finding.code,
            finding.origin,
            f"{finding.reason} ({count} record(s) it signs are not proven)",
            finding.id,
            finding.kind,
            finding.unit,
        )
    for origin, chain in sorted(chains.items()):
        report.origins.setdefault(origin, {"records": 0, "seals": 0})["seals"] = sum(len(v) for v in chain.by_seq.values())
        if chain.below:
            report.findings += _chain_findings(origin, chain)
            report.findings += _omissions(origin, sealed.get(origin, {}), stored)
    # What the parent acknowledged of this store's change log must still be here: a store that
    # lost committed writes (a WAL deleted under the running node, a restore from an older
    # copy) has a head below the parent's acknowledgement.
    acked = int(db.execute("SELECT acked FROM uplink").fetchone()[0])
    head = store.head()
    if acked > head:
        report.findings.append(
            Finding(
                "lost_writes",
                store.node_id,
                f"the parent acknowledged this store's change log up to {acked}, but it ends at {head}: "
                "writes the node had committed are gone (the database or its WAL was replaced or restored)",
            )
        )
    return report


def _chain_findings(origin: str, chain: _Chain) -> list[Finding]:
    out: list[Finding] = []
    if not chain.by_seq:
        return out
    top = max(chain.by_seq)
    missing = [seq for seq in range(1, top + 1) if seq not in chain.by_seq]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" …" if len(missing) > 10 else "")
        out.append(
            Finding("seal_gap", origin, f"seals {shown} of {top} are missing: records the origin sealed never arrived or were removed")
        )
    for seq, seals in sorted(chain.by_seq.items()):
        if len({h for h, _ in seals}) > 1:
            out.append(
                Finding(
                    "seal_fork",
                    origin,
                    f"two different seals are numbered {seq}: the origin sealed two histories "
                    "(a restore from an old backup, or a rewrite; its audit log says which)",
                )
            )
        before = chain.by_seq.get(seq - 1)
        if before and seq > 1 and not {prev for _, prev in seals} & {h for h, _ in before}:
            out.append(Finding("seal_chain", origin, f"seal {seq} does not follow seal {seq - 1}: the history between them was rewritten"))
    return out


def _omissions(origin: str, sealed: dict[tuple[bytes, int], bytes], stored: dict[bytes, int]) -> list[Finding]:
    out: list[Finding] = []
    for (rid, version), seal_id in sealed.items():
        have = stored.get(rid)
        if have is None or have < version:
            what = "is missing" if have is None else f"is here only at an older version {have}"
            out.append(Finding("omitted", origin, f"version {version}, signed in seal {seal_id.hex()}, {what}", rid.hex()))
    return out
