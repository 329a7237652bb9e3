"""A file opened once, without following links, and read only through that descriptor.

What the inbox commits must be exactly what it hashed and parsed (DESIGN.md §8). A
path is only a name: between a check and an open, or between reading and moving,
the name can be given to another file (an atomic rename), to a symbolic link to
`/etc/shadow`, or the file can grow. So a dropped file (and each attachment of a
report) is opened ONCE:

- `os.open(name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, dir_fd=<the inbox folder>)`:
  a link is refused (`LinkRefused`), never followed; a FIFO does not block; a name
  with `/` or that is `.`/`..` is refused before the file system is asked;
- `fstat` must say a regular file (else `NotRegularFile`);
- everything after that reads through the descriptor: `HeldFile.path` is a `Path`
  whose `open()`, `read_bytes()`, `read_text()` and `stat()` read the held file
  (with `os.pread`, so several readers never share an offset), while its name,
  suffix and parent stay those of the dropped file, for adapters that judge by
  name. Adapters that use `path.open()` (the contract in docs/adapters.md) thus
  read the held file without knowing it.

Identity is (device, inode, size, mtime_ns), taken by `fstat` when the file is
opened (not ctime: unlinking or renaming the file, which replacing its name does,
changes ctime though not one byte of what was read). `modified()` says the held
file itself changed since (written in place); `replaced()` says the name in the
folder no longer is the held file (a rename over it, a delete); either means what
was read is not what is there now, and the caller rolls back and reads again
later (`FileChanged`).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
from pathlib import Path, PosixPath
from typing import IO, Any

from lienthong.sync.errors import LienthongError

Identity = tuple[int, int, int, int]

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_BLOCK = 1 << 20


class FileChanged(LienthongError):
    """The file changed, was replaced or vanished while it was read: nothing of this read is kept;
    read it again later."""

    def __init__(self, message: str, hint: str = "nothing of it was taken; it is read again once its writer is done") -> None:
        super().__init__(message, hint)


class LinkRefused(LienthongError, OSError):
    """The name is a symbolic link: it is not followed (still an OSError for callers that catch those)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path} is a symbolic link, which lienthong never follows", "copy the real file into the inbox")


class NotRegularFile(LienthongError, OSError):
    """The name is not a regular file (a directory, FIFO, device or socket)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path} is not a regular file (a folder, pipe or device)", "put a real data file in the inbox")


class BadName(LienthongError, ValueError):
    """The name is not a bare file name in the folder (`/` in it, `.`, `..`, NUL, empty)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name!r} is not a bare file name", "name the file alone, without folders, in the same folder as the manifest")


