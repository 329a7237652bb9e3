"""A clean stop is quiet: SIGTERM on a node with children connected closes every link without a traceback."""

from __future__ import annotations

import json

import pytest

from .conftest import MakeNode, listen_address
from .helpers import NodeProcess, status, wait_until

pytestmark = pytest.mark.slow


def test_sigterm_with_children_connected_prints_no_traceback(make_node: MakeNode) -> None:
    """SIGTERM on a province whose children are streaming ends with exit 0 and no traceback in its
    output; the stop says at most one line per closed connection."""
    province = make_node("86")
    children = [make_node(f"86-{n}", parent=listen_address(province)) for n in ("28894", "29077")]
    parent = NodeProcess(province).start()
    procs = [NodeProcess(child).start() for child in children]
    wait_until(lambda: len([c for c in status(province)["children"] if c["connected"]]) == 2, timeout=30, what="both children up")
    assert parent.stop() == 0
    log = parent.log()
    assert "Traceback" not in log, parent.tail()
    assert "CancelledError" not in log, parent.tail()
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    stopping = events[names.index("node.stopping") + 1 : names.index("node.stopped")]
    # One line per closed connection at most, and nothing louder than info.
    assert len(stopping) <= len(procs), stopping
    assert all(e["level"] == "info" for e in stopping), stopping
    for proc in procs:
        proc.stop()
