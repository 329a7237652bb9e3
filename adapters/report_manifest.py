"""Periodic reports with attachments (`report-manifest`): one `*.report.json` → one `report` record.

The manifest is a JSON object with the report's canonical fields (docs/records.md):
`report_type`, `period` (any form periods.py reads: `2026-Q3` → 2026Q3), `unit`,
`title`, `submitted_at`, and optionally `summary`, `signed_by`, `source_id`, `agency`
(default: the inbox's agency) and `attachments`: file names relative to the
manifest's folder (strings, or objects with a `name`).

Each attachment is checked before anything is stored. One that is missing, is a
symbolic link, is not a regular file, or whose path leaves `context.inbox` (`../../etc/passwd`,
an absolute path, a link out) refuses the whole manifest with FileRefused
(`bad_attachment`), naming every bad attachment; no path outside the inbox is opened
(an escape is seen from the path itself before the file system is asked). Good
attachments are stored with `context.store_blob(path)` and recorded as
{name, sha256, size}. A name that differs from the file on disk only by Unicode
normalisation (NFC in the manifest, NFD from a Mac) still finds the file.

A manifest is small and read whole (up to `MAX_MANIFEST` bytes).
"""

from __future__ import annotations

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
    folder = path.parent
    found: list[tuple[str, Path]] = []
    bad: list[tuple[str, str, str]] = []
    for item in listed:
        name = item.get("name") if isinstance(item, dict) else item
        if not isinstance(name, str) or not name.strip():
            bad.append((messages.shown(name if name is not None else ""), "không có tên tệp", "no file name"))
            continue
        target, problem = _locate(name.strip(), folder, context.inbox)
        if target is None:
            bad.append((name, *problem))
        elif all(target != other for _, other in found):
            found.append((records.nfc(name.strip()), target))
    if bad:
        items_vi = "; ".join(f"«{messages.shown(name)}» ({vi})" for name, vi, _ in bad)
        items_en = "; ".join(f"«{messages.shown(name)}» ({en})" for name, _, en in bad)
        raise messages.refused("bad_attachment", file=path.name, items_vi=items_vi, items_en=items_en)

    attachments = []
    for name, target in found:
        try:
            digest = context.store_blob(target) or _sha256(target)
            size = target.stat().st_size
        except OSError as exc:
            raise messages.refused("unreadable", file=f"{path.name} → {name}", detail=exc.strerror or type(exc).__name__) from None
        attachments.append({"name": name, "sha256": digest, "size": size})
    try:
        yield Row(1, record=records.report(context.origin, dict(fields, attachments=attachments)))
    except InputError as exc:
        yield Row(1, error=messages.from_input_error(1, exc, fields))


def _locate(name: str, folder: Path, inbox: Path) -> tuple[Path | None, tuple[str, str]]:
    """The attachment's path if it is a regular file inside the inbox, else why not (vi, en)."""
    outside = ("nằm ngoài thư mục gửi", "outside the inbox")
    if "\x00" in name or os.path.isabs(name) or name.startswith(("/", "\\")):
        return None, outside
    inbox_abs = os.path.normpath(os.path.abspath(inbox))
    variants = dict.fromkeys([name, unicodedata.normalize("NFC", name), unicodedata.normalize("NFD", name)])
    problem = ("không tìm thấy tệp", "file not found")
    for variant in variants:
        lexical = os.path.normpath(os.path.join(os.path.abspath(folder), variant))
        if os.path.commonpath([lexical, inbox_abs]) != inbox_abs or lexical == inbox_abs:
            return None, outside  # seen from the path alone: the file system is not asked
        candidate = Path(lexical)
        try:
            if candidate.is_symlink():
                return None, ("là liên kết tượng trưng (symlink), không phải tệp thật", "a symbolic link, not a file")
            resolved = candidate.resolve(strict=False)
            if not resolved.is_relative_to(Path(inbox_abs).resolve(strict=False)):
                return None, outside
            if resolved.is_file():
                return resolved, ("", "")
            if resolved.exists():
                problem = ("không phải tệp thông thường", "not a regular file")
        except (OSError, RuntimeError, ValueError):
            problem = ("không đọc được", "cannot be read")
    return None, problem


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
