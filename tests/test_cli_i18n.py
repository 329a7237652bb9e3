"""The command line in Vietnamese: a complete catalogue, the language chosen from --lang, LIENTHONG_LANG
or the locale, and help, tables and Error/Try lines in Vietnamese (issue #17, item 5)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import click
import pytest
import structlog
from click.testing import CliRunner, Result

from lienthong.node import cli_i18n, display
from lienthong.node.cli import cli as lienthong_cli

from .helpers import cli, write_jsonl

ROOT = Path(__file__).resolve().parent.parent


def messages_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("messages", ROOT / "scripts" / "messages.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _restore_process_state() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    display.set_zone(display.DEFAULT_ZONE)
    cli_i18n.choose("en")


def run(*args: str, env: dict[str, str]) -> Result:
    clean = {"LIENTHONG_LANG": None, "LC_ALL": None, "LC_MESSAGES": None, "LANG": None}
    result = CliRunner().invoke(lienthong_cli, list(args), env={**clean, **env})
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_every_message_has_vietnamese_and_the_mo_is_compiled_from_the_po() -> None:
    """Each message the CLI can show (help of every command, printed messages, errors, click's words) has a
    Vietnamese translation, not fuzzy; the committed .mo is what the .po compiles to (scripts/messages.py)."""
    script = messages_script()
    missing = script.untranslated(script.extract(), script.read_catalogue())
    assert missing == [], f"{len(missing)} messages have no Vietnamese (run scripts/messages.py and translate them): {missing[:5]}"
    assert script.MO.read_bytes() == script.compiled(script.read_catalogue()), "the .mo is stale: run scripts/messages.py"


def test_the_click_words_translated_are_click_s_own() -> None:
    """CLICK_MESSAGES are messages this click really shows (a click upgrade that rewords them is caught here)."""
    from babel.messages.extract import extract_from_dir

    script = messages_script()
    found = {
        m if isinstance(m, str) else m[0]
        for _f, _l, m, _c, _x in extract_from_dir(
            os.path.dirname(click.__file__), [("**.py", "python")], keywords={"_": None, "ngettext": (1, 2)}
        )
    }
    assert [m for m in script.CLICK_MESSAGES if m not in found] == []


@pytest.mark.parametrize(
    ("environ", "language"),
    [
        ({}, "en"),
        ({"LANG": "vi_VN.UTF-8"}, "vi"),
        ({"LANG": "vi_VN.UTF-8", "LC_ALL": "C.UTF-8"}, "en"),
        ({"LC_MESSAGES": "vi_VN", "LANG": "en_US.UTF-8"}, "vi"),
        ({"LIENTHONG_LANG": "vi", "LANG": "en_US.UTF-8"}, "vi"),
        ({"LIENTHONG_LANG": "en", "LC_ALL": "vi_VN.UTF-8"}, "en"),
    ],
)
def test_language_comes_from_lienthong_lang_then_the_locale(environ: dict[str, str], language: str) -> None:
    """LIENTHONG_LANG first, then LC_ALL, LC_MESSAGES, LANG as POSIX orders them; English otherwise."""
    assert cli_i18n.language_from_env(environ) == language


def test_help_and_tables_in_vietnamese(tmp_path: Path) -> None:
    """With the locale or LIENTHONG_LANG Vietnamese, help, status and a table speak Vietnamese; --lang en overrides."""
    help_vi = run("--help", env={"LANG": "vi_VN.UTF-8"}).stdout
    assert "Cách dùng:" in help_vi and "Tùy chọn:" in help_vi and "Lệnh:" in help_vi
    assert "Hiển thị nút, liên kết với cấp trên và các đơn vị cấp dưới" in " ".join(help_vi.split())
    sub = " ".join(run("token", "create", "--help", env={"LIENTHONG_LANG": "vi"}).stdout.split())
    assert "Thời hạn hiệu lực của mã (ví dụ 30m, 24h, 7d). [mặc định: 24h]" in sub and "[bắt buộc]" in sub
    assert "Usage:" in run("--lang", "en", "--help", env={"LANG": "vi_VN.UTF-8"}).stdout
    assert "Cách dùng:" in run("--lang", "vi", "--help", env={"LANG": "en_US.UTF-8"}).stdout

    run("ca", "init", "--dir", str(tmp_path / "ca"), env={})
    node = tmp_path / "p"
    run("init", "--dir", str(node), "--mode", "provincial", "--id", "86", "--listen", "127.0.0.1:0", "--ca", str(tmp_path / "ca"), env={})
    rows = [
        {"kind": "definition", "type": "unit", "code": "86-28894", "fields": {"name": "Xã Ba Tri", "level": "commune", "parent": "86"}},
        {
            "kind": "report",
            "report_type": "BC-IOC-THANG",
            "unit": "86-28894",
            "period": "2026-10",
            "title": "Báo cáo tháng 10",
            "submitted_at": "2026-10-24T16:20:00+07:00",
        },
    ]
    ingested = run("ingest", "--dir", str(node), str(write_jsonl(tmp_path / "r.jsonl", rows)), env={"LIENTHONG_LANG": "vi"})
    assert ingested.stdout.startswith(f"{tmp_path / 'r.jsonl'}: 2 mới, 0 cập nhật, 0 không đổi, 0 bị từ chối")
    status = run("status", "--dir", str(node), env={"LIENTHONG_LANG": "vi"}).stdout
    assert "nút cấp tỉnh, đã dừng" in status and "1 đơn vị trực thuộc nút này" in status and "chưa từng kết nối" in status
    table = run("query", "--dir", str(node), "reports", env={"LIENTHONG_LANG": "vi"}).stdout
    assert table.startswith("1 báo cáo\n") and "đơn vị" in table


def test_error_and_try_lines_in_vietnamese(tmp_path: Path) -> None:
    """The real command's Error/Try lines, by exact text and by template, and click's usage errors, in Vietnamese."""
    vi = {"LIENTHONG_LANG": "vi"}
    missing = cli("status", "--dir", str(tmp_path / "nowhere"), check=False, env=vi)
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [
        f"Lỗi: không có lienthong.toml trong {tmp_path / 'nowhere'}",
        "Cách xử lý: tạo nút bằng `lienthong init --dir DIR ...`",
    ]
    typo = cli("statsu", check=False, env=vi)
    assert typo.returncode == 2 and "Lỗi: Không có lệnh 'statsu'." in typo.stderr and "Có phải ý bạn là 'status'?" in typo.stderr


def test_error_templates_translate_with_their_values() -> None:
    """An f-string's sentence is found by its template and its values put back into the Vietnamese."""
    cli_i18n.choose("vi")
    assert cli_i18n.translate_message("a CA already exists in /srv/ca") == "đã có một CA trong /srv/ca"
    assert cli_i18n.translate_message("--period 2026-13 is not a period") == "--period 2026-13 không phải là kỳ báo cáo"
    assert cli_i18n.translate_message("a sentence no catalogue has") == "a sentence no catalogue has"
    cli_i18n.choose("en")
    assert cli_i18n.translate_message("a CA already exists in /srv/ca") == "a CA already exists in /srv/ca"
