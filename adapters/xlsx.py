"""Indicator values from Excel and OpenDocument workbooks (`xlsx`: .xlsx, .xlsm, .xls, .ods).

The same indicator table as the Vietnamese CSV adapter (indicator_table.py), kept in a
workbook the way offices make it:

- The sheet: the one named by the inbox's `sheet` setting, else the first visible worksheet.
- The header row is found below title rows (the unit's name, the national motto, a title,
  a date line: up to `MAX_PREAMBLE` rows). A header over two rows (cells merged down, a
  group like "Số liệu" over "Giá trị | Ghi chú") is read as one, and rows of column
  numbers under it ("(1) (2) (3)", "A B C") are skipped, and so are rows with no
  indicator code, period or value (blank rows, the signatures under the table). An `STT` ordinal column, the
  names and the unit of measure are read but not stored, as in CSV.
- Cells keep their types: a number cell is that number (no locale guessing); a value
  typed as text is read as in CSV (`12.450,75` under a Vietnamese header). A date cell
  (an Excel serial with a date format) in the period column is that day
  (`2026-10-24`); a whole number in a code column is its digits (`29077`). A formula is
  read by the value Excel saved with it; nothing is recalculated.
- A refused row's receipt entry names its cell, as Excel does: `Sheet1!C12`,
  `'Quý III'!H12` (the `cell` field; the sentence starts with it).
- Text typed in the legacy TCVN3 or VNI encodings ("M· chØ tiªu") is refused with a hint
  to convert it to Unicode (legacy_text.py).

Safety: a workbook is a zip of XML (or a BIFF/OLE file) and can claim far more than it
holds. The zip's directory is checked first (entries, declared unpacked size), then the
sheet is read in a child process under memory and CPU limits (workbook_reader.py); a zip
bomb, a huge dimension claim, a password or a broken file ends that process and the file
is refused (`workbook_too_large`, `broken_workbook`), never the node. Rows come back in
batches through a pipe, so the node holds a batch, not the sheet.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import os
import pickle
import re
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from . import messages
from .base import FileRefused, ParseContext, Row
from .held import held_fd
from .indicator_table import (
    EXPECTED_HEADER,
    VIETNAMESE_VALUE_HEADERS,
    build_row,
    header_columns,
    known_header,
    looks_like_header,
    missing_columns,
    value_parser,
)
from .legacy_text import cell_bytes, legacy_encoding
from .parsing import fold_header, legacy_refusal

SUFFIXES = (".xlsx", ".xlsm", ".xls", ".ods")
ZIPPED = (".xlsx", ".xlsm", ".ods")
MAX_PREAMBLE = 30  # title rows looked through for the header
MAX_ENTRIES = 10_000  # files inside a workbook's zip
MAX_UNPACKED = 512 * 1024 * 1024  # their declared size, unpacked
FIELDS = ("indicator", "period", "unit", "value", "comment", "disaggregation", "agency")
_ORDINAL = re.compile(r"\(?\s*(?:\d{1,2}|[A-Za-z])\s*\)?(?:\s*=\s*[\d\s+*/()-]+)?")
_BARE_SHEET = re.compile(r"[^\W\d]\w*")


def column_letters(index: int) -> str:
    """0 -> 'A', 25 -> 'Z', 26 -> 'AA'."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def sheet_ref(name: str) -> str:
    """A sheet's name as a cell reference writes it: `Sheet1`, `'Quý III'`."""
    return name if _BARE_SHEET.fullmatch(name) else "'" + name.replace("'", "''") + "'"


def _number_text(value: float | int) -> str:
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return format(Decimal(repr(value)), "f")


