"""The activity report as a Word document an officer edits and signs (python-docx), and its PDF
rendering (LibreOffice headless).

Layout of Nghị định 30/2020/NĐ-CP, Phụ lục I: A4, margins top and bottom 20 mm, left 30 mm,
right 15 mm; Times New Roman (LibreOffice substitutes the metric-compatible Liberation Serif);
a borderless two-column header: the superior and the issuing body (bold, upper case), the
number `Số: …/BC-…`, beside the national motto `CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM` / `Độc lập
- Tự do - Hạnh phúc` and the place-date line (italic); the title centred in bold; the body in
13 pt, justified, first lines indented; `Nơi nhận:` (bold italic 12 pt, the list 11 pt) beside
the signature block (the signer's title in bold upper case, space to sign and seal, the name).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from docx import Document
from docx.enum.table import WD_TABLE_ALIGNMENT
from docx.enum.text import WD_ALIGN_PARAGRAPH
from docx.oxml import OxmlElement
from docx.oxml.ns import qn
from docx.shared import Cm, Mm, Pt

from .cli_common import fail
from .report_document import Letterhead, Table, body, date_line, title

FONT = "Times New Roman"
SOFFICE_TIMEOUT = 180  # seconds: the first start of LibreOffice makes its profile


def build(figures: dict[str, Any], head: Letterhead, day: dt.date) -> Any:
    """The document (a python-docx Document)."""
    doc = Document()
    section = doc.sections[0]
    section.page_width, section.page_height = Mm(210), Mm(297)
    section.top_margin, section.bottom_margin, section.left_margin, section.right_margin = Mm(20), Mm(20), Mm(30), Mm(15)
    normal = doc.styles["Normal"]
    normal.font.name, normal.font.size = FONT, Pt(13)
    normal.element.rPr.rFonts.set(qn("w:eastAsia"), FONT)
    normal.paragraph_format.space_after = Pt(0)
    doc.core_properties.title = " ".join(title(figures))
    doc.core_properties.author = head.issuer
    doc.core_properties.comments = f"Drafted by lienthong from node {figures['node']}, figures as of {figures['as_of']}"
    _letterhead(doc, head, day)
    for i, line in enumerate(title(figures)):
        _para(doc, line, bold=True, size=14 if i == 0 else 13, align=WD_ALIGN_PARAGRAPH.CENTER, before=12 if i == 0 else 0)
    _para(doc, "", size=6)
    for kind, value in body(figures):
        if kind == "heading":
            _para(doc, value, bold=True, before=6, after=3, indent=True).paragraph_format.keep_with_next = True
        elif kind == "para":
            _para(doc, value, align=WD_ALIGN_PARAGRAPH.JUSTIFY, indent=True, after=3)
        elif kind == "note":
            _para(doc, value, italic=True, indent=True, after=3)
        elif kind == "caption":
            _para(doc, value, italic=True, size=12, align=WD_ALIGN_PARAGRAPH.CENTER, before=3).paragraph_format.keep_with_next = True
        elif kind == "table":
            _table(doc, value)
    _closing(doc, head)
    return doc


def write_docx(figures: dict[str, Any], head: Letterhead, day: dt.date, out: Path) -> None:
    doc = build(figures, head, day)
    tmp = out.with_name(f".{out.name}.tmp")
    doc.save(str(tmp))
    os.replace(tmp, out)


def write_pdf(figures: dict[str, Any], head: Letterhead, day: dt.date, out: Path) -> None:
    """Render through LibreOffice: the .docx made here, converted by `soffice --headless`."""
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if soffice is None:
        fail(
            "a PDF is rendered by LibreOffice, and its `soffice` is not installed here",
            "install it (Debian: apt-get install --no-install-recommends libreoffice-writer-nogui fonts-liberation2), "
            "or draft --format docx and print it to PDF yourself",
        )
    with tempfile.TemporaryDirectory(prefix="lienthong-report-") as work:
        folder = Path(work)
        source = folder / "report.docx"
        build(figures, head, day).save(str(source))
        # Its own profile: LibreOffice refuses a second instance on a shared one (another user's running office).
        profile = (folder / "profile").as_uri()
        try:
            done = subprocess.run(
                [soffice, f"-env:UserInstallation={profile}", "--headless", "--convert-to", "pdf", "--outdir", str(folder), str(source)],
                capture_output=True,
                text=True,
                timeout=SOFFICE_TIMEOUT,
                check=False,
                env={**os.environ, "HOME": work},
            )
        except subprocess.TimeoutExpired:
            fail(
                f"LibreOffice did not finish the PDF within {SOFFICE_TIMEOUT} s",
                "try again; or draft --format docx and convert it yourself",
            )
        pdf = folder / "report.pdf"
        if done.returncode != 0 or not pdf.exists():
            why = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
            fail(f"LibreOffice could not render the PDF: {why[0]}", "draft --format docx and open it in LibreOffice or Word to see why")
        shutil.move(str(pdf), str(out))


# ---------------------------------------------------------------- parts


def _para(doc: Any, text: str, *, bold: bool = False, italic: bool = False, size: float = 13, align: Any = None,
          before: float = 0, after: float = 0, indent: bool = False) -> Any:  # fmt: skip
    p = doc.add_paragraph()
    _run(p, text, bold=bold, italic=italic, size=size)
    fmt = p.paragraph_format
    fmt.space_before, fmt.space_after = Pt(before), Pt(after)
    if indent:
        fmt.first_line_indent = Cm(1)
    if align is not None:
        p.alignment = align
    return p


def _run(p: Any, text: str, *, bold: bool = False, italic: bool = False, size: float = 13, underline: bool = False) -> Any:
    run = p.add_run(text)
    run.bold, run.italic, run.underline = bold, italic, underline
    run.font.size, run.font.name = Pt(size), FONT
    return run


def _cell_para(cell: Any, text: str, *, first: bool = False, **style: Any) -> Any:
    p = cell.paragraphs[0] if first else cell.add_paragraph()
    align = style.pop("align", WD_ALIGN_PARAGRAPH.CENTER)
    _run(p, text, **style)
    p.alignment = align
    return p


def _borderless(table: Any) -> None:
    borders = OxmlElement("w:tblBorders")
    for edge in ("top", "left", "bottom", "right", "insideH", "insideV"):
        element = OxmlElement(f"w:{edge}")
        element.set(qn("w:val"), "nil")
        borders.append(element)
    table._tbl.tblPr.append(borders)


def _letterhead(doc: Any, head: Letterhead, day: dt.date) -> None:
    table = doc.add_table(rows=1, cols=2)
    _borderless(table)
    _widths(table, [Cm(6.8), Cm(9.7)])
    left, right = table.rows[0].cells
    _cell_para(left, head.superior.upper(), first=True, size=12)
    _cell_para(left, head.issuer.upper(), bold=True, size=12)
    _cell_para(left, "―――――", size=8)
    _cell_para(left, f"Số: …/BC-{head.issuer_short}", size=13)
    _cell_para(right, "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", first=True, bold=True, size=12)
    _cell_para(right, "Độc lập - Tự do - Hạnh phúc", bold=True, size=13, underline=True)
    _cell_para(right, "", size=6)
    _cell_para(right, date_line(head.place, day), italic=True, size=13)


def _table(doc: Any, t: Table) -> None:
    table = doc.add_table(rows=1 + len(t.rows), cols=len(t.header))
    table.style = "Table Grid"
    table.alignment = WD_TABLE_ALIGNMENT.CENTER
    usable = 16.5  # cm between the margins
    widths = t.widths or [1.0] * len(t.header)
    for i, text in enumerate(t.header):
        _cell_para(table.rows[0].cells[i], text, first=True, bold=True, size=11)
    for r, row in enumerate(t.rows, start=1):
        total = t.total and r == len(t.rows)
        cells = table.rows[r].cells
        for i, text in enumerate(row):
            if total and 0 < i < t.text_columns:
                continue  # the total's label spans the text columns
            align = WD_ALIGN_PARAGRAPH.LEFT if i < t.text_columns else WD_ALIGN_PARAGRAPH.RIGHT
            _cell_para(cells[i], text, first=True, bold=total, size=11, align=align)
        if total and t.text_columns > 1:
            cells[0].merge(cells[t.text_columns - 1])
    _widths(table, [Cm(usable * w / sum(widths)) for w in widths])
    for cell in table.rows[0].cells:  # the caption stays with its table, the header row repeats on each page
        for p in cell.paragraphs:
            p.paragraph_format.keep_with_next = True
    header = table.rows[0]._tr.get_or_add_trPr()
    repeat = OxmlElement("w:tblHeader")
    repeat.set(qn("w:val"), "true")
    header.append(repeat)


def _widths(table: Any, widths: list[Any]) -> None:
    """Fixed column widths: in the grid (LibreOffice reads it) and on every cell (Word does)."""
    table.autofit = False
    for i, width in enumerate(widths):
        table.columns[i].width = width
        for cell in table.columns[i].cells:
            cell.width = width


def _closing(doc: Any, head: Letterhead) -> None:
    _para(doc, "", size=6)
    table = doc.add_table(rows=1, cols=2)
    _borderless(table)
    _widths(table, [Cm(8), Cm(8.5)])
    left, right = table.rows[0].cells
    _cell_para(left, "Nơi nhận:", first=True, bold=True, italic=True, size=12, align=WD_ALIGN_PARAGRAPH.LEFT)
    for i, recipient in enumerate(head.recipients):
        end = "." if i == len(head.recipients) - 1 else ";"
        _cell_para(left, f"- {recipient}{end}", size=11, align=WD_ALIGN_PARAGRAPH.LEFT)
    _cell_para(right, head.signer_title.upper(), first=True, bold=True, size=13)
    for _ in range(5):  # room to sign and seal
        _cell_para(right, "", size=13)
    _cell_para(right, head.signer, bold=True, size=13)
