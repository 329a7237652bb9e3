"""The audit log: every kind of tampering is found, with the right entry; appends stay one chain."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import sqlite3
import stat
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from lienthong.node.trust import audit, audit_chain
from lienthong.node.trust.audit import Action, AuditLog
from lienthong.node.trust.audit_chain import AuditError, Problem
from lienthong.sync.errors import LienthongError

from .helpers import fill_disk, small_disk

ZERO = "0" * 64
HASHED = ("seq", "time", "actor", "action", "subject", "details", "prev_hash")


# ------------------------------------------------------------ helpers written apart from the module


def recompute(entry: dict[str, Any]) -> str:
    """The hash rule as an inspector would code it from the docs, independently of audit.py."""
    body = {name: entry[name] for name in HASHED}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")).hexdigest()


def check_chain(entries: list[dict[str, Any]]) -> None:
    """Assert that exported entries form a valid chain by recomputation alone."""
    prev = ZERO
    for seq, entry in enumerate(entries, start=1):
        assert entry["seq"] == seq
        assert entry["prev_hash"] == prev
        assert recompute(entry) == entry["hash"]
        prev = entry["hash"]


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """The attacker's (or a careless admin's) own connection, append-only triggers dropped."""
    conn = sqlite3.connect(path, isolation_level=None)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    try:
        yield conn
    finally:
        conn.close()


def rows(path: Path) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute("SELECT * FROM entries ORDER BY seq")]


def rewrite_consistently(path: Path, seq: int, **changes: Any) -> None:
    """Change entry `seq` and recompute every later hash and the anchor: a consistent forgery."""
    entries = rows(path)
    with raw(path) as conn:
        prev = entries[seq - 2]["hash"] if seq > 1 else ZERO
        for entry in entries[seq - 1 :]:
            entry = {**entry, "details": json.loads(entry["details"]), "prev_hash": prev}
            if entry["seq"] == seq:
                entry.update(changes)
            entry["hash"] = recompute(entry)
            conn.execute(
                "UPDATE entries SET subject = ?, details = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                (
                    entry["subject"],
                    json.dumps(entry["details"], sort_keys=True, separators=(",", ":"), ensure_ascii=False),
                    prev,
                    entry["hash"],
                    entry["seq"],
                ),
            )
            prev = entry["hash"]
        conn.execute("UPDATE anchor SET seq = ?, hash = ?", (entries[-1]["seq"], prev))


def fill(log: AuditLog, n: int) -> None:
    """Append `n` entries of the kinds a node records."""
    samples = [
        (Action.ENROLL, "86-28894", {"token": "…a1b2", "csr_sha256": "ab" * 32}),
        (Action.CERT_ISSUE, "serial 4F:21", {"node": "86-28894", "not_after": "2027-01-01T00:00:00+00:00"}),
        (Action.CONNECTION_REFUSED, "10.0.0.7:51234", {"reason": "certificate revoked", "serial": "4F:21"}),
        (Action.RECORD_REFUSED, "86-28897", {"origin": "86-28894", "kind": "indicator", "count": 3}),
        (Action.ADMIN_COMMAND, "ca sign", {"argv": ["ca", "sign", "Phường Tân An.csr"], "ok": True}),
        ("policy.change", "Sở Y tế", {"redact": ["cccd", "số điện thoại"], "ratio": 0.5, "none": None}),
    ]
    for i in range(n):
        action, subject, details = samples[i % len(samples)]
        log.append(action, subject, details, actor="86-28897" if i % 3 == 2 else None)


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AuditLog]:
    with AuditLog.open(tmp_path, actor="86") as log:
        yield log


# ------------------------------------------------------------ an honest log


def test_untouched_log_verifies(log: AuditLog) -> None:
    """A log written only through append verifies, and its entries are what was appended."""
    assert log.verify().ok and log.verify().checked == 0 and log.head() == (0, ZERO)
    fill(log, 12)
    result = log.verify()
    assert result.ok and result.checked == 12 and result.bad_seq is None and result.problem is None
    entries = log.entries()
    assert [e.seq for e in entries] == list(range(1, 13))
    assert entries[0].prev_hash == ZERO
    assert log.head() == result.head == (12, entries[-1].hash)
    check_chain([e.to_dict() for e in entries])
    assert datetime.fromisoformat(entries[0].time).utcoffset() == UTC.utcoffset(None)
    assert entries[0].actor == "86" and entries[2].actor == "86-28897"
    assert entries[0].action == "enroll" and type(entries[0].action) is str
    assert entries[4].details == {"argv": ["ca", "sign", "Phường Tân An.csr"], "ok": True}
    assert [e.seq for e in log.entries(since_seq=10)] == [11, 12]
    assert [e.seq for e in log.entries(since_seq=2, limit=3)] == [3, 4, 5]
    assert audit_chain.describe(result).startswith("The audit log is intact: 12 entries verified, head 12:")


def test_file_is_its_own_wal_database(tmp_path: Path) -> None:
    """The log is audit.db in the node directory, WAL, owner-only, and reopening continues the chain."""
    with AuditLog.open(tmp_path) as log:
        entry = log.append(Action.ADMIN_COMMAND, "init")
        assert entry.actor == audit.operator_name()
    path = tmp_path / "audit.db"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with AuditLog.open(tmp_path, actor="86") as log:
        second = log.append(Action.CERT_ISSUE, "86-28894")
        assert (second.seq, second.prev_hash) == (2, entry.hash)
        assert log.verify().ok


def test_triggers_stop_mistakes(log: AuditLog) -> None:
    """Ordinary SQL cannot change or delete entries by accident (an attacker drops the triggers)."""
    fill(log, 2)
    with contextlib.closing(sqlite3.connect(log.path)) as conn:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE entries SET subject = 'x' WHERE seq = 1")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM entries WHERE seq = 2")
    assert log.verify().ok


# ------------------------------------------------------------ tampering


EDITS = {
    "time": "'2020-01-01T00:00:00.000000+00:00'",
    "actor": "'mallory'",
    "action": "'cert.revoke'",
    "subject": "subject || ' '",
    "details": """'{"a":1}'""",  # canonical, but not what was hashed
    "prev_hash": f"'{'f' * 64}'",
    "hash": f"'{'e' * 64}'",
    "seq": "seq + 1000",
}


@pytest.mark.parametrize("field", EDITS)
@pytest.mark.parametrize("seq", [1, 4, 8])
def test_editing_any_field_of_any_entry_is_detected(log: AuditLog, field: str, seq: int) -> None:
    """An UPDATE of any column of the first, a middle or the last entry is found at that entry."""
    fill(log, 8)
    with raw(log.path) as conn:
        conn.execute(f"UPDATE entries SET {field} = {EDITS[field]} WHERE seq = ?", (seq,))
    result = log.verify()
    assert not result.ok and result.bad_seq == seq
    assert result.problem == (Problem.GAP if field == "seq" else Problem.EDITED)
    assert result.checked == seq - 1
    assert f"entry {seq}" in audit_chain.describe(result)


def test_details_rewritten_in_another_json_form_is_detected(log: AuditLog) -> None:
    """The same details in a non-canonical form (spaces) count as an edit: stored bytes are what is hashed."""
    log.append("x", "s", {"a": 1, "b": [1, 2]})
    with raw(log.path) as conn:
        conn.execute("""UPDATE entries SET details = '{"b": [1, 2], "a": 1}' WHERE seq = 1""")
    result = log.verify()
    assert (result.ok, result.bad_seq, result.problem) == (False, 1, Problem.EDITED)
    assert "form" in result.reason


def test_deleting_a_middle_entry_is_detected(log: AuditLog) -> None:
    """Deleting entries in the middle leaves a gap, reported at the first missing seq."""
    fill(log, 8)
    with raw(log.path) as conn:
        conn.execute("DELETE FROM entries WHERE seq = 4")
    result = log.verify()
    assert (result.ok, result.bad_seq, result.problem, result.checked) == (False, 4, Problem.GAP, 3)
    assert "entry 4 is missing" in result.reason
    with raw(log.path) as conn:
        conn.execute("DELETE FROM entries WHERE seq IN (5, 6)")
    assert "entries 4–6 are missing" in log.verify().reason


def test_deleting_the_first_entry_is_detected(log: AuditLog) -> None:
    """Deleting entry 1 is a gap at 1."""
    fill(log, 3)
    with raw(log.path) as conn:
        conn.execute("DELETE FROM entries WHERE seq = 1")
    assert (log.verify().bad_seq, log.verify().problem) == (1, Problem.GAP)


@pytest.mark.parametrize(("a", "b"), [(2, 6), (3, 4), (1, 8)])
def test_swapping_two_entries_is_detected_as_reordering(log: AuditLog, a: int, b: int) -> None:
    """Swapping two entries' contents (hashes and all) is found at the first one, as a move."""
    fill(log, 8)
    columns = [c for c in audit_chain.FIELDS if c != "seq"]
    with raw(log.path) as conn:
        first = conn.execute(f"SELECT {', '.join(columns)} FROM entries WHERE seq = ?", (a,)).fetchone()
        second = conn.execute(f"SELECT {', '.join(columns)} FROM entries WHERE seq = ?", (b,)).fetchone()
        assignments = ", ".join(f"{c} = ?" for c in columns)
        conn.execute(f"UPDATE entries SET {assignments} WHERE seq = ?", (*second, a))
        conn.execute(f"UPDATE entries SET {assignments} WHERE seq = ?", (*first, b))
    result = log.verify()
    assert (result.ok, result.bad_seq, result.problem) == (False, a, Problem.REORDERED)
    assert f"written as number {b}" in result.reason


