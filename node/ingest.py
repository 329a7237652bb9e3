"""Feeding canonical JSON Lines files into the store (`lienthong ingest`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lienthong.adapters import jsonl
from lienthong.sync.clock import HybridClock
from lienthong.sync.records import Keyed
from lienthong.sync.store import Store

# Records per transaction: bounded memory for any file size. Re-ingesting after a
# crash mid-file is safe: what was committed comes back 'unchanged'.
CHUNK = 10_000


@dataclass
class FileResult:
    imported: int = 0
    updated: int = 0
    unchanged: int = 0
    refused: list[jsonl.LineError] = field(default_factory=list)


def ingest_jsonl(store: Store, clock: HybridClock, path: Path) -> FileResult:
    """Store every valid line of `path`; collect the refused ones."""
    result = FileResult()
    chunk: list[Keyed] = []

    def flush() -> None:
        written = store.write_local(chunk, clock)
        result.imported += written.imported
        result.updated += written.updated
        result.unchanged += written.unchanged
        chunk.clear()

    for _, item in jsonl.parse(path, store.node_id):
        if isinstance(item, jsonl.LineError):
            result.refused.append(item)
            continue
        chunk.append(item)
        if len(chunk) >= CHUNK:
            flush()
    flush()
    return result
