"""The names in an inbox folder: which entries are agency folders, which files wait to be taken,
which are attachments (taken only with the report manifest that names them), and which are the
inbox's own or never taken (hidden files, partial uploads, Office lock files, receipts).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

ARCHIVE = "archive"
REJECTED = "rejected"
RECEIPT_SUFFIX = ".receipt.json"


def agency_folders(root: Path) -> list[str]:
    """The agency inboxes under the inbox root: its folders, but for hidden ones and its own archive/ and rejected/."""
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False) and not ignored(e.name) and e.name not in (ARCHIVE, REJECTED))


def agency_folder_name(name: str) -> bool:
    """Whether `name` can be an agency's inbox folder (`init --agency`): a code, not a folder the inbox keeps for itself."""
    return bool(re.fullmatch(r"[\w-][\w.-]{0,63}", name)) and not ignored(name) and name not in (ARCHIVE, REJECTED)


def iter_candidates(folder: Path) -> Iterator[Path]:
    """Files directly in an inbox folder that may be taken (see `ignored` and `is_attachment`)."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    for entry in entries:
        if (entry.is_file(follow_symlinks=False) or entry.is_symlink()) and not ignored(entry.name) and not is_attachment(entry.name):
            yield Path(entry.path)


# Documents and media are attachments: never taken on their own, they wait in the
# inbox for the report manifest that names them and move to the archive with it.
ATTACHMENT_TYPES = (".pdf", ".doc", ".docx", ".odt", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".zip", ".rar", ".7z", ".mp4")


def is_attachment(name: str) -> bool:
    return name.lower().endswith(ATTACHMENT_TYPES)


def ignored(name: str) -> bool:
    """Names never taken: hidden files, partial uploads, Office lock files, receipts."""
    lower = name.lower()
    return (
        name.startswith(".")
        or name.startswith("~$")
        or lower.endswith((".tmp", ".part", ".partial", ".crdownload", ".swp", RECEIPT_SUFFIX))
        or name.endswith("~")
    )
