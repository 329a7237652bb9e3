"""Taking one file in: detect its adapter, parse, validate, commit, receipt, move.

`take(path, inbox, ...)` is the whole life of one dropped file:

1. open it once, without following links (held.py): a symlink, anything but a
   regular file, a file over the size limit is refused; from here on the file is
   read only through that descriptor;
2. hash the content; a content already committed is not taken again: if the
   node stopped between committing it and moving it, the original receipt is
   finished now, otherwise the file is reported unchanged;
3. parse it (through the same descriptor) with the inbox's pinned adapter or the
   one that claims it, check every record against the definitions the node holds
   and its own subtree, and commit the records and the file's ledger entry in ONE
   transaction, unless the file changed or was replaced while it was read: then
   the transaction rolls back and `FileChanged` tells the watcher to read it again
   later;
4. only then move the file to `archive/YYYY-MM-DD/` (or `rejected/`) and write
   its receipt beside it, checking again that the name is still the file that was
   read (if it was replaced, the bytes that were read are archived from the held
   descriptor and the new file stays for its own turn).

A name with bytes that are not UTF-8 is taken like any other; receipts, logs and
the ledger show it with `\\xNN` escapes (`held.display_name`).

Receipts are shaped like a DHIS2 import summary, with every refused row's line,
field, code and a sentence in Vietnamese (for agency staff) and in English.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import structlog

from lienthong.sync import records
from lienthong.sync.approval import ApprovalLocked
from lienthong.sync.errors import StoreError
from lienthong.sync.records import Keyed

from .base import Adapter, Definitions, FileRefused, ParseContext, RowError, Sink
from .held import FileChanged, HeldFile, LinkRefused, NotRegularFile, display_name
from .inbox_names import ARCHIVE, RECEIPT_SUFFIX, REJECTED, agency_folders
from .messages import message
from .parse_child import ChildFailed, child_rows, wanted
from .registry import Registry

CHUNK = 5_000
FAILPOINT = "LIENTHONG_FAILPOINT"  # test-only fault injection (see tests/test_inbox.py)
MAX_CONFLICTS = 1_000  # a receipt lists at most this many refused rows (the counts stay exact)

log = structlog.get_logger("lienthong.intake")


@dataclass(frozen=True)
class Inbox:
    """One agency's drop folder and how it is read."""

    agency: str
    path: Path
    adapter: str = ""  # pinned adapter name; empty: detect by content
    atomic: bool = False  # all rows or none
    poll_seconds: float = 0.0  # >0: poll the folder (SMB/NFS shares), no inotify
    sheet: str = ""  # workbooks: the sheet to read ('' for the first visible worksheet)
    root: bool = False  # the inbox root itself: a file here belongs to no agency and is refused


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 512 * 1024 * 1024
    # A file this large (and read by an adapter in parse_child.CHILD_ADAPTERS; a workbook from a quarter
    # of it) is parsed in a child process on the second core while this one checks and commits (parse_child.py).
    parse_child_bytes: int = 2 * 1024 * 1024


# ---------------------------------------------------------------- validation


class Validator:
    """Checks records against the definitions the node holds and its own subtree."""

    def __init__(self, definitions: Definitions) -> None:
        self.d = definitions
        self.subtree = definitions.subtree() if definitions.units else frozenset()
        self.flag_unchecked = not definitions.units and not definitions.indicators

    def check(self, line: int, item: Keyed) -> RowError | None:
        d = self.d
        if item.kind == records.DEFINITION and not d.may_define:
            return _error(line, "kind", "definition_not_provincial", item.unit)
        if d.units:
            if item.unit not in d.units:
                return _error(line, "unit", "unknown_unit", item.unit)
            if item.unit not in self.subtree:
                return _error(line, "unit", "outside_subtree", item.unit)
        if item.kind == records.INDICATOR and d.indicators:
            code = records.BODY_TYPES[item.kind].FromString(item.body).indicator
            if code not in d.indicators:
                return _error(line, "indicator", "unknown_indicator", code)
            if d.check_value is not None:
                period = records.BODY_TYPES[item.kind].FromString(item.body).period
                refusal = d.check_value(code, period)
                if refusal is not None:
                    field = "indicator" if refusal[0] == "derived_indicator" else "period"
                    return RowError(line, field, refusal[0], refusal[1], refusal[2])
        if item.kind == records.REPORT and d.report_types:
            code = records.BODY_TYPES[item.kind].FromString(item.body).report_type
            if code not in d.report_types:
                return _error(line, "report_type", "unknown_report_type", code)
        return None