def cell_text(value: Any, period: bool = False) -> str:
    """A cell as the text the table's row builder reads."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return _number_text(value)
    if isinstance(value, dt.datetime):
        if period and value.time() == dt.time(0):
            return value.strftime("%d/%m/%Y")
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.strftime("%d/%m/%Y") if period else value.isoformat()
    return "" if value is None else str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ---------------------------------------------------------------- the adapter


class WorkbookAdapter:
    """Indicator values from Excel (.xlsx, .xlsm, .xls) and OpenDocument (.ods) workbooks."""

    name = "xlsx"
    version = "1.0"
    description = "Chỉ tiêu từ bảng tính Excel/OpenDocument (.xlsx, .xlsm, .xls, .ods; dòng tiêu đề dưới phần tên biểu) / indicator values from Excel and OpenDocument workbooks"
    kinds = frozenset({"indicator"})

    def claims(self, path: Path, head: bytes) -> bool:
        # Every workbook is claimed, a broken one too: its receipt then says so in plain words.
        return path.suffix.lower() in SUFFIXES

    def parse(self, path: Path, context: ParseContext) -> Iterator[Row]:
        _check_container(path)
        with _Reader(path, context.sheet) as reader:
            yield from _Table(path, reader, context).rows()


def _broken(path: Path, detail: str) -> FileRefused:
    return messages.refused("broken_workbook", file=path.name, detail=detail)


def _too_large(path: Path, detail_vi: str, detail_en: str) -> FileRefused:
    return messages.refused("workbook_too_large", file=path.name, detail_vi=detail_vi, detail_en=detail_en)


def _check_container(path: Path) -> None:
    """Refuse an empty file, and a zip whose directory claims too much, before any reading."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise messages.refused("unreadable", file=path.name, detail=exc.strerror or type(exc).__name__) from None
    if size == 0:
        raise messages.refused("empty", file=path.name)
    if path.suffix.lower() not in ZIPPED:
        return
    try:
        with path.open("rb") as f, zipfile.ZipFile(f) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise _broken(path, f"zip: {exc}") from None
    if len(entries) > MAX_ENTRIES:
        raise _too_large(path, f"có {len(entries)} tệp bên trong", f"it holds {len(entries)} files")
    unpacked = sum(e.file_size for e in entries)
    if unpacked > MAX_UNPACKED:
        raise _too_large(path, f"giải nén ra {unpacked // (1 << 20)} MB", f"it unpacks to {unpacked // (1 << 20)} MB")


class _Reader:
    """The child process reading one sheet (workbook_reader.py), and its messages."""

    def __init__(self, path: Path, sheet: str) -> None:
        self.path = path
        self.sheet = sheet
        self._own_fd: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr = b""

    def __enter__(self) -> _Reader:
        fd = held_fd(self.path)
        if fd is None:
            try:
                fd = self._own_fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as exc:
                raise messages.refused("unreadable", file=self.path.name, detail=exc.strerror or type(exc).__name__) from None
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-m", "lienthong.adapters.workbook_reader", self.path.suffix.lower(), self.sheet],
            stdin=fd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._err_thread = threading.Thread(target=self._drain, args=(self._proc.stderr,), daemon=True)
        self._err_thread.start()
        return self

    def _drain(self, stream: IO[bytes]) -> None:
        while chunk := stream.read(4096):
            self._stderr = (self._stderr + chunk)[-2000:]

    def __exit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()
            self._err_thread.join(5)
            if proc.stderr is not None:
                proc.stderr.close()
        if self._own_fd is not None:
            os.close(self._own_fd)

    def messages(self) -> Iterator[tuple[Any, ...]]:
        assert self._proc is not None and self._proc.stdout is not None
        stream = self._proc.stdout
        while True:
            try:
                message = pickle.load(stream)  # one pickle per message: each has its own memo
            except (EOFError, pickle.UnpicklingError):
                raise self._died() from None
            if message[0] == "error":
                if message[1] == "no_sheet":
                    raise messages.refused("no_sheet", file=self.path.name, sheet=self.sheet, sheets=message[2])
                if message[1] == "too_large":
                    raise _too_large(
                        self.path, f"bảng tính khai báo quá nhiều ô ({message[2]})", f"it claims too many cells ({message[2]})"
                    )
                raise _broken(self.path, message[2])
            yield message
            if message[0] == "end":
                return

    def _died(self) -> FileRefused:
        """The child ended without "end": a limit stopped it (a bomb, a huge sheet) or it crashed."""
        assert self._proc is not None
        code = self._proc.wait()
        self._err_thread.join(5)
        if b"memory allocation" in self._stderr or b"MemoryError" in self._stderr or code in (-6, -9, -24, -11):
            return _too_large(
                self.path,
                "bảng tính cần nhiều bộ nhớ hoặc thời gian hơn giới hạn (có thể tệp khai báo vùng ô quá lớn)",
                "reading it needs more memory or time than allowed (it may claim a huge range of cells)",
            )
        tail = self._stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit status {code}"]
        return _broken(self.path, tail[0][:200])

    def rows(self) -> Iterator[tuple[str, int, int, list[Any]]]:
        """(sheet name, 1-based row number, first column index, cells) for each row sent."""
        sheet, number, first_column = "", 0, 0
        for message in self.messages():
            if message[0] == "sheet":
                sheet, number, first_column = message[1], message[2], message[3]
            elif message[0] == "rows":
                for cells in message[1]:
                    number += 1
                    yield sheet, number, first_column, cells


