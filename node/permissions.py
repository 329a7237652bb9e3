"""Who may read a node's files: only the user the node runs as.

The store, its WAL, the blobs and the inbox archive hold citizens' names, phone numbers
and e-mails (Decree 13/2023); keys and the audit log are the node's own secrets. So:

    every command:  private_umask()          files 0600 and folders 0700 from the first byte
    `run`:          secure(node_dir)         what another user could read is closed (0600/0700)
                                             and named in a warning; refused if it cannot be
    the CA key:     check_private(path)      refused while other users can read it (`ca.py`)

Files are also created with explicit modes where they are made (keys, SQLite files, blobs,
the run lock); the umask covers what libraries create (SQLite's WAL and SHM take the main
file's mode) and exports. A node directory written by an older lienthong (0644 files in
0755 folders) is closed at its first start.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from lienthong.sync.errors import LienthongError, TrustError

PRIVATE_UMASK = 0o077
FILE_MODE = 0o600
DIR_MODE = 0o700
OTHERS = 0o077  # the group's and everyone else's bits


def private_umask() -> None:
    """From now on this process creates files 0600 and folders 0700 (unless a mode says less)."""
    os.umask(PRIVATE_UMASK)


def exposed(node_dir: Path) -> list[Path]:
    """Everything under `node_dir` (itself included) that the group or other users may access.
    Links are not followed: what they point at is not the node's."""
    out: list[Path] = []
    root = Path(node_dir)
    for path in [root, *_walk(root)]:
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:  # gone meanwhile (a temporary file)
            continue
        if not stat.S_ISLNK(mode) and mode & OTHERS:
            out.append(path)
    return out


def _walk(root: Path) -> list[Path]:
    paths: list[Path] = []
    for folder, dirs, files in os.walk(root):
        base = Path(folder)
        paths.extend(base / name for name in dirs)
        paths.extend(base / name for name in files)
    return paths


def secure(node_dir: Path) -> list[Path]:
    """Close every file and folder of the node that others may access; returns what was changed.
    LienthongError (one sentence and a hint) when this user may not change one of them."""
    changed = []
    for path in exposed(node_dir):
        try:
            mode = path.lstat().st_mode
            path.chmod(DIR_MODE if stat.S_ISDIR(mode) else stat.S_IMODE(mode) & ~OTHERS)
        except FileNotFoundError:
            continue
        except PermissionError:
            raise LienthongError(
                f"{path} can be read by other users of this machine and this user cannot change that",
                f"run `chown -R $(id -un) {node_dir}` as root, then start the node again",
            ) from None
        changed.append(path)
    return changed


def check_private(path: Path, what: str) -> None:
    """TrustError while other users of this machine can read the secret at `path`."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if mode & OTHERS:
        raise TrustError(
            f"{what} {path} can be read by other users of this machine (mode {mode:04o})",
            f"run `chmod 600 {path}`; if someone may have copied it, replace it (see docs/security.md)",
        )
