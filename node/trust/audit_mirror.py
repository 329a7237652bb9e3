"""Security events go up: every entry of the node's audit log is copied into its store as an
`audit_entry` record, sealed like any record it writes, so that it replicates to the parent
and on up to the province with the existing machinery (intermediate tiers relay it; each
parent checks that the child may speak for the record's origin, and the seal that the
origin wrote it).

The province thus holds, per node, the node's security events (refused handshakes counted
per source, refused records, cut-off revoked peers, renewals, verification failures) and
its audit head: `lienthong audit events` shows them and checks each node's copied chain
(`audit_copies.py`).

What is copied is tracked by the store's meta key `audit_mirrored` (the last seq copied).
Copying is idempotent: an entry copied twice is the same record, unchanged. If the log's
head falls below that seq (the log was cut back and rewritten), everything is copied again
from the start: entries unchanged are no-ops, rewritten ones arrive at the province as a
second entry at their seq, which `audit events` reports.

Blocking: `mirror` runs in a worker thread of the node (every `INTERVAL` seconds).
"""

from __future__ import annotations

import structlog

from lienthong.sync import records
from lienthong.sync.clock import HybridClock
from lienthong.sync.store import Store

from .audit import AuditLog

INTERVAL = 5.0  # seconds between copies while the node runs
BATCH = 1000  # entries copied per transaction
MIRRORED_META = "audit_mirrored"

log = structlog.get_logger("lienthong.audit")


def mirror(store: Store, audit_log: AuditLog, unit: str) -> int:
    """Copy the audit entries not copied yet into `store` (sealed by its signer); returns how many."""
    if store.restoring():
        return 0  # copies wait until the restored store has taken back its own records (no seal fork)
    done = int(store.meta(MIRRORED_META, "0") or 0)
    head_seq, _ = audit_log.head()
    if head_seq < done:
        log.warning("audit.mirror_restarted", head=head_seq, mirrored=done, reason="the audit log is shorter than what was copied")
        done = 0
    copied = 0
    while True:
        entries = audit_log.entries(since_seq=done, limit=BATCH)
        if not entries:
            return copied
        keyed = [records.audit_entry(store.node_id, unit, entry.to_dict()) for entry in entries]
        store.write_local(keyed, HybridClock(store.max_version()))
        done = entries[-1].seq
        store.set_meta(MIRRORED_META, str(done))
        copied += len(entries)
