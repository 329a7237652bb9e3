"""The activity report's text: the figures (sync/activity.py) laid out as a Vietnamese
administrative report (Nghị định 30/2020/NĐ-CP, Phụ lục I), as neutral blocks that the .docx
(node/report_docx.py) and the Markdown renderings share, so every format prints the same words
and numbers.

Numbers are written the Vietnamese way: `.` between thousands, `,` before decimals (1.234,5);
a figure that does not exist (a rate with nothing expected) is `-`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

LEVEL_VI = {"province": "Cấp tỉnh", "commune": "Cấp xã", "district": "Cấp huyện", "agency": "Sở, ngành"}
STATUS_VI = {"late": "trễ hạn", "missing": "chưa gửi"}
NO_DATA = "-"


@dataclass(frozen=True)
class Letterhead:
    """What the officer's unit is and who signs: the parts of the layout the data does not give."""

    superior: str  # the issuing body's superior, e.g. "UBND TỈNH VĨNH LONG"
    issuer: str  # the issuing body, e.g. "TRUNG TÂM GIÁM SÁT, ĐIỀU HÀNH ĐÔ THỊ THÔNG MINH"
    issuer_short: str  # for the number: Số: …/BC-<issuer_short>
    place: str  # the place in the date line, e.g. "Vĩnh Long"
    signer_title: str = "GIÁM ĐỐC"
    signer: str = ""
    recipients: tuple[str, ...] = (
        "UBND tỉnh (để báo cáo)",
        "Sở Khoa học và Công nghệ",
        "Các sở, ban, ngành",
        "UBND các xã, phường",
        "Lưu: VT",
    )


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    widths: list[float] = field(default_factory=list)  # relative column widths
    total: bool = False  # the last row is a total (bold)
    text_columns: int = 2  # the first columns hold text (left-aligned); the others numbers (right-aligned)


Block = tuple[str, Any]  # ("heading", str) | ("para", str) | ("table", Table) | ("note", str)


def num(value: Any) -> str:
    """1234 -> 1.234; 12450.75 -> 12.450,75; None -> -."""
    if value is None:
        return NO_DATA
    if isinstance(value, bool):
        return str(int(value))
    text = f"{value:,}"
    if isinstance(value, float) and text.endswith(".0"):
        text = text[:-2]
    return text.replace(",", "\0").replace(".", ",").replace("\0", ".")


def pct(value: Any) -> str:
    return NO_DATA if value is None else f"{num(value)}%"


def signed(value: Any) -> str:
    return NO_DATA if value is None else ("+" if value > 0 else "") + num(value)


def period_text(period: str) -> str:
    """2026-10 -> tháng 10 năm 2026; 2026Q4 -> quý IV năm 2026."""
    if "Q" in period:
        return f"quý {('I', 'II', 'III', 'IV')[int(period[5]) - 1]} năm {period[:4]}"
    return f"tháng {int(period[5:7])} năm {period[:4]}"


def date_line(place: str, day: dt.date) -> str:
    """NĐ 30/2020: a day below 10, and the months 1 and 2, are written with a leading 0."""
    month = f"{day.month:02d}" if day.month <= 2 else str(day.month)
    return f"{place}, ngày {day.day:02d} tháng {month} năm {day.year}"


def title(figures: dict[str, Any]) -> list[str]:
    where = f" ({figures['unit_name'] or figures['unit']})" if figures["unit"] else ""
    return ["BÁO CÁO", f"Kết quả hoạt động của Trung tâm IOC {period_text(figures['period'])}{where}"]


