"""The store: version-guarded idempotent apply, checkpoints with the data, an append-only log."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lienthong.sync import records
from lienthong.sync.clock import HybridClock
from lienthong.sync.downstream import Downstream
from lienthong.sync.errors import ProtocolError, SchemaTooNew, StoreError
from lienthong.sync.store import Store
from lienthong.sync.upstream import Upstream


def indicator(i: int, value: int = 0) -> dict[str, object]:
    return {"kind": "indicator", "indicator": f"I.{i}", "unit": "86-28894", "period": "2026-10", "value": value}


@pytest.fixture
def child(tmp_path: Path) -> Store:
    store = Store.create(tmp_path / "child.db", "86-28894")
    yield store
    store.close()


@pytest.fixture
def parent(tmp_path: Path) -> Store:
    store = Store.create(tmp_path / "parent.db", "86")
    Downstream(store).register_child("86-28894", "test")
    yield store
    store.close()


def latest(store: Store) -> set[tuple[bytes, int]]:
    return store.record_versions()


def all_batches(store: Store, size: int) -> list:
    out, cursor = [], 0
    while (batch := Upstream(store).changes_after(cursor, size)) is not None:
        out.append(batch)
        cursor = batch.last
    return out


def test_reingest_counts_unchanged_and_updates_only_on_change(child: Store) -> None:
    """Dropping the same data twice changes nothing; a changed value is one new version."""
    clock = HybridClock()
    first = child.write_local([records.build(child.node_id, indicator(i)) for i in range(10)], clock)
    assert (first.imported, first.updated, first.unchanged) == (10, 0, 0)
    head = child.head()
    again = child.write_local([records.build(child.node_id, indicator(i)) for i in range(10)], clock)
    assert (again.imported, again.updated, again.unchanged) == (0, 0, 10)
    assert child.head() == head
    changed = child.write_local([records.build(child.node_id, indicator(0, value=5))], clock)
    assert (changed.imported, changed.updated) == (0, 1)
    assert child.head() == head + 1


def test_change_log_is_append_only(child: Store) -> None:
    """No code path can rewrite or delete change-log history."""
    child.write_local([records.build(child.node_id, indicator(1))], HybridClock())
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        child._w.execute("DELETE FROM changelog")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        child._w.execute("UPDATE changelog SET version = 0")


def test_batch_and_checkpoint_commit_together_and_duplicates_are_no_ops(child: Store, parent: Store) -> None:
    """A batch applied twice changes nothing; a gap is a protocol error that applies nothing."""
    child.write_local([records.build(child.node_id, indicator(i)) for i in range(30)], HybridClock())
    b1, b2, b3 = all_batches(child, 10)
    epoch = child.epoch
    assert Downstream(parent).apply_from_child("86-28894", epoch, b1.after, b1.last, b1.fingerprint, b1.envelopes) == []
    head = parent.head()
    assert Downstream(parent).apply_from_child("86-28894", epoch, b1.after, b1.last, b1.fingerprint, b1.envelopes) == []
    assert parent.head() == head  # duplicate: nothing logged again
    with pytest.raises(ProtocolError):
        Downstream(parent).apply_from_child("86-28894", epoch, b3.after, b3.last, b3.fingerprint, b3.envelopes)
    assert Downstream(parent).child_state("86-28894").applied == b1.last
    for b in (b2, b3):
        Downstream(parent).apply_from_child("86-28894", epoch, b.after, b.last, b.fingerprint, b.envelopes)
    assert latest(parent) == latest(child)
    assert Downstream(parent).child_state("86-28894").fingerprint == child.fingerprint_at(b3.last)


def test_bad_records_are_quarantined_without_pinning_the_cursor(child: Store, parent: Store) -> None:
    """A malformed or foreign-origin record is refused with a reason; the rest of its batch lands."""
    child.write_local([records.build(child.node_id, indicator(i)) for i in range(3)], HybridClock())
    batch = all_batches(child, 100)[0]
    forged = records.build("86", indicator(9)).envelope("86", 1).SerializeToString()  # claims the province as origin
    refusals = Downstream(parent).apply_from_child(
        "86-28894", child.epoch, 0, batch.last, batch.fingerprint, [*batch.envelopes, b"\xff\x00junk", forged]
    )
    assert sorted(r.code for r in refusals) == ["malformed", "unauthorized_origin"]
    assert Downstream(parent).child_state("86-28894").applied == batch.last
    assert latest(parent) == latest(child)
    assert [q["code"] for q in Downstream(parent).quarantine()] == ["unauthorized_origin"]


def test_a_record_cannot_be_overwritten_by_another_origin(parent: Store) -> None:
    """Single writer: a version from a different origin never replaces a stored record."""
    Downstream(parent).register_child("86-29077", "test")
    mine = records.build("86-28894", indicator(1)).envelope("86-28894", 10)
    Downstream(parent).apply_from_child("86-28894", "e1", 0, 1, b"", [mine.SerializeToString()])
    theirs = records.Envelope()
    theirs.CopyFrom(mine)
    theirs.origin, theirs.version, theirs.body = "86-29077", 99, b"changed"
    Downstream(parent).apply_from_child("86-29077", "e2", 0, 1, b"", [theirs.SerializeToString()])
    assert latest(parent) == {(mine.id, 10)}


def test_store_refuses_a_newer_schema(tmp_path: Path) -> None:
    """A store written by a newer lienthong is not opened (and not damaged)."""
    Store.create(tmp_path / "s.db", "n").close()
    conn = sqlite3.connect(tmp_path / "s.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(SchemaTooNew):
        Store.open(tmp_path / "s.db")
    with pytest.raises(StoreError):
        Store.open(tmp_path / "missing.db")


# -------------------------------------------------------------- the property

deliveries = st.lists(st.tuples(st.sampled_from(["next", "dup", "ahead", "reconnect"]), st.integers(0, 5)), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=deliveries, updates=st.lists(st.integers(0, 19), max_size=15), size=st.integers(1, 8))
def test_any_interleaving_of_duplicate_and_reordered_batches_converges(
    tmp_path_factory: pytest.TempPathFactory, plan, updates, size
) -> None:
    """Whatever batches arrive twice, early or after a reconnect, the parent ends with exactly the child's data."""
    base = tmp_path_factory.mktemp("prop")
    child = Store.create(base / "c.db", "86-28894")
    parent = Store.create(base / "p.db", "86")
    try:
        clock = HybridClock()
        child.write_local([records.build(child.node_id, indicator(i)) for i in range(20)], clock)
        for n, i in enumerate(updates):
            child.write_local([records.build(child.node_id, indicator(i, value=n + 1))], clock)
        batches = all_batches(child, size)
        Downstream(parent).register_child("86-28894", "test")
        epoch = child.epoch

        def deliver(b) -> None:
            # A gap raises ProtocolError: the real session drops and reconnects from the checkpoint.
            with contextlib.suppress(ProtocolError):
                Downstream(parent).apply_from_child("86-28894", epoch, b.after, b.last, b.fingerprint, b.envelopes)

        position = 0  # the sender's cursor into `batches`
        for action, k in plan:
            if action == "next" and position < len(batches):
                deliver(batches[position])
                position += 1
            elif action == "dup" and position:
                deliver(batches[max(0, position - 1 - k)])
            elif action == "ahead" and position + k < len(batches):
                deliver(batches[position + k])
            elif action == "reconnect":
                applied = Downstream(parent).child_state("86-28894").applied
                position = next((j for j, b in enumerate(batches) if b.after == applied), len(batches))
        # In the end the link stays up: resume from the checkpoint and send the rest.
        applied = Downstream(parent).child_state("86-28894").applied
        for b in batches:
            if b.after >= applied:
                deliver(b)
        assert latest(parent) == latest(child)
        logged = parent.db.execute("SELECT count(*) FROM (SELECT DISTINCT rid, version FROM changelog)").fetchone()[0]
        assert logged == parent.head()  # no version applied twice
    finally:
        child.close()
        parent.close()
