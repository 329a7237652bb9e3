"""The parent's group commit across children (sync/group_commit.py, `Downstream.apply_groups`):
the groups of every child that waits go into one transaction; a group that fails fails alone."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from lienthong.sync import records
from lienthong.sync.batch import InBatch
from lienthong.sync.clock import HybridClock
from lienthong.sync.downstream import ChildGroup, Downstream
from lienthong.sync.errors import ProtocolError
from lienthong.sync.group_commit import GroupCommit
from lienthong.sync.store import Store
from lienthong.sync.upstream import Upstream

CHILDREN = ("86-28894", "86-29077", "86-29080")


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[Store, dict[str, Store]]]:
    parent = Store.create(tmp_path / "parent.db", "86")
    children = {name: Store.create(tmp_path / f"{name}.db", name) for name in CHILDREN}
    down = Downstream(parent)
    for name, store in children.items():
        down.register_child(name, "test")
        rows = [{"kind": "indicator", "indicator": f"I.{i}", "unit": name, "period": "2026-10", "value": i} for i in range(50)]
        store.write_local([records.build(name, row) for row in rows], HybridClock())
    yield parent, children
    for store in (parent, *children.values()):
        store.close()


def group(down: Downstream, child: Store, after: int = 0) -> ChildGroup:
    """The child's whole change log after `after`, as the parent's session hands it over."""
    out = Upstream(child).changes_after(after, 1_000)
    assert out is not None
    batch = InBatch(out.after, out.last, out.fingerprint, out.envelopes)
    return ChildGroup(child.node_id, child.epoch, [batch], [down.prepare(child.node_id, batch.raws)])


def commits(store: Store) -> list[str]:
    """The COMMIT statements the store's writer runs from now on (SQLite's own statement trace)."""
    seen: list[str] = []
    store._w.set_trace_callback(lambda sql: seen.append(sql) if sql.strip().upper() == "COMMIT" else None)
    return seen


def test_one_transaction_for_every_child_and_a_child_out_of_step_fails_alone(stores: tuple[Store, dict[str, Store]]) -> None:
    parent, children = stores
    down = Downstream(parent)
    good1, good2 = children[CHILDREN[0]], children[CHILDREN[2]]
    whole = group(down, children[CHILDREN[1]])
    # It claims to continue from sequence 7, which the parent never applied: a gap.
    out_of_step = dataclasses.replace(whole, batches=[dataclasses.replace(whole.batches[0], after=7)])
    seen = commits(parent)
    outcomes = down.apply_groups([group(down, good1), out_of_step, group(down, good2)])

    assert seen == ["COMMIT"]
    assert outcomes[0] == [[]] and outcomes[2] == [[]]  # one batch each, nothing refused
    assert isinstance(outcomes[1], ProtocolError)
    for store in (good1, good2):
        assert down.child_state(store.node_id).applied == store.head()
        assert parent.record_versions() >= store.record_versions()
    assert down.child_state(CHILDREN[1]).applied == 0
    assert not any(origin == CHILDREN[1] for (origin,) in parent.reader().execute("SELECT DISTINCT origin FROM records"))


def test_sessions_that_wait_together_are_written_in_one_commit_and_each_gets_its_own_outcome(
    stores: tuple[Store, dict[str, Store]],
) -> None:
    parent, children = stores
    down = Downstream(parent)
    writer = GroupCommit(down)
    groups = [group(down, children[name]) for name in CHILDREN]
    seen = commits(parent)

    async def sessions() -> list[object]:
        return await asyncio.gather(*(writer.apply(g) for g in groups), return_exceptions=True)

    assert asyncio.run(sessions()) == [[[]], [[]], [[]]]
    # The first session found nothing being written and wrote its group at once; the two that
    # arrived meanwhile were written together.
    assert seen == ["COMMIT", "COMMIT"]
    for name, store in children.items():
        assert down.child_state(name).applied == store.head()
    # The same groups again (a child resending after a cut): acknowledged, nothing written twice.
    head = parent.head()
    assert asyncio.run(sessions()) == [[[]], [[]], [[]]]
    assert parent.head() == head


def test_a_group_whose_session_ended_while_waiting_is_not_written(stores: tuple[Store, dict[str, Store]]) -> None:
    """The session was replaced (its child reconnected): its group is left out; the new session sends it again."""
    parent, children = stores
    down = Downstream(parent)
    writer = GroupCommit(down)
    gone, alive, first = (group(down, children[name]) for name in CHILDREN)

    async def sessions() -> object:
        writing = asyncio.create_task(writer.apply(first))
        await asyncio.sleep(0)  # the first session writes its group now
        ended = asyncio.create_task(writer.apply(gone))
        await asyncio.sleep(0)  # it waits for the next transaction
        ended.cancel()
        return await asyncio.gather(writing, writer.apply(alive))

    assert asyncio.run(sessions()) == [[[]], [[]]]
    assert down.child_state(CHILDREN[0]).applied == 0
    for name in CHILDREN[1:]:
        assert down.child_state(name).applied == children[name].head()
