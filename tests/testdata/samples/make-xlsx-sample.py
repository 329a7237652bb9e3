"""Makes chi-tieu-ktxh-thang-9-2026.xlsx beside this script: a commune's quarterly statistics
workbook in the layout Vietnamese offices use (national motto and title rows, merged cells, an
ordinal column, numbers as numeric cells, a total computed by a formula), written as Excel writes
it (shared strings, styles). Run with a Python that has xlsxwriter and openpyxl."""

import datetime
from pathlib import Path

import xlsxwriter
from openpyxl import load_workbook

OUT = Path(__file__).resolve().parent / "chi-tieu-ktxh-thang-9-2026.xlsx"
wb = xlsxwriter.Workbook(str(OUT))
ws = wb.add_worksheet("Quý III")
bold_c = wb.add_format({"bold": True, "align": "center"})
title = wb.add_format({"bold": True, "font_size": 13, "align": "center"})
head = wb.add_format({"bold": True, "border": 1, "align": "center", "valign": "vcenter", "text_wrap": True})
cell = wb.add_format({"border": 1})
num = wb.add_format({"border": 1, "num_format": "#,##0.00"})
whole = wb.add_format({"border": 1, "num_format": "#,##0"})
date = wb.add_format({"num_format": "dd/mm/yyyy"})

ws.merge_range("A1:C1", "UBND XÃ THẠNH PHÚ", bold_c)
ws.merge_range("E1:I1", "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", bold_c)
ws.merge_range("E2:I2", "Độc lập - Tự do - Hạnh phúc", bold_c)
ws.merge_range("A4:I4", "BIỂU TỔNG HỢP CHỈ TIÊU KINH TẾ - XÃ HỘI THÁNG 9 VÀ QUÝ III NĂM 2026", title)
ws.write_string("A5", "Ngày lập biểu:")
ws.write_datetime("C5", datetime.datetime(2026, 10, 3), date)
# row 6 blank; header on row 7
header = ["STT", "Mã chỉ tiêu", "Tên chỉ tiêu", "Đơn vị tính", "Kỳ báo cáo", "Mã đơn vị", "Tên đơn vị", "Giá trị", "Ghi chú"]
for col, h in enumerate(header):
    ws.write_string(6, col, h, head)
rows = [
    ("KTXH.NS.01", "Thu ngân sách nhà nước trên địa bàn", "triệu đồng", "Tháng 9/2026", 10877.4),
    ("KTXH.DVC.01", "Số hồ sơ dịch vụ công trực tuyến toàn trình", "hồ sơ", "Tháng 9/2026", 904),
    ("KTXH.PA.01", "Số phản ánh kiến nghị tiếp nhận", "lượt", "Tháng 9/2026", 43),
    ("KTXH.GD.01", "Số học sinh bỏ học", "học sinh", "Quý III/2026", 2),
]
for i, (code, name, unit, period, value) in enumerate(rows):
    r = 7 + i
    ws.write_number(r, 0, i + 1, cell)
    ws.write_string(r, 1, code, cell)
    ws.write_string(r, 2, name, cell)
    ws.write_string(r, 3, unit, cell)
    ws.write_string(r, 4, period, cell)
    ws.write_string(r, 5, "86-29077", cell)
    ws.write_string(r, 6, "Xã Thạnh Phú", cell)
    ws.write_number(r, 7, value, num if value != int(value) else whole)
    ws.write_blank(r, 8, None, cell)
# a derived figure kept as a formula with its cached value, as Excel saves it
r = 7 + len(rows)
ws.write_number(r, 0, len(rows) + 1, cell)
ws.write_string(r, 1, "KTXH.PA.02", cell)
ws.write_string(r, 2, "Số phản ánh kiến nghị xử lý đúng hạn", cell)
ws.write_string(r, 3, "lượt", cell)
ws.write_string(r, 4, "Tháng 9/2026", cell)
ws.write_string(r, 5, "86-29077", cell)
ws.write_string(r, 6, "Xã Thạnh Phú", cell)
ws.write_formula(r, 7, "=H10-5", whole, 38)
ws.write_string(r, 8, "Bằng số tiếp nhận trừ 5 phản ánh quá hạn", cell)
ws.merge_range(r + 2, 5, r + 2, 8, "NGƯỜI LẬP BIỂU", bold_c)
ws.set_column("C:C", 42)
ws.set_column("B:B", 13)
ws.set_column("D:G", 13)
wb.close()

check = load_workbook(OUT).active
assert check["A7"].value == "STT" and check["B7"].value == "Mã chỉ tiêu"
assert [check.cell(row=i, column=8).value for i in range(8, 12)] == [10877.4, 904, 43, 2]
assert check["H12"].value == "=H10-5"
print("written", OUT.name)
