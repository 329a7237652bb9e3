"""The node's audit log: a tamper-evident, append-only, hash-chained record of
security events and admin actions (DESIGN §5).

It is its own SQLite file, `audit.db` in the node directory (WAL,
synchronous=FULL), apart from the data store, so the data path never waits on it.
Each entry holds

    seq        1, 2, 3, … with no gaps
    time       when it was written, UTC, ISO 8601
    actor      this node's id, the operator's OS user name, or a peer's node id
    action     `enroll`, `cert.issue`, `cert.renew`, `cert.revoke`, `connection.refused`,
               `record.refused`, `admin.command`, … (see `Action`; any dotted name will do)
    subject    what the action was about: a node id, a certificate serial, a file
    details    a JSON object
    prev_hash  the previous entry's hash; 64 zeros (32 zero bytes) for entry 1
    hash       SHA-256, in hex, of the canonical form of the seven fields above

The canonical form is the JSON object of the seven fields with sorted keys, no
whitespace (separators `,` and `:`), non-ASCII text as itself, encoded as UTF-8:

    {"action":…,"actor":…,"details":{…},"prev_hash":…,"seq":…,"subject":…,"time":…}

`details` is stored in exactly that canonical form, so an inspector can recompute
every hash from an export with a few lines in any language (the export says how).

What `verify` detects: an edited entry (its hash no longer matches it); a deleted
entry (a gap in seq); entries moved to other positions (an entry's hash matches
only another seq); an entry rewritten with a fresh hash (the next entry no longer
chains to it); and deleted last entries, through the `anchor` row, which holds the
latest seq and hash and is updated in the same transaction as every append.

What it cannot detect alone: the anchor lives in the same file, so whoever can
write the file can rewrite everything after some entry, recompute the hashes and
the anchor, and leave a consistent log. Against that the operator writes down (or
escrows with the province) the head, `head()` → (seq, hash), shown by
`format_head` as `seq:hash`, and later runs `verify(expected_head=...)`: the entry
at that seq must still carry that hash. The log may grow past a written-down head;
nothing at or below it may change. The append-only triggers stop mistakes, not an
attacker, who can drop them.

Appends chain from the anchor, not from the last row: if the tail was deleted, the
next entry still points at the deleted one, so the loss stays visible after it.

Threading and processes: one writer connection behind a lock; every append is one
`BEGIN IMMEDIATE` transaction that reads the head inside it, so the running node
and a CLI command appending to the same file at once still make one chain.
`verify` and `export` read one consistent snapshot on a connection of their own
and do not hold up appends.

Errors: `AuditError` (a `LienthongError`) for expected failures: the file cannot
be opened or written, a written-down head is malformed, an unknown export format.
A tampered log is not an error: `verify` returns a `VerifyResult`, and `describe`
turns it into one sentence for the operator. An append that cannot be written
raises `AuditError`; a caller guarding a security action (enrollment, issuing a
certificate) should then refuse the action rather than go on unaudited.
"""

from __future__ import annotations

import contextlib
import csv
import enum
import getpass
import hashlib
import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from lienthong.sync.errors import LienthongError
from lienthong.sync.sqlite import transaction

log = structlog.get_logger("lienthong.audit")

FILE_NAME = "audit.db"
SCHEMA_VERSION = 1
GENESIS = "0" * 64  # prev_hash of entry 1: 32 zero bytes in hex
EXPORT_FORMATS = ("jsonl", "csv")
HASH_RULE = (
    "hash = SHA-256 (hex) of the UTF-8 JSON object {action, actor, details, prev_hash, seq, subject, time}"
    " with sorted keys, separators ',' and ':', and non-ASCII characters unescaped; entry 1's prev_hash is 64 zeros"
)
FIELDS = ("seq", "time", "actor", "action", "subject", "details", "prev_hash", "hash")
_SELECT = f"SELECT {', '.join(FIELDS)} FROM entries"
_HEX64 = re.compile(r"[0-9a-f]{64}")

