"""The node's audit log: a tamper-evident, append-only, hash-chained record of
security events and admin actions (DESIGN §5).

It is its own SQLite file, `audit.db` in the node directory (WAL,
synchronous=FULL), apart from the data store, so the data path never waits on it.
What an entry holds, how it is hashed and what verification detects is
`audit_chain.py`. Beside the entries, the `anchor` row holds the latest seq and
hash, updated in the same transaction as every append. The append-only triggers
stop mistakes, not an attacker, who can drop them.

Appends chain from the anchor, not from the last row: if the tail was deleted, the
next entry still points at the deleted one, so the loss stays visible after it.

Threading and processes: one writer connection behind a lock; every append is one
`BEGIN IMMEDIATE` transaction that reads the head inside it, so the running node
and a CLI command appending to the same file at once still make one chain.
`verify` and `export` read one consistent snapshot on a connection of their own
and do not hold up appends.

The schema is numbered migrations (`MIGRATIONS`, run by `lienthong.sync.sqlite.migrate`);
a log written by a newer lienthong is refused.

Errors: `AuditError` (`audit_chain.py`) for expected failures. An append that
cannot be written raises `AuditError`; a caller guarding a security action
(enrollment, issuing a certificate) should then refuse the action rather than go
on unaudited.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import enum
import getpass
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from lienthong.sync import sqlite
from lienthong.sync.errors import SchemaTooNew
from lienthong.sync.sqlite import transaction

from .audit_chain import (
    FIELDS,
    GENESIS,
    HASH_RULE,
    SELECT_ENTRIES,
    AuditError,
    Entry,
    VerifyResult,
    canonical,
    checked_head,
    describe,
    entry_hash,
    stored_text,
    verify_chain,
)

log = structlog.get_logger("lienthong.audit")

FILE_NAME = "audit.db"
EXPORT_FORMATS = ("jsonl", "csv")

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


def _audit_v1(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA:
        conn.execute(statement)


# The log's schema, version by version (`PRAGMA user_version`); append, never edit.
MIGRATIONS: dict[int, sqlite.Migration] = {1: _audit_v1}


class Action(enum.StrEnum):
    """The actions lienthong itself records; `append` takes any other name too."""

    ENROLL = "enroll"
    CERT_ISSUE = "cert.issue"
    CERT_RENEW = "cert.renew"
    CERT_REVOKE = "cert.revoke"
    CONNECTION_REFUSED = "connection.refused"
    RECORD_REFUSED = "record.refused"
    ADMIN_COMMAND = "admin.command"


def operator_name() -> str:
    """The operator's user name from the OS: the actor of an admin command."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no $USER, as in some containers
        return f"uid:{os.getuid()}"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


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
        # A running node keeps what it could not write (a full disk) and writes it, in order
        # and with its own times, once space returns; a CLI command fails instead.
        self._hold_limit = 0
        self._held: collections.deque[tuple[str, str, str, str, str]] = collections.deque()  # (time, actor, action, subject, details)
        self._dropped = 0

    def hold_when_full(self, limit: int) -> None:
        """Keep up to `limit` entries in memory while the log cannot be written (past it,
        count the rest); `flush` or the next `append` writes them once it can."""
        self._hold_limit = limit

    @property
    def held(self) -> int:
        """Entries waiting in memory for the disk, and those dropped past the bound."""
        return len(self._held) + self._dropped

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
            sqlite.migrate(conn, MIGRATIONS, f"the audit log at {path}")
        except sqlite3.Error as exc:
            conn.close()
            raise AuditError(f"the audit log at {path} cannot be opened: {exc}", hint) from None
        except SchemaTooNew as exc:  # an AuditError like every other trouble opening the log
            conn.close()
            raise AuditError(exc.message, exc.hint) from exc
        return cls(path, conn, actor or operator_name())

    def close(self) -> None:
        if self.flush():
            log.error("audit.lost_at_stop", file=str(self.path), entries=self.held, hint="the disk was still full when the node stopped")
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
        time = now()
        with self._lock:
            try:
                self._write_held()
                seq, prev_hash, digest = self._write(time, actor, action, subject, details_text)
            except sqlite3.Error as exc:
                if not self._hold_limit:
                    raise AuditError(
                        f"the audit log at {self.path} cannot be written: {exc}",
                        "check free disk space and the permissions of the node directory",
                    ) from None
                self._hold((time, actor, action, subject, details_text), exc)
                return Entry(0, time, actor, action, subject, details_obj, "", "")  # seq 0: held, not yet in the chain
        return Entry(seq, time, actor, action, subject, details_obj, prev_hash, digest)

    def flush(self) -> int:
        """Write the entries held while the disk was full; returns how many are still held."""
        with self._lock:
            if self._held or self._dropped:
                with contextlib.suppress(sqlite3.Error):
                    self._write_held()
            return len(self._held) + self._dropped

    def _write(self, time: str, actor: str, action: str, subject: str, details_text: str) -> tuple[int, str, str]:
        with transaction(self._w):
            seq, prev_hash = self._chain_from(self._w)
            seq += 1
            digest = entry_hash(seq, time, actor, action, subject, json.loads(details_text), prev_hash)
            self._w.execute(
                "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, time, actor, action, subject, details_text, prev_hash, digest),
            )
            self._w.execute(
                "INSERT INTO anchor VALUES (1, ?, ?) ON CONFLICT(one) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                (seq, digest),
            )
        return seq, prev_hash, digest

    def _hold(self, entry: tuple[str, str, str, str, str], exc: sqlite3.Error) -> None:
        if not self._held and not self._dropped:
            log.error(
                "audit.held",
                file=str(self.path),
                error=str(exc),
                hint="free disk space: the entries kept in memory are written once it can (up to "
                f"{self._hold_limit}; beyond that they are counted)",
            )
        if len(self._held) < self._hold_limit:
            self._held.append(entry)
        else:
            self._dropped += 1

    def _write_held(self) -> None:
        """Write what was held, oldest first (the caller holds the lock); raises while it cannot."""
        if not self._held and not self._dropped:
            return
        written = len(self._held)
        while self._held:
            self._write(*self._held[0])
            self._held.popleft()
        log.info("audit.written_after_full", file=str(self.path), entries=written, dropped=self._dropped)
        if self._dropped:
            details = canonical({"count": self._dropped, "reason": "the audit log could not be written (disk full)"})
            self._write(now(), self.actor, "audit.dropped", self.path.name, details)
            self._dropped = 0

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
        sql = f"{SELECT_ENTRIES} WHERE seq > ? ORDER BY seq LIMIT ?"
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
            expected_head = checked_head(expected_head)
        with self._snapshot() as conn:
            return verify_chain(conn, expected_head)

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
            expected_head = checked_head(expected_head)
        dest = Path(dest)
        tmp = dest.with_name(dest.name + ".partial")
        try:
            with self._snapshot() as conn:
                result = verify_chain(conn, expected_head)
                anchor = conn.execute("SELECT seq, hash FROM anchor WHERE one = 1").fetchone()
                summary = {
                    "exported_at": now(),
                    "file": str(self.path),
                    "entries": conn.execute("SELECT count(*) FROM entries").fetchone()[0],
                    "head": {"seq": result.head[0], "hash": result.head[1]},
                    "anchor": None if anchor is None else {"seq": anchor[0], "hash": stored_text(anchor[1])},
                    "verified": result.ok,
                    "verification": result.to_dict(),
                    "description": describe(result),
                    "hash_rule": HASH_RULE,
                }
                rows = conn.execute(f"{SELECT_ENTRIES} ORDER BY seq")
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


# ------------------------------------------------------------ export


def _export_row(row: tuple[Any, ...]) -> dict[str, Any]:
    entry = {name: stored_text(value) for name, value in zip(FIELDS, row, strict=True)}
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
    value = stored_text(value)
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