def body(f: dict[str, Any]) -> list[Block]:
    """The sections, in order."""
    out: list[Block] = [
        (
            "para",
            f"Trung tâm báo cáo kết quả hoạt động {period_text(f['period'])} (từ ngày {_d(f['from'])} đến ngày {_d(f['to'])}), "
            f"số liệu tổng hợp từ hệ thống liên thông dữ liệu (nút {f['node']}) tính đến {_at(f['as_of'])}, như sau:",
        )
    ]
    out += _feedback(f["feedback"])
    out += _completeness(f["completeness"], f["period"])
    out += _indicators(f["indicators"])
    out += _refused(f["refused"])
    out += _security(f["security"])
    out += _satisfaction(f["satisfaction"])
    out += [
        ("heading", "VII. ĐỀ XUẤT, KIẾN NGHỊ"),
        ("note", "(Cán bộ soạn thảo bổ sung nhận xét, đánh giá và đề xuất trước khi trình ký.)"),
    ]
    return out


def _d(iso: str) -> str:
    day = dt.date.fromisoformat(iso)
    return f"{day.day:02d}/{day.month:02d}/{day.year}"


def _at(iso: str) -> str:
    when = dt.datetime.fromisoformat(iso)
    return f"{when:%H:%M} ngày {when.day:02d}/{when.month:02d}/{when.year}"


FEEDBACK_HEADER = ["Tiếp nhận", "Đã xử lý", "Đúng hạn", "Trễ hạn", "Đang xử lý", "Quá hạn"]
FEEDBACK_KEYS = ("received", "handled", "on_time", "late", "open", "overdue")


def _feedback(fb: dict[str, Any]) -> list[Block]:
    t = fb["total"]
    out: list[Block] = [
        ("heading", "I. TIẾP NHẬN, XỬ LÝ PHẢN ÁNH, KIẾN NGHỊ CỦA NGƯỜI DÂN"),
        (
            "para",
            f"Trong kỳ tiếp nhận {num(t['received'])} phản ánh, kiến nghị; đã xử lý {num(t['handled'])} "
            f"({num(t['on_time'])} đúng hạn, {num(t['late'])} trễ hạn; tỷ lệ đúng hạn {pct(t['on_time_pct'])}); "
            f"còn {num(t['open'])} đang xử lý, trong đó {num(t['overdue'])} quá hạn.",
        ),
    ]
    if not t["received"]:
        return out
    rows = [[r["category"] or NO_DATA, r["category_name"], *(num(r[k]) for k in FEEDBACK_KEYS)] for r in fb["categories"]]
    rows.append(["Tổng cộng", "", *(num(t[k]) for k in FEEDBACK_KEYS)])
    out += [
        ("caption", "Bảng 1. Phản ánh, kiến nghị theo lĩnh vực"),
        ("table", Table(["Mã", "Lĩnh vực", *FEEDBACK_HEADER], rows, [1.2, 2.6, 1, 1, 1, 1, 1.1, 1], total=True)),
    ]
    rows = [[r["unit"], r["unit_name"], *(num(r[k]) for k in FEEDBACK_KEYS)] for r in fb["units"]]
    rows.append(["Tổng cộng", "", *(num(t[k]) for k in FEEDBACK_KEYS)])
    out += [
        ("caption", "Bảng 2. Phản ánh, kiến nghị theo đơn vị xử lý"),
        ("table", Table(["Mã đơn vị", "Đơn vị", *FEEDBACK_HEADER], rows, [1.2, 2.6, 1, 1, 1, 1, 1.1, 1], total=True)),
    ]
    return out


