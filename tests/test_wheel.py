"""`pip install lienthong-*.whl` is a tested path: the wheel the test command builds
(`python -m build`, scripts/test.sh) goes into a clean virtual environment, and the demo runs from
there, outside the checkout (console script, adapters' entry points, the demo's files), after the
first steps a commune's IT would take with it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import WAIT_SCALE

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "testdata" / "samples" / "inbox" / "thongke" / "chi-tieu-ktxh-thang-10-2026.csv"
DEMO_FILES = (
    "import importlib.resources as r; print(sum(1 for p in r.files('lienthong.node').joinpath('demo_data').rglob('*') if p.is_file()))"
)


def wheel(tmp_path: Path) -> Path:
    """The wheel scripts/test.sh built ($LIENTHONG_WHEEL), else one built now from the checkout."""
    given = os.environ.get("LIENTHONG_WHEEL")
    if given:
        return Path(given)
    out = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300 * WAIT_SCALE,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (built,) = (tmp_path / "dist").glob("lienthong-*.whl")
    return built


def run(argv: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run `argv` in its own process group; past `timeout` the group (a demo's nodes too) is killed."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout * WAIT_SCALE)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError(f"{' '.join(argv)} ran over time:\n{stdout[-3000:]}\n{stderr[-3000:]}") from None
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


@pytest.mark.slow
def test_the_built_wheel_installs_into_a_clean_venv_and_runs(tmp_path: Path) -> None:
    built = wheel(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120 * WAIT_SCALE)
    pip = run([str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q", str(built)], tmp_path, 600)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    where = run([str(venv / "bin" / "python"), "-c", "import lienthong.node.cli as c; print(c.__file__)"], tmp_path, 60)
    assert where.stdout.strip().startswith(str(venv)), where.stdout + where.stderr  # the installed copy, not the checkout
    # From the venv, outside the checkout: the CA, a commune made from it, an agency's file taken in.
    lienthong = str(venv / "bin" / "lienthong")
    node = tmp_path / "ba-tri"
    steps = [
        [lienthong, "ca", "init", str(tmp_path / "ca"), "--name", "CA"],
        [lienthong, "init", "--dir", str(node), "--mode", "commune", "--id", "86-28894", "--parent", "127.0.0.1:7443",
         "--ca", str(tmp_path / "ca"), "--agency", "thongke"],
        [lienthong, "ingest", "--dir", str(node), "--agency", "thongke", str(SAMPLE)],
    ]  # fmt: skip
    for argv in steps:
        out = run(argv, tmp_path, 120)
        assert out.returncode == 0, f"{argv[1]}: {out.stdout[-2000:]}{out.stderr[-2000:]}"
    assert " 0 refused" in out.stdout
    demo_files = run([str(venv / "bin" / "python"), "-c", DEMO_FILES], tmp_path, 60)
    assert int(demo_files.stdout) >= 9, demo_files.stderr  # the demo's agency files are in the wheel
    # And the demo itself (a province, its children and one node two tiers down: real processes), small.
    demo = run([lienthong, "demo", "--children", "2", "--records", "500", "--timeout", "240"], tmp_path, 300)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
