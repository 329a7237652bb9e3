"""Every agency sample through the whole pipeline of a node that holds the province's
definitions: good files give exactly their records, bad files give the receipt
samples/README.md describes, and a refused file changes nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lienthong.adapters.intake import Inbox, take
from lienthong.adapters.registry import Registry
from lienthong.node.intake import StoreSink
from lienthong.sync import records
from lienthong.sync.clock import HybridClock
from lienthong.sync.store import Store

SAMPLES = Path(__file__).parent / "testdata" / "samples"
DEFINITIONS = Path(__file__).parent.parent / "node" / "demo_data" / "definitions.jsonl"
REGISTRY = Registry()


def node(tmp_path: Path, node_id: str) -> tuple[Store, StoreSink]:
    store = Store.create(tmp_path / f"{node_id}.db", node_id)
    sink = StoreSink(store, HybridClock(), tmp_path, [node_id])
    take(DEFINITIONS, Inbox("ioc", DEFINITIONS.parent), REGISTRY, sink, node_id, move=False)
    return store, sink


def drop(tmp_path: Path, sink: StoreSink, node_id: str, sample: Path, *extra: Path) -> dict:
    inbox = tmp_path / "inbox" / sample.parent.name
    inbox.mkdir(parents=True, exist_ok=True)
    for path in (sample, *extra):
        shutil.copyfile(path, inbox / path.name)
    return take(inbox / sample.name, Inbox(sample.parent.name, inbox), REGISTRY, sink, node_id)


GOOD = [
    ("86", "inbox/1022/open311-2026-11-20.json", "open311", {"feedback": 2, "feedback_event": 6}),
    ("86", "inbox/soyte/datavalueset-202610-bulk.csv", "dhis2-csv", {"indicator": 4}),
    ("86-28894", "inbox/soyte/datavalueset-202610-ba-tri.json", "dhis2-json", {"indicator": 4}),
    ("86-28894", "inbox/thongke/chi-tieu-ktxh-thang-10-2026.csv", "vn-csv", {"indicator": 6}),
    ("86-29077", "inbox/thongke/chi-tieu-ktxh-thang-10-2026-cp1258.csv", "vn-csv", {"indicator": 3}),
    ("86-28894", "inbox/thongke/chi-tieu-ktxh-thang-9-2026-nfd.csv", "vn-csv", {"indicator": 1}),
    ("86-29077", "inbox/thongke/chi-tieu-ktxh-thang-9-2026.xlsx", "xlsx", {"indicator": 5}),
    ("86-28894", "inbox/vanphong/bc-ioc-thang-10-2026-ba-tri.report.json", "report-manifest", {"report": 1}),
]


@pytest.mark.parametrize(("node_id", "sample", "adapter", "kinds"), GOOD, ids=[g[1].rsplit("/", 1)[1] for g in GOOD])
def test_good_samples_are_taken_whole(tmp_path: Path, node_id: str, sample: str, adapter: str, kinds: dict[str, int]) -> None:
    """Each good sample is recognised, validated against the definitions and committed; SUCCESS, archived."""
    store, sink = node(tmp_path, node_id)
    extra = [SAMPLES / "inbox/vanphong/bc-ioc-thang-10-2026-ba-tri.pdf"] if adapter == "report-manifest" else []
    result = drop(tmp_path, sink, node_id, SAMPLES / sample, *extra)
    assert result["status"] == "SUCCESS", result
    assert result["adapter"] == adapter and result["conflicts"] == []
    assert result["importCount"] == {"imported": sum(kinds.values()), "updated": 0, "unchanged": 0, "refused": 0}
    own = {k: n for k, n in store.counts().items() if k != "definition" and n}
    assert own == kinds
    assert "/archive/" in result["archived_as"]
    if extra:  # the attachment is a blob and moved to the archive with its manifest
        digest = records.body_of(next(store.iter_records(records.REPORT))).attachments[0].sha256
        assert (tmp_path / "blobs" / digest[:2] / digest).read_bytes() == extra[0].read_bytes()
        assert (Path(result["archived_as"]).parent / extra[0].name).exists()
    store.close()


def test_bad_rows_get_vietnamese_reasons_and_the_valid_row_is_taken(tmp_path: Path) -> None:
    """chi-tieu-loi.csv: lines 2–6 refused with field and code (line 6: unknown indicator), line 7 taken."""
    store, sink = node(tmp_path, "86-28894")
    result = drop(tmp_path, sink, "86-28894", SAMPLES / "bad/chi-tieu-loi.csv")
    assert result["status"] == "WARNING"
    assert result["importCount"] == {"imported": 1, "updated": 0, "unchanged": 0, "refused": 5}
    got = [(c["line"], c["field"], c["code"]) for c in result["conflicts"]]
    assert got == [
        (2, "period", "bad_period"),
        (3, "value", "bad_value"),
        (4, "unit", "missing"),
        (5, "value", "ambiguous_number"),
        (6, "indicator", "unknown_indicator"),
    ]
    assert all(c["message"] and c["message"] != c["message_en"] for c in result["conflicts"])
    [taken] = [records.to_dict(e) for e in store.iter_records(records.INDICATOR)]
    assert (taken["indicator"], taken["value"]) == ("KTXH.YT.01", 7)
    store.close()


BAD_WHOLE = [
    ("86", "bad/datavalueset-unknown-unit.json", "unknown_unit"),
    ("86", "bad/empty.csv", None),
    ("86", "bad/random-bytes.csv", None),
    ("86", "bad/datavalueset-truncated.json", None),
    ("86", "bad/open311-leading-zero.json", None),
    ("86-29077", "bad/report-missing-attachment.report.json", None),
]


@pytest.mark.parametrize(("node_id", "sample", "row_code"), BAD_WHOLE, ids=[b[1].rsplit("/", 1)[1] for b in BAD_WHOLE])
def test_bad_files_are_refused_and_nothing_else_changes(tmp_path: Path, node_id: str, sample: str, row_code: str | None) -> None:
    """A file that yields nothing is refused (ERROR, moved to rejected/), with a reason in Vietnamese, and the store is untouched."""
    store, sink = node(tmp_path, node_id)
    before = store.record_versions()
    result = drop(tmp_path, sink, node_id, SAMPLES / sample)
    assert result["status"] == "ERROR" and "/rejected/" in result["archived_as"]
    assert result["description"] or result["conflicts"]
    if row_code:
        assert [c["code"] for c in result["conflicts"]] == [row_code] and "99-00000" in result["conflicts"][0]["message"]
    else:
        assert result["error_code"] and result["description"] and result["description_en"]
    if "report-missing" in sample:
        assert "khong-co-file-nay.pdf" in result["description"] and "../../etc/passwd" in result["description"]
    assert store.record_versions() == before
    assert store.file_totals()["files_refused"] == 1
    store.close()


def test_commune_refuses_records_for_units_outside_its_area(tmp_path: Path) -> None:
    """A commune node takes records for its own unit only; another commune's rows are refused as outside its area."""
    store, sink = node(tmp_path, "86-29077")
    result = drop(tmp_path, sink, "86-29077", SAMPLES / "inbox/thongke/chi-tieu-ktxh-thang-10-2026.csv")
    assert result["status"] == "ERROR" and {c["code"] for c in result["conflicts"]} == {"outside_subtree"}
    store.close()