def _error(line: int, field: str, code: str, value: object) -> RowError:
    vi, en = message(code, value)
    return RowError(line, field, code, vi, en)


# ---------------------------------------------------------------- receipts


def _now() -> str:
    return dt.datetime.now(dt.UTC).astimezone().isoformat(timespec="seconds")


def receipt(
    *,
    status: str,
    path: Path,
    sha256: str,
    inbox: Inbox,
    adapter: str,
    node: str,
    counts: tuple[int, int, int],
    refused: int,
    conflicts: list[RowError],
    description: tuple[str, str] = ("", ""),
    received_at: str = "",
) -> dict[str, Any]:
    imported, updated, unchanged = counts
    return {
        "responseType": "ImportSummary",
        "status": status,  # SUCCESS | WARNING | ERROR
        "description": description[0],
        "description_en": description[1],
        "file": display_name(path.name),
        "sha256": sha256,
        "agency": inbox.agency,
        "adapter": adapter,
        "node": node,
        "received_at": received_at or _now(),
        "processed_at": _now(),
        "importCount": {"imported": imported, "updated": updated, "unchanged": unchanged, "refused": refused},
        "conflicts": [_conflict(c) for c in conflicts[:MAX_CONFLICTS]],
        "conflicts_truncated": max(0, refused - min(len(conflicts), MAX_CONFLICTS)),
    }


def _conflict(c: RowError) -> dict[str, Any]:
    if not c.cell:
        return {"line": c.line, "field": c.field, "code": c.code, "message": c.message_vi, "message_en": c.message_en}
    # A workbook's refusal names its cell, in the entry and at the start of both sentences.
    return {
        "line": c.line,
        "cell": c.cell,
        "field": c.field,
        "code": c.code,
        "message": f"Ô {c.cell}: {c.message_vi}",
        "message_en": f"Cell {c.cell}: {c.message_en}",
    }


# ---------------------------------------------------------------- one file


class _Rollback(Exception):
    pass


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _changed(path: Path) -> FileChanged:
    return FileChanged(f"{display_name(path.name)} changed, was replaced or vanished while it was read; it is read again later")