_SCHEMA = (
    """
    CREATE TABLE entries (
        seq       INTEGER PRIMARY KEY,   -- 1, 2, 3, … without gaps
        time      TEXT NOT NULL,         -- UTC, ISO 8601
        actor     TEXT NOT NULL,
        action    TEXT NOT NULL,
        subject   TEXT NOT NULL,
        details   TEXT NOT NULL,         -- a JSON object in canonical form, exactly as hashed
        prev_hash TEXT NOT NULL,
        hash      TEXT NOT NULL
    )
    """,
    # The latest seq and hash, written with every append: deleting the last entries shows.
    "CREATE TABLE anchor (one INTEGER PRIMARY KEY CHECK (one = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL)",
    f"INSERT INTO anchor VALUES (1, 0, '{GENESIS}')",
    # These stop mistakes only; the hash chain is what stops an attacker.
    "CREATE TRIGGER entries_append_only_update BEFORE UPDATE ON entries BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    "CREATE TRIGGER entries_append_only_delete BEFORE DELETE ON entries BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    "CREATE TRIGGER anchor_kept BEFORE DELETE ON anchor BEGIN SELECT RAISE(ABORT, 'the audit anchor cannot be deleted'); END",
)


class AuditError(LienthongError):
    """The audit log cannot be opened, written or exported, or was asked something malformed."""


class Action(enum.StrEnum):
    """The actions lienthong itself records; `append` takes any other name too."""

    ENROLL = "enroll"
    CERT_ISSUE = "cert.issue"
    CERT_RENEW = "cert.renew"
    CERT_REVOKE = "cert.revoke"
    CONNECTION_REFUSED = "connection.refused"
    RECORD_REFUSED = "record.refused"
    ADMIN_COMMAND = "admin.command"


class Problem(enum.StrEnum):
    """What kind of damage `verify` found first."""

    EDITED = "edited"  # an entry no longer matches its hash, or was rewritten with a new one
    GAP = "gap"  # entries are missing before the last one
    REORDERED = "reordered"  # an entry sits at a seq it was not written for
    TRUNCATED = "truncated"  # the last entries are gone (the anchor remembers them)
    ANCHOR = "anchor"  # the anchor does not match the last entry
    HEAD = "head"  # the log does not contain the head written down earlier