def test_atomic_inbox_takes_all_or_nothing(tmp_path: Path) -> None:
    """An inbox set atomic refuses a file with any bad row, and stores none of its rows."""
    store, sink = node(tmp_path, "86-28894")
    inbox = tmp_path / "inbox" / "thongke"
    inbox.mkdir(parents=True)
    shutil.copyfile(SAMPLES / "bad/chi-tieu-loi.csv", inbox / "x.csv")
    result = take(inbox / "x.csv", Inbox("thongke", inbox, atomic=True), REGISTRY, sink, "86-28894")
    assert result["status"] == "ERROR" and result["error_code"] == "atomic" and result["importCount"]["refused"] == 5
    assert store.counts()["indicator"] == 0
    store.close()


def test_node_without_definitions_accepts_and_flags(tmp_path: Path) -> None:
    """Before the province's definitions arrive, records are taken and the receipt says they were not checked."""
    store = Store.create(tmp_path / "n.db", "86-28894")
    sink = StoreSink(store, HybridClock(), tmp_path, ["86-28894"])
    result = drop(tmp_path, sink, "86-28894", SAMPLES / "bad/chi-tieu-loi.csv")
    assert result["status"] == "WARNING" and result["importCount"]["imported"] == 2  # line 6 is not checked yet
    assert "definitions" in result["description_en"]
    store.close()
