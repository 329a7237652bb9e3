"""Makes chi-tieu-thang-10-2026.xls beside this script: a legacy Excel 97-2003 (BIFF8) workbook
in the Vietnamese report layout, for tests/test_workbooks.py. No maintained library writes .xls,
so the file is checked in; this script made it with xlwt 1.3.0 (in a throwaway venv:
`python -m venv /tmp/v && /tmp/v/bin/pip install xlwt==1.3.0 && /tmp/v/bin/python make-xls-fixture.py`).

What must come out (commune 86-28894): KTXH.NS.01 2026-10 12450.75 (a text cell `12.450,75`),
KTXH.DVC.01 2026-10 1283 (a number cell), KTXH.YT.01 2026-10-24 7 (the period a date cell);
row 10 is refused: its value `mười hai` is not a number (cell `'Biểu 01'!G10`).
"""

import datetime
from pathlib import Path

import xlwt

OUT = Path(__file__).resolve().parent / "chi-tieu-thang-10-2026.xls"
book = xlwt.Workbook(encoding="utf-8")
sheet = book.add_sheet("Biểu 01")
bold = xlwt.easyxf("font: bold on; align: horiz center")
date = xlwt.easyxf(num_format_str="DD/MM/YYYY")
sheet.write_merge(0, 0, 0, 2, "UBND XÃ BA TRI", bold)
sheet.write_merge(0, 0, 4, 7, "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", bold)
sheet.write_merge(2, 2, 0, 7, "BÁO CÁO CHỈ TIÊU THÁNG 10 NĂM 2026", bold)
sheet.write(3, 0, "Ngày lập biểu:")
sheet.write(3, 2, datetime.date(2026, 11, 2), date)
header = ["STT", "Mã chỉ tiêu", "Tên chỉ tiêu", "Kỳ báo cáo", "Mã đơn vị", "Tên đơn vị", "Giá trị", "Ghi chú"]
for col, text in enumerate(header):
    sheet.write(5, col, text, bold)
rows = [
    ("KTXH.NS.01", "Thu ngân sách", "Tháng 10/2026", "12.450,75"),
    ("KTXH.DVC.01", "Hồ sơ dịch vụ công", "Tháng 10/2026", 1283),
    ("KTXH.YT.01", "Ca bệnh sốt xuất huyết", datetime.date(2026, 10, 24), 7),
    ("KTXH.PA.01", "Phản ánh kiến nghị", "Tháng 10/2026", "mười hai"),
]
for i, (code, name, period, value) in enumerate(rows):
    r = 6 + i
    sheet.write(r, 0, i + 1)
    sheet.write(r, 1, code)
    sheet.write(r, 2, name)
    if isinstance(period, datetime.date):
        sheet.write(r, 3, period, date)
    else:
        sheet.write(r, 3, period)
    sheet.write(r, 4, "86-28894")
    sheet.write(r, 5, "Xã Ba Tri")
    sheet.write(r, 6, value)
sheet.write_merge(12, 12, 4, 7, "NGƯỜI LẬP BIỂU", bold)
book.save(str(OUT))
print("written", OUT.name)