def test_renumbering_after_a_deletion_is_detected(log: AuditLog) -> None:
    """Deleting an entry and closing the gap by renumbering the later ones is found where the gap was."""
    fill(log, 6)
    with raw(log.path) as conn:
        conn.execute("DELETE FROM entries WHERE seq = 3")
        conn.execute("UPDATE entries SET seq = seq - 1 WHERE seq > 3")
        conn.execute("UPDATE anchor SET seq = 5")
    result = log.verify()
    assert (result.bad_seq, result.problem) == (3, Problem.REORDERED)
    assert "written as number 4" in result.reason


def test_deleting_the_last_entries_is_detected_through_the_anchor(log: AuditLog) -> None:
    """Truncation leaves a valid chain; the anchor, written with every append, shows the loss."""
    fill(log, 8)
    with raw(log.path) as conn:
        conn.execute("DELETE FROM entries WHERE seq = 8")
    result = log.verify()
    assert (result.ok, result.bad_seq, result.problem, result.checked) == (False, 8, Problem.TRUNCATED, 7)
    assert "entry 8 was deleted" in result.reason
    with raw(log.path) as conn:
        conn.execute("DELETE FROM entries WHERE seq >= 6")
    assert "entries 6–8 were deleted" in log.verify().reason


def test_an_append_after_truncation_keeps_the_loss_visible(log: AuditLog) -> None:
    """Appends chain from the anchor, so a deleted tail stays a gap instead of being papered over."""
    fill(log, 5)
    with raw(log.path) as conn:
        conn.execute("DELETE FROM entries WHERE seq = 5")
    with capture_logs() as events:
        entry = log.append(Action.ADMIN_COMMAND, "status")
    assert entry.seq == 6
    assert [e["event"] for e in events] == ["audit.anchor_mismatch"]
    result = log.verify()
    assert (result.bad_seq, result.problem) == (5, Problem.GAP)


