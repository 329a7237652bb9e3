"""Personal data (Decree 13/2023/NĐ-CP): citizens' name, phone and e-mail stay in the unit
going up, as a keyed hash that still finds duplicates, and go down in full."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from lienthong.sync import records
from lienthong.sync.clock import HybridClock
from lienthong.sync.privacy import PREFIX, Redactor, hashing_key
from lienthong.sync.store import Store

from .transports import MemoryLink, parent, until, uplink


def feedback(source_id: str, unit: str, phone: str) -> dict[str, object]:
    return {
        "kind": "feedback",
        "source_id": source_id,
        "unit": unit,
        "category": "GT-01",
        "description": "Ổ gà",
        "received_at": "2026-11-20T07:42:10+07:00",
        "citizen": {"name": "Nguyễn Văn An", "phone": phone, "email": "an@example.com"},
    }


def citizens(store: Store, origin: str) -> list[records.pb.Person]:
    return [records.body_of(e).citizen for e in store.iter_records(records.FEEDBACK) if e.origin == origin]


def test_personal_data_is_hashed_upward_and_kept_downward(tmp_path: Path) -> None:
    """Two communes report the same caller: the province sees one pseudonym for both, never the phone;
    feedback the province dispatches down keeps the citizen's details for the unit that must call back."""
    key = hashing_key(b"the province's CA certificate")  # what keys the hash: the same for every unit of a province

    async def main() -> None:
        prov = Store.create(tmp_path / "86.db", "86")
        link = MemoryLink()
        async with parent(link, prov):
            prov.write_local([records.build("86", feedback("1022-9", "86-28894", "0909 000 111"))], HybridClock())
            communes = {}
            async with contextlib.AsyncExitStack() as stack:
                for node_id in ("86-28894", "86-29077"):
                    store = Store.create(tmp_path / f"{node_id}.db", node_id)
                    store.write_local([records.build(node_id, feedback(f"{node_id}-1", node_id, "0903123456"))], HybridClock())
                    await stack.enter_async_context(uplink(link, store, redact=Redactor(key)))
                    communes[node_id] = store
                await until(lambda: prov.counts()["feedback"] == 3, what="both communes' feedback")
                await until(lambda: len(citizens(communes["86-28894"], "86")) == 1, what="the dispatched item")
            a, b = citizens(prov, "86-28894")[0], citizens(prov, "86-29077")[0]
            for person in (a, b):
                assert all(v.startswith(PREFIX) for v in (person.name, person.phone, person.email))
            assert a.phone == b.phone and a.name == b.name  # the same caller is still recognisable
            assert citizens(communes["86-28894"], "86-28894")[0].phone == "0903123456"  # the unit keeps its own data
            down = citizens(communes["86-28894"], "86")[0]
            assert (down.name, down.phone) == ("Nguyễn Văn An", "0909 000 111")  # sent down in full
            for store in communes.values():
                store.close()
        prov.close()

    asyncio.run(main())
