"""Periodic reports with attachments (`report-manifest`): one `*.report.json` → one `report` record.

The manifest is a JSON object with the report's canonical fields (docs/records.md):
`report_type`, `period` (any form periods.py reads: `2026-Q3` → 2026Q3), `unit`,
`title`, `submitted_at`, and optionally `summary`, `signed_by`, `source_id`, `agency`
(default: the inbox's agency) and `attachments`: file names relative to the
manifest's folder (strings, or objects with a `name`).

Each attachment is a bare file name beside the manifest. It is opened once, before
anything is stored, without following links (`O_NOFOLLOW`, relative to the very folder
descriptor the manifest was opened in; held.py), and read only through that descriptor:
checking and reading are one step, so a name swapped for a link to `/etc/shadow` after
the check cannot be read. One that is missing, is a symbolic link, is not a regular
file, or is not a bare name (`/` or `..` in it, an absolute path) refuses the whole
manifest with FileRefused (`bad_attachment`), naming every bad attachment; a name that
is not bare is refused from the text alone, before the file system is asked. Good
attachments are stored with `context.store_blob(held_path)` (a Path whose `open()`
reads the held descriptor) and recorded as {name, sha256, size} of exactly what was
read; an attachment written while it is read makes the manifest be read again later
(`FileChanged`). A name that differs from the file on disk only by Unicode
normalisation (NFC in the manifest, NFD from a Mac) still finds the file.

A manifest is small and read whole (up to `MAX_MANIFEST` bytes).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lienthong.sync import records
from lienthong.sync.errors import InputError

from . import messages, periods
from .base import ParseContext, Row
from .held import BadName, FileChanged, HeldFile, LinkRefused, NotRegularFile, bare_name, held_dir_fd
from .parsing import JsonStream

MAX_MANIFEST = 1 << 20
FIELDS = ("report_type", "period", "unit", "title", "submitted_at", "summary", "signed_by", "source_id", "agency")


class ReportManifestAdapter:
    """A periodic report and its attached files, from a `*.report.json` manifest."""

    name = "report-manifest"
    version = "1.0"
    description = "Báo cáo định kỳ kèm tệp đính kèm (*.report.json) / periodic reports with attachments (*.report.json)"
    kinds = frozenset({"report"})

    def claims(self, path: Path, head: bytes) -> bool:
        try:
            return path.name.lower().endswith(".report.json")
        except Exception:
            return False

    def parse(self, path: Path, context: ParseContext) -> Iterator[Row]:
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise messages.refused("unreadable", file=path.name, detail=exc.strerror or type(exc).__name__) from None
        if size > MAX_MANIFEST:
            raise messages.refused("too_large", file=path.name, limit=MAX_MANIFEST)
        manifest: dict[str, Any] = {}
        lines: dict[str, int] = {}
        for event, payload, line in JsonStream(path, fmt="JSON").events():
            if event != "member":
                raise messages.refused(
                    "wrong_shape",
                    file=path.name,
                    format="JSON",
                    detail_vi="tệp báo cáo phải là một đối tượng JSON {...}",
                    detail_en="a report manifest must be a JSON object",
                )
            key, value = payload
            manifest.setdefault(key, value)
            lines.setdefault(key, line)
        yield from _report(path, manifest, lines, context)


def _report(path: Path, manifest: dict[str, Any], lines: dict[str, int], context: ParseContext) -> Iterator[Row]:
    fields: dict[str, Any] = {key: manifest.get(key) for key in FIELDS}
    fields["agency"] = fields["agency"] or context.agency
    line = 1
    if isinstance(fields["period"], str) and fields["period"].strip():
        try:
            fields["period"] = periods.canonical(fields["period"])
        except periods.PeriodError as exc:
            line = lines.get("period", 1)
            yield Row(
                line,
                error=messages.row_error(line, "period", "bad_period", value=exc.value, reason_vi=exc.reason_vi, reason_en=exc.reason_en),
            )
            return
    try:
        records.report(context.origin, fields)  # every field but the attachments, before anything is stored
    except InputError as exc:
        line = lines.get(exc.field, 1)
        yield Row(line, error=messages.from_input_error(line, exc, fields))
        return

    listed = manifest.get("attachments") or []
    if not isinstance(listed, list):
        line = lines.get("attachments", 1)
        yield Row(line, error=messages.row_error(line, "attachments", "invalid", value=listed))
        return
    with contextlib.ExitStack() as held_files:
        attachments = _store_attachments(path, listed, context, held_files)
    try:
        yield Row(1, record=records.report(context.origin, dict(fields, attachments=attachments)))
    except InputError as exc:
        yield Row(1, error=messages.from_input_error(1, exc, fields))


def _store_attachments(path: Path, listed: list[Any], context: ParseContext, held_files: contextlib.ExitStack) -> list[dict[str, Any]]:
    """Open every attachment (all or none), then store each from its descriptor: [{name, sha256, size}]."""
    folder = path.parent
    inbox_abs = os.path.normpath(os.path.abspath(context.inbox))
    inside = os.path.commonpath([os.path.normpath(os.path.abspath(folder)), inbox_abs]) == inbox_abs
    dir_fd = held_dir_fd(path)  # the folder the manifest itself was opened in, when the pipeline holds it
    if dir_fd is None:
        dir_fd = held_files.enter_context(_folder_fd(folder))
    found: list[tuple[str, HeldFile]] = []
    bad: list[tuple[str, str, str]] = []
    for item in listed:
        name = item.get("name") if isinstance(item, dict) else item
        if not isinstance(name, str) or not name.strip():
            bad.append((messages.shown(name if name is not None else ""), "không có tên tệp", "no file name"))
            continue
        held, problem = _open(name.strip(), folder, dir_fd, inside)
        if held is None:
            bad.append((name, *problem))
            continue
        held_files.enter_context(held)
        if all(held.identity[:2] != other.identity[:2] for _, other in found):
            found.append((records.nfc(name.strip()), held))
    if bad:
        items_vi = "; ".join(f"«{messages.shown(name)}» ({vi})" for name, vi, _ in bad)
        items_en = "; ".join(f"«{messages.shown(name)}» ({en})" for name, _, en in bad)
        raise messages.refused("bad_attachment", file=path.name, items_vi=items_vi, items_en=items_en)

    attachments = []
    for name, held in found:
        try:
            digest = context.store_blob(held.path) or _sha256(held.path)
        except OSError as exc:
            raise messages.refused("unreadable", file=f"{path.name} → {name}", detail=exc.strerror or type(exc).__name__) from None
        if held.modified():  # written while it was stored: the blob may not be what the size says
            raise FileChanged(f"the attachment {name} of {path.name} changed while it was read")
        attachments.append({"name": name, "sha256": digest, "size": held.size})
    return attachments


@contextlib.contextmanager
def _folder_fd(folder: Path) -> Iterator[int]:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


# Why an attachment cannot be used, shown inside the `bad_attachment` sentence (Vietnamese, English).
_OUTSIDE = (
    "nằm ngoài thư mục gửi: tên tệp đính kèm phải là tên tệp nằm ngay cạnh tệp báo cáo, không chứa «/» hay «..»",
    "outside the inbox: an attachment must be named by a bare file name beside the report, without «/» or «..»",
)
_LINK = ("là liên kết tượng trưng (symlink), không phải tệp thật", "a symbolic link, not a file")
_NOT_REGULAR = ("không phải tệp thông thường", "not a regular file")
_NOT_FOUND = ("không tìm thấy tệp", "file not found")
_UNREADABLE = ("không đọc được", "cannot be read")


def _open(name: str, folder: Path, dir_fd: int, inside: bool) -> tuple[HeldFile | None, tuple[str, str]]:
    """The attachment, opened without following links in the manifest's folder, else why not (vi, en)."""
    if not inside or not bare_name(name):
        return None, _OUTSIDE  # seen from the name alone: the file system is not asked
    problem = _NOT_FOUND
    for variant in dict.fromkeys([name, unicodedata.normalize("NFC", name), unicodedata.normalize("NFD", name)]):
        try:
            return HeldFile.open(folder / variant, dir_fd=dir_fd), ("", "")
        except LinkRefused:
            return None, _LINK
        except NotRegularFile:
            problem = _NOT_REGULAR
        except FileNotFoundError:
            continue
        except BadName:
            return None, _OUTSIDE
        except OSError as exc:
            problem = _NOT_REGULAR if exc.errno == errno.EISDIR else _UNREADABLE
    return None, problem


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