@dataclass(frozen=True)
class Entry:
    """One audit entry, as stored and hashed."""

    seq: int
    time: str
    actor: str
    action: str
    subject: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELDS}


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of `verify`: `ok`, how many entries were checked good before the
    first problem (all of them when ok), and for a failure the first bad seq, the
    kind of problem and a one-sentence reason. `head` is the last stored entry's
    (seq, hash), whatever its state."""

    ok: bool
    checked: int
    head: tuple[int, str]
    bad_seq: int | None = None
    problem: Problem | None = None
    reason: str = ""
    expected_head: tuple[int, str] | None = None

    @property
    def hint(self) -> str:
        if self.ok:
            return ""
        return (
            "keep a copy of audit.db as it is, export it with `lienthong audit export` for the inspectors, "
            "and report it to the provincial IOC; the node keeps appending, so the damage stays visible"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "head": {"seq": self.head[0], "hash": self.head[1]},
            "bad_seq": self.bad_seq,
            "problem": None if self.problem is None else str(self.problem),
            "reason": self.reason,
            "expected_head": None if self.expected_head is None else format_head(self.expected_head),
        }


def describe(result: VerifyResult) -> str:
    """One sentence for the operator."""
    if result.ok:
        text = f"The audit log is intact: {result.checked} entries verified, head {format_head(result.head)}"
        if result.expected_head is not None:
            text += f", and it still contains the head written down ({result.expected_head[0]}:{result.expected_head[1][:12]}…)"
        return text + "."
    return f"The audit log FAILED verification at entry {result.bad_seq}: {result.reason}."


def format_head(head: tuple[int, str]) -> str:
    """`seq:hash`, the form an operator writes down and `parse_head` reads back."""
    return f"{head[0]}:{head[1]}"


def parse_head(text: str) -> tuple[int, str]:
    """Read a head written as `seq:hash` (64 hex digits)."""
    seq, sep, digest = text.strip().partition(":")
    if sep and seq.isdecimal():
        return _checked_head((int(seq), digest.lower()))
    raise AuditError(f"not an audit head: {text!r}", "write it as SEQ:HASH, the entry number, a colon and 64 hex digits")


def _checked_head(head: tuple[int, str]) -> tuple[int, str]:
    seq, digest = head
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or not isinstance(digest, str) or not _HEX64.fullmatch(digest.lower()):
        raise AuditError(
            f"not an audit head: {head!r}", "give the entry number (0 or more) and its hash of 64 hex digits, as head() returned them"
        )
    if seq == 0 and digest != GENESIS:
        raise AuditError("an audit head at entry 0 must carry 64 zeros", "give the head as head() returned it")
    return seq, digest.lower()


def operator_name() -> str:
    """The operator's user name from the OS: the actor of an admin command."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no $USER, as in some containers
        return f"uid:{os.getuid()}"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def canonical(value: Any) -> str:
    """Sorted-key compact JSON with non-ASCII text unescaped: the form that is hashed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def entry_hash(seq: int, time: str, actor: str, action: str, subject: str, details: Mapping[str, Any], prev_hash: str) -> str:
    body = {"seq": seq, "time": time, "actor": actor, "action": action, "subject": subject, "details": details, "prev_hash": prev_hash}
    return hashlib.sha256(canonical(body).encode("utf-8")).hexdigest()


class AuditLog:
    """A node's audit log. Open (and create) with `AuditLog.open(node_dir)`.

    `actor` is who appends when `append` is not told otherwise: the node passes its
    own id; by default it is the operator's OS user name (a CLI command).
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, actor: str) -> None:
        self.path = path
        self.actor = actor
        self._w = conn
        self._lock = threading.Lock()

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def open(cls, node_dir: Path, *, actor: str | None = None) -> AuditLog:
        node_dir = Path(node_dir)
        if not node_dir.is_dir():
            raise AuditError(f"no node directory at {node_dir}", "create the node first with `lienthong init`, or give the right --dir")
        path = node_dir / FILE_NAME
        hint = "check the file's permissions; if it is damaged, keep it for inspection and move it aside to start a new log"
        try:
            # Owner-only: the log names operators and peers. SQLite gives -wal and -shm the same mode.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            conn = _connect(path)
        except (sqlite3.Error, OSError) as exc:
            raise AuditError(f"the audit log at {path} cannot be opened: {exc}", hint) from None
        try:
            _migrate(conn, path)
        except sqlite3.Error as exc:
            conn.close()
            raise AuditError(f"the audit log at {path} cannot be opened: {exc}", hint) from None
        except AuditError:
            conn.close()
            raise
        return cls(path, conn, actor or operator_name())

    def close(self) -> None:
        with self._lock:
            self._w.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ writing

    def append(self, action: str, subject: str, details: Mapping[str, Any] | None = None, actor: str | None = None) -> Entry:
        """Append one entry in one transaction and return it. Thread-safe; safe
        against other processes appending to the same file. `details` must be a
        JSON-able mapping (a TypeError or ValueError otherwise: that is a bug)."""
        if not isinstance(action, str) or not action:
            raise ValueError(f"an audit action must be a non-empty string (got {action!r})")
        if not isinstance(subject, str):
            raise TypeError(f"an audit subject must be a string (got {subject!r})")
        action, subject = str(action), str(subject)  # plain strings, not `Action` members
        details_text = canonical(dict(details or {}))
        details_obj = json.loads(details_text)  # exactly what verify will see (tuples become lists …)
        actor = actor or self.actor
        try:
            with self._lock, transaction(self._w):
                seq, prev_hash = self._chain_from(self._w)
                seq += 1
                time = now()
                digest = entry_hash(seq, time, actor, action, subject, details_obj, prev_hash)
                self._w.execute(
                    "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (seq, time, actor, action, subject, details_text, prev_hash, digest),
                )
                self._w.execute(
                    "INSERT INTO anchor VALUES (1, ?, ?) ON CONFLICT(one) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                    (seq, digest),
                )
        except sqlite3.Error as exc:
            raise AuditError(
                f"the audit log at {self.path} cannot be written: {exc}", "check free disk space and the permissions of the node directory"
            ) from None
        return Entry(seq, time, actor, action, subject, details_obj, prev_hash, digest)

    def _chain_from(self, conn: sqlite3.Connection) -> tuple[int, str]:
        """The (seq, hash) the next entry follows: the anchor's, so a deleted tail stays
        visible as a gap; the last row's if the anchor is gone or behind it (a seq must
        never be reused)."""
        anchor = conn.execute("SELECT seq, hash FROM anchor WHERE one = 1").fetchone()
        last = conn.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone() or (0, GENESIS)
        if anchor != last:
            log.warning("audit.anchor_mismatch", file=str(self.path), anchor=anchor, last=last[0])
        if anchor is None or not isinstance(anchor[0], int) or anchor[0] < last[0]:
            return last[0], str(last[1])
        return anchor[0], str(anchor[1])

    # ------------------------------------------------------------ reading

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the latest entry as the anchor records it; (0, 64 zeros) when
        empty. Write it down or escrow it, then pass it to `verify(expected_head=...)`.
        It does not verify: call `verify` first when it matters (its `head` is the same
        pair on an intact log)."""
        with self._lock:
            row = self._w.execute("SELECT seq, hash FROM anchor WHERE one = 1").fetchone()
        return (row[0], row[1]) if row else (0, GENESIS)

    def entries(self, since_seq: int = 0, limit: int | None = None) -> list[Entry]:
        """Entries with seq > `since_seq`, in order, at most `limit` of them. Does not
        verify; raises AuditError for an entry too damaged to read."""
        sql = f"{_SELECT} WHERE seq > ? ORDER BY seq LIMIT ?"
        with self._lock:
            rows = self._w.execute(sql, (since_seq, -1 if limit is None else limit)).fetchall()
        out = []
        for row in rows:
            try:
                if not all(isinstance(value, str) for value in row[1:]):
                    raise ValueError("a field holds binary data or a number where text belongs")
                details = json.loads(row[5])
                if not isinstance(details, dict):
                    raise ValueError("its details are not a JSON object")
            except (TypeError, ValueError) as exc:
                raise AuditError(
                    f"audit entry {row[0]} cannot be read: {exc}", "run `lienthong audit verify`: the log was damaged"
                ) from None
            out.append(Entry(row[0], row[1], row[2], row[3], row[4], details, row[6], row[7]))
        return out

    def verify(self, expected_head: tuple[int, str] | None = None) -> VerifyResult:
        """Check the whole chain and the anchor, and, if given, that the entry at the
        written-down head's seq still carries its hash. Returns the first problem found."""
        if expected_head is not None:
            expected_head = _checked_head(expected_head)
        with self._snapshot() as conn:
            return _verify(conn, expected_head)

    def export(self, dest: Path, fmt: str = "jsonl", *, expected_head: tuple[int, str] | None = None) -> VerifyResult:
        """Write every entry, hashes included, for inspectors, and then a summary: the
        head, the anchor, the verification result and the hash rule. Entries and result
        come from one snapshot; a damaged log is exported as it is, with the summary
        saying so. The file appears complete or not at all.

        jsonl: one entry object per line, then `{"summary": {...}}`.
        csv (UTF-8 with BOM, for spreadsheets): a header, one row per entry with
        `details` as the canonical JSON that was hashed, then a row whose seq is
        `summary`. A cell starting with = + - @ ' or a tab or carriage return gets a
        leading `'` so that no spreadsheet runs it as a formula (OWASP); remove one
        leading `'` before recomputing a hash.
        """
        if fmt not in EXPORT_FORMATS:
            raise AuditError(f"unknown audit export format {fmt!r}", f"use one of: {', '.join(EXPORT_FORMATS)}")
        if expected_head is not None:
            expected_head = _checked_head(expected_head)
        dest = Path(dest)
        tmp = dest.with_name(dest.name + ".partial")
        try:
            with self._snapshot() as conn:
                result = _verify(conn, expected_head)
                anchor = conn.execute("SELECT seq, hash FROM anchor WHERE one = 1").fetchone()
                summary = {
                    "exported_at": now(),
                    "file": str(self.path),
                    "entries": conn.execute("SELECT count(*) FROM entries").fetchone()[0],
                    "head": {"seq": result.head[0], "hash": result.head[1]},
                    "anchor": None if anchor is None else {"seq": anchor[0], "hash": _text(anchor[1])},
                    "verified": result.ok,
                    "verification": result.to_dict(),
                    "description": describe(result),
                    "hash_rule": HASH_RULE,
                }
                rows = conn.execute(f"{_SELECT} ORDER BY seq")
                with open(tmp, "w", encoding="utf-8-sig" if fmt == "csv" else "utf-8", errors="backslashreplace", newline="") as out:
                    if fmt == "jsonl":
                        _write_jsonl(out, rows, summary)
                    else:
                        _write_csv(out, rows, summary)
                    out.flush()
                    os.fsync(out.fileno())
            os.replace(tmp, dest)
        except OSError as exc:
            raise AuditError(
                f"cannot write the audit export to {dest}: {exc.strerror or exc}", "choose a folder you can write to"
            ) from None
        finally:
            tmp.unlink(missing_ok=True)  # only left if the export failed
        return result

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction on a connection of its own: one consistent view that
        appends (in this or another process) do not wait for."""
        try:
            conn = _connect(self.path)
            conn.execute("PRAGMA query_only=1")
        except sqlite3.Error as exc:
            raise AuditError(f"the audit log at {self.path} cannot be read: {exc}", "check the file's permissions") from None
        try:
            conn.execute("BEGIN")
            yield conn
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise AuditError(f"the audit log at {self.path} cannot be read: {exc}", "check the file's permissions") from None
        finally:
            conn.close()


# ------------------------------------------------------------ storage


def _connect(path: Path) -> sqlite3.Connection:
    # mode=rw: never create a file here (`open` creates it with its permissions), so a
    # log deleted under a running node is not silently replaced by an empty one.
    uri = f"{path.resolve().as_uri()}?mode=rw"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30)
    # A damaged file may hold text that is not UTF-8; read it anyway (verify reports it).
    conn.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: an audited action is on disk before it goes ahead, even across a power cut.
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    def version() -> int:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])

    if version() == SCHEMA_VERSION:
        return
    with transaction(conn):
        current = version()  # read again: another process may have just created it
        if current > SCHEMA_VERSION:
            raise AuditError(
                f"the audit log at {path} has schema version {current}, newer than this lienthong understands ({SCHEMA_VERSION})",
                "upgrade lienthong on this machine",
            )
        if current == 0:
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


# ------------------------------------------------------------ verification


def _verify(conn: sqlite3.Connection, expected_head: tuple[int, str] | None) -> VerifyResult:
    last = conn.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
    head = (last[0], _text(last[1])) if last else (0, GENESIS)
    anchor = conn.execute("SELECT seq, hash FROM anchor WHERE one = 1").fetchone()
    checked = 0

    def failed(bad_seq: int | None, problem: Problem, reason: str) -> VerifyResult:
        return VerifyResult(False, checked, head, bad_seq, problem, reason, expected_head)

    expected_seq, prev_hash = 1, GENESIS
    head_hash_found = GENESIS if expected_head is not None and expected_head[0] == 0 else None
    for row in conn.execute(f"{_SELECT} ORDER BY seq"):
        seq = row[0]
        if seq < expected_seq:  # only a seq of 0 or below can sort first
            return failed(seq, Problem.EDITED, f"an entry is numbered {seq}, but numbering starts at 1, so its number was edited")
        if seq > expected_seq:
            missing = f"entry {expected_seq} is" if seq == expected_seq + 1 else f"entries {expected_seq}–{seq - 1} are"
            return failed(expected_seq, Problem.GAP, f"{missing} missing from the log, so entries were deleted")
        damage = _damage(row)
        if damage:
            original = _original_seq(conn, row, _highest_written(head[0], anchor))
            if original is not None:
                return failed(seq, Problem.REORDERED, f"entry {seq} holds the entry written as number {original}, so entries were moved")
            return failed(seq, Problem.EDITED, f"entry {seq} was changed after it was written ({damage})")
        if row[6] != prev_hash:
            if seq == 1:
                return failed(1, Problem.EDITED, "entry 1 does not start the chain (its prev_hash is not 64 zeros), so it was rewritten")
            return failed(
                seq - 1,
                Problem.EDITED,
                f"entry {seq} is chained to a different hash than entry {seq - 1} has, so entry {seq - 1} was rewritten with a new hash"
                f" (or entry {seq}'s link was)",
            )
        if expected_head is not None and seq == expected_head[0]:
            head_hash_found = row[7]
        prev_hash = row[7]
        expected_seq += 1
        checked += 1

    last_seq = expected_seq - 1
    if anchor is None:
        return failed(None, Problem.ANCHOR, "the anchor row, which records the latest entry, has been deleted")
    anchor_seq, anchor_hash = anchor
    if not isinstance(anchor_seq, int) or not isinstance(anchor_hash, str):
        return failed(None, Problem.ANCHOR, "the anchor row, which records the latest entry, was edited")
    if anchor_seq > last_seq:
        lost = f"entry {anchor_seq} was" if anchor_seq == last_seq + 1 else f"entries {last_seq + 1}–{anchor_seq} were"
        return failed(
            last_seq + 1,
            Problem.TRUNCATED,
            f"the log ends at entry {last_seq} but the anchor records entry {anchor_seq}, so {lost} deleted",
        )
    if anchor_seq < last_seq:
        return failed(
            anchor_seq + 1,
            Problem.ANCHOR,
            f"the anchor records entry {anchor_seq} but the log goes on to entry {last_seq}, so entries were added outside lienthong",
        )
    if anchor_hash != prev_hash:
        return failed(
            last_seq, Problem.ANCHOR, f"the anchor records another hash for entry {last_seq}, so the entry or the anchor was rewritten"
        )
    if expected_head is not None:
        if expected_head[0] > last_seq:
            return failed(
                last_seq + 1,
                Problem.HEAD,
                f"the log ends at entry {last_seq} but the head written down is entry {expected_head[0]}, "
                "so entries were deleted and the anchor rewritten",
            )
        if head_hash_found != expected_head[1]:
            return failed(
                expected_head[0],
                Problem.HEAD,
                f"entry {expected_head[0]} no longer has the hash written down for it, so the log was rewritten consistently up to there",
            )
    return VerifyResult(True, checked, head, expected_head=expected_head)


def _highest_written(last_seq: int, anchor: tuple[Any, ...] | None) -> int:
    """The highest seq ever written, as far as can be told: a moved entry came from at
    most here. A tampered anchor cannot make it search more than twice the log."""
    anchor_seq = anchor[0] if anchor and isinstance(anchor[0], int) else 0
    return min(max(last_seq, anchor_seq), 2 * last_seq) + 1


def _damage(row: tuple[Any, ...]) -> str:
    """Why a stored row does not match its own hash, or '' if it does."""
    seq, time, actor, action, subject, details_text, prev_hash, digest = row
    if not all(isinstance(value, str) for value in row[1:]):
        return "a field holds binary data or a number where text belongs"
    try:
        details = json.loads(details_text)
        if not isinstance(details, dict) or canonical(details) != details_text:
            return "its details are not in the form they were written in"
        if entry_hash(seq, time, actor, action, subject, details, prev_hash) != digest:
            return "its hash no longer matches its contents"
    except (ValueError, RecursionError):  # not JSON; text that is not UTF-8 (UnicodeError is a ValueError)
        return "a field is no longer valid text or JSON"
    return ""


def _original_seq(conn: sqlite3.Connection, row: tuple[Any, ...], upper: int) -> int | None:
    """The seq a damaged row's contents and hash were written for, if another one fits:
    then it was moved rather than edited. Tries every seq up to `upper` (cheap: one
    hash each, on the failure path only)."""
    seq, time, actor, action, subject, details_text, prev_hash, digest = row
    if not all(isinstance(value, str) for value in row[1:]):
        return None
    try:
        details = json.loads(details_text)
        if not isinstance(details, dict) or canonical(details) != details_text:
            return None
        # The canonical form with `seq` cut out: sorted keys put it between prev_hash and subject.
        before = canonical({"action": action, "actor": actor, "details": details, "prev_hash": prev_hash})[:-1] + ',"seq":'
        after = "," + canonical({"subject": subject, "time": time})[1:]
        before_bytes, after_bytes = before.encode("utf-8"), after.encode("utf-8")
    except (ValueError, RecursionError):
        return None
    for candidate in range(1, upper + 1):
        if candidate != seq and hashlib.sha256(before_bytes + str(candidate).encode() + after_bytes).hexdigest() == digest:
            return candidate
    return None


# ------------------------------------------------------------ export


def _text(value: Any) -> Any:
    """A stored value made fit for an export (damaged binary values shown, not dropped)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return value


