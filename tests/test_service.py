"""`lienthong service install`: the systemd unit it writes passes `systemd-analyze verify`, runs
as a dedicated user with restart on failure and its log in the journal, and its exact ExecStart
runs the node, which stops gracefully on the unit's KillSignal."""

from __future__ import annotations

import configparser
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from .conftest import MakeNode
from .helpers import NodeProcess, cli


def read_unit(path: Path) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    unit.read_string(path.read_text())
    return unit


@pytest.mark.slow
def test_unit_verifies_and_its_exec_start_runs_the_node(make_node: MakeNode, tmp_path: Path) -> None:
    province = make_node("86")
    units = tmp_path / "units"
    units.mkdir()
    out = cli("service", "install", "--dir", str(province), "--unit-dir", str(units), "--user", "lienthong")
    path = units / "lienthong-86.service"
    assert f"Wrote {path}" in out.stdout and "systemctl daemon-reload && systemctl enable --now lienthong-86.service" in out.stdout
    unit = read_unit(path)
    service = unit["Service"]
    assert service["User"] == "lienthong" and service["Restart"] == "on-failure" and service["KillSignal"] == "SIGTERM"
    assert service["SyslogIdentifier"] == "lienthong-86" and "Type" in service
    assert str(province) in service["ReadWritePaths"].split()
    assert unit["Install"]["WantedBy"] == "multi-user.target"

    analyze = shutil.which("systemd-analyze")
    if analyze:  # the checker itself must catch a broken unit, or its pass means nothing
        ok = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, check=False)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        broken = units / "broken.service"
        broken.write_text(path.read_text().replace(service["ExecStart"], "lienthong-missing run"))
        assert subprocess.run([analyze, "verify", str(broken)], capture_output=True, check=False).returncode != 0

    argv = shlex.split(service["ExecStart"])
    assert Path(argv[0]).is_absolute() and Path(argv[0]).exists()
    node = NodeProcess(province, argv=argv, log_name="service.log").start()
    node.port()
    assert node.proc is not None
    node.proc.send_signal(getattr(signal, service["KillSignal"]))
    assert node.proc.wait(timeout=60) == 0
    assert '"event": "node.stopped"' in (province / "service.log").read_text()  # JSON lines: what the journal keeps