def _completeness(c: dict[str, Any], period: str) -> list[Block]:
    out: list[Block] = [("heading", "II. TÌNH HÌNH GỬI BÁO CÁO ĐỊNH KỲ CỦA CÁC ĐƠN VỊ")]
    if not c["levels"]:
        return [*out, ("para", f"Không có đơn vị nào phải gửi báo cáo định kỳ {period_text(period)} theo lịch báo cáo hiện hành.")]
    rows = [
        [
            LEVEL_VI.get(r["level"], r["level"]),
            num(r["expected"]),
            num(r["submitted"]),
            num(r["on_time"]),
            num(r["late"]),
            num(r["missing"]),
            pct(r["completeness"]),
            pct(r["timeliness"]),
        ]
        for r in c["levels"]
    ]
    header = ["Cấp", "Phải gửi", "Đã gửi", "Đúng hạn", "Trễ hạn", "Chưa gửi", "Tỷ lệ đầy đủ", "Tỷ lệ đúng hạn"]
    out += [
        ("caption", "Bảng 3. Tỷ lệ đầy đủ và đúng hạn theo cấp"),
        ("table", Table(header, rows, [1.6, 1, 1, 1, 1, 1, 1.2, 1.2], text_columns=1)),
    ]
    for key, words in (("late", "Đơn vị gửi báo cáo trễ hạn"), ("missing", "Đơn vị chưa gửi báo cáo")):
        named = c[key]
        if not named:
            out.append(("para", f"{words}: không có."))
            continue
        items = "; ".join(f"{r['unit_name'] or r['unit']} ({r['unit']}, {r['report_type']}, hạn {_d(r['due'])})" for r in named)
        out.append(("para", f"{words} ({num(len(named))}): {items}."))
    return out


def _indicators(ind: dict[str, Any]) -> list[Block]:
    out: list[Block] = [("heading", "III. MỘT SỐ CHỈ TIÊU CHỦ YẾU")]
    if not ind["rows"]:
        return [*out, ("para", "Chưa có số liệu chỉ tiêu trong kỳ.")]
    rows = [
        [r["indicator"], r["name"], r["measure"], num(r["value"]), num(r["previous"]), signed(r["change"]), pct(r["change_pct"])]
        for r in ind["rows"]
    ]
    header = ["Mã", "Chỉ tiêu", "Đơn vị tính", "Kỳ này", f"Kỳ trước ({ind['previous_period']})", "Tăng/giảm", "Tỷ lệ"]
    out += [
        ("caption", "Bảng 4. Chỉ tiêu chủ yếu so với kỳ trước"),
        ("table", Table(header, rows, [1.7, 2.6, 1.2, 1.2, 1.3, 1.1, 0.9], text_columns=3)),
    ]
    if ind["omitted"]:
        out.append(("note", f"(Còn {num(ind['omitted'])} chỉ tiêu khác: xem bản số liệu JSON hoặc lienthong query.)"))
    return out


def _refused(r: dict[str, Any]) -> list[Block]:
    out: list[Block] = [
        ("heading", "IV. DỮ LIỆU BỊ TỪ CHỐI"),
        (
            "para",
            f"Trong kỳ nhận {num(r['files'])} tệp dữ liệu từ các cơ quan: {num(r['files_refused'])} tệp bị từ chối toàn bộ, "
            f"{num(r['rows_refused'])} dòng bị từ chối; {num(r['records_refused_from_children'])} bản ghi từ nút cấp dưới bị từ chối "
            f"(cách ly); {num(r['records_refused_by_parent'])} bản ghi của đơn vị bị cấp trên từ chối.",
        ),
    ]
    if r["agencies"]:
        rows = [[a["agency"] or NO_DATA, num(a["files"]), num(a["files_refused"]), num(a["rows_refused"])] for a in r["agencies"]]
        out += [("table", Table(["Cơ quan", "Tệp nhận", "Tệp bị từ chối", "Dòng bị từ chối"], rows, [2, 1, 1, 1], text_columns=1))]
    if r["children"]:
        rows = [[c["child"], c["code"], num(c["records"])] for c in r["children"]]
        out += [("table", Table(["Nút cấp dưới", "Lý do", "Bản ghi"], rows, [2, 2, 1]))]
    return out


