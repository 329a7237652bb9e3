"""A node's backup and its restore: everything a restored node needs, in one file.

    backup_node(node_dir, dest, ca_dir)   -> DEST: a tar of the node directory, the running node untouched
    restore_node(archive, node_dir)       -> a node directory again, its store under a new epoch

What goes in: every file of the node directory — the store, the audit log, the enrollment
database and any other SQLite file copied with SQLite's online backup API (a consistent
copy of each, while the node writes), the keys, certificates and configuration, blobs and
the inbox with its archive. Left out: the run lock, SQLite's -wal/-shm/-journal files (the
online copy holds their committed content) and temporary files. The CA directory the node
uses (`tls.ca_dir`, or the folder of `tls.crl` when it is a CA's) is copied under `ca/` when
it lies outside the node directory. `manifest.json` names every file with its SHA-256.

The archive is written to a temporary name beside DEST and renamed into place: DEST is
either a whole backup or absent. Each SQLite file is consistent in itself; files are copied
one after the other, so a write between two of them may be in one and not the other (the
audit log may end a moment later than the store: nothing a restore relies on).

Restore and the epoch rule: the restored store gets a new change-log epoch. Its parent,
meeting a known child under a new epoch, takes the child's log again from the start and
sends it back everything it had received from it (`sync.downstream.resend_to_restored`),
and its own downward queue resumes from the copy's cursor: what the node wrote or received
after the copy was made and its parent holds comes back. What never left the node before
it was lost is lost (the parent never had it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from lienthong.sync.errors import LienthongError
from lienthong.sync.store import RESTORING, Store

from .permissions import DIR_MODE

MANIFEST = "manifest.json"
NODE = "node"
CA = "ca"
FORMAT = 1
_SQLITE_HEADER = b"SQLite format 3\x00"
_SKIP_SUFFIXES = ("-wal", "-shm", "-journal", ".tmp", ".creating", ".partial")
_SKIP_NAMES = ("node.lock", "root.key")  # the root key lives offline, never in a backup


class BackupError(LienthongError):
    """A backup or a restore could not be made; the message says why, the hint what to do."""


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(16) == _SQLITE_HEADER


def _online_copy(source: Path, dest: Path) -> None:
    """SQLite's online backup of `source` into `dest` (readers and the writer go on)."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    target = sqlite3.connect(dest)
    try:
        src.backup(target)
    finally:
        target.close()
        src.close()


