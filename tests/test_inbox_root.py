"""A first-time user's inbox: `init --agency` makes the agency folders the README copies files into,
and a file dropped in `inbox/` itself (no agency folder) gets a receipt saying where to put it,
in a real node process watching real folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .conftest import MakeNode
from .helpers import NodeProcess, cli, status, wait_until

pytestmark = pytest.mark.slow

CSV = "Mã chỉ tiêu;Tên chỉ tiêu;Kỳ báo cáo;Mã đơn vị;Giá trị\r\nKTXH.NS.01;Thu ngân sách;Tháng 10/2026;86;12.450,75\r\n"


def receipt_of(path: Path) -> dict:
    return json.loads(Path(str(path) + ".receipt.json").read_text(encoding="utf-8"))


def test_init_agency_makes_the_inbox_folders(tmp_path: Path, ca_dir: Path) -> None:
    """`init --agency thongke --agency yte` creates inbox/thongke/ and inbox/yte/; a name that cannot be a
    folder is refused before anything is made."""
    node = tmp_path / "86"
    cli("init", "--dir", str(node), "--mode", "provincial", "--id", "86", "--ca", str(ca_dir), "--agency", "thongke", "--agency", "yte")
    assert sorted(p.name for p in (node / "inbox").iterdir()) == ["thongke", "yte"]
    bad = cli("init", "--dir", str(tmp_path / "87"), "--mode", "provincial", "--id", "87", "--agency", "../etc", check=False)
    assert bad.returncode != 0 and "Error:" in bad.stderr and "Try:" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "87").exists()


def test_a_file_dropped_in_the_inbox_root_gets_a_receipt_saying_where_to_put_it(make_node: MakeNode) -> None:
    """A file in inbox/ itself, there at start-up or dropped while running, is not ignored: it moves to
    inbox/rejected/ with a receipt naming the agency folders; copied into inbox/thongke/ it is then taken."""
    node = make_node("86", agency="thongke")
    root = node / "inbox"
    assert (root / "thongke").is_dir()  # made by init --agency
    (root / "before-start.csv").write_text(CSV, encoding="utf-8")
    proc = NodeProcess(node).start()
    try:
        wait_until(
            lambda: Path(str(root / "rejected" / "before-start.csv") + ".receipt.json").exists(),
            what="the receipt of the file there at start",
        )
        staged = node / "staged.csv"
        staged.write_text(CSV.replace("12.450,75", "7"), encoding="utf-8")
        os.replace(staged, root / "chi-tieu.csv")
        wait_until(lambda: Path(str(root / "rejected" / "chi-tieu.csv") + ".receipt.json").exists(), what="the receipt of the dropped file")
        for name in ("before-start.csv", "chi-tieu.csv"):
            assert not (root / name).exists()
            receipt = receipt_of(root / "rejected" / name)
            assert receipt["status"] == "ERROR" and receipt["error_code"] == "no_agency", receipt
            assert "inbox/thongke/" in receipt["description"] and "inbox/thongke/" in receipt["description_en"]
        assert status(node)["records"].get("indicator", 0) == 0
        # Put where the receipt says, the same file is taken.
        (root / "thongke" / "chi-tieu.csv").write_bytes((root / "rejected" / "chi-tieu.csv").read_bytes())
        wait_until(lambda: status(node)["records"].get("indicator", 0) == 1, what="the file taken from inbox/thongke/")
        assert not (root / "rejected").joinpath("thongke").exists() and "rejected" not in os.listdir(root / "thongke")
    finally:
        assert proc.stop() == 0


def test_with_no_agency_folder_the_receipt_says_to_make_one(tmp_path: Path) -> None:
    """In-process: with no agency folder yet, the receipt says to make one; `ingest` without --agency is unaffected."""
    from lienthong.adapters.inbox_names import agency_folders
    from lienthong.adapters.intake import Inbox, take
    from lienthong.adapters.registry import Registry
    from lienthong.node.intake import StoreSink
    from lienthong.sync.clock import HybridClock
    from lienthong.sync.store import Store

    store = Store.create(tmp_path / "86.db", "86")
    sink = StoreSink(store, HybridClock(), tmp_path, ["86"])
    root = tmp_path / "inbox"
    root.mkdir()
    (root / "x.csv").write_text(CSV, encoding="utf-8")
    result = take(root / "x.csv", Inbox("", root, root=True), Registry(), sink, "86")
    assert result["error_code"] == "no_agency" and "inbox/thongke/" in result["description"] and "--agency" in result["description"]
    assert agency_folders(root) == []  # its own rejected/ is no agency
    (tmp_path / "y.csv").write_text(CSV, encoding="utf-8")
    assert take(tmp_path / "y.csv", Inbox("", tmp_path), Registry(), sink, "86", move=False)["importCount"]["imported"] == 1
    store.close()
