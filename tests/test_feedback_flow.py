"""Feedback end to end with real nodes: the 1022 sample dispatched from the province to two
communes, returned, reassigned, updated there, and the same final state at both ends, also
after the link was cut while both ends kept working."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from lienthong.node.cli import cli as lienthong_cli
from lienthong.sync import feedback as fb
from lienthong.sync.store import Store

from .conftest import MakeNode
from .fault_helpers import check_alive, log_excerpt
from .helpers import STORE_FILE, NodeProcess, cli, relay, running, wait_until

pytestmark = pytest.mark.slow

SAMPLE = Path(__file__).parent / "testdata" / "samples" / "inbox" / "1022" / "open311-2026-11-20.json"
DEFINITIONS = Path(__file__).parents[1] / "node" / "demo_data" / "definitions.jsonl"
BA_TRI, LONG_CHAU = "86-28894", "86-29254"
POTHOLE, LITTER = "1022-20261120-000153", "1022-20261120-000161"


def view(node: Path) -> dict[str, tuple[Any, ...]]:
    """Each item a (running) node holds, as its fold: state, assignee, result, rating, history."""
    store = Store.open(node / STORE_FILE)
    try:
        items = fb.load(store).items
    finally:
        store.close()
    return {
        i.source_id: (i.state, i.assignee, i.result, i.rating, i.handled_at, tuple((s.event.id, s.applied) for s in i.history))
        for i in items
    }


def state(node: Path, source_id: str) -> tuple[str, str] | None:
    got = view(node).get(source_id)
    return (got[0], got[1]) if got else None


def lienthong(*args: str) -> None:
    """An operator's command, run in this process (a subprocess costs a second of start-up each)."""
    result = CliRunner().invoke(lienthong_cli, list(args))
    assert result.exit_code == 0 and result.exception is None, f"lienthong {' '.join(args)}: {result.exception!r}\n{result.output}"


def update(node: Path, source_id: str, status: str, *extra: str) -> None:
    lienthong("feedback", "update", "--dir", str(node), source_id, "--status", status, *extra)


def test_1022_sample_dispatched_updated_and_converged_across_a_cut_link(make_node: MakeNode) -> None:
    """Province and the handling commune end with the same fold of every item, link cut or not."""
    province = make_node("86")
    proxies = {unit: relay(province) for unit in (BA_TRI, LONG_CHAU)}
    ba_tri = make_node(BA_TRI, parent=f"127.0.0.1:{proxies[BA_TRI].port}")
    long_chau = make_node(LONG_CHAU, parent=f"127.0.0.1:{proxies[LONG_CHAU].port}")
    lienthong("ingest", "--dir", str(province), str(DEFINITIONS))
    lienthong("ingest", "--dir", str(province), "--agency", "1022", str(SAMPLE))
    procs = [NodeProcess(n) for n in (province, ba_tri, long_chau)]
    try:
        with running(*procs):

            def until(predicate: Any, what: str) -> None:
                def probe() -> Any:
                    check_alive(procs)
                    return predicate()

                try:
                    wait_until(probe, timeout=20, interval=0.2, what=what)
                except AssertionError as exc:
                    raise AssertionError(f"{exc}\n{log_excerpt(procs)}") from None

            # Dispatch: each commune receives its own item with its history, and only that.
            until(lambda: state(ba_tri, POTHOLE) == ("assigned", BA_TRI), "the pothole at Ba Tri")
            until(lambda: state(long_chau, LITTER) == ("closed", LONG_CHAU), "the litter at Long Châu")
            assert set(view(ba_tri)) == {POTHOLE} and set(view(long_chau)) == {LITTER}

            # Ba Tri returns the pothole (a provincial road); the province reassigns it and
            # reopens the litter item after the citizen complained again.
            update(ba_tri, POTHOLE, "returned", "--note", "Đường tỉnh 885 do Sở Xây dựng quản lý", "--unit", LONG_CHAU)
            until(lambda: state(province, POTHOLE) == ("returned", ""), "the return at the province")
            lienthong("feedback", "assign", "--dir", str(province), POTHOLE, "--unit", LONG_CHAU, "--note", "Chuyển phường Long Châu")
            update(province, LITTER, "reopened", "--note", "Người dân phản ánh rác vẫn còn")
            until(lambda: state(long_chau, POTHOLE) == ("assigned", LONG_CHAU), "the reassigned pothole at Long Châu")
            until(lambda: state(long_chau, LITTER) == ("reopened", LONG_CHAU), "the reopened litter at Long Châu")
            # The item came with its whole history, Ba Tri's return included.
            assert view(long_chau)[POTHOLE] == view(province)[POTHOLE]

            # The link is cut; both ends keep working meanwhile.
            proxies[LONG_CHAU].blocked = True
            proxies[LONG_CHAU].cut()
            update(long_chau, POTHOLE, "accepted")
            update(long_chau, POTHOLE, "in_progress", "--note", "Đã khảo sát hiện trường")
            update(long_chau, POTHOLE, "resolved", "--result", "Đã vá ổ gà, cắm biển cảnh báo")
            update(province, LITTER, "closed", "--note", "Đóng theo đề nghị của người dân")
            update(long_chau, LITTER, "in_progress", "--note", "Đang thu gom")  # written after the close, offline
            assert state(province, POTHOLE) == ("assigned", LONG_CHAU)  # nothing crossed the cut link
            proxies[LONG_CHAU].blocked = False

            until(lambda: view(province)[POTHOLE][0] == "resolved", "the resolution at the province")
            until(lambda: view(long_chau)[LITTER] == view(province)[LITTER], "the litter item to agree")
            update(province, POTHOLE, "closed")
            update(province, POTHOLE, "satisfaction", "--rating", "5")
            until(lambda: view(long_chau)[POTHOLE] == view(province)[POTHOLE], "the pothole item to agree")
            until(lambda: state(ba_tri, POTHOLE) == ("closed", LONG_CHAU), "Ba Tri to see what became of it")
    finally:
        for proxy in proxies.values():
            proxy.close()

    # What an operator sees at both ends, through the command.
    ends = {
        node.name: {i["source_id"]: i for i in json.loads(cli("feedback", "list", "--dir", str(node), "--json").stdout)}
        for node in (province, long_chau)
    }
    for source_id in (POTHOLE, LITTER):
        at_province, at_commune = ends["86"][source_id], ends[LONG_CHAU][source_id]
        assert {k: at_province[k] for k in ("state", "assignee", "result", "rating", "on_time")} == {
            k: at_commune[k] for k in ("state", "assignee", "result", "rating", "on_time")
        }
    pothole = ends["86"][POTHOLE]
    assert (pothole["state"], pothole["assignee"], pothole["result"], pothole["rating"]) == (
        "closed",
        LONG_CHAU,
        "Đã vá ổ gà, cắm biển cảnh báo",
        5,
    )
    # Closed at the province before the commune's offline note: the note is kept, marked ignored, at both ends.
    litter = json.loads(cli("feedback", "show", "--dir", str(long_chau), LITTER, "--json").stdout)
    assert litter["state"] == "closed"
    assert [(h["status"], h["applied"]) for h in litter["history"][-2:]] == [("closed", True), ("in_progress", False)]
