"""A large file parsed in a child process (adapters/parse_child.py) gives exactly what parsing in-process gives."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import pytest

from lienthong.adapters import intake
from lienthong.adapters.intake import Inbox, Limits, take
from lienthong.adapters.registry import Registry
from lienthong.node.intake import StoreSink
from lienthong.sync.clock import HybridClock
from lienthong.sync.store import Store

HEADER = "Mã chỉ tiêu;Tên chỉ tiêu;Đơn vị tính;Kỳ báo cáo;Mã đơn vị;Tên đơn vị;Giá trị;Ghi chú\r\n"
TIMES = ("received_at", "processed_at")


def vietnamese_csv(rows: int) -> str:
    """Good rows, and every 97th row refused (a period that is no period, a number that is no number)."""
    out = ["BÁO CÁO CHỈ TIÊU KINH TẾ - XÃ HỘI\r\n", HEADER]
    for i in range(rows):
        period = "Tháng 13/2026" if i % 97 == 5 else f"Tháng {i % 12 + 1}/2026"
        value = "1,2,3" if i % 97 == 50 else f"{i},5"
        out.append(f"KTXH.{i:04d};Chỉ tiêu {i};người;{period};86;Tỉnh Vĩnh Long;{value};ghi chú {i}\r\n")
    return "".join(out)


def take_both(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> tuple[list[dict[str, Any]], list[list[tuple]], list[int]]:
    """Take the same file into two fresh stores, in-process and through the child; the receipts, the records, the children started."""
    started: list[int] = []
    real = intake.child_rows

    def counted(*args: Any, **kwargs: Any) -> Any:
        started.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(intake, "child_rows", counted)
    receipts, stored = [], []
    for mode, limits in (("inproc", Limits(parse_child_bytes=1 << 40)), ("child", Limits(parse_child_bytes=0))):
        folder = tmp_path / mode
        folder.mkdir()
        (folder / "chỉ tiêu tháng.csv").write_text(text, encoding="utf-8-sig")
        store = Store.create(tmp_path / f"{mode}.db", "86")
        try:
            sink = StoreSink(store, HybridClock(), tmp_path, ["86"])
            result = take(
                folder / "chỉ tiêu tháng.csv", Inbox("thongke", folder, adapter="vn-csv"), Registry(), sink, "86", limits, move=False
            )
            receipts.append({k: v for k, v in result.items() if k not in TIMES})
            stored.append(sorted(store.reader().execute("SELECT id, kind, unit, agency, deleted, chash FROM records").fetchall()))
        finally:
            store.close()
    return receipts, stored, started


def test_rows_parsed_in_a_child_give_the_same_receipt_and_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused rows (their lines and sentences), counts and the records stored are the same whichever process parsed the file."""
    receipts, stored, started = take_both(tmp_path, vietnamese_csv(3_000), monkeypatch)
    assert started == [1]  # the second take went through a child process
    assert receipts[0] == receipts[1]
    refused = sum(1 for i in range(3_000) if i % 97 in (5, 50))
    assert receipts[1]["importCount"] == {"imported": 3_000 - refused, "updated": 0, "unchanged": 0, "refused": refused}
    assert [c["line"] for c in receipts[1]["conflicts"][:2]] == [8, 53]  # physical lines: title, header, then row 0 on line 3
    assert stored[0] == stored[1] and len(stored[1]) == 3_000 - refused


def test_a_file_refused_whole_in_the_child_gets_the_same_receipt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file with no header (the inbox pinned to vn-csv): the adapter's refusal crosses from the child unchanged (code and both sentences)."""
    receipts, stored, started = take_both(tmp_path, "Mã;Tên\r\nKTXH.1;x\r\n", monkeypatch)
    assert started == [1]
    assert receipts[0] == receipts[1] and receipts[1]["status"] == "ERROR" and receipts[1]["error_code"] == "no_header"
    assert stored == [[], []]


def test_a_child_that_dies_mid_file_refuses_it_and_commits_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parser process ends after its first batch: the file is refused as an adapter failure and none of its rows are kept."""
    monkeypatch.setenv("LIENTHONG_FAILPOINT", "parse_child_exit")
    (tmp_path / "big.csv").write_text(vietnamese_csv(2_500), encoding="utf-8-sig")
    store = Store.create(tmp_path / "86.db", "86")
    try:
        sink = StoreSink(store, HybridClock(), tmp_path, ["86"])
        result = take(tmp_path / "big.csv", Inbox("thongke", tmp_path), Registry(), sink, "86", Limits(parse_child_bytes=0), move=False)
        assert result["status"] == "ERROR" and result["error_code"] == "adapter_failed"
        assert "exit 9" in result["description_en"]
        assert store.counts().get("indicator", 0) == 0
    finally:
        store.close()


def test_the_childs_pipe_holds_more_than_one_write_chunk_of_rows() -> None:
    """While the node commits a chunk, the child keeps parsing: its pipe holds ~1 MiB, not 64 KiB."""
    from lienthong.adapters.parse_child import PIPE_BYTES, widen

    read_end, write_end = os.pipe()
    try:
        os.set_blocking(write_end, False)
        widen(read_end)
        written = 0
        with contextlib.suppress(BlockingIOError):
            while written < PIPE_BYTES:
                written += os.write(write_end, b"x" * 65_536)
        assert written == PIPE_BYTES  # a plain pipe stops at 65,536 bytes
    finally:
        os.close(read_end)
        os.close(write_end)
