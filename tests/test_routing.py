"""Routing down: which child's queue a record lands in, decided inside the writer's transaction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lienthong.sync import records
from lienthong.sync.clock import HybridClock
from lienthong.sync.downstream import Downstream
from lienthong.sync.store import Store

COMMUNE = "86-28894"
OTHER = "86-29077"
WARD = "86-28894.w7"


def feedback(source_id: str, unit: str) -> dict[str, Any]:
    return {
        "kind": "feedback",
        "source_id": source_id,
        "unit": unit,
        "agency": "1022",
        "category": "GT-01",
        "description": "Ổ gà lớn trên đường tỉnh 885",
        "received_at": "2026-11-20T07:42:10+07:00",
    }


def unit(code: str, parent: str) -> dict[str, Any]:
    return {"kind": "definition", "type": "unit", "code": code, "fields": {"name": code, "parent": parent}}


def queued(store: Store) -> dict[str, set[bytes]]:
    out: dict[str, set[bytes]] = {}
    for child, rid in store.reader().execute(
        "SELECT d.child, r.id FROM downqueue d JOIN records r ON r.rid = d.rid WHERE r.kind = ?", (records.FEEDBACK,)
    ):
        out.setdefault(child, set()).add(rid)
    return out


def test_a_unit_defined_in_the_same_write_as_a_feedback_item_routes_it(tmp_path: Path) -> None:
    """A ward defined in the same transaction as a complaint about it sends the complaint to the ward's commune node."""
    store = Store.create(tmp_path / "province.db", "86")
    for child in (COMMUNE, OTHER):
        Downstream(store).register_child(child, "127.0.0.1:1")
    item = records.build("86", feedback("1022-0042", WARD))
    store.write_local([records.build("86", unit(WARD, COMMUNE)), item], HybridClock(store.latest_version()))
    assert queued(store) == {COMMUNE: {item.id}}


def test_a_unit_defined_in_an_earlier_write_routes_as_before(tmp_path: Path) -> None:
    """The same routing holds when the unit was committed before the item arrived."""
    store = Store.create(tmp_path / "province.db", "86")
    Downstream(store).register_child(COMMUNE, "127.0.0.1:1")
    clock = HybridClock(0)
    store.write_local([records.build("86", unit(WARD, COMMUNE))], clock)
    item = records.build("86", feedback("1022-0043", WARD))
    store.write_local([item], clock)
    assert queued(store) == {COMMUNE: {item.id}}