class _Table:
    """The header found among the first rows, then one Row per data row."""

    def __init__(self, path: Path, reader: _Reader, context: ParseContext) -> None:
        self.path = path
        self.reader = reader
        self.context = context

    def rows(self) -> Iterator[Row]:
        source = self.reader.rows()
        head: list[tuple[str, int, int, list[Any]]] = []
        for item in source:
            head.append(item)
            if len(head) >= MAX_PREAMBLE + 3:
                break
        found = _find_header([cells for _, _, _, cells in head])
        if found is None:
            raise self._without_header(head)
        at, used, header = found
        columns = header_columns(header)
        missing_columns(self.path.name, columns)
        sheet, _, first_column, _ = head[at]
        prefix = sheet_ref(sheet) + "!"
        where = {field: prefix + column_letters(first_column + index) for field, index in columns.items()}
        names = {field: header[index].strip() for field, index in columns.items()}
        vietnamese = fold_header(header[columns["value"]]) in VIETNAMESE_VALUE_HEADERS
        parse_number, example = value_parser(vietnamese)
        keys = [columns[field] for field in ("indicator", "period", "value")]
        wanted = [(field, columns[field]) for field in FIELDS if field in columns]
        value_at = columns["value"]
        for _, line, _, cells in itertools.chain(head[at + used :], source):  # streams: never the whole sheet
            width = len(cells)
            if not any(index < width and cells[index] != "" and cell_text(cells[index]) for index in keys):
                continue  # a blank row, or a footer ("NGƯỜI LẬP BIỂU", a signature) under the table
            fields = dict.fromkeys(FIELDS, "")
            for field, index in wanted:
                if index < width:
                    raw = cells[index]
                    fields[field] = raw.strip() if type(raw) is str else cell_text(raw, period=field == "period")
            numeric = value_at < width and _is_number(cells[value_at])
            yield self._row(line, fields, names, where, _as_is if numeric else parse_number, example)

    def _row(self, line: int, fields: dict[str, Any], names: dict[str, str], where: dict[str, str], parse_value: Any, example: str) -> Row:
        row = build_row(line, fields, names, parse_value, example, self.context)
        if row.error is not None:
            cell = where.get(row.error.field, "")
            error = dataclasses.replace(row.error, cell=cell + str(line) if cell else "")
            return Row(line, error=error, cells=where)
        return Row(line, record=row.record, cells=where)

    def _without_header(self, head: list[tuple[str, int, int, list[Any]]]) -> FileRefused:
        """Why no header was found: an empty sheet, a header typed in TCVN3/VNI, or none at all."""
        if not any(cell_text(c) for _, _, _, cells in head for c in cells):
            return messages.refused("empty", file=self.path.name)
        for _, _, _, cells in head:
            raw = b" ".join(cell_bytes(c) for c in cells if isinstance(c, str))
            if legacy_encoding(raw):
                return legacy_refusal(self.path.name, raw)
        return messages.refused("no_header", file=self.path.name, expected=EXPECTED_HEADER.replace(";", " | "))


def _as_is(text: str) -> str:
    return text  # a number cell's value, already canonical digits


def _texts(cells: list[Any]) -> list[str]:
    return [cell if isinstance(cell, str) else "" for cell in cells]


def _continues_header(cells: list[Any]) -> bool:
    """A row under the header holding more header words or column numbers, and nothing else."""
    texts = [cell_text(c) for c in cells]
    filled = [t for t in texts if t]
    return bool(filled) and all(known_header(t) or _ORDINAL.fullmatch(t) for t in filled)


def _find_header(rows: list[list[Any]]) -> tuple[int, int, list[str]] | None:
    """(index of the header row, rows it and its continuation take, the header's cells)."""
    for at in range(min(MAX_PREAMBLE, len(rows))):
        header = _texts(rows[at])
        used = 1
        if not looks_like_header(header_columns(header)):
            if at + 1 >= len(rows):
                continue
            below = _texts(rows[at + 1])
            width = max(len(header), len(below))
            header = [
                a if known_header(a) else b
                for a, b in zip(header + [""] * (width - len(header)), below + [""] * (width - len(below)), strict=True)
            ]
            if not looks_like_header(header_columns(header)):
                continue
            used = 2
        while at + used < len(rows) and used < 5 and _continues_header(rows[at + used]):
            below = _texts(rows[at + used])
            for index, text in enumerate(below):
                if known_header(text) and (index >= len(header) or not known_header(header[index])):
                    header = header + [""] * (index + 1 - len(header))
                    header[index] = text
            used += 1
        return at, used, header
    return None