def _security(s: dict[str, Any]) -> list[Block]:
    out: list[Block] = [
        ("heading", "V. AN TOÀN THÔNG TIN"),
        ("para", f"Nhật ký kiểm toán ghi {num(s['entries'])} sự kiện trong kỳ."),
    ]
    if s["actions"]:
        rows = [[a["action"], num(a["entries"]), num(a["events"])] for a in s["actions"]]
        out.append(("table", Table(["Loại sự kiện", "Mục nhật ký", "Số lần"], rows, [3, 1, 1], text_columns=1)))
    if s["chains_broken"]:
        nodes = ", ".join(sorted({str(p.get("node", "")) for p in s["chains_broken"]}))
        out.append(("para", f"Nhật ký kiểm toán của nút {nodes} có dấu hiệu bị sửa đổi: cần kiểm tra (lienthong audit events)."))
    return out


SAT_HEADER = ["Phiếu (phản ánh)", "Điểm TB", "Phiếu (khảo sát)", "Điểm TB", "Hài lòng", "Tỷ lệ hài lòng"]


def _sat_cells(g: dict[str, Any]) -> list[str]:
    fb, sv, both = g["feedback"], g["survey"], g["all"]
    return [
        num(fb["responses"]),
        num(fb["average"]),
        num(sv["responses"]),
        num(sv["average"]),
        num(both["satisfied"]),
        pct(both["satisfied_pct"]),
    ]


def _satisfaction(s: dict[str, Any]) -> list[Block]:
    t = s["total"]["all"]
    out: list[Block] = [
        ("heading", "VI. MỨC ĐỘ HÀI LÒNG CỦA NGƯỜI DÂN"),
        (
            "para",
            f"Tổng số {num(t['responses'])} lượt đánh giá (thang 1-5; từ đánh giá phản ánh: {num(s['total']['feedback']['responses'])}, "
            f"từ khảo sát: {num(s['total']['survey']['responses'])}); điểm trung bình {num(t['average'])}; "
            f"hài lòng (mức {s['satisfied_from']}-5): {num(t['satisfied'])} lượt, tỷ lệ {pct(t['satisfied_pct'])}.",
        ),
    ]
    if not t["responses"]:
        return out
    rows = [[u["unit"], u["unit_name"], *_sat_cells(u)] for u in s["units"]]
    out += [
        ("caption", "Bảng 5. Mức độ hài lòng theo đơn vị"),
        ("table", Table(["Mã đơn vị", "Đơn vị", *SAT_HEADER], rows, [1.2, 2.4, 1, 0.8, 1, 0.8, 0.9, 1])),
    ]
    rows = [[c["category"] or NO_DATA, c["category_name"], *_sat_cells(c)] for c in s["categories"]]
    out += [
        ("caption", "Bảng 6. Mức độ hài lòng theo lĩnh vực"),
        ("table", Table(["Mã", "Lĩnh vực", *SAT_HEADER], rows, [1.2, 2.4, 1, 0.8, 1, 0.8, 0.9, 1])),
    ]
    return out


# ---------------------------------------------------------------- Markdown


def markdown(figures: dict[str, Any], head: Letterhead, day: dt.date) -> str:
    lines = [
        f"{head.superior.upper()}  ",
        f"**{head.issuer.upper()}**  ",
        f"Số: …/BC-{head.issuer_short}",
        "",
        "**CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM**  ",
        "**Độc lập - Tự do - Hạnh phúc**  ",
        f"*{date_line(head.place, day)}*",
        "",
    ]
    lines += [f"## {line}" if i == 0 else f"**{line}**" for i, line in enumerate(title(figures))]
    lines.append("")
    for kind, value in body(figures):
        if kind == "heading":
            lines += [f"### {value}", ""]
        elif kind in ("para",):
            lines += [value, ""]
        elif kind in ("note", "caption"):
            lines += [f"*{value}*", ""]
        elif kind == "table":
            lines += [_md_row(value.header), _md_row(["---"] * len(value.header)), *(_md_row(r) for r in value.rows), ""]
    lines += ["**Nơi nhận:**", *(f"- {r};" for r in head.recipients[:-1]), f"- {head.recipients[-1]}.", ""]
    lines += [f"**{head.signer_title}**", "", "", f"**{head.signer}**" if head.signer else ""]
    return "\n".join(lines).rstrip() + "\n"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
