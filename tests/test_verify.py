"""`lienthong verify`'s rules on real stores sealed with a CA made in the test: gaps, forks,
omissions and personal data redacted on the way up all judged right."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

from cryptography import x509

from lienthong.node.trust import issue, tls
from lienthong.sync import privacy, provenance, records
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
    outer = records.pb.Seal.FromString(forged.body)
    inner = records.pb.Seal.FromString(outer.payload)
    del inner.entries[0]
    outer.payload = inner.SerializeToString()  # the signature kept: it no longer covers what the payload says
    forged.body = outer.SerializeToString()
    assert verifier.check(forged, forged.SerializeToString())[0] == "bad_signature"
    assert verifier.check(seal, raw) is None
    store.close()


CITIZEN = {"name": "Nguyễn Văn An", "phone": "0903123456", "email": "an@example.com"}
FEEDBACK = {
    "kind": "feedback",
    "source_id": "1022-1",
    "unit": "86-28894",
    "category": "GT-01",
    "description": "Ổ gà",
    "received_at": "2026-11-20T07:42:10+07:00",
    "citizen": CITIZEN,
}


def stored(store: Store, kind: int) -> list[bytes]:
    return [raw for (raw,) in store.db.execute("SELECT envelope FROM records WHERE kind = ? ORDER BY rid", (kind,))]


def test_an_inspector_checks_seals_and_records_on_the_bytes_stored(tmp_path: Path, ca_dir: Path) -> None:
    """What is signed are the bytes stored and sent: an inspector verifies a seal with plain Ed25519 over
    DSSE's encoding of its payload, and finds each record's SHA-256 (the redacted copy's too) among its
    entries, without rebuilding or re-serialising any message."""
    store, ca_pem = sealed_store(tmp_path, ca_dir)
    write(store, 0, 3)
    store.write_local([records.build(store.node_id, FEEDBACK)], HybridClock(store.max_version()))
    hashes: set[bytes] = set()
    for raw in stored(store, records.SEAL):
        outer = records.pb.Seal.FromString(records.Envelope.FromString(raw).body)
        payload = outer.payload
        inner = records.pb.Seal.FromString(payload)
        key = provenance.signing_public_key(x509.load_der_x509_certificate(inner.certificate))
        assert key is not None
        payload_type = b"application/vnd.lienthong.seal+protobuf; format=2"
        key.verify(outer.signature, b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type, len(payload), payload))
        hashes |= {entry.hash for entry in inner.entries}
    for raw in stored(store, records.INDICATOR):
        assert hashlib.sha256(raw).digest() in hashes
    (full,) = stored(store, records.FEEDBACK)
    up = Redactor(hashing_key(ca_pem))(full)  # what goes to the parent
    assert b"0903123456" not in up and b"0903123456" in full
    assert hashlib.sha256(up).digest() in hashes
    verifier = provenance.Verifier(ca_pem, store.envelope)
    for copy in (full, up):
        assert verifier.check(records.Envelope.FromString(copy), copy) is None
    # The full copy's values are proven too: each is committed to, salted, in the signed body.
    altered = records.Envelope.FromString(full)
    next(item for item in altered.personal if item.field == "phone").value = "0909999999"
    assert verifier.check(altered, altered.SerializeToString())[0] == "bad_signature"
    assert verify_store(store, ca_pem).ok
    store.close()


def test_a_record_from_a_newer_writer_verifies_full_and_redacted(tmp_path: Path, ca_dir: Path) -> None:
    """A record carrying a field this version does not know (a newer writer, another language's
    serialiser) verifies, and its redacted copy too: nothing is re-serialised, which would move the
    unknown field and change the bytes."""
    store, ca_pem = sealed_store(tmp_path, ca_dir)
    version = HybridClock().now()
    env = records.build(store.node_id, FEEDBACK).envelope(store.node_id, version)
    env.seal = provenance.new_seal_id()
    privacy.commit(env, privacy.PseudonymKey.generate())
    head = records.Envelope()
    head.CopyFrom(env)
    head.ClearField("seal")
    head.ClearField("personal")
    tail = records.Envelope(seal=env.seal)
    tail.personal.extend(env.personal)
    unknown = b"\x4a\x05newer"  # field 9, length-delimited: unknown to this version
    raw = head.SerializeToString() + unknown + tail.SerializeToString()
    assert records.Envelope.FromString(raw).SerializeToString() != raw  # re-serialising would not give these bytes back
    seal = store.signer.seal(env.seal, 1, b"", version, store.epoch, [(env.id, version, provenance.record_hash(raw, records.FEEDBACK))])
    verifier = provenance.Verifier(ca_pem, store.envelope)
    assert verifier.check(seal, seal.SerializeToString()) is None
    up = Redactor(hashing_key(ca_pem))(raw)
    assert unknown in up and b"0903123456" not in up
    for copy in (raw, up):
        assert verifier.check(records.Envelope.FromString(copy), copy) is None
    store.close()


def test_a_store_written_in_format_1_still_verifies(tmp_path: Path) -> None:
    """A commune's store sealed by the previous version (seals signed over the re-serialised seal,
    feedback hashed in its CA-keyed redacted form) verifies after the upgrade, and so does the
    redacted copy such a commune sent up."""
    data = Path(__file__).parent / "testdata" / "format1"
    shutil.copy(data / "lienthong.db", tmp_path / "lienthong.db")
    ca_pem = (data / "ca.crt").read_bytes()
    store = Store.open(tmp_path / "lienthong.db")
    report = verify_store(store, ca_pem)
    assert report.ok and report.records == 6 and report.seals == 3, report.as_dict()
    (full,) = stored(store, records.FEEDBACK)
    up = Redactor(hashing_key(ca_pem))(full)
    assert up == (data / "feedback_up.bin").read_bytes()  # redacted now as it was then
    assert provenance.Verifier(ca_pem, store.envelope).check(records.Envelope.FromString(up), up) is None
    store.close()


def test_personal_data_beside_a_record_that_is_not_feedback_is_refused(tmp_path: Path, ca_dir: Path) -> None:
    """Only feedback carries citizens' values beside its body: an origin that signs an indicator with
    them gets it refused, not read."""
    store, ca_pem = sealed_store(tmp_path, ca_dir)
    version = HybridClock().now()
    env = records.build(store.node_id, {"kind": "indicator", "indicator": "I", "unit": store.node_id, "period": "2026-10", "value": 1})
    env = env.envelope(store.node_id, version)
    env.seal = provenance.new_seal_id()
    env.personal.add(field="phone", value="0903123456", salt=b"0" * 16)
    raw = env.SerializeToString()
    seal = store.signer.seal(env.seal, 1, b"", version, store.epoch, [(env.id, version, provenance.record_hash(raw, records.INDICATOR))])
    verifier = provenance.Verifier(ca_pem, store.envelope)
    assert verifier.check(seal, seal.SerializeToString()) is None
    assert verifier.check(env, raw)[0] == "bad_signature"
    assert records.body_of(env).value == "1"  # read as an indicator, the values ignored
    store.close()
