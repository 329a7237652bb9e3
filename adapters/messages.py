"""What a receipt says: one catalog, in Vietnamese and English, for the adapters and the intake pipeline.

Every sentence a receipt carries is here: why a row or a whole file was refused (the
adapters), and what the intake pipeline itself says (a unit outside the node's area, a
file too large for the inbox, content already taken). Every code maps to a Vietnamese
sentence (for agency staff: plain words, saying what to fix) and an English one (for IT
and logs). Sentences have `{placeholders}`; a placeholder nobody filled stays readable
instead of failing. Field names are shown to staff by their Vietnamese label (`period`
→ "kỳ báo cáo") and, when the file has its own column name, by that too.

    messages.row_error(3, "value", "bad_value", value="mười hai")
    messages.refused("empty", file="chi-tieu.csv")          # a FileRefused to raise
    messages.from_input_error(4, exc, fields)               # a records.InputError, explained
    messages.message("unknown_unit", "86-99999")            # the intake pipeline's own sentences

Codes from `lienthong.sync.records` (InputError.code) are covered: missing,
bad_period, bad_value, bad_time, bad_kind, bad_status, too_long, invalid.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lienthong.sync.errors import InputError
from lienthong.sync.records import FEEDBACK_STATUSES

from .base import FileRefused, RowError
from .periods import fold

# Field name -> (Vietnamese label, English label).
LABELS: dict[str, tuple[str, str]] = {
    "indicator": ("mã chỉ tiêu", "indicator code"),
    "unit": ("mã đơn vị", "unit code"),
    "period": ("kỳ báo cáo", "period"),
    "value": ("giá trị", "value"),
    "disaggregation": ("mã phân tổ", "disaggregation"),
    "comment": ("ghi chú", "comment"),
    "follow_up": ("cờ cần theo dõi", "follow-up flag"),
    "agency": ("mã cơ quan", "agency"),
    "report_type": ("loại báo cáo", "report type"),
    "title": ("tiêu đề báo cáo", "report title"),
    "submitted_at": ("thời điểm nộp báo cáo", "submission time"),
    "summary": ("tóm tắt", "summary"),
    "signed_by": ("người ký", "signatory"),
    "source_id": ("mã phản ánh", "request id"),
    "category": ("mã lĩnh vực", "service code"),
    "category_name": ("tên lĩnh vực", "service name"),
    "description": ("nội dung phản ánh", "description"),
    "received_at": ("thời điểm tiếp nhận", "time received"),
    "address": ("địa chỉ", "address"),
    "lat": ("tọa độ", "coordinates"),
    "lon": ("tọa độ", "coordinates"),
    "media_url": ("đường dẫn ảnh", "media URL"),
    "due_at": ("hạn xử lý", "due time"),
    "assigned_unit": ("đơn vị được giao xử lý", "assigned unit"),
    "citizen": ("thông tin người phản ánh", "citizen details"),
    "name": ("tên", "name"),
    "phone": ("số điện thoại", "phone number"),
    "email": ("thư điện tử", "e-mail"),
    "feedback": ("mã phản ánh", "request id"),
    "status": ("trạng thái", "status"),
    "at": ("thời điểm", "time"),
    "note": ("ghi chú", "note"),
    "rating": ("mức đánh giá", "rating"),
    "attachments": ("tệp đính kèm", "attachments"),
    "sha256": ("mã băm tệp đính kèm", "attachment hash"),
    "kind": ("loại bản ghi", "record kind"),
    "type": ("loại danh mục", "definition type"),
    "code": ("mã", "code"),
    "fields": ("nội dung danh mục", "definition fields"),
    "updated_datetime": ("thời điểm cập nhật", "time updated"),
    "requested_datetime": ("thời điểm tiếp nhận", "time requested"),
}

# Message id -> (Vietnamese, English). Row-level, file-level and the pipeline's ids share one table.
CATALOG: dict[str, tuple[str, str]] = {
    # ---------------------------------------------------------------- whole file
    "empty": (
        "Tệp {file} không có dữ liệu. Hãy xuất lại tệp từ phần mềm rồi gửi lại.",
        "The file {file} has no data. Export it again and resend it.",
    ),
    "not_text": (
        "Tệp {file} không đọc được: đây không phải tệp văn bản {format} ({detail_vi}). Hãy xuất lại tệp ở dạng {format} (mã UTF-8) rồi gửi lại.",
        "The file {file} cannot be read: it is not {format} text ({detail_en}). Export it again as UTF-8 {format} and resend it.",
    ),
    "unreadable": (
        "Không mở được tệp {file} ({detail}). Hãy gửi lại tệp.",
        "The file {file} cannot be opened ({detail}). Resend it.",
    ),
    "too_large": (
        "Tệp {file} quá lớn (hơn {limit} byte) đối với loại tệp này. Hãy kiểm tra lại tệp.",
        "The file {file} is too large (more than {limit} bytes) for this kind of file. Check the file.",
    ),
    "bad_json": (
        "Tệp {file} sai cú pháp JSON ở dòng {line}, cột {column}: {detail_vi}. Hãy sửa chỗ này (hoặc xuất lại tệp) rồi gửi lại.",
        "The file {file} is not valid JSON at line {line}, column {column}: {detail_en}. Fix it (or export the file again) and resend it.",
    ),
    "json_leading_zero": (
        "Tệp {file} sai cú pháp JSON ở dòng {line}: {key}giá trị {value} bắt đầu bằng chữ số 0, JSON không cho phép viết số như vậy. "
        'Nếu đây là mã, hãy đặt trong dấu ngoặc kép ("{value}"); nếu là số, hãy bỏ số 0 ở đầu. Sau đó gửi lại tệp.',
        "The file {file} is not valid JSON at line {line}: {key_en}the number {value} has a leading zero, which JSON does not allow. "
        'If it is a code, quote it ("{value}"); if it is a number, drop the leading zero. Then resend the file.',
    ),
    "truncated": (
        "Tệp {file} bị cắt cụt: dữ liệu dừng giữa chừng ở dòng {line} (có thể tệp được chép khi chưa ghi xong). Không có dữ liệu nào của tệp được nhận. Hãy gửi lại tệp đầy đủ.",
        "The file {file} is truncated: it stops mid-way at line {line} (it may have been copied before it was fully written). Nothing of it was taken. Resend the complete file.",
    ),
    "wrong_shape": (
        "Tệp {file} không đúng cấu trúc {format}: {detail_vi}. Hãy kiểm tra lại tệp.",
        "The file {file} does not have the {format} structure: {detail_en}. Check the file.",
    ),
    "legacy_encoding": (
        "Tệp {file} được gõ bằng bảng mã cũ {encoding}, không phải Unicode (chữ hiện thành «{sample}»). "
        "Hãy chuyển mã sang Unicode (Unikey: Công cụ chuyển mã, từ {encoding} sang Unicode) rồi gửi lại.",
        "The file {file} is typed in the legacy Vietnamese {encoding} encoding, not Unicode (its text reads «{sample}»). "
        "Convert it to Unicode (e.g. Unikey's converter, from {encoding} to Unicode) and resend it.",
    ),
    "broken_workbook": (
        "Không đọc được bảng tính {file}: tệp bị hỏng, có mật khẩu hoặc không phải bảng tính Excel/OpenDocument thật ({detail}). "
        "Hãy mở tệp bằng Excel hoặc LibreOffice, lưu lại dạng .xlsx rồi gửi lại.",
        "The workbook {file} cannot be read: it is broken, password-protected or not a real Excel/OpenDocument workbook ({detail}). "
        "Open it in Excel or LibreOffice, save it as .xlsx and resend it.",
    ),
    "workbook_too_large": (
        "Bảng tính {file} không được nhận: {detail_vi}. Hãy chia nhỏ bảng tính hoặc xuất ra tệp CSV rồi gửi lại.",
        "The workbook {file} was not taken: {detail_en}. Split it, or export it as CSV, and resend it.",
    ),
    "no_sheet": (
        "Bảng tính {file} không có trang tính «{sheet}» (các trang có: {sheets}). Hãy đặt đúng tên trang tính rồi gửi lại.",
        "The workbook {file} has no sheet «{sheet}» (its sheets: {sheets}). Name the sheet as configured and resend it.",
    ),
    "no_header": (
        "Không tìm thấy dòng tiêu đề cột trong tệp {file}. Dòng đầu tiên phải là tên các cột, ví dụ: {expected}.",
        "No column header line was found in {file}. The first line must name the columns, e.g. {expected}.",
    ),
    "missing_column": (
        "Tệp {file} thiếu cột {columns_vi}. Hãy thêm cột này vào dòng tiêu đề rồi gửi lại.",
        "The file {file} lacks the column(s) {columns_en}. Add them to the header line and resend the file.",
    ),
    "bad_attachment": (
        "Báo cáo {file} có tệp đính kèm không dùng được: {items_vi}. Hãy đặt các tệp đính kèm ngay trong thư mục gửi, cùng chỗ với tệp báo cáo, rồi gửi lại. Báo cáo chưa được nhận.",
        "The report {file} names attachments that cannot be used: {items_en}. Put the attachments in the inbox folder beside the report and resend it. The report was not taken.",
    ),
    # ---------------------------------------------------------------- one row
    "missing": (
        "Thiếu {label_vi}{column_vi}. Hãy bổ sung {label_vi} rồi gửi lại.",
        "The {label_en}{column_en} is missing. Fill it in and resend.",
    ),
    "bad_period": (
        "Kỳ báo cáo «{value}» không hợp lệ{reason_vi}. Hãy ghi kỳ theo mẫu: Tháng 10/2026, Quý III/2026, Năm 2026, 2026-10 hoặc 2026Q3.",
        "The period «{value}» is not valid{reason_en}. Write it like Tháng 10/2026, Quý III/2026, Năm 2026, 2026-10 or 2026Q3.",
    ),
    "bad_value": (
        "{label_cap}{column_vi} «{value}» không phải là số. Hãy ghi bằng chữ số, ví dụ {example}.",
        "The {label_en}{column_en} «{value}» is not a number. Write it in digits, e.g. {example}.",
    ),
    "ambiguous_number": (
        "Số «{value}» viết không rõ ràng: {detail_vi} Hãy sửa lại, ví dụ {example}.",
        "The number «{value}» is ambiguous: {detail_en} Rewrite it, e.g. {example}.",
    ),
    "bad_time": (
        "{label_cap} «{value}» không phải ngày giờ hợp lệ. Hãy ghi đủ ngày giờ kèm múi giờ, ví dụ 2026-10-24T16:20:00+07:00.",
        "The {label_en} «{value}» is not a valid date-time. Write the date, time and offset, e.g. 2026-10-24T16:20:00+07:00.",
    ),
    "bad_kind": (
        "Loại bản ghi «{value}» không được hỗ trợ. Hãy dùng một trong: indicator, report, feedback, feedback_event, definition.",
        "The record kind «{value}» is not supported. Use one of: indicator, report, feedback, feedback_event, definition.",
    ),
    "bad_status": (
        "Trạng thái «{value}» không được hỗ trợ. Hãy dùng một trong: {allowed}.",
        "The status «{value}» is not supported. Use one of: {allowed}.",
    ),
    "bad_action": (
        "Bước phê duyệt «{value}» không hợp lệ. Hãy dùng một trong: {allowed}.",
        "The approval step «{value}» is not valid. Use one of: {allowed}.",
    ),
    "too_long": (
        "{label_cap}{column_vi} quá dài. Hãy rút gọn.",
        "The {label_en}{column_en} is too long. Shorten it.",
    ),
    "invalid": (
        "{label_cap}{column_vi} «{value}» không hợp lệ. Hãy kiểm tra và sửa lại {label_vi}.",
        "The {label_en}{column_en} «{value}» is not valid. Check and correct it.",
    ),
    "not_object": (
        "Mục này không phải một đối tượng JSON {{...}}. Mỗi mục phải là một đối tượng có tên trường và giá trị.",
        "This item is not a JSON object {{...}}. Each item must be an object with named fields.",
    ),
    "bad_row": (
        "Không đọc được dòng này theo định dạng CSV ({detail}). Hãy kiểm tra dấu ngoặc kép và dấu phân cách trên dòng.",
        "This line cannot be read as CSV ({detail}). Check its quotes and separators.",
    ),
    "line_bad_json": (
        "Dòng này không phải JSON hợp lệ ({detail}). Mỗi dòng phải là một đối tượng JSON đầy đủ.",
        "This line is not valid JSON ({detail}). Each line must be one complete JSON object.",
    ),
    "line_encoding": (
        "Dòng này không phải văn bản UTF-8. Hãy lưu lại tệp với mã UTF-8.",
        "This line is not UTF-8 text. Save the file as UTF-8.",
    ),
    "line_too_long": (
        "Dòng này dài quá {limit} byte. Hãy tách thành nhiều dòng.",
        "This line is longer than {limit} bytes. Split it.",
    ),
    # ---------------------------------------------------------------- the intake pipeline's own codes
    # Checks against the definitions and the inbox's rules (intake.py), for a row or the whole
    # file. Keyed `intake.<code>`: the code alone may name an adapter's sentence too
    # (`too_large`: a format's limit in bytes there, the inbox's limit in MB here).
    # One placeholder, `{value}`, shown whole: see `message`.
    "intake.unknown_unit": (
        "Mã đơn vị {value} không có trong danh mục đơn vị hành chính; kiểm tra lại mã đơn vị.",
        "Unit code {value} is not in the unit registry; check the unit code.",
    ),
    "intake.outside_subtree": (
        "Đơn vị {value} không thuộc phạm vi của nút này; gửi số liệu này vào hộp thư của đơn vị quản lý.",
        "Unit {value} is not in this node's area; send it to the inbox of the node that manages that unit.",
    ),
    "intake.unknown_indicator": (
        "Mã chỉ tiêu {value} không có trong bộ chỉ tiêu được ban hành; kiểm tra lại mã chỉ tiêu.",
        "Indicator code {value} is not in the approved indicator set; check the indicator code.",
    ),
    "intake.definition_not_provincial": (
        "Chỉ nút cấp tỉnh được ban hành danh mục (đơn vị, chỉ tiêu, lịch báo cáo); hãy nạp danh mục tại nút cấp tỉnh.",
        "Only the provincial node issues definitions (units, indicators, report schedules); load them at the province.",
    ),
    "intake.unknown_report_type": (
        "Loại báo cáo {value} không có trong danh mục báo cáo; kiểm tra lại mã loại báo cáo.",
        "Report type {value} is not in the report schedule; check the report type code.",
    ),
    "intake.unsupported_format": (
        "Không nhận dạng được định dạng tệp; các định dạng được hỗ trợ: {value}.",
        "The file's format is not recognised; supported adapters: {value}.",
    ),
    "intake.too_large": (
        "Tệp lớn hơn giới hạn {value} MB; chia nhỏ tệp rồi gửi lại.",
        "The file is larger than the {value} MB limit; split it and send the parts.",
    ),
    "intake.symlink": (
        "Tệp là liên kết tượng trưng (symlink), không được nhận; hãy sao chép tệp thật vào hộp thư.",
        "The file is a symbolic link and is not taken; copy the real file into the inbox.",
    ),
    "intake.adapter_failed": (
        "Bộ chuyển đổi {value} gặp lỗi khi đọc tệp; tệp chưa được nhận, hãy báo cho quản trị hệ thống.",
        "Adapter {value} failed while reading the file; nothing was taken; tell the node's administrator.",
    ),
    "intake.atomic": (
        "Hộp thư này chỉ nhận cả tệp hoặc không nhận gì; tệp có {value} dòng lỗi nên không dòng nào được nhận.",
        "This inbox takes a whole file or nothing; the file has {value} refused rows, so no row was taken.",
    ),
    "intake.unchanged": (
        "Nội dung tệp này đã được nhận lúc {value}; không có gì thay đổi.",
        "This content was already taken at {value}; nothing changed.",
    ),
    "intake.not_regular": (
        "Đây không phải tệp thông thường (thư mục, tệp thiết bị hoặc đường ống), không được nhận; hãy gửi tệp dữ liệu thật vào hộp thư.",
        "This is not a regular file (a directory, device or pipe) and is not taken; put a real data file in the inbox.",
    ),
    "intake.no_agency": (
        "Tệp được đặt thẳng trong thư mục hộp thư chung, không thuộc cơ quan nào nên chưa được nhận; "
        "hãy chép tệp vào thư mục của cơ quan gửi: {value}.",
        "The file was put in the inbox folder itself, not in an agency's folder, so it was not taken; "
        "copy it into the sending agency's folder: {value}.",
    ),
    "intake.no_agency_folders": (
        "Tệp được đặt thẳng trong thư mục hộp thư chung và chưa có thư mục cơ quan nào nên chưa được nhận; "
        "hãy tạo thư mục mang mã cơ quan gửi (ví dụ {value}, hoặc `lienthong init --agency`) rồi chép tệp vào đó.",
        "The file was put in the inbox folder itself and there is no agency folder yet, so it was not taken; "
        "make a folder named after the sending agency (e.g. {value}) and copy the file into it.",
    ),
    "intake.no_definitions": (
        "Nút chưa nhận danh mục từ tỉnh nên chưa kiểm tra mã đơn vị, chỉ tiêu; số liệu vẫn được nhận.",
        "The node holds no definitions from the province yet, so codes were not checked; the data was taken.",
    ),
}

_MAX_SHOWN = 80
_STATUSES = ", ".join(sorted(FEEDBACK_STATUSES))


class _Defaults(dict):  # type: ignore[type-arg]
    """Fills any placeholder nobody gave with '?' rather than failing."""

    def __missing__(self, key: str) -> str:
        return "?"


def shown(value: Any) -> str:
    """A value as staff see it in a sentence: text, shortened, no control characters."""
    text = value if isinstance(value, str) else repr(value)
    text = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 1] + "…"


def label(field: str) -> tuple[str, str]:
    return LABELS.get(field, (field or "dữ liệu", field or "data"))


def text(message_id: str, **params: Any) -> tuple[str, str]:
    """The (Vietnamese, English) sentences for `message_id`, placeholders filled."""
    vi, en = CATALOG.get(message_id, CATALOG["invalid"])
    values = _Defaults(example="12450.75", format="CSV", file="", reason_vi="", reason_en="", column_vi="", column_en="", allowed=_STATUSES)
    field = str(params.get("field", ""))
    label_vi, label_en = label(field)
    values.update(label_vi=label_vi, label_en=label_en, label_cap=label_vi[:1].upper() + label_vi[1:])
    column = params.get("column")
    if column and fold(str(column)) != fold(label_vi):  # "Giá trị (cột «Giá trị»)" says nothing new
        values.update(column_vi=f" (cột «{shown(column)}»)", column_en=f" (column «{shown(column)}»)")
    for key, value in params.items():
        if key == "value":
            values[key] = shown(value)
        elif value is not None:
            values[key] = str(value)
    return vi.format_map(values), en.format_map(values)


def message(code: str, value: object = "") -> tuple[str, str]:
    """The (Vietnamese, English) sentences for a code the intake pipeline gives (`intake.<code>`).

    Its one `{value}` is shown whole, not shortened like `text`'s: a receipt names the unit
    code or the list of installed adapters exactly."""
    vi, en = CATALOG["intake." + code]
    return vi.format(value=value), en.format(value=value)


def row_error(line: int, field: str, code: str, *, message_id: str | None = None, **params: Any) -> RowError:
    """A refused row for the receipt."""
    vi, en = text(message_id or code, field=field, **params)
    return RowError(line=line, field=field, code=code, message_vi=vi, message_en=en)


def refused(code: str, *, message_id: str | None = None, **params: Any) -> FileRefused:
    """A FileRefused (to raise) for a file that cannot be read at all."""
    vi, en = text(message_id or code, **params)
    return FileRefused(code, vi, en)


def from_input_error(
    line: int, exc: InputError, fields: Mapping[str, Any] | None = None, columns: Mapping[str, str] | None = None
) -> RowError:
    """Explain a `records` InputError to staff: its code, the field's label and the value given."""
    field = exc.field or ""
    value: Any = None
    if fields is not None and field:
        value = fields.get(field)
        if value is None and isinstance(fields.get("citizen"), Mapping):
            value = fields["citizen"].get(field)
    code = exc.code if exc.code in CATALOG else "invalid"
    column = (columns or {}).get(field)
    params: dict[str, Any] = {"value": "" if value is None else value, "column": column}
    if code == "invalid" and value is None:
        # A structural problem the builder described in English; keep its words for IT.
        params["value"] = exc.message
    return row_error(line, field, exc.code or "invalid", message_id=code, **params)
