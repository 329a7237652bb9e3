"""Parsing a large file on the second core: the adapter runs in a child process.

Taking a big CSV is two halves of about equal cost: parsing and building the records
(the adapter), and checking and committing them (the node's store). In one process they
share one core; here the adapter's half runs in a child process that reads the held file
(its descriptor is the child's stdin) and sends the rows back in batches while the parent
checks and writes the previous ones. The pipe bounds what is in flight, so memory stays
flat whatever the file's size. What the parent receives is exactly what the adapter would
have yielded in-process (same rows, same refusals, same errors), so receipts do not change.

    python -m lienthong.adapters.parse_child ADAPTER NAME AGENCY ORIGIN INBOX SHEET   < file

NAME is the dropped file's name (adapters and their messages judge by it); SHEET the
workbook sheet the inbox names (`inbox.<agency>.sheet`, may be empty). Output on stdout
is a pickle stream:

    ("rows", [row, ...])                  up to BATCH rows, in order: a record row as the tuple
                                          (line, id, kind, unit, agency, body, deleted), any other
                                          as its Row (a tuple unpickles in half the time of a dataclass);
                                          a dict among them is the `cells` of the record rows that
                                          follow (a workbook names each field's column once, not per row)
    ("refused", code, message_vi, message_en, hint)   the adapter refused the file (FileRefused)
    ("failed", type_name, detail)         the adapter raised anything else (an adapter bug)
    ("end",)

Only adapters that need nothing of the node while parsing (no blobs, no store) are run so:
`CHILD_ADAPTERS`, each from its own size (a workbook is zipped: 1 MiB of .xlsx holds ≈ 25,000
rows, as much as ≈ 2 MiB of CSV). The adapter reads the file through a `HeldPath` on the
child's stdin, as it would in the node; the workbook adapter passes that descriptor on to its
own reading process (workbook_reader.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

from lienthong.sync.errors import LienthongError
from lienthong.sync.records import Keyed

from .base import Adapter, FileRefused, ParseContext, Row
from .held import HeldFile

CHILD_ADAPTERS = {"vn-csv": 1, "xlsx": 4}  # adapter -> how many times smaller a file it takes than `min_bytes`
FAILPOINT = "LIENTHONG_FAILPOINT"  # test-only fault injection, as in intake.py
BATCH = 1_000
PIPE_BYTES = 1 << 20  # the rows in flight between the child and the node (see widen)


class ChildFailed(LienthongError):
    """The child's adapter raised (not a refusal), or the child ended without finishing."""

    def __init__(self, message: str, hint: str = "send the file again; if it fails again, report it with the node's log") -> None:
        super().__init__(message, hint)


def wanted(adapter: Adapter, size: int, min_bytes: int) -> bool:
    """Whether a file of `size` bytes read by `adapter` is parsed in a child process."""
    divisor = CHILD_ADAPTERS.get(adapter.name)
    return divisor is not None and size >= min_bytes // divisor


def widen(fd: int) -> None:
    """Give the pipe at `fd` room for more than one of the node's write chunks (about 8,000 rows).

    A pipe holds 64 KiB (≈ 500 rows): while the node commits a chunk (5,000 rows, intake.CHUNK),
    the child would stop after 500 and wait, and the two halves would take turns on two cores
    instead of running at once. Linux lets any process grow a pipe to `pipe-max-size` (1 MiB by
    default); elsewhere, or when refused, the pipe keeps its size and only the overlap is less."""
    with contextlib.suppress(AttributeError, OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


@contextlib.contextmanager
def child_rows(adapter: Adapter, fd: int, name: str, context: ParseContext) -> Iterator[Iterator[Row]]:
    """The rows `adapter` yields for the file open at `fd` (named `name`), parsed in a child process.

    Raises `FileRefused` as the adapter would, `ChildFailed` for anything else the child met.
    Leaving the block stops the child whether or not all rows were read."""
    args = [
        sys.executable,
        "-m",
        "lienthong.adapters.parse_child",
        adapter.name,
        name,
        context.agency,
        context.origin,
        str(context.inbox),
        context.sheet,
    ]
    with tempfile.TemporaryFile() as errors:
        # Its own session: a Ctrl-C in the terminal stops the node's take (the file stays in the inbox),
        # never the child alone (which would read as a failed parse and refuse the file).
        proc = subprocess.Popen(args, stdin=fd, stdout=subprocess.PIPE, stderr=errors, bufsize=1 << 20, start_new_session=True)
        try:
            assert proc.stdout is not None
            widen(proc.stdout.fileno())
            yield _read(proc, proc.stdout, errors)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def _read(proc: subprocess.Popen[bytes], stream: IO[bytes], errors: IO[bytes]) -> Iterator[Row]:
    cells: dict[str, str] | None = None
    while True:
        try:
            message = pickle.load(stream)
        except EOFError:
            errors.seek(0)
            tail = errors.read()[-400:].decode("utf-8", "replace").strip()
            raise ChildFailed(f"the parsing process ended early (exit {proc.wait()}): {tail}") from None
        kind = message[0]
        if kind == "rows":
            for row in message[1]:
                if type(row) is tuple:
                    yield Row(row[0], Keyed._make(row[1:]), None, cells)
                elif type(row) is dict:
                    cells = row or None
                else:
                    yield row
        elif kind == "end":
            return
        elif kind == "refused":
            raise FileRefused(*message[1:])
        else:
            raise ChildFailed(f"{message[1]}: {message[2]}")


def main(adapter_name: str, name: str, agency: str, origin: str, inbox: str, sheet: str = "") -> int:
    from .registry import Registry

    # A stop signal sent to the whole group (systemd stops a unit's every process) is the node's
    # to handle: it stops reading and kills this process; ended by itself here, the file would be refused.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    out = sys.stdout.buffer
    batch: list[object] = []
    cells: Mapping[str, str] | None = None

    def send(*message: object) -> None:
        pickle.dump(message, out, protocol=pickle.HIGHEST_PROTOCOL)

    with tempfile.TemporaryDirectory(prefix="lienthong-parse-") as folder:
        # The adapter reads a path named like the dropped file: our stdin, the held file, as a HeldPath
        # (a reader process it starts gets the descriptor, held.held_fd); the name is a link to it too.
        os.symlink("/proc/self/fd/0", Path(folder) / name)
        held = HeldFile(0, os.open(folder, os.O_RDONLY | os.O_DIRECTORY), name, Path(folder) / name, os.fstat(0))
        try:
            adapter = Registry().get(adapter_name)
            for row in adapter.parse(held.path, ParseContext(origin=origin, agency=agency, inbox=Path(inbox), sheet=sheet)):
                k = row.record
                if k is not None and row.error is None:
                    if row.cells is not cells:
                        cells = row.cells
                        batch.append(dict(cells or {}))
                    batch.append((row.line, k.id, k.kind, k.unit, k.agency, k.body, k.deleted))
                else:
                    batch.append(row)
                if len(batch) >= BATCH:
                    send("rows", batch)
                    batch = []
                    if os.environ.get(FAILPOINT) == "parse_child_exit":
                        os._exit(9)  # fault injection for the tests: the child dies mid-file
            send("rows", batch)
            send("end")
        except FileRefused as exc:
            send("refused", exc.code, exc.message_vi, exc.message_en, exc.hint)
        except Exception as exc:  # the adapter's bug: the parent refuses the file as it would in-process
            send("failed", type(exc).__name__, str(exc))
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:7]))
