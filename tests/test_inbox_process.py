"""Inboxes inside a real node process: a SIGKILL between commit and move loses and duplicates nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .conftest import MakeNode
from .helpers import NodeProcess, status, versions, wait_until

pytestmark = pytest.mark.slow


def rows(n: int) -> str:
    return "".join(
        json.dumps({"kind": "indicator", "indicator": f"KTXH.{i}", "unit": "86", "period": "2026-10", "value": i}) + "\n" for i in range(n)
    )


def test_sigkill_between_commit_and_move_finishes_the_file_on_restart(make_node: MakeNode, tmp_path: Path) -> None:
    """The node dies (SIGKILL) right after committing a file, before moving it: on restart the file is
    finished with its original receipt, and its records exist exactly once."""
    node = make_node("86")
    inbox = node / "inbox" / "thongke"
    inbox.mkdir(parents=True)
    (inbox / "values.jsonl").write_text(rows(300), encoding="utf-8")

    crashing = NodeProcess(node, env={"LIENTHONG_FAILPOINT": "after_commit"}).start()
    assert crashing.proc is not None
    assert crashing.proc.wait(timeout=60) == -9, crashing.log()
    assert (inbox / "values.jsonl").exists(), "the file must still be in the inbox after the crash"
    committed = versions(node)
    assert len(committed) == 300

    restarted = NodeProcess(node).start()
    try:
        wait_until(lambda: not (inbox / "values.jsonl").exists(), timeout=30, what="the file to be finished")
        archived = list((inbox / "archive").glob("*/values.jsonl"))
        assert len(archived) == 1
        receipt = json.loads(Path(str(archived[0]) + ".receipt.json").read_text())
        assert receipt["importCount"]["imported"] == 300  # the original receipt, not "unchanged"
        assert versions(node) == committed  # nothing written twice
        st = status(node)
        assert st["ingest"]["files"] == 1 and st["ingest"]["recent"][0]["name"] == "values.jsonl"
    finally:
        assert restarted.stop() == 0


def test_node_takes_files_dropped_while_running_and_sends_them_up(make_node: MakeNode, tmp_path: Path) -> None:
    """A file renamed into a running commune node's inbox reaches the province."""
    from .conftest import listen_address

    province = make_node("86")
    commune = make_node("86-28894", parent=listen_address(province))
    procs = [NodeProcess(province).start(), NodeProcess(commune).start()]
    try:
        inbox = commune / "inbox" / "thongke"
        inbox.mkdir(parents=True, exist_ok=True)
        staged = commune / "staged.jsonl"
        staged.write_text(rows(50).replace('"unit": "86"', '"unit": "86-28894"'), encoding="utf-8")
        os.replace(staged, inbox / "values.jsonl")
        wait_until(lambda: len(versions(province, origin="86-28894")) == 50, timeout=30, what="the records at the province")
    finally:
        for p in procs:
            assert p.stop() == 0