def identity(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def display_name(name: str) -> str:
    """A file name as receipts, logs and the ledger show it: bytes that are not UTF-8 (kept by
    `os.fsdecode` as surrogates) are written `\\xNN`, so `b'bao-cao-\\xff.csv'` reads `bao-cao-\\xff.csv`."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def bare_name(name: str) -> bool:
    """Whether `name` names a file directly in a folder: no `/` (or `\\`), not `.`/`..`, no NUL."""
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\x00")


class HeldFile:
    """One regular file, opened without following links; close it (or use `with`)."""

    def __init__(self, fd: int, dir_fd: int, name: str, path: Path, st: os.stat_result) -> None:
        self.fd = fd
        self.dir_fd = dir_fd  # owned: the folder the name was opened in, for the identity checks
        self.name = name
        self.identity = identity(st)
        self.size = st.st_size
        self.path = HeldPath(path)
        self.path._held = self

    @classmethod
    def open(cls, path: Path, dir_fd: int | None = None) -> HeldFile:
        """Open `path.name` in `path.parent` (or in the folder `dir_fd`, which the caller keeps)."""
        name = path.name
        if not bare_name(name):
            raise BadName(name)
        folder = os.open(path.parent, _DIR_FLAGS) if dir_fd is None else os.dup(dir_fd)
        try:
            try:
                fd = os.open(name, _OPEN_FLAGS, dir_fd=folder)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise LinkRefused(str(path)) from None
                raise
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise NotRegularFile(str(path))
                os.set_blocking(fd, True)
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            os.close(folder)
            raise
        return cls(fd, folder, name, path, st)

    # ------------------------------------------------------------ reading

    def pread(self, size: int, offset: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def sha256(self) -> str:
        h = hashlib.sha256()
        offset = 0
        while block := os.pread(self.fd, _BLOCK, offset):
            h.update(block)
            offset += len(block)
        return h.hexdigest()

    def copy_to(self, dest: Path) -> None:
        """Write the held content to `dest` (temporary file, then rename)."""
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        with tmp.open("wb") as out:
            offset = 0
            while block := os.pread(self.fd, _BLOCK, offset):
                out.write(block)
                offset += len(block)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)

    # ------------------------------------------------------------ identity

    def modified(self) -> bool:
        """The held file itself changed since it was opened (written, truncated, touched)."""
        return identity(os.fstat(self.fd)) != self.identity

    def replaced(self) -> bool:
        """The name in the folder is no longer the held file as it was opened (renamed over, deleted, changed)."""
        try:
            st = os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return True
        return identity(st) != self.identity

    def changed(self) -> bool:
        return self.modified() or self.replaced()

    def is_at(self, path: Path) -> bool:
        """Whether `path` (not followed) is the held file (same device and inode)."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == self.identity[:2]

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        for fd in (self.fd, self.dir_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.dir_fd = -1

    def __enter__(self) -> HeldFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _PReader(io.RawIOBase):
    """A read-only view of a held descriptor with its own position (`os.pread`): readers never
    share an offset, and closing it leaves the descriptor open."""

    def __init__(self, held: HeldFile) -> None:
        super().__init__()
        self._held = held
        self._pos = 0
        self.name = str(held.path)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._held.pread(len(view), self._pos)
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: os.fstat(self._held.fd).st_size}[whence]
        if base + offset < 0:
            raise OSError(errno.EINVAL, "negative seek position")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos


class HeldPath(PosixPath):
    """The dropped file's path, reading the held descriptor: `open()` (read modes only), `stat()`,
    `lstat()` and what builds on them (`read_bytes`, `read_text`, `is_file`, `exists`). Paths derived
    from it (`parent`, `with_name`, `/`) are ordinary paths."""

    _held: HeldFile | None = None  # set on the one instance HeldFile makes; derived paths have none

    def open(  # type: ignore[override]
        self, mode: str = "r", buffering: int = -1, encoding: str | None = None, errors: str | None = None, newline: str | None = None
    ) -> IO[Any]:
        held = self._held
        if held is None:
            return super().open(mode, buffering, encoding, errors, newline)
        if set(mode) - set("rbt"):
            raise PermissionError(errno.EACCES, "a file taken from an inbox is read only", str(self))
        raw = _PReader(held)
        binary = io.BufferedReader(raw, buffering if buffering > 1 else io.DEFAULT_BUFFER_SIZE)
        if "b" in mode:
            return binary
        return io.TextIOWrapper(binary, encoding=io.text_encoding(encoding), errors=errors, newline=newline)

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        if self._held is None:
            return super().stat(follow_symlinks=follow_symlinks)
        return os.fstat(self._held.fd)

    def lstat(self) -> os.stat_result:
        return self.stat(follow_symlinks=False)


def held_dir_fd(path: Path) -> int | None:
    """The folder descriptor a `HeldPath` was opened in (attachments open beside it), else None."""
    held = getattr(path, "_held", None)
    return held.dir_fd if isinstance(held, HeldFile) else None


def held_fd(path: Path) -> int | None:
    """The descriptor a `HeldPath` reads (for a reader in another process), else None."""
    held = getattr(path, "_held", None)
    return held.fd if isinstance(held, HeldFile) else None
