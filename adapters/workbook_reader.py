"""The process that reads a workbook for the `xlsx` adapter, so that no workbook can hurt the node.

A spreadsheet library keeps a sheet's cells as one dense grid: a two-cell workbook that
claims cells at A1 and XFD1048576 asks calamine for 512 GB, and a failed allocation in
Rust aborts the whole process. So the workbook is read here, in a child process under
hard limits (address space `MEMORY_BYTES`, CPU `CPU_SECONDS`): a bomb, a huge dimension
claim or a broken file ends this process, never the node, and xlsx.py refuses the file.

    python -m lienthong.adapters.workbook_reader SUFFIX SHEET  < workbook   (stdin: the file, seekable)

SUFFIX (.xlsx, .xlsm, .xls, .ods) says the format, as the file's name does; SHEET is a sheet
name, or empty for the first visible worksheet. Output on stdout is a
pickle stream of tuples made only of str, int, float, bool, date, datetime, time and
timedelta values:

    ("sheet", name, first_row, first_column)    0-based position of the first row and column sent
    ("rows", [[cell, ...], ...])                 up to BATCH rows, in order, from the first row
    ("end",)
    ("error", code, detail)                      code: no_sheet (detail: the sheet names) | too_large | broken

Exit status 0 after "end" or "error"; anything else (killed by a limit, aborted) means the
workbook needs more than the limits allow.
"""

from __future__ import annotations

import os
import pickle
import resource
import sys
import tempfile

MEMORY_BYTES = 1 << 30
CPU_SECONDS = 60
BATCH = 2_000


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


SUFFIXES = (".xlsx", ".xlsm", ".xls", ".ods")


def main(suffix: str, sheet_name: str) -> int:
    _limit()
    out = sys.stdout.buffer

    def send(*message: object) -> None:
        pickle.dump(message, out, protocol=pickle.HIGHEST_PROTOCOL)

    import python_calamine as calamine  # after the limits: its allocations count

    try:
        with tempfile.TemporaryDirectory(prefix="lienthong-workbook-") as folder:
            # calamine knows the format by the name's suffix: a link named like the file, to stdin.
            name = os.path.join(folder, "workbook" + (suffix if suffix in SUFFIXES else ""))
            os.symlink("/proc/self/fd/0", name)
            workbook = calamine.CalamineWorkbook.from_path(name)
        worksheets = [m for m in workbook.sheets_metadata if m.typ == calamine.SheetTypeEnum.WorkSheet]
        if sheet_name:
            chosen = next((m.name for m in workbook.sheets_metadata if m.name == sheet_name), None)
        else:
            visible = [m for m in worksheets if m.visible == calamine.SheetVisibleEnum.Visible]
            chosen = (visible or worksheets)[0].name if worksheets else None
        if chosen is None:
            send("error", "no_sheet", ", ".join(workbook.sheet_names))
            return 0
        # The whole grid from A1: iter_rows() starts its rows at row 1 but its columns at the first
        # used one, so a table that does not start in column A would be misnamed.
        rows = workbook.get_sheet_by_name(chosen).to_python(skip_empty_area=False)
        send("sheet", chosen, 0, 0)
        for start in range(0, len(rows), BATCH):
            send("rows", rows[start : start + BATCH])
        send("end")
    except MemoryError:
        raise
    except Exception as exc:  # calamine's errors (zip, XML, BIFF, password) and any other: the file is broken
        detail = f"{type(exc).__name__}: {exc}"[:300]
        send("error", "too_large" if "limit exceeded" in detail.lower() else "broken", detail)
    out.flush()
    return 0


if __name__ == "__main__":
    suffix, sheet = [*sys.argv[1:], "", ""][:2]
    sys.exit(main(suffix, sheet))