def test_tampering_with_the_anchor_is_detected(log: AuditLog) -> None:
    """An anchor that does not match the last entry fails verification."""
    fill(log, 4)
    with raw(log.path) as conn:
        conn.execute("UPDATE anchor SET hash = ?", ("a" * 64,))
    assert (log.verify().bad_seq, log.verify().problem) == (4, Problem.ANCHOR)
    with raw(log.path) as conn:
        conn.execute("UPDATE anchor SET seq = 2")
    assert (log.verify().bad_seq, log.verify().problem) == (3, Problem.ANCHOR)
    with raw(log.path) as conn:
        conn.execute("DELETE FROM anchor")
    assert (log.verify().bad_seq, log.verify().problem) == (None, Problem.ANCHOR)
    assert log.append("x", "y").seq == 5  # the log still takes entries


def test_an_entry_rewritten_with_a_fresh_hash_breaks_the_chain(log: AuditLog) -> None:
    """Recomputing an edited entry's own hash is not enough: the next entry no longer chains to it."""
    fill(log, 6)
    entry = rows(log.path)[2]
    entry = {**entry, "subject": "nothing happened", "details": json.loads(entry["details"])}
    with raw(log.path) as conn:
        conn.execute("UPDATE entries SET subject = ?, hash = ? WHERE seq = 3", (entry["subject"], recompute(entry)))
    result = log.verify()
    assert (result.bad_seq, result.problem) == (3, Problem.EDITED)
    assert "rewritten" in result.reason