def _export_row(row: tuple[Any, ...]) -> dict[str, Any]:
    entry = {name: _text(value) for name, value in zip(FIELDS, row, strict=True)}
    # A damaged details field is exported as the text it now holds.
    with contextlib.suppress(TypeError, ValueError, RecursionError):
        entry["details"] = json.loads(entry["details"])
    return entry


def _write_jsonl(out: Any, rows: Iterator[tuple[Any, ...]], summary: dict[str, Any]) -> None:
    for row in rows:
        out.write(json.dumps(_export_row(row), ensure_ascii=False) + "\n")
    out.write(json.dumps({"summary": summary}, ensure_ascii=False) + "\n")


_FORMULA_START = ("=", "+", "-", "@", "'", "\t", "\r")


def _cell(value: Any) -> Any:
    value = _text(value)
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _write_csv(out: Any, rows: Iterator[tuple[Any, ...]], summary: dict[str, Any]) -> None:
    writer = csv.writer(out)
    writer.writerow(FIELDS)
    for row in rows:
        writer.writerow([_cell(value) for value in row])
    writer.writerow(
        [
            "summary",
            summary["exported_at"],
            "",
            "audit.verify",
            _cell(summary["description"]),
            _cell(json.dumps(summary, ensure_ascii=False, sort_keys=True)),
            "",
            summary["head"]["hash"],
        ]
    )
