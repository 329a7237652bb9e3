"""The README's and docs/install.md's walkthroughs, run verbatim on real processes: every command
of every `sh` block, in order, with only paths, ports and the printed token substituted (a
`lienthong run` is started in the background; the console's port 8080 becomes port 0 so several
nodes share the machine). `sh root` blocks change the system (packages, users, systemd, firewall):
their `lienthong` commands are run (a unit is written to a test folder), the rest are not.
The docs point at no file a user's clone lacks."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from .helpers import NodeProcess, cli

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "testdata" / "samples" / "inbox" / "thongke" / "chi-tieu-ktxh-thang-10-2026.csv"
SETUP_LINE = "bash scripts/setup.sh && . .venv/bin/activate"  # what made this test's own environment


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def blocks(text: str) -> list[tuple[bool, list[str]]]:
    """(as_root, commands) of each ```sh / ```sh root block: continuations joined, comments dropped."""
    out = []
    for kind, body in re.findall(r"^```(sh|sh root)\n(.*?)^```", text, flags=re.M | re.S):
        lines = [line.strip() for line in body.replace("\\\n", " ").splitlines()]
        out.append((kind == "sh root", [line for line in lines if line and not line.startswith("#")]))
    return out


def readme_walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    return text[text.index("## Install a node") : text.index("## Documentation")]


class Walk:
    """Runs one document's commands against folders under `base`."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.work = base / "work"  # the user's current folder, holding the agency's file
        self.work.mkdir(parents=True)
        shutil.copy(SAMPLE, self.work / "chi-tieu-thang-10.csv")
        port, enroll = free_port(), free_port()
        self.subs = [
            ("ioc.vinhlong.example:7443", f"127.0.0.1:{port}"),
            ("0.0.0.0:7443", f"127.0.0.1:{port}"),
            ("0.0.0.0:7444", f"127.0.0.1:{enroll}"),
            ("ioc.vinhlong.example", "127.0.0.1"),
            ("/secure/", f"{base}/secure/"),
            ("/media/usb", f"{base}/usb"),
            ("/srv/", f"{base}/srv/"),
            ("/backup", f"{base}/backup"),
        ]
        self.token = ""
        self.ran: list[str] = []

    def line(self, command: str, as_root: bool) -> None:
        if command.startswith("bash scripts/setup.sh"):
            assert command.split("#")[0].strip() == SETUP_LINE
            return
        for old, new in self.subs:
            command = command.replace(old, new)
        argv = shlex.split(command, comments=True)
        if "lt1.…" in argv:
            assert self.token, "the document uses a token before it makes one"
            argv = [self.token if arg == "lt1.…" else arg for arg in argv]
        if as_root and argv[0] != "lienthong":
            return  # changes the system: not run here (see the module docstring)
        self.ran.append(command)
        if argv[0] != "lienthong":
            out = subprocess.run(["sh", "-c", shlex.join(argv)], cwd=self.work, capture_output=True, text=True, check=False, timeout=60)
            assert out.returncode == 0, f"{command}: {out.stderr}"
            return
        args = argv[1:]
        if args[0] == "run":
            NodeProcess(Path(args[2])).start().port("web_port")
            return
        if args[:2] == ["service", "install"]:
            (self.base / "units").mkdir(exist_ok=True)
            args += ["--unit-dir", str(self.base / "units")]
        out = cli(*args, cwd=self.work)
        if args[:2] == ["token", "create"]:
            self.token = out.stdout.strip()
        if args[0] == "init":
            config = Path(args[2]) / "lienthong.toml"
            config.write_text(config.read_text().replace('listen = "127.0.0.1:8080"', 'listen = "127.0.0.1:0"'))

    def document(self, text: str) -> None:
        for as_root, commands in blocks(text):
            for command in commands:
                self.line(command, as_root)


@pytest.mark.slow
def test_install_md_runs_as_written(tmp_path: Path) -> None:
    walk = Walk(tmp_path)
    walk.document((ROOT / "docs" / "install.md").read_text())
    assert any(c.startswith("lienthong enroll") for c in walk.ran) and any(c.startswith("lienthong ca issue") for c in walk.ran)
    assert (tmp_path / "units" / "lienthong-86-28894.service").exists()
    assert (tmp_path / "srv" / "lienthong-ba-tri-moi" / "lienthong.toml").exists()


@pytest.mark.slow
def test_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    walk = Walk(tmp_path)
    walk.document(readme_walkthrough())
    assert len(walk.ran) >= 15 and (tmp_path / "backup" / "86-20261207.tar").exists()


def test_docs_point_only_at_files_a_clone_has() -> None:
    """No DESIGN.md or MEASUREMENTS.md (they are not in a user's clone), and every relative link resolves."""
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for doc in docs:
        text = doc.read_text()
        for name in ("DESIGN.md", "MEASUREMENTS.md", "../shared"):
            assert name not in text, f"{doc.relative_to(ROOT)} mentions {name}, which a user's clone does not have"
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" not in target and not target.startswith("mailto:"):
                assert (doc.parent / target).exists(), f"{doc.relative_to(ROOT)} links to {target}, which does not exist"


def test_blocks_are_found() -> None:
    """The extractor sees the documents' blocks (a walkthrough that runs nothing proves nothing)."""
    assert sum(len(c) for _, c in blocks((ROOT / "docs" / "install.md").read_text())) >= 25
    assert sum(len(c) for _, c in blocks(readme_walkthrough())) >= 18
    assert os.sep == "/"