def take(
    path: Path,
    inbox: Inbox,
    registry: Registry,
    sink: Sink,
    node: str,
    limits: Limits = Limits(),
    move: bool = True,
) -> dict[str, Any]:
    """Take one file in; returns its receipt (also written beside the moved file).

    Raises `FileChanged` when the file changed, was replaced or vanished while it was read:
    nothing of that read was committed; the caller reads the file again later."""
    received_at = _now()
    bound = log.bind(agency=inbox.agency, file=display_name(path.name))
    started = time.monotonic()

    def refuse(code: str, value: object, sha: str = "", adapter: str = "", text: tuple[str, str] | None = None) -> dict[str, Any]:
        r = receipt(
            status="ERROR",
            path=path,
            sha256=sha,
            inbox=inbox,
            adapter=adapter,
            node=node,
            counts=(0, 0, 0),
            refused=0,
            conflicts=[],
            description=text or message(code, value),
            received_at=received_at,
        )
        r["error_code"] = code
        return r

    with contextlib.ExitStack() as stack:  # closes the held file whichever way this ends
        held: HeldFile | None = None
        try:
            held = stack.enter_context(HeldFile.open(path))
        except LinkRefused:
            result = refuse("symlink", "")
        except NotRegularFile:
            result = refuse("not_regular", "")
        except FileNotFoundError:
            raise _changed(path) from None
        if held is None:
            pass
        elif inbox.root:  # dropped in inbox/ itself: no agency to take it for
            result = refuse("no_agency", "", held.sha256(), text=_where_to_put(inbox.path))
        elif held.size > limits.max_file_bytes:
            result = refuse("too_large", limits.max_file_bytes // (1024 * 1024))
        else:
            sha = held.sha256()
            if held.modified():
                raise _changed(path)
            before = sink.ingested(sha)
            if before is not None:
                original = json.loads(str(before["receipt"]))
                if move and before["name"] == display_name(path.name) and not _archived(path, inbox, original):
                    bound.info("file.finished", sha256=sha)  # committed before a stop, not yet moved
                    return _finish(path, inbox, original, move, held)
                taken_at = str(original.get("processed_at", ""))
                result = receipt(
                    status="SUCCESS",
                    path=path,
                    sha256=sha,
                    inbox=inbox,
                    adapter=str(before["adapter"]),
                    node=node,
                    counts=(0, 0, sum(int(str(before[n])) for n in ("imported", "updated", "unchanged"))),
                    refused=0,
                    conflicts=[],
                    description=message("unchanged", taken_at),
                    received_at=received_at,
                )
            else:
                result = _parse_and_commit(held, sha, inbox, registry, sink, node, received_at, refuse, limits)
                if os.environ.get(FAILPOINT) == "after_commit":
                    # Fault injection for the crash tests: die between commit and move.
                    os.kill(os.getpid(), signal.SIGKILL)
        if held is not None and result["status"] == "ERROR" and held.changed():
            raise _changed(path)  # refused for what it was: it is not that file any more
        if result["status"] == "ERROR":
            sink.record_refusal(_ledger(result, path, inbox, int(result["importCount"]["refused"])))
        seconds = time.monotonic() - started
        bound.info(
            "file.taken",
            status=result["status"],
            adapter=result["adapter"],
            seconds=round(seconds, 3),
            **{k: v for k, v in result["importCount"].items()},
        )
        return _finish(path, inbox, result, move, held)


def _parse_and_commit(
    held: HeldFile, sha: str, inbox: Inbox, registry: Registry, sink: Sink, node: str, received_at: str, refuse: Any, limits: Limits
) -> dict[str, Any]:
    path = held.path  # reads the held descriptor (see held.py); name and folder are the dropped file's
    if inbox.adapter:
        adapter: Adapter | None = registry.get(inbox.adapter)
    else:
        adapter = registry.detect(path)
    if adapter is None:
        return refuse("unsupported_format", ", ".join(registry.names()), sha)
    definitions = sink.definitions()
    validator = Validator(definitions)
    context = ParseContext(origin=node, agency=inbox.agency, inbox=inbox.path, store_blob=sink.store_blob, sheet=inbox.sheet)
    conflicts: list[RowError] = []
    attachments: list[str] = []
    refused = 0
    try:
        with contextlib.ExitStack() as parsing, sink.transaction() as writer:
            if wanted(adapter, held.size, limits.parse_child_bytes):
                rows = parsing.enter_context(child_rows(adapter, held.fd, path.name, context))
            else:
                rows = adapter.parse(path, context)
            chunk: list[Keyed] = []
            for row in rows:
                error = row.error
                if error is None and row.record is not None:
                    error = validator.check(row.line, row.record)
                    if error is not None and row.cells and error.field in row.cells:
                        error = replace(error, cell=f"{row.cells[error.field]}{row.line}")
                if error is not None:
                    refused += 1
                    if len(conflicts) < MAX_CONFLICTS:  # memory stays flat for any number of bad rows
                        conflicts.append(error)
                    continue
                if row.record is not None:
                    chunk.append(row.record)
                    if row.record.kind == records.REPORT:
                        attachments.extend(a.name for a in records.BODY_TYPES[records.REPORT].FromString(row.record.body).attachments)
                    if len(chunk) >= CHUNK:
                        writer.write(chunk)
                        chunk = []
            if refused and inbox.atomic:
                raise _Rollback
            writer.write(chunk)
            counts = writer.counts
            taken = sum(counts)
            # Nothing taken and rows refused: the file is refused (it goes to rejected/).
            status = "ERROR" if refused and not taken else "WARNING" if refused or validator.flag_unchecked else "SUCCESS"
            description = message("no_definitions") if validator.flag_unchecked else ("", "")
            result = receipt(
                status=status,
                path=path,
                sha256=sha,
                inbox=inbox,
                adapter=adapter.name,
                node=node,
                counts=counts,
                refused=refused,
                conflicts=conflicts,
                description=description,
                received_at=received_at,
            )
            if attachments:
                result["attachments"] = attachments
            writer.ledger = _ledger(result, path, inbox, refused)
            if held.changed():
                raise _changed(path)  # rolls the transaction back: what was read is not what is there
        return result
    except FileChanged:
        raise
    except _Rollback:
        r = receipt(
            status="ERROR",
            path=path,
            sha256=sha,
            inbox=inbox,
            adapter=adapter.name,
            node=node,
            counts=(0, 0, 0),
            refused=refused,
            conflicts=conflicts,
            description=message("atomic", refused),
            received_at=received_at,
        )
        r["error_code"] = "atomic"
        return r
    except FileRefused as exc:
        return refuse(exc.code, "", sha, adapter.name, (exc.message_vi, exc.message_en))
    except ApprovalLocked as exc:  # the file would change approved data: nothing of it is stored
        r = refuse("approved_data", "", sha, adapter.name, (exc.message_vi, f"{exc.message} (Try: {exc.hint})"))
        r.update({"unit": exc.unit, "dataset": exc.dataset, "period": exc.period, "approval": exc.state})
        return r
    except StoreError:
        raise  # the node's own disk or store, not the file: it stays in the inbox and is taken again
    except Exception as exc:  # an adapter bug: isolate it, refuse the file, keep serving
        log.exception("adapter.failed", adapter=adapter.name, file=display_name(path.name))
        r = refuse("adapter_failed", adapter.name, sha, adapter.name)
        # ChildFailed carries the child's adapter error as "Type: detail" already (parse_child.py).
        r["description_en"] += f" ({exc})" if isinstance(exc, ChildFailed) else f" ({type(exc).__name__}: {exc})"
        return r


def _ledger(result: dict[str, Any], path: Path, inbox: Inbox, refused: int) -> dict[str, Any]:
    counts = result["importCount"]
    return {
        # A file refused before it was read (a symlink, too large) has no content hash: key it by name and time.
        "sha256": result["sha256"] or "unread:" + hashlib.sha256(f"{path}:{time.time_ns()}".encode()).hexdigest(),
        "name": display_name(path.name),
        "agency": inbox.agency,
        "adapter": result["adapter"],
        "status": result["status"].lower(),
        "imported": counts["imported"],
        "updated": counts["updated"],
        "unchanged": counts["unchanged"],
        "refused": refused,
        "at": time.time(),
        "receipt": json.dumps(result, ensure_ascii=False),
    }


def _destination(path: Path, inbox: Inbox, result: dict[str, Any]) -> Path:
    if result["status"] == "ERROR":
        return inbox.path / REJECTED / path.name
    day = str(result.get("processed_at", _now()))[:10]
    return inbox.path / ARCHIVE / day / path.name


def _archived(path: Path, inbox: Inbox, original: dict[str, Any]) -> bool:
    return Path(str(_destination(path, inbox, original)) + RECEIPT_SUFFIX).exists()


def _finish(path: Path, inbox: Inbox, result: dict[str, Any], move: bool, held: HeldFile | None = None) -> dict[str, Any]:
    """Move the file out of the inbox and write its receipt beside it (temp file, then rename).

    With `held` (the file as it was read), what is archived under the receipt is exactly that file:
    if the held file itself changed, `FileChanged` (read it again; what was committed stays in the
    ledger); if the name was given to another file meanwhile, the held bytes are archived from the
    descriptor and the other file stays in the inbox for its own turn."""
    if not move:
        return result
    dest = _destination(path, inbox, result)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() or dest.is_symlink():
        dest = dest.with_name(f"{dest.stem}.{result['sha256'][:8] or int(time.time())}{dest.suffix}")
    receipt_path = Path(str(dest) + RECEIPT_SUFFIX)
    tmp = receipt_path.with_name("." + receipt_path.name + ".tmp")
    tmp.write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    try:
        if held is None:
            os.replace(path, dest)  # refused unread (a link, not a regular file): moved as it is
        elif held.modified():
            raise _changed(path)
        elif held.replaced():
            held.copy_to(dest)  # the name is another file now: archive what was read
        else:
            os.replace(path, dest)
            if not held.is_at(dest):  # renamed over between the check and the move: give it back
                _give_back(dest, path)
                held.copy_to(dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, receipt_path)
    # Attachments named by a report manifest move with it (they were stored as blobs).
    for name in result.get("attachments", []):
        attachment = path.parent / name
        if attachment.parent == path.parent and attachment.is_file() and not attachment.is_symlink():
            os.replace(attachment, dest.parent / name)
    result["archived_as"] = str(dest)
    return result


def _give_back(moved: Path, path: Path) -> None:
    """Put a file that was moved by mistake back under its name in the inbox (never over another file)."""
    try:
        os.link(moved, path, follow_symlinks=False)
    except FileExistsError:
        os.link(moved, path.with_name(f"{path.stem}.{time.time_ns()}{path.suffix}"), follow_symlinks=False)
    os.unlink(moved)


def _where_to_put(root: Path) -> tuple[str, str]:
    """The receipt of a file dropped in the inbox root: which folders it belongs in."""
    folders = agency_folders(root)
    if not folders:
        return message("no_agency_folders", f"{root.name}/thongke/")
    return message("no_agency", ", ".join(f"{root.name}/{name}/" for name in folders))
