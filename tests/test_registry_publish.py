"""The province publishes each node its CA certified with a parent (node/trust/publish.py).

The running node checks the CA's registry every half second. At a province with thousands of
certified communes, reading the whole registry each time cost a core's steady share; it is read
again only when the registry changed, and a node certified since is still published at the
next check."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from lienthong.node.trust import ca, publish
from lienthong.node.trust.issue import issue_node
from lienthong.node.trust.publish import RegistryPublisher
from lienthong.node.trust.tls import NodeTlsPaths
from lienthong.sync import records
from lienthong.sync.records import NODE_DEFINITION
from lienthong.sync.store import Store


def certify(ca_dir: Path, tmp_path: Path, node_id: str, parent: str) -> None:
    folder = tmp_path / node_id
    folder.mkdir()
    issue_node(ca_dir, NodeTlsPaths(folder / "ca.crt", folder / "node.crt", folder / "node.key"), node_id, "district", [], parent=parent)


def published(store: Store) -> dict[str, str]:
    out = {}
    for env in store.iter_records(records.DEFINITION):
        body = records.body_of(env)
        if body.type == NODE_DEFINITION:
            out[body.code] = json.loads(body.json)["parent"]
    return out


def age(path: Path, seconds: float) -> None:
    """The file as if last written `seconds` ago."""
    then = time.time_ns() - int(seconds * 1e9)
    os.utime(path, ns=(then, then))


def test_an_unchanged_registry_is_not_read_again_and_a_new_node_is_published_at_once(
    ca_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store.create(tmp_path / "province.db", "86")
    try:
        for node in ("86-28894", "86-29077"):
            certify(ca_dir, tmp_path, node, "86")
        age(ca_dir / ca.REGISTRY, 30)
        reads: list[int] = []
        real = ca.list_issued

        def counted(ca_dir_: Path) -> list[dict[str, object]]:
            reads.append(1)
            return real(ca_dir_)

        monkeypatch.setattr(ca, "list_issued", counted)
        publisher = RegistryPublisher(store, ca_dir)
        assert publisher.check() is True
        assert published(store) == {"86-28894": "86", "86-29077": "86"}
        assert len(reads) == 1

        # The node's half-second checks while nothing is certified: the registry is not read.
        for _ in range(20):
            assert publisher.check() is False
        assert len(reads) == 1, f"the unchanged registry was read {len(reads) - 1} more times"

        # A commune certified now is published at the next check, not at the next periodic read.
        certify(ca_dir, tmp_path, "86-29077.xa-a", "86-29077")
        assert publisher.check() is True
        assert published(store)["86-29077.xa-a"] == "86-29077"

        # Written this instant, a second write could leave the same modification time: until the
        # files settle, every check reads again; then the reads stop.
        before = len(reads)
        assert publisher.check() is False
        assert len(reads) == before + 1
        age(ca_dir / ca.REGISTRY, 30)
        publisher.check()
        settled = len(reads)
        for _ in range(5):
            assert publisher.check() is False
        assert len(reads) == settled

        # And whatever the files say, it is read again after REGISTRY_REREAD seconds.
        monkeypatch.setattr(publish, "REGISTRY_REREAD", 0.0)
        age(ca_dir / ca.REGISTRY, 31)
        assert publisher.check() is False
        assert len(reads) == settled + 1
        assert publisher.check() is False
        assert len(reads) == settled + 2
    finally:
        store.close()