def test_a_consistent_rewrite_is_caught_only_by_the_head_written_down(log: AuditLog) -> None:
    """Whoever can write the file can forge a consistent chain and anchor; the escrowed head catches it."""
    fill(log, 8)
    written_down = log.head()
    rewrite_consistently(log.path, 3, subject="nothing happened")

    assert log.verify().ok  # the limit of any check done with only what is in the file
    result = log.verify(expected_head=written_down)
    assert (result.ok, result.bad_seq, result.problem) == (False, 8, Problem.HEAD)
    assert "hash written down" in result.reason


def test_a_consistent_truncation_is_caught_only_by_the_head_written_down(log: AuditLog) -> None:
    """Deleting the tail and fixing the anchor passes alone, not against the head written down."""
    fill(log, 8)
    written_down = log.head()
    with raw(log.path) as conn:
        seq, digest = conn.execute("SELECT seq, hash FROM entries WHERE seq = 6").fetchone()
        conn.execute("DELETE FROM entries WHERE seq > 6")
        conn.execute("UPDATE anchor SET seq = ?, hash = ?", (seq, digest))
    assert log.verify().ok
    result = log.verify(expected_head=written_down)
    assert (result.ok, result.bad_seq, result.problem) == (False, 7, Problem.HEAD)


def test_a_log_may_grow_past_the_head_written_down(log: AuditLog) -> None:
    """An escrowed head stays valid while entries are appended after it."""
    fill(log, 3)
    written_down = audit_chain.format_head(log.head())
    fill(log, 4)
    result = log.verify(expected_head=audit_chain.parse_head(written_down))
    assert result.ok and result.checked == 7
    assert "still contains the head written down" in audit_chain.describe(result)
    assert log.verify(expected_head=(0, ZERO)).ok


def test_a_malformed_head_is_an_error_with_a_hint(log: AuditLog) -> None:
    """A mistyped head is an expected failure, not a traceback."""
    for text in ["", "12", "x:" + "a" * 64, "3:" + "a" * 63, "-1:" + "a" * 64, "0:" + "a" * 64]:
        with pytest.raises(AuditError) as info:
            audit_chain.parse_head(text)
        assert info.value.hint
    with pytest.raises(LienthongError):
        log.verify(expected_head=(1, "not a hash"))
    assert audit_chain.parse_head(" 7:" + "AB" * 32 + "\n") == (7, "ab" * 32)


# ------------------------------------------------------------ concurrency


def test_concurrent_appends_make_one_gap_free_chain(log: AuditLog) -> None:
    """Four threads appending at once produce seq 1..N with no gap and a valid chain."""
    threads, each = 4, 25
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            start.wait(timeout=10)
            for i in range(each):
                log.append(Action.RECORD_REFUSED, f"thread {t}", {"i": i}, actor=f"peer-{t}")
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert not errors
    entries = log.entries()
    assert [e.seq for e in entries] == list(range(1, threads * each + 1))
    assert sorted((e.actor, e.details["i"]) for e in entries) == sorted((f"peer-{t}", i) for t in range(threads) for i in range(each))
    assert log.verify().ok and log.verify().checked == threads * each


def test_two_writers_on_one_file_make_one_chain(tmp_path: Path) -> None:
    """The running node and a CLI command (two connections) appending together still make one chain."""
    node, cli = AuditLog.open(tmp_path, actor="86"), AuditLog.open(tmp_path, actor="operator")
    try:
        workers = [threading.Thread(target=fill, args=(writer, 15)) for writer in (node, cli, node, cli)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=60)
        assert node.verify().ok and cli.verify().checked == 60
        assert node.head() == cli.head()
    finally:
        node.close()
        cli.close()


# ------------------------------------------------------------ export


