"""The files under an open store, and SQLite's failures told in words.

A database or WAL deleted or replaced under a running node would take commits that no one can
read back: before each write transaction the files must still be the ones the store opened
(`FileGuard.check`), and once they are not, every later write is refused too. Any SQLite failure
a read or a write meets is told in one sentence with what to do (`FileGuard.explain`): the file
removed or replaced when it was, else a full disk, a damaged file, or a file that cannot be
written now.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .errors import StoreError


class FileGuard:
    """The (device, inode) of a store's database and WAL as the store first saw them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: dict[Path, tuple[int, int] | None] = {}
        self._damaged = ""

    def check(self) -> None:
        """Raise StoreError when the database or its WAL is no longer the file this store opened."""
        for path in (self.path, Path(f"{self.path}-wal")):
            try:
                st = path.stat()
            except FileNotFoundError:
                st = None
            now = None if st is None else (st.st_dev, st.st_ino)
            if self._seen.get(path) is None:
                self._seen[path] = now  # the WAL appears with the first transaction
            elif now != self._seen[path]:
                self._damaged = f"{path} was {'removed' if now is None else 'replaced'} while this node had it open"
        if self._damaged:
            raise self._refusal()

    def explain(self, exc: sqlite3.DatabaseError) -> StoreError:
        """A SQLite failure met anywhere (a read as well as a write) in one sentence: a file removed
        or replaced under the running node is said as that, not as a damaged database."""
        try:
            self.check()
        except StoreError as removed:
            return removed
        return store_error(self.path, exc)

    def _refusal(self) -> StoreError:
        return StoreError(
            f"the store cannot be written: {self._damaged}; nothing more is taken, so nothing is acknowledged and lost",
            "stop the node, restore the store from a backup (or its files), and start it again",
        )


def store_error(path: Path, exc: sqlite3.DatabaseError) -> StoreError:
    """A SQLite failure while writing, told in one sentence with what to do."""
    text = str(exc)
    if "full" in text:
        return StoreError(
            f"the disk holding {path} is full: nothing was written", "free space on that disk; what was not written is sent again"
        )
    if "malformed" in text or "not a database" in text or not isinstance(exc, sqlite3.OperationalError):
        return StoreError(f"the store at {path} is damaged ({text})", "stop the node and restore the store from a backup")
    return StoreError(f"the store at {path} could not be written ({text})", "check the disk and the file's permissions; the node retries")
