"""`lienthong init` leads somewhere: the commune/ward/agency modes, agency inbox folders, the
province as the CA's home (enrollment and revocation list with no edit), and a "Next:" message
whose commands all run as printed, once their upper-case placeholders are filled in, on every
path: the province, a commune made with --ca, one that enrolls with a token, one signed offline."""

from __future__ import annotations

import re
import shlex
import shutil
import socket
import tomllib
from pathlib import Path

import pytest

from .helpers import NodeProcess, cli, status, wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def next_commands(stdout: str) -> list[str]:
    """The commands after "Next:", each without its trailing (comment)."""
    lines = stdout.split("Next:", 1)[1].splitlines()
    commands = [re.sub(r"\s{2,}\(.*\)$", "", line.strip()) for line in lines]
    return [c for c in commands if c.startswith(("lienthong ", "cp "))]


def run(command: str, fill: dict[str, str], started: list[NodeProcess]) -> str:
    """Run one printed command as a shell user would (placeholders filled); `run` starts a process."""
    for placeholder, value in fill.items():
        command = command.replace(placeholder, value)
    assert not re.search(r"\b[A-Z][A-Z_]{2,}\b", command), f"a placeholder is left in {command!r}"
    argv = shlex.split(command)
    if argv[0] == "cp":
        shutil.copy(argv[1], argv[2])
        return ""
    if argv[1] == "run":
        node = NodeProcess(Path(argv[3])).start()
        started.append(node)
        node.port("web_port")
        return ""
    return cli(*argv[1:]).stdout


def console_on_port_0(node_dir: Path) -> None:
    """Several nodes on one test machine: the console's fixed port 8080 is the one substitution."""
    config = node_dir / "lienthong.toml"
    config.write_text(config.read_text().replace('listen = "127.0.0.1:8080"', 'listen = "127.0.0.1:0"'))


def test_modes_and_agency_folders(tmp_path: Path) -> None:
    """commune, ward and agency are accepted (configured as subordinate nodes) and --agency makes inbox/A/."""
    for mode in ("commune", "ward", "agency"):
        node = tmp_path / mode
        out = cli("init", "--dir", str(node), "--mode", mode, "--id", f"86-{mode}", "--parent", "127.0.0.1:7443", "--agency", "thongke")
        assert out.stdout.startswith(f"Created {mode} node")
        assert tomllib.loads((node / "lienthong.toml").read_text())["node"]["mode"] == "district"
        assert (node / "inbox" / "thongke").is_dir()
    refused = cli("init", "--dir", str(tmp_path / "x"), "--mode", "commune", "--id", "86-1", "--enroll-listen", "0.0.0.0:7444", check=False)
    assert refused.returncode == 1 and refused.stderr.startswith("Error: ") and "Try: " in refused.stderr


@pytest.mark.slow
def test_every_next_command_runs_as_printed(tmp_path: Path) -> None:
    """Province (CA's home, enrollment on), then communes by token, by --ca and offline: each
    "Next:" command runs; the token commune connects; a revocation cuts it off with no edit."""
    ca_dir, port, enroll = tmp_path / "ca", free_port(), free_port()
    cli("ca", "init", str(ca_dir), "--name", "CA tỉnh Vĩnh Long")
    started: list[NodeProcess] = []
    try:
        province = tmp_path / "province"
        out = cli(
            "init", "--dir", str(province), "--mode", "provincial", "--id", "86", "--listen", f"127.0.0.1:{port}",
            "--ca", str(ca_dir), "--enroll-listen", f"127.0.0.1:{enroll}",
        ).stdout  # fmt: skip
        console_on_port_0(province)
        province_next = next_commands(out)
        assert [c.split()[1] for c in province_next] == ["doctor", "run", "token"]
        for command in province_next[:2]:
            run(command, {}, started)

        # A commune with no certificate: the token path, then doctor and run.
        by_token = tmp_path / "ba-tri"
        out = cli(
            "init", "--dir", str(by_token), "--mode", "commune", "--id", "86-28894", "--parent", f"127.0.0.1:{port}",
            "--parent-id", "86", "--agency", "thongke",
        ).stdout  # fmt: skip
        console_on_port_0(by_token)
        commands = next_commands(out)
        token_path = [c for c in commands if c.split()[1] in ("token", "enroll", "doctor", "run")]
        token = run(token_path[0], {"PROVINCE_DIR": str(province)}, started).strip()
        assert token.startswith("lt1.")
        for command in token_path[1:]:
            run(command, {"TOKEN": token}, started)
        wait_until(lambda: status(by_token)["parent"]["connected"], timeout=30, what="the enrolled commune to connect")

        # The province's own third command: a token for the next commune.
        assert run(province_next[2], {"NEW_NODE_ID": "86-29077"}, started).startswith("lt1.")

        # A ward signed offline at the CA: ca issue, cp, doctor.
        offline = tmp_path / "cau-ke"
        out = cli(
            "init", "--dir", str(offline), "--mode", "ward", "--id", "86-29560", "--parent", f"127.0.0.1:{port}", "--parent-id", "86"
        ).stdout
        steps = [c for c in next_commands(out) if c.split()[1] in ("ca", "doctor") or c.startswith("cp ")]
        assert [s.split()[0] for s in steps] == ["lienthong", "cp", "lienthong"]
        for command in steps:
            run(command, {"CA_DIR": str(ca_dir)}, started)

        # An agency node made with --ca: doctor passes at once.
        direct = tmp_path / "so-y-te"
        out = cli(
            "init", "--dir", str(direct), "--mode", "agency", "--id", "86-syt", "--parent", f"127.0.0.1:{port}", "--parent-id", "86",
            "--ca", str(ca_dir), "--agency", "soyte",
        ).stdout  # fmt: skip
        assert [c.split()[1] for c in next_commands(out)] == ["doctor", "run"]
        run(next_commands(out)[0], {}, started)

        # The province is the CA's home: a revocation cuts the commune off, with no edit and no restart.
        cli("ca", "revoke", str(ca_dir), "86-28894", "--reason", "key_compromise")
        wait_until(lambda: not status(by_token)["parent"]["connected"], timeout=30, what="the revoked commune to be cut off")
    finally:
        for node in started:
            node.stop()
