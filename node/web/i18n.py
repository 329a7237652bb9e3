"""The console's words in Vietnamese (the default) and English. A missing English word shows the Vietnamese one."""

from __future__ import annotations

from collections.abc import Callable

LANGS = ("vi", "en")

WORDS: dict[str, tuple[str, str]] = {
    "overview": ("Tổng quan", "Overview"),
    "reports": ("Báo cáo", "Reports"),
    "feedback": ("Phản ánh", "Feedback"),
    "indicators": ("Chỉ tiêu", "Indicators"),
    "inbox": ("Tệp", "Inbox"),
    "security": ("An ninh", "Security"),
    "logout": ("Đăng xuất", "Log out"),
    "node": ("Nút", "Node"),
    "mode": ("Chế độ", "Mode"),
    "parent": ("Cấp trên", "Parent"),
    "no_parent": ("Không có (cấp cao nhất)", "None (the top of the tree)"),
    "children": ("Đơn vị cấp dưới", "Children"),
    "connected": ("Đang kết nối", "Connected"),
    "disconnected": ("Mất kết nối", "Disconnected"),
    "last_contact": ("Liên lạc cuối", "Last contact"),
    "lag_seconds": ("Trễ (giây)", "Lag (seconds)"),
    "queued": ("Chờ gửi xuống", "Queued down"),
    "pending": ("Chờ gửi lên", "Pending"),
    "received": ("Đã nhận", "Received"),
    "rejected": ("Bị từ chối", "Rejected"),
    "quarantined": ("Cách ly", "Quarantined"),
    "silent_units": ("Đơn vị im lặng", "Silent units"),
    "never_connected": ("chưa từng kết nối", "never connected"),
    "silent_since": ("im lặng từ", "silent since"),
    "none": ("Không có", "None"),
    "unit": ("Đơn vị", "Unit"),
    "units": ("Đơn vị", "Units"),
    "period": ("Kỳ", "Period"),
    "report_type": ("Loại báo cáo", "Report type"),
    "show": ("Xem", "Show"),
    "on_time": ("Đúng hạn", "On time"),
    "late": ("Trễ hạn", "Late"),
    "missing": ("Chưa nộp (quá hạn)", "Missing"),
    "pending_report": ("Chưa đến hạn", "Pending"),
    "level": ("Cấp", "Level"),
    "expected": ("Phải nộp", "Expected"),
    "submitted": ("Đã nộp", "Submitted"),
    "completeness": ("Tỷ lệ đầy đủ", "Completeness"),
    "timeliness": ("Tỷ lệ đúng hạn", "Timeliness"),
    "files": ("Tệp đính kèm", "Files"),
    "no_submission": ("Chưa có báo cáo nộp", "No submission"),
    "open": ("Đang xử lý", "Open"),
    "overdue": ("Quá hạn", "Overdue"),
    "state": ("Trạng thái", "State"),
    "assignee": ("Đơn vị xử lý", "Assignee"),
    "due": ("Hạn", "Due"),
    "category": ("Lĩnh vực", "Category"),
    "description": ("Nội dung", "Description"),
    "ticket": ("Mã phản ánh", "Ticket"),
    "all": ("Tất cả", "All"),
    "filter": ("Lọc", "Filter"),
    "history": ("Lịch sử", "History"),
    "ignored": ("bị bỏ qua", "ignored"),
    "actions": ("Thao tác", "Actions"),
    "assign": ("Giao xử lý", "Assign"),
    "update": ("Cập nhật", "Update"),
    "note": ("Ghi chú / kết quả", "Note / result"),
    "rating": ("Đánh giá (1-5)", "Rating (1-5)"),
    "received_at": ("Tiếp nhận", "Received"),
    "result": ("Kết quả", "Result"),
    "value": ("Giá trị", "Value"),
    "reported_units": ("Số đơn vị báo cáo", "Units reporting"),
    "download": ("Tải về", "Download"),
    "chart": ("Biểu đồ", "Chart"),
    "name": ("Tên", "Name"),
    "agency": ("Cơ quan", "Agency"),
    "status": ("Kết quả nhận tệp", "Status"),
    "imported": ("Nhập mới", "Imported"),
    "updated": ("Cập nhật", "Updated"),
    "unchanged": ("Không đổi", "Unchanged"),
    "refused_rows": ("Dòng bị từ chối", "Refused rows"),
    "at": ("Thời điểm", "At"),
    "audit": ("Nhật ký kiểm toán", "Audit log"),
    "audit_ok": ("Chuỗi nhật ký toàn vẹn", "The audit chain is intact"),
    "audit_bad": ("Chuỗi nhật ký bị sửa đổi", "The audit chain was altered"),
    "refused_handshakes": ("Kết nối bị từ chối", "Refused connections"),
    "revocations": ("Thu hồi chứng thư", "Revocations"),
    "actor": ("Người thực hiện", "Actor"),
    "action": ("Hành động", "Action"),
    "subject": ("Đối tượng", "Subject"),
    "previous": ("Trước", "Previous"),
    "next": ("Sau", "Next"),
    "records": ("Bản ghi", "Records"),
    "legend": ("Chú giải", "Legend"),
}


def translator(lang: str) -> Callable[[str], str]:
    index = 1 if lang == "en" else 0

    def t(key: str) -> str:
        pair = WORDS.get(key)
        return pair[index] if pair else key

    return t
