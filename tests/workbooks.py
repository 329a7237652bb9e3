"""Workbooks made by tests, in the layouts Vietnamese offices use: openpyxl for .xlsx, and an
OpenDocument spreadsheet (.ods) written as the zip of XML LibreOffice writes (no library needed).
The legacy .xls is a checked-in fixture (testdata/workbooks/, made by the script beside it)."""

from __future__ import annotations

import datetime as dt
import zipfile
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import openpyxl

TITLE = [
    ["UBND XÃ THẠNH PHÚ", None, None, None, "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM"],
    [None, None, None, None, "Độc lập - Tự do - Hạnh phúc"],
    [],
    ["BIỂU TỔNG HỢP CHỈ TIÊU THÁNG 10 NĂM 2026"],
    ["Ngày lập biểu:", None, dt.date(2026, 11, 3)],
    [],
]


def write_xlsx(path: Path, sheets: dict[str, list[list[Any]]], merged: dict[str, list[str]] | None = None) -> Path:
    """One sheet per entry, rows as given (None: an empty cell); `merged`: ranges per sheet ("A1:C1")."""
    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
        for cells in (merged or {}).get(name, []):
            sheet.merge_cells(cells)
    book.save(path)
    return path


def _ods_cell(value: Any) -> str:
    if value is None or value == "":
        return "<table:table-cell/>"
    if isinstance(value, bool):
        return f'<table:table-cell office:value-type="boolean" office:boolean-value="{str(value).lower()}"/>'
    if isinstance(value, int | float):
        return f'<table:table-cell office:value-type="float" office:value="{value!r}"><text:p>{value}</text:p></table:table-cell>'
    if isinstance(value, dt.date):
        return f'<table:table-cell office:value-type="date" office:date-value="{value.isoformat()}"><text:p>{value:%d/%m/%Y}</text:p></table:table-cell>'
    return f'<table:table-cell office:value-type="string"><text:p>{escape(str(value))}</text:p></table:table-cell>'


def ods_content(sheets: dict[str, str]) -> str:
    """content.xml around each sheet's <table:table-row> elements (given as XML)."""
    tables = "".join(f'<table:table table:name="{escape(name)}">{rows}</table:table>' for name, rows in sheets.items())
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2">'
        f"<office:body><office:spreadsheet>{tables}</office:spreadsheet></office:body></office:document-content>"
    )


def write_ods_xml(path: Path, sheets: dict[str, str]) -> Path:
    """An .ods whose sheets hold the given row XML, zipped as LibreOffice zips it (mimetype first, stored)."""
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">'
        '<manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/>'
        '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
        "</manifest:manifest>"
    )
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/vnd.oasis.opendocument.spreadsheet", compress_type=zipfile.ZIP_STORED)
        z.writestr("META-INF/manifest.xml", manifest, compress_type=zipfile.ZIP_DEFLATED)
        z.writestr("content.xml", ods_content(sheets), compress_type=zipfile.ZIP_DEFLATED)
    return path


def write_ods(path: Path, sheets: dict[str, list[list[Any]]]) -> Path:
    return write_ods_xml(
        path,
        {
            name: "".join(
                f"<table:table-row>{''.join(_ods_cell(v) for v in row) or '<table:table-cell/>'}</table:table-row>" for row in rows
            )
            for name, rows in sheets.items()
        },
    )
