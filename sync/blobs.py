"""A node's files on disk: content-addressed blobs, and files arriving from a peer in chunks.

    blobs/ab/abcdef…            a whole file, named by the SHA-256 of its bytes (0640, folders 0750)
    blobs/.partial/abcdef…      a file arriving from a peer: what has arrived, in order

A file arriving is appended to chunk by chunk; its length is where the next chunk starts,
so a fetch cut by a crash or a dropped link resumes at the chunk after the last one written.
It becomes visible (renamed into place) only once its SHA-256 is the one the sealed record
names; a file that does not match is deleted and fetched again from its start. Memory stays
one chunk whatever the file's size: chunks are written as they come, and the check reads
the file back in blocks.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
from pathlib import Path

from .errors import StoreError

BLOBS = "blobs"
PARTIAL = ".partial"
BLOB_MODE = 0o640
BLOB_DIR_MODE = 0o750
# One chunk on the wire: the most a batch of records waits behind a file.
CHUNK = 256 * 1024
SHA256 = re.compile(r"^[0-9a-f]{64}$")
_BLOCK = 1 << 20


def valid(sha256: str) -> bool:
    """Whether `sha256` is a file name this node uses (64 lowercase hex digits, nothing else)."""
    return bool(SHA256.match(sha256))


class Blobs:
    """The `blobs/` folder of a node directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        if not valid(sha256):
            raise ValueError(f"not a SHA-256: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return valid(sha256) and self.path(sha256).is_file()

    def read(self, sha256: str, offset: int, length: int) -> tuple[bytes, int]:
        """Up to `length` bytes of a whole file from `offset`, and the file's size."""
        with self.path(sha256).open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(offset)
            return f.read(max(0, min(length, CHUNK))), size

    def _partial(self, sha256: str) -> Path:
        if not valid(sha256):
            raise ValueError(f"not a SHA-256: {sha256!r}")
        return self.root / PARTIAL / sha256

    def received(self, sha256: str) -> int:
        """How much of a file arriving from a peer is here (0 if none)."""
        try:
            return self._partial(sha256).stat().st_size
        except OSError:  # none yet, or a folder that cannot be read (append says why)
            return 0

    def append(self, sha256: str, offset: int, data: bytes) -> int:
        """Write a chunk that starts where the arrived part ends; returns the new length (a chunk
        for another offset, a late answer to an earlier ask, is left out)."""
        path = self._partial(sha256)
        try:
            path.parent.mkdir(mode=BLOB_DIR_MODE, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, BLOB_MODE)
            try:
                length = os.fstat(fd).st_size
                if length != offset:
                    return length
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                return length + len(data)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _disk_error(self.root, exc) from None

    def finish(self, sha256: str) -> bool:
        """Check a whole arrived file against `sha256`: move it into place if it matches (True),
        delete it if not (False), so that it is fetched again from the start."""
        path = self._partial(sha256)
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(_BLOCK), b""):
                digest.update(block)
            os.fsync(f.fileno())
        if digest.hexdigest() != sha256:
            path.unlink(missing_ok=True)
            return False
        final = self.path(sha256)
        try:
            final.parent.mkdir(mode=BLOB_DIR_MODE, parents=True, exist_ok=True)
            os.chmod(path, BLOB_MODE)
            os.replace(path, final)
            dir_fd = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise _disk_error(self.root, exc) from None
        return True

    def discard(self, sha256: str) -> None:
        self._partial(sha256).unlink(missing_ok=True)


def _disk_error(root: Path, exc: OSError) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreError(f"the disk holding {root} is full: a file arriving from a peer waits", "free space on that disk")
    return StoreError(f"a file arriving in {root} cannot be written: {exc.strerror}", "check that folder's permissions and disk")
