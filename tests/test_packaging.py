"""The installed package: distinctive import names, generated code in step, sample copies in step."""

from __future__ import annotations

import filecmp
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "samples"
SHARED_EXCEL = ROOT.parent / "shared" / "excel"
# ../shared/excel's workbook joined the samples once the xlsx adapter landed (its README says to).
EXCEL_SAMPLE = Path("inbox") / "thongke" / "chi-tieu-ktxh-thang-9-2026.xlsx"


def test_installed_package_imports_under_lienthong() -> None:
    """From outside the checkout, the layers import as lienthong.* and the console script is registered."""
    code = "import lienthong.sync.store, lienthong.node.cli, lienthong.adapters.jsonl, lienthong.config.settings; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "ok", out.stderr
    scripts = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts["lienthong"] == "lienthong.node.cli:main"


def test_generated_wire_code_matches_proto() -> None:
    """sync/wire is what proto/generate.py makes from proto/lienthong/v1 (pinned tools)."""
    out = subprocess.run([sys.executable, str(ROOT / "proto" / "generate.py"), "--check"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr


@pytest.mark.skipif(not SHARED.exists(), reason="no ../shared beside this clone (a user's clone)")
def test_sample_copies_are_in_step_with_shared() -> None:
    """tests/testdata/samples is an exact copy of ../shared/samples plus ../shared/excel's workbook."""
    ours = ROOT / "tests" / "testdata" / "samples"
    theirs = sorted(p.relative_to(SHARED) for p in SHARED.rglob("*") if p.is_file())
    assert sorted(p.relative_to(ours) for p in ours.rglob("*") if p.is_file()) == sorted([*theirs, EXCEL_SAMPLE])
    for rel in theirs:
        assert filecmp.cmp(SHARED / rel, ours / rel, shallow=False), f"{rel} differs from ../shared/samples"
    assert filecmp.cmp(SHARED_EXCEL / EXCEL_SAMPLE.name, ours / EXCEL_SAMPLE, shallow=False), "the workbook differs from ../shared/excel"
    workbooks = ROOT / "tests" / "testdata" / "workbooks"
    assert filecmp.cmp(SHARED_EXCEL / "make-xlsx-sample.py", workbooks / "make-xlsx-sample.py", shallow=False)


@pytest.mark.skipif(not SHARED.exists(), reason="no ../shared beside this clone (a user's clone)")
def test_demo_sample_files_are_in_step_with_shared() -> None:
    """Every agency file the demo drops is byte for byte a file of ../shared/samples."""
    demo = ROOT / "node" / "demo_data" / "inbox"
    shared = {p.name: p for p in SHARED.rglob("*") if p.is_file()}
    files = [p for p in demo.rglob("*") if p.is_file()]
    assert len(files) >= 9
    for path in files:
        assert path.name in shared and filecmp.cmp(shared[path.name], path, shallow=False), f"{path} is not in step"


def test_the_wheel_carries_the_console_templates(tmp_path: Path) -> None:
    """A wheel built from the checkout holds node/web/templates and the CLI's compiled catalogue (both work installed from it)."""
    import zipfile

    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (wheel,) = tmp_path.glob("lienthong-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for template in ("base.html", "overview.html", "reports.html", "feedback_item.html"):
        assert f"lienthong/node/web/templates/{template}" in names
    # The command line's Vietnamese: the compiled catalogue travels in the wheel (read with the standard library).
    assert "lienthong/node/locale/vi/LC_MESSAGES/lienthong.mo" in names