def test_jsonl_export_is_checkable_by_recomputation(log: AuditLog, tmp_path: Path) -> None:
    """Each exported line is a full entry whose hash and link an inspector can recompute; the summary ends the file."""
    fill(log, 9)
    log.append(Action.ADMIN_COMMAND, '=HYPERLINK("http://evil")', {"note": "Ủy ban nhân dân"})
    dest = tmp_path / "out" / "audit.jsonl"
    dest.parent.mkdir()
    result = log.export(dest)
    lines = [json.loads(line) for line in dest.read_text(encoding="utf-8").splitlines()]
    *entries, last = lines
    assert len(entries) == 10 and set(entries[0]) == set(audit_chain.FIELDS)
    check_chain(entries)
    summary = last["summary"]
    assert summary["verified"] is True and result.ok
    assert summary["head"] == {"seq": 10, "hash": entries[-1]["hash"]} == summary["anchor"]
    assert summary["entries"] == 10 and "SHA-256" in summary["hash_rule"]
    assert "Ủy ban nhân dân" in dest.read_text(encoding="utf-8")  # Vietnamese as itself, not \\u escapes
    assert not list(dest.parent.glob("*.partial"))


def test_csv_export_is_checkable_by_recomputation(log: AuditLog, tmp_path: Path) -> None:
    """The CSV (for spreadsheets) holds the hashed details text; formula-looking cells are defused reversibly."""
    fill(log, 6)
    log.append(Action.ADMIN_COMMAND, "=1+1", {"cmd": "-rm"}, actor="@operator")
    dest = tmp_path / "audit.csv"
    log.export(dest, "csv")
    with dest.open(encoding="utf-8-sig", newline="") as f:
        header, *body = list(csv.reader(f))
    assert tuple(header) == audit_chain.FIELDS
    *table, summary = body
    assert table[-1][2:5] == ["'@operator", "admin.command", "'=1+1"]

    def undo(cell: str) -> str:
        return cell[1:] if cell.startswith("'") else cell

    entries = []
    for row in table:
        entry = dict(zip(header, (undo(cell) for cell in row), strict=True))
        entries.append({**entry, "seq": int(entry["seq"]), "details": json.loads(entry["details"])})
    check_chain(entries)
    assert summary[0] == "summary" and summary[-1] == entries[-1]["hash"]
    assert json.loads(summary[5])["verified"] is True


def test_a_tampered_log_is_exported_as_it_is(log: AuditLog, tmp_path: Path) -> None:
    """Export does not refuse a damaged log: inspectors get the entries and a summary saying what is wrong."""
    fill(log, 5)
    with raw(log.path) as conn:
        conn.execute("UPDATE entries SET details = CAST(? AS TEXT) WHERE seq = 2", (b'{"a":"\xff"}',))
    result = log.export(tmp_path / "a.jsonl")
    assert (result.ok, result.bad_seq, result.problem) == (False, 2, Problem.EDITED)
    lines = (tmp_path / "a.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 6
    summary = json.loads(lines[-1])["summary"]
    assert summary["verified"] is False and summary["verification"]["bad_seq"] == 2
    assert "FAILED verification at entry 2" in summary["description"]
    log.export(tmp_path / "a.csv", "csv")  # the CSV copes too


def test_export_failures_are_errors_with_hints(log: AuditLog, tmp_path: Path) -> None:
    """An unknown format or an unwritable place is an AuditError, and leaves no partial file."""
    fill(log, 2)
    with pytest.raises(AuditError, match="unknown audit export format") as info:
        log.export(tmp_path / "a.xml", "xml")
    assert "jsonl" in info.value.hint
    with pytest.raises(AuditError, match="cannot write the audit export"):
        log.export(tmp_path / "missing" / "a.jsonl")
    assert not list(tmp_path.rglob("*.partial"))


# ------------------------------------------------------------ opening


def test_opening_failures_are_errors_with_hints(tmp_path: Path) -> None:
    """A missing node directory, a file that is not a database and a newer schema are AuditErrors."""
    with pytest.raises(AuditError, match="no node directory") as info:
        AuditLog.open(tmp_path / "nowhere")
    assert "lienthong init" in info.value.hint
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "audit.db").write_bytes(b"this is not a database, just some text long enough" * 40)
    with pytest.raises(AuditError, match="cannot be opened"):
        AuditLog.open(tmp_path / "junk")
    (tmp_path / "new").mkdir()
    with contextlib.closing(sqlite3.connect(tmp_path / "new" / "audit.db")) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(AuditError, match="newer") as info:
        AuditLog.open(tmp_path / "new")
    assert "upgrade" in info.value.hint


