"""Personal data (Decree 13/2023/NĐ-CP): citizens' name, phone and e-mail stay in the unit
going up, as a keyed hash that still finds duplicates, and go down in full."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from lienthong.node import runtime
from lienthong.node.cli_common import load_settings
from lienthong.sync import records
from lienthong.sync.clock import HybridClock
from lienthong.sync.privacy import PREFIX, PSEUDONYM_KEY_FILE, PseudonymKey, Redactor, hashing_key
from lienthong.sync.store import Store

from .conftest import MakeNode
from .transports import MemoryLink, parent, until, uplink


def feedback(source_id: str, unit: str, phone: str = "0903123456") -> dict[str, object]:
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


def candidate_keys(root: Path) -> Iterator[bytes]:
    """Every key a holder of `root` could try: each file, each PEM block in it and each hex secret,
    as they are and as the format-1 derivation keys them, and every value stored in its databases."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        parts = [data, *re.findall(rb"-----BEGIN [A-Z ]+-----.*?-----END [A-Z ]+-----\n?", data, re.S)]
        parts += [bytes.fromhex(h.decode()) for h in re.findall(rb"\b[0-9a-f]{64}\b", data)]
        if data.startswith(b"SQLite format 3"):
            with contextlib.closing(sqlite3.connect(path)) as db:
                for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
                    for row in db.execute(f'SELECT * FROM "{table}"'):
                        parts += [v if isinstance(v, bytes) else str(v).encode() for v in row if v is not None]
        for part in parts:
            yield from (part, hashlib.sha256(part).digest(), hashing_key(part))


def test_the_province_holds_nothing_that_recomputes_a_pseudonym(make_node: MakeNode, ca_dir: Path) -> None:
    """A citizen's pseudonym is keyed by the province-wide pseudonym secret, which units get with their
    certificate and the province's node never holds: trying every key material in the province's whole
    directory (certificates, keys, store, audit log) does not give the pseudonym back, while the unit's
    own secret does."""
    province = make_node("86")
    commune = make_node("86-28894", parent="127.0.0.1:9")
    store = runtime.open_store(commune, load_settings(commune))
    store.write_local([records.build("86-28894", feedback("1022-1", "86-28894", "0903123456"))], HybridClock())
    (raw,) = store.db.execute("SELECT envelope FROM records WHERE kind = ?", (records.FEEDBACK,)).fetchone()
    store.close()
    up = Redactor(hashing_key((commune / "tls" / "ca.crt").read_bytes()))(raw)  # what the commune sends up (runtime.py)
    sent = records.body_of(records.Envelope.FromString(up)).citizen
    assert sent.phone.startswith(PREFIX) and b"0903123456" not in up

    def recomputes(key: bytes) -> bool:
        return hmac.new(key, b"0903123456", hashlib.sha256).hexdigest()[:32] in sent.phone

    assert not any(recomputes(key) for key in candidate_keys(province))
    assert not list(province.rglob(PSEUDONYM_KEY_FILE))
    secret = commune / "tls" / PSEUDONYM_KEY_FILE
    assert secret.stat().st_mode & 0o777 == 0o600
    assert recomputes(PseudonymKey.load(secret).secret)  # type: ignore[union-attr]
    assert PseudonymKey.load(ca_dir / PSEUDONYM_KEY_FILE) == PseudonymKey.load(secret)  # kept with the CA
