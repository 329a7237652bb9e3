"""`lienthong verify`'s rules on real stores sealed with a CA made in the test: gaps, forks,
omissions and personal data redacted on the way up all judged right."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from lienthong.node.trust import issue, tls
from lienthong.sync import provenance, records
from lienthong.sync.clock import HybridClock
from lienthong.sync.privacy import Redactor, hashing_key
from lienthong.sync.store import UPSERT, Store
from lienthong.sync.verify import verify_store


def sealed_store(tmp_path: Path, ca_dir: Path, node_id: str = "86-28894") -> tuple[Store, bytes]:
    paths = tls.NodeTlsPaths(tmp_path / "tls" / "ca.crt", tmp_path / "tls" / "node.crt", tmp_path / "tls" / "node.key")
    issue.issue_node(ca_dir, paths, node_id, "district", [])
    store = Store.create(tmp_path / "lienthong.db", node_id)
    store.signer = provenance.Signer.load(node_id, provenance.signing_key_path(paths.key), paths.cert, paths.ca)
    return store, paths.ca.read_bytes()


def write(store: Store, start: int, n: int) -> None:
    rows = [
        {"kind": "indicator", "indicator": f"I.{i}", "unit": store.node_id, "period": "2026-10", "value": i}
        for i in range(start, start + n)
    ]
    store.write_local([records.build(store.node_id, r) for r in rows], HybridClock(store.max_version()))


def codes(store: Store, ca_pem: bytes) -> set[str]:
    return {f.code for f in verify_store(store, ca_pem).findings}


def test_a_whole_chain_verifies_and_a_missing_seal_is_a_gap(tmp_path: Path, ca_dir: Path) -> None:
    """Three writes make three chained seals; removing the middle one is reported as a gap, and its
    records as unsealed."""
    store, ca_pem = sealed_store(tmp_path, ca_dir)
    for start in (0, 10, 20):
        write(store, start, 10)
    report = verify_store(store, ca_pem)
    assert report.ok and report.records == 30 and report.seals == 3
    seals = store.db.execute("SELECT id FROM records WHERE kind = ? ORDER BY rid", (records.SEAL,)).fetchall()
    store.db.execute("DELETE FROM records WHERE id = ?", (seals[1][0],))
    found = verify_store(store, ca_pem).findings
    assert {f.code for f in found} == {"seal_gap", "unsealed"}
    assert len([f for f in found if f.code == "unsealed"]) == 10
    store.close()


def test_two_histories_sealed_with_one_number_are_a_fork(tmp_path: Path, ca_dir: Path) -> None:
    """An origin restored from a backup (or rewriting its history) seals a second seal 2: verify reports a fork."""
    store, ca_pem = sealed_store(tmp_path, ca_dir)
    write(store, 0, 5)
    store.backup(tmp_path / "backup.db")
    write(store, 5, 5)
    # The same node, restored from the backup, writes something else as its seal 2.
    restored_dir = tmp_path / "restored"
    restored_dir.mkdir()
    shutil.copy(tmp_path / "backup.db", restored_dir / "lienthong.db")
    restored = Store.open(restored_dir / "lienthong.db")
    restored.signer = store.signer
    write(restored, 100, 5)
    other = restored.db.execute("SELECT envelope FROM records WHERE rid > (SELECT max(rid) FROM records) - 6").fetchall()
    restored.close()
    with store.writing() as db:
        for (raw,) in other:
            e = records.Envelope.FromString(raw)
            db.execute(UPSERT, (e.id, e.kind, e.origin, e.unit, e.agency, e.version, e.deleted, b"", "86-28894", raw))
    assert codes(store, ca_pem) == {"seal_fork"}
    store.close()


def test_an_omitted_record_and_a_redacted_copy(tmp_path: Path, ca_dir: Path) -> None:
    """A record its origin sealed but the store lacks is `omitted`; a feedback item whose citizen data
    was replaced by keyed hashes on the way up still verifies under the origin's seal."""
    store, ca_pem = sealed_store(tmp_path, ca_dir)
    feedback = {
        "kind": "feedback",
        "source_id": "PA-1",
        "unit": "86-28894",
        "category": "GT",
        "description": "Ổ gà",
        "received_at": "2026-11-20T07:00:00+07:00",
        "citizen": {"name": "Nguyễn Văn A", "phone": "0909000000"},
    }
    store.write_local([records.build("86-28894", feedback)], HybridClock(store.max_version()))
    write(store, 0, 3)
    raw = store.db.execute("SELECT envelope FROM records WHERE kind = ?", (records.FEEDBACK,)).fetchone()[0]
    redacted = Redactor(hashing_key(ca_pem))(raw)
    assert redacted != raw and b"0909000000" not in redacted
    with sqlite3.connect(tmp_path / "lienthong.db") as db:
        db.execute("UPDATE records SET envelope = ? WHERE kind = ?", (redacted, records.FEEDBACK))
    assert verify_store(store, ca_pem).ok
    victim = store.db.execute("SELECT id FROM records WHERE kind = ? LIMIT 1", (records.INDICATOR,)).fetchone()[0]
    store.db.execute("DELETE FROM records WHERE id = ?", (victim,))
    findings = verify_store(store, ca_pem).findings
    assert [(f.code, f.id) for f in findings] == [("omitted", victim.hex())]
    store.close()


def test_a_forged_copy_of_a_verified_seal_is_checked_not_trusted_by_its_id(tmp_path: Path, ca_dir: Path) -> None:
    """A receiver that verified a seal refuses a different body sent later under the same seal id
    (a relaying node cannot swap a seal it once saw for a forgery)."""
    store, ca_pem = sealed_store(tmp_path, ca_dir)
    write(store, 0, 3)
    (raw,) = store.db.execute("SELECT envelope FROM records WHERE kind = ?", (records.SEAL,)).fetchone()
    verifier = provenance.Verifier(ca_pem, store.envelope)
    seal = records.Envelope.FromString(raw)
    assert verifier.check(seal, raw) is None
    forged = records.Envelope.FromString(raw)
    body = records.pb.Seal.FromString(forged.body)
    del body.entries[0]
    forged.body = body.SerializeToString()
    forged.version += 1
    assert verifier.check(forged, forged.SerializeToString())[0] == "bad_signature"
    assert verifier.check(seal, raw) is None
    store.close()