def _snapshot(source_dir: Path, into: Path, skip: Path | None = None) -> list[dict[str, Any]]:
    """Copy `source_dir` into `into`: SQLite files by the backup API, the rest as they are."""
    files = []
    for folder, dirs, names in os.walk(source_dir):
        base = Path(folder)
        dirs[:] = [d for d in dirs if skip is None or (base / d).resolve() != skip]
        # Every folder, empty ones too: an agency's inbox folder is there before its first file.
        (into / base.relative_to(source_dir)).mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        for name in sorted(names):
            path = base / name
            if name in _SKIP_NAMES or name.endswith(_SKIP_SUFFIXES) or path.is_symlink() or not path.is_file():
                continue
            rel = path.relative_to(source_dir)
            dest = into / rel
            dest.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
            sqlite = _is_sqlite(path)
            if sqlite:
                _online_copy(path, dest)
            else:
                shutil.copyfile(path, dest)
            files.append({"path": rel.as_posix(), "sqlite": sqlite, "sha256": _sha256(dest)})
    return files


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def backup_node(node_dir: Path, dest: Path, node_id: str, ca_dir: Path | None = None) -> dict[str, Any]:
    """Write the backup of the node in `node_dir` to the file `dest`; returns its manifest."""
    node_dir, dest = Path(node_dir).resolve(), Path(dest).absolute()
    if dest.exists():
        raise BackupError(f"{dest} exists", "choose a new file name")
    if not dest.parent.is_dir():
        raise BackupError(f"cannot write the backup to {dest}: {dest.parent} is not a folder", "give DEST in an existing folder")
    external_ca = ca_dir is not None and not Path(ca_dir).resolve().is_relative_to(node_dir)
    try:
        with tempfile.TemporaryDirectory(prefix=".lienthong-backup-", dir=dest.parent) as tmp:
            staging = Path(tmp)
            manifest: dict[str, Any] = {
                "format": FORMAT,
                "node_id": node_id,
                "made_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "node": _snapshot(node_dir, staging / NODE, skip=staging.resolve()),
            }
            if external_ca:
                assert ca_dir is not None
                manifest["ca_dir"] = str(Path(ca_dir).resolve())
                manifest["ca"] = _snapshot(Path(ca_dir), staging / CA, skip=staging.resolve())
            (staging / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
            partial = dest.with_name(f".{dest.name}.partial")
            with tarfile.open(partial, "w") as tar:
                tar.add(staging / MANIFEST, MANIFEST)
                for part in (NODE, CA):
                    if (staging / part).exists():
                        tar.add(staging / part, part)
            with partial.open("rb+") as f:
                os.fsync(f.fileno())
            partial.rename(dest)
    except (OSError, sqlite3.Error) as exc:
        with contextlib.suppress(OSError):
            dest.with_name(f".{dest.name}.partial").unlink()
        raise BackupError(f"cannot write the backup to {dest}: {exc}", "choose a folder you can write to, with room for the node") from None
    return manifest


def read_manifest(tar: tarfile.TarFile, archive: Path) -> dict[str, Any]:
    try:
        member = tar.extractfile(MANIFEST)
        manifest: dict[str, Any] = json.load(io.TextIOWrapper(member, encoding="utf-8")) if member else {}
    except (KeyError, ValueError):
        raise BackupError(f"{archive} is not a lienthong backup (no manifest)", "give the file `lienthong backup` wrote") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(
            f"{archive} was written in backup format {manifest.get('format')!r}", "restore it with the lienthong that made it"
        )
    return manifest


def _check(root: Path, files: list[dict[str, Any]], archive: Path) -> None:
    for entry in files:
        path = root / entry["path"]
        if not path.is_file() or _sha256(path) != entry["sha256"]:
            raise BackupError(f"{archive} is damaged: {entry['path']} does not match its checksum", "restore from another backup")


def restore_node(archive: Path, node_dir: Path) -> dict[str, Any]:
    """Put the backup `archive` back as the node directory `node_dir` (absent or empty), with a new
    store epoch; the CA directory it carries is put back where it was if nothing is there now.
    Returns the manifest, with "epoch" (the new one) and "ca_restored" (bool) added."""
    archive, node_dir = Path(archive).absolute(), Path(node_dir).absolute()
    if node_dir.exists() and any(node_dir.iterdir()):
        raise BackupError(f"{node_dir} is not empty", "restore into a new or empty folder; the node there is not touched")
    try:
        tar = tarfile.open(archive, "r")  # noqa: SIM115 (closed by the `with tar` below)
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(f"cannot read the backup {archive}: {exc}", "give the file `lienthong backup` wrote") from None
    with tar, tempfile.TemporaryDirectory(prefix=".lienthong-restore-", dir=node_dir.parent if node_dir.parent.is_dir() else None) as tmp:
        manifest = read_manifest(tar, archive)
        staging = Path(tmp)
        try:
            tar.extractall(staging, filter="data")  # no absolute paths, no links out, no devices
        except (OSError, tarfile.TarError) as exc:
            raise BackupError(f"cannot read the backup {archive}: {exc}", "restore from another backup") from None
        _check(staging / NODE, manifest["node"], archive)
        if "ca" in manifest:
            _check(staging / CA, manifest["ca"], archive)
        store = Store.open(staging / NODE / "lienthong.db")
        try:
            manifest["epoch"] = store.mint_epoch()  # the epoch rule: the parent sends back what this copy lacks
            store.set_meta(RESTORING, "")  # and nothing new is written before it has (no fork in its seals)
        finally:
            store.close()
        node_dir.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        node_dir.chmod(DIR_MODE)
        config = staging / NODE / "lienthong.toml"
        for item in sorted((staging / NODE).iterdir()):
            if item != config:
                shutil.move(str(item), node_dir / item.name)
        if config.exists():
            shutil.move(str(config), node_dir / config.name)  # last: a folder with a configuration is a node
        manifest["ca_restored"] = False
        if "ca" in manifest and not Path(manifest["ca_dir"]).exists():
            Path(manifest["ca_dir"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(staging / CA), manifest["ca_dir"])
            manifest["ca_restored"] = True
    return manifest
