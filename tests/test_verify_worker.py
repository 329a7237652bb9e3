"""The province decodes and verifies what children send in a process of its own
(sync/verify_worker.py), so that the writer has the other core (issue #16). The process is
part of the node: it starts with the first batch, a forged record is still refused through
it, a worker killed mid-stream loses nothing (the child reconnects and every record arrives
once), and it never outlives its node."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from lienthong.config.settings import load
from lienthong.node.runtime import open_store
from lienthong.sync import admission, records
from lienthong.sync.clock import HybridClock
from lienthong.sync.upstream import Upstream
from lienthong.sync.verify_worker import VerifyWorker

from .conftest import MakeNode, listen_address
from .helpers import (
    WAIT_SCALE,
    NodeProcess,
    alive,
    changelog_duplicates,
    cli,
    indicator_rows,
    running,
    status,
    versions,
    wait_until,
    workers_of,
    write_jsonl,
)

pytestmark = pytest.mark.slow

WORKER = b"lienthong.sync.verify_worker"


def test_a_killed_verifying_process_loses_nothing_and_none_outlives_its_node(make_node: MakeNode, tmp_path: Path) -> None:
    province = make_node("86")
    commune = make_node("86-28894", parent=listen_address(province))
    rows = indicator_rows("86-28894", 40_000, agency="thongke")
    cli("ingest", "--dir", str(commune), str(write_jsonl(tmp_path / "a.jsonl", rows[:20_000])))
    node = NodeProcess(province)
    child = NodeProcess(commune)
    with running(node, child):
        assert node.proc is not None
        first = wait_until(lambda: workers_of(node.proc.pid, WORKER), timeout=60 * WAIT_SCALE, what=f"the verifying process\n{node.tail()}")
        # Killed while the child has more to send: a session waiting on it ends, the child reconnects.
        cli("ingest", "--dir", str(commune), str(write_jsonl(tmp_path / "b.jsonl", rows[20_000:])))
        os.kill(first[0], signal.SIGKILL)
        expected = versions(commune, origin="86-28894")
        wait_until(lambda: versions(province, origin="86-28894") == expected, timeout=120 * WAIT_SCALE, what="every record at the province")
        assert "verify.worker_exited" in node.log(), node.tail()
        assert "Traceback" not in node.log(), node.tail()
        again = wait_until(lambda: workers_of(node.proc.pid, WORKER), timeout=30 * WAIT_SCALE, what="a new verifying process")
        assert again != first
        assert status(province)["children"][0]["rejected"] == 0
    # A clean stop takes it with the node.
    wait_until(lambda: not any(alive(p) for p in again), timeout=30 * WAIT_SCALE, what="the worker to exit with its node")
    assert changelog_duplicates(province) == 0
    assert len(versions(province, origin="86-28894")) == 40_000

    # SIGKILL gives the node no chance to stop it: its closed stdin does.
    node = NodeProcess(province, log_name="run2.log")
    with running(node, NodeProcess(commune, log_name="run2.log")):
        assert node.proc is not None
        cli("ingest", "--dir", str(commune), str(write_jsonl(tmp_path / "c.jsonl", indicator_rows("86-28894", 100, start=50_000))))
        workers = wait_until(
            lambda: workers_of(node.proc.pid, WORKER), timeout=60 * WAIT_SCALE, what=f"the verifying process\n{node.tail()}"
        )
        node.kill()
        wait_until(lambda: not any(alive(p) for p in workers), timeout=30 * WAIT_SCALE, what="the worker to exit after its node was killed")


def test_the_worker_admits_exactly_what_the_node_itself_would(make_node: MakeNode) -> None:
    """The same batch through the worker and through `admission.prepare` in the node: the same
    rows, the same refusals, the same quarantine with the refused records' bytes whole (the
    worker answers with each envelope's place in the batch; the node puts its own bytes back)."""
    province_dir = make_node("86")
    commune_dir = make_node("86-28894", parent="127.0.0.1:1", parent_id="86")
    province = open_store(province_dir, load(province_dir))
    commune = open_store(commune_dir, load(commune_dir))
    try:
        keyed = [records.build("86-28894", row) for row in indicator_rows("86-28894", 30, agency="thongke")]
        commune.write_local(keyed, HybridClock(commune.latest_version()))
        batch = Upstream(commune).changes_after(0, 500)
        assert batch is not None
        raws = list(batch.envelopes)
        altered = records.Envelope.FromString(raws[3])
        body = records.body_of(altered)
        body.value = "999999"  # a figure changed after its origin sealed it
        altered.body = body.SerializeToString()
        raws[3] = altered.SerializeToString()
        raws.append(b"\xff\x01 not an envelope")
        now = time.time()
        expected = admission.prepare("86-28894", list(raws), now, province.verifier)

        async def through_worker() -> admission.Prepared:
            assert province.verifier is not None
            worker = VerifyWorker(province.path, province.verifier.ca_pem)
            try:
                return await worker.prepare("86-28894", raws, now)
            finally:
                await worker.close()

        got = asyncio.run(through_worker())
        assert got == expected
        rows, refusals, quarantined = got
        assert len(rows) == len(raws) - 2 and {r.code for r in refusals} == {"bad_signature", "malformed"}
        assert [q[-1] for q in quarantined] == [raws[3]]  # kept whole, byte for byte
        assert all(r[-1] is raw for r, raw in zip(rows, [x for i, x in enumerate(raws) if i not in (3, len(raws) - 1)], strict=True))
    finally:
        province.close()
        commune.close()
