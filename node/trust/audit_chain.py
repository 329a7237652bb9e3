"""The audit log's hash chain: what an entry is, how it is hashed, how a written-down
head is told, and how a chain of entries is verified (DESIGN §5). The log file that
holds the chain, and appends to it, is `audit.py`.

Each entry holds

    seq        1, 2, 3, … with no gaps
    time       when it was written, UTC, ISO 8601
    actor      this node's id, the operator's OS user name, or a peer's node id
    action     `enroll`, `cert.issue`, `cert.renew`, `cert.revoke`, `connection.refused`,
               `record.refused`, `admin.command`, … (see `audit.Action`; any dotted name will do)
    subject    what the action was about: a node id, a certificate serial, a file
    details    a JSON object
    prev_hash  the previous entry's hash; 64 zeros (32 zero bytes) for entry 1
    hash       SHA-256, in hex, of the canonical form of the seven fields above

The canonical form is the JSON object of the seven fields with sorted keys, no
whitespace (separators `,` and `:`), non-ASCII text as itself, encoded as UTF-8:

    {"action":…,"actor":…,"details":{…},"prev_hash":…,"seq":…,"subject":…,"time":…}

`details` is stored in exactly that canonical form, so an inspector can recompute
every hash from an export with a few lines in any language (the export says how).

What `verify_chain` detects: an edited entry (its hash no longer matches it); a
deleted entry (a gap in seq); entries moved to other positions (an entry's hash
matches only another seq); an entry rewritten with a fresh hash (the next entry no
longer chains to it); and deleted last entries, through the `anchor` row, which
holds the latest seq and hash and is updated in the same transaction as every append.

What it cannot detect alone: the anchor lives in the same file, so whoever can
write the file can rewrite everything after some entry, recompute the hashes and
the anchor, and leave a consistent log. Against that the operator writes down (or
escrows with the province) the head, `AuditLog.head()` → (seq, hash), shown by
`format_head` as `seq:hash`, and later runs `AuditLog.verify(expected_head=...)`:
the entry at that seq must still carry that hash. The log may grow past a
written-down head; nothing at or below it may change.

Errors: `AuditError` (a `LienthongError`) for expected failures of the log: the
file cannot be opened or written, a written-down head is malformed, an unknown
export format. A tampered log is not an error: verification returns a
`VerifyResult`, and `describe` turns it into one sentence for the operator.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lienthong.sync.errors import LienthongError

GENESIS = "0" * 64  # prev_hash of entry 1: 32 zero bytes in hex
HASH_RULE = (
    "hash = SHA-256 (hex) of the UTF-8 JSON object {action, actor, details, prev_hash, seq, subject, time}"
    " with sorted keys, separators ',' and ':', and non-ASCII characters unescaped; entry 1's prev_hash is 64 zeros"
)
FIELDS = ("seq", "time", "actor", "action", "subject", "details", "prev_hash", "hash")
SELECT_ENTRIES = f"SELECT {', '.join(FIELDS)} FROM entries"
_HEX64 = re.compile(r"[0-9a-f]{64}")


class AuditError(LienthongError):
    """The audit log cannot be opened, written or exported, or was asked something malformed."""


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
        return checked_head((int(seq), digest.lower()))
    raise AuditError(f"not an audit head: {text!r}", "write it as SEQ:HASH, the entry number, a colon and 64 hex digits")


def checked_head(head: tuple[int, str]) -> tuple[int, str]:
    seq, digest = head
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or not isinstance(digest, str) or not _HEX64.fullmatch(digest.lower()):
        raise AuditError(
            f"not an audit head: {head!r}", "give the entry number (0 or more) and its hash of 64 hex digits, as head() returned them"
        )
    if seq == 0 and digest != GENESIS:
        raise AuditError("an audit head at entry 0 must carry 64 zeros", "give the head as head() returned it")
    return seq, digest.lower()


def stored_text(value: Any) -> Any:
    """A stored value made fit for a report or an export (damaged binary values shown, not dropped)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return value


def canonical(value: Any) -> str:
    """Sorted-key compact JSON with non-ASCII text unescaped: the form that is hashed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def entry_hash(seq: int, time: str, actor: str, action: str, subject: str, details: Mapping[str, Any], prev_hash: str) -> str:
    body = {"seq": seq, "time": time, "actor": actor, "action": action, "subject": subject, "details": details, "prev_hash": prev_hash}
    return hashlib.sha256(canonical(body).encode("utf-8")).hexdigest()


def verify_chain(conn: sqlite3.Connection, expected_head: tuple[int, str] | None) -> VerifyResult:
    """Check the whole chain in `conn` (one read transaction) and the anchor, and, if given, that the
    entry at the written-down head's seq still carries its hash. Returns the first problem found."""
    last = conn.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
    head = (last[0], stored_text(last[1])) if last else (0, GENESIS)
    anchor = conn.execute("SELECT seq, hash FROM anchor WHERE one = 1").fetchone()
    checked = 0

    def failed(bad_seq: int | None, problem: Problem, reason: str) -> VerifyResult:
        return VerifyResult(False, checked, head, bad_seq, problem, reason, expected_head)

    expected_seq, prev_hash = 1, GENESIS
    head_hash_found = GENESIS if expected_head is not None and expected_head[0] == 0 else None
    for row in conn.execute(f"{SELECT_ENTRIES} ORDER BY seq"):
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
