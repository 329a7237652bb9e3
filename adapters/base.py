"""The adapter contract: how an agency's file becomes records.

An adapter is a plugin registered in the entry-point group `lienthong.adapters`
(the built-ins are registered the same way). The watched-folder machinery asks
each adapter whether it `claims` a file, then calls `parse`, and commits what it
yields in one transaction keyed by the file's content hash. Adapters never touch
the store.

Contract for `parse` (the contract test suite, tests/test_adapter_contract.py,
holds every adapter to it):

- It streams: it reads the file incrementally and yields one `Row` per record or
  refused row, so a 1,000,000-row file is parsed in flat memory.
- A row it cannot turn into a record is yielded as a `Row` with an `error`
  (line, field, code, a Vietnamese and an English sentence); the other rows go on.
- A file it cannot read at all (not text, not JSON, truncated, empty) raises
  `FileRefused` with a code and both sentences; nothing of it is stored.
- It raises nothing else. If it does anyway, the pipeline refuses the file with
  the exception's text and the adapter keeps serving other files.
- All text it puts into records is NFC-normalised (the record builders do it).
- It never opens a path outside `ParseContext.inbox` (attachments included).

Thread-safety: one adapter instance may parse several files at once from
different threads; keep per-file state in local variables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable

from lienthong.sync.errors import LienthongError
from lienthong.sync.records import Keyed


@dataclass(frozen=True)
class RowError:
    """Why one row was refused: for the receipt, in Vietnamese and English."""

    line: int
    field: str
    code: str
    message_vi: str
    message_en: str
    cell: str = ""  # a workbook's cell, as Excel names it: `Sheet1!C12` ('' for text files)


class Row(NamedTuple):
    """One parsed row: a record, or the reason it was refused (a named tuple: one per row)."""

    line: int
    record: Keyed | None = None
    error: RowError | None = None
    # A workbook row: field -> its column as a reference prefix (`Sheet1!C`); the cell is that
    # plus `line`. The pipeline names the cell of a refusal it makes itself (an unknown unit).
    cells: Mapping[str, str] | None = None


class FileRefused(LienthongError):
    """The whole file cannot be read; nothing of it is stored. The sentences say what to fix."""

    HINT = "fix the file as its receipt says (or export it again), then drop it into the inbox again"

    def __init__(self, code: str, message_vi: str, message_en: str, hint: str = HINT) -> None:
        super().__init__(message_en, hint)
        self.code = code
        self.message_vi = message_vi
        self.message_en = message_en


@dataclass
class ParseContext:
    """What an adapter knows about the file it parses."""

    origin: str  # this node's id: the origin of every record made
    agency: str  # the inbox folder's name: the agency that dropped the file
    inbox: Path  # the agency's inbox folder; no path outside it may be opened
    # Stores an attachment's bytes as a content-addressed blob; returns its sha256.
    store_blob: Callable[[Path], str] = field(default=lambda path: "")
    sheet: str = ""  # the workbook sheet to read (`inbox.<agency>.sheet`); '' for the first


@runtime_checkable
class Adapter(Protocol):
    """An ingestion adapter. Instances are made once, with no arguments."""

    name: str  # its entry-point name, e.g. "vn-csv"
    version: str
    description: str
    kinds: frozenset[str]  # record kinds it produces: "indicator", "report", ...

    def claims(self, path: Path, head: bytes) -> bool:
        """Whether this adapter reads the file at `path`, judged by its name and first bytes (`head`,
        up to 4 KiB). Cheap and side-effect free; never raises."""
        ...

    def parse(self, path: Path, context: ParseContext) -> Iterator[Row]:
        """Yield one Row per record or refused row, streaming; raise FileRefused for an unreadable file."""
        ...


class SinkWriter(Protocol):
    """Writes one file's records inside its transaction."""

    def write(self, keyed: list[Keyed]) -> None: ...

    @property
    def counts(self) -> tuple[int, int, int]:
        """(imported, updated, unchanged) so far."""
        ...

    ledger: dict[str, object] | None


class Sink(Protocol):
    """Where the pipeline commits records; the node implements it over its store.

    `transaction()` is one database transaction: the file's records and its
    ledger entry (`writer.ledger`) commit together, or nothing does.
    """

    def transaction(self) -> AbstractContextManager[SinkWriter]: ...

    def ingested(self, sha256: str) -> dict[str, object] | None:
        """The ledger entry of a file content already committed, or None."""
        ...

    def definitions(self) -> Definitions: ...

    def record_refusal(self, ledger: dict[str, object]) -> None:
        """Keep the receipt of a file refused whole, for `status` (nothing else is stored)."""
        ...

    def store_blob(self, path: Path) -> str:
        """Keep an attachment as a content-addressed blob; return its sha256."""
        ...


@dataclass(frozen=True)
class Definitions:
    """What the province has sent down, for validating ingested records."""

    units: dict[str, str]  # unit code -> parent unit code ('' for the top)
    indicators: frozenset[str]
    report_types: frozenset[str]
    own_units: frozenset[str]  # the units this node answers for
    # Why a value of (indicator code, period) must be refused — a derived indicator, or a
    # period of the wrong type — as (code, Vietnamese, English), or None. None: no catalogue.
    check_value: Callable[[str, str], tuple[str, str, str] | None] | None = None
    # Only the province issues definitions (every tier refuses definitions it did not sign).
    may_define: bool = True

    def subtree(self) -> frozenset[str]:
        """This node's own units and every unit below them in the registry."""
        children: dict[str, list[str]] = {}
        for unit, parent in self.units.items():
            children.setdefault(parent, []).append(unit)
        seen: set[str] = set()
        stack = list(self.own_units)
        while stack:
            unit = stack.pop()
            if unit in seen:
                continue
            seen.add(unit)
            stack.extend(children.get(unit, []))
        return frozenset(seen)