# ------------------------------------------------------------ properties

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
appends = st.lists(
    st.tuples(
        st.sampled_from(list(Action)) | st.text(min_size=1, max_size=12),
        st.text(max_size=16),
        st.dictionaries(st.text(max_size=6), json_values, max_size=3),
        st.none() | st.text(min_size=1, max_size=10),
    ),
    max_size=6,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(appends=appends, data=st.data())
def test_any_appends_verify_and_any_single_byte_change_fails(tmp_path: Path, appends: list[Any], data: st.DataObject) -> None:
    """For any appends the log verifies; changing one byte of any stored field (entry or anchor) makes it fail."""
    with tempfile.TemporaryDirectory(dir=tmp_path) as node_dir, AuditLog.open(Path(node_dir), actor="86") as log:
        for action, subject, details, actor in appends:
            log.append(action, subject, details, actor=actor)
        assert log.verify().ok and log.verify().checked == len(appends)
        check_chain([e.to_dict() for e in log.entries()])

        targets = [("anchor", "seq", None), ("anchor", "hash", None)]
        targets += [("entries", field, seq) for seq in range(1, len(appends) + 1) for field in audit_chain.FIELDS]
        table, field, seq = data.draw(st.sampled_from(targets))
        where = "WHERE one = 1" if seq is None else f"WHERE seq = {seq}"
        with raw(log.path) as conn:
            value = conn.execute(f"SELECT {field} FROM {table} {where}").fetchone()[0]
            # An integer changes by one byte of its 64-bit two's-complement form.
            encoded = bytearray(value.to_bytes(8, "big", signed=True) if isinstance(value, int) else value.encode("utf-8"))
            assume(encoded)  # an empty subject has no byte to change
            at = data.draw(st.integers(0, len(encoded) - 1))
            encoded[at] = data.draw(st.integers(0, 255).filter(lambda b: b != encoded[at]))
            if isinstance(value, int):
                new = int.from_bytes(encoded, "big", signed=True)
                assume(table == "anchor" or not conn.execute("SELECT 1 FROM entries WHERE seq = ?", (new,)).fetchone())
                conn.execute(f"UPDATE {table} SET {field} = ? {where}", (new,))
            else:
                try:
                    conn.execute(f"UPDATE {table} SET {field} = ? {where}", (encoded.decode("utf-8"),))
                except UnicodeDecodeError:  # stored as the raw bytes, as an edit of the file would leave them
                    conn.execute(f"UPDATE {table} SET {field} = CAST(? AS TEXT) {where}", (bytes(encoded),))
        result = log.verify()
        assert not result.ok, (table, field, seq)
        assert result.reason and audit_chain.describe(result)


def test_a_full_disk_holds_entries_in_memory_and_writes_them_in_order_once_space_returns(tmp_path: Path) -> None:
    """The node's audit log on a disk that fills: appending never fails, what could not be written is kept (up to a
    bound, then counted) and written once space returns, oldest first with its own time, the chain intact."""
    with small_disk(tmp_path / "node", "2m") as node_dir:
        log = AuditLog.open(node_dir, actor="86")
        log.hold_when_full(5)
        log.append("first", "s")
        ballast = fill_disk(node_dir / "ballast")
        with capture_logs() as logs:
            held = [log.append("refused", f"peer-{i}", {"n": i, "pad": "x" * 20_000}) for i in range(8)]
        assert [e.seq for e in held] == [0] * 8 and log.held == 8
        assert [e["event"] for e in logs].count("audit.held") == 1
        assert log.flush() == 8  # still full: nothing written, nothing lost from what is kept
        ballast.unlink()
        assert log.flush() == 0
        entries = log.entries()
        assert [(e.action, e.subject) for e in entries[1:6]] == [("refused", f"peer-{i}") for i in range(5)]
        assert [e.time for e in entries[1:6]] == [e.time for e in held[:5]]
        assert entries[6].action == "audit.dropped" and entries[6].details["count"] == 3
        assert log.verify().ok
        log.close()


def test_a_command_still_fails_in_words_when_the_audit_log_cannot_be_written(tmp_path: Path) -> None:
    """Holding is for the running node only: a CLI command whose audit entry cannot be written fails in words."""
    with small_disk(tmp_path / "node", "1m") as node_dir:
        log = AuditLog.open(node_dir)
        fill_disk(node_dir / "ballast")
        with pytest.raises(AuditError, match="cannot be written") as caught:
            for i in range(50):
                log.append("x", "y", {"pad": "x" * 20_000, "i": i})
        assert "free disk space" in caught.value.hint
        log.close()
