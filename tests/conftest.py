"""Shared fixtures: a CA made in the test, node directories made by the CLI, and the care of
every process a test starts (stopped even when the test fails; its log shown when it does)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from lienthong.node.trust import ca

# The tests read the CLI's English: a Vietnamese locale on the machine running them must not
# change that (tests of the Vietnamese interface set LIENTHONG_LANG=vi or LANG themselves).
os.environ["LIENTHONG_LANG"] = "en"

from . import helpers
from .helpers import cli, relay


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    """A fresh provincial CA, made with `cryptography` for this test only."""
    path = tmp_path / "ca"
    ca.init_ca(path, "Test CA")
    return path


MakeNode = Callable[..., Path]


@pytest.fixture
def make_node(tmp_path: Path, ca_dir: Path) -> MakeNode:
    """Create a node directory with `lienthong init`, as an operator would.

    A node that listens binds port 0 (the kernel chooses; the node reports what it bound);
    `listen_address(node)` is the address its children use, valid before it starts and across restarts.
    """

    def make(node_id: str, *, parent: str = "", listen: bool = False, mode: str | None = None, **extra: str) -> Path:
        node_dir = tmp_path / node_id
        mode = mode or ("provincial" if not parent else "district")
        args = ["init", "--dir", str(node_dir), "--mode", mode, "--id", node_id, "--ca", str(ca_dir)]
        if listen or mode == "provincial":
            args += ["--listen", "127.0.0.1:0"]
            ADDRESSES[node_dir] = f"127.0.0.1:{relay(node_dir).port}"
        if parent:
            args += ["--parent", parent]
        for key, value in extra.items():
            args += [f"--{key.replace('_', '-')}", value]
        cli(*args)
        # Tests want quick reconnects; operators keep the defaults.
        config = node_dir / "lienthong.toml"
        config.write_text(
            config.read_text()
            .replace("backoff_max = 30.0", "backoff_max = 1.0")
            .replace("backoff_initial = 0.5", "backoff_initial = 0.1")
            .replace('listen = "127.0.0.1:8080"', 'listen = "127.0.0.1:0"')  # the console: several nodes on one machine
        )
        return node_dir

    return make


# Where each listening node of the current test is reached (see `make_node`).
ADDRESSES: dict[Path, str] = {}


def listen_address(node_dir: Path) -> str:
    """The host:port children of `node_dir` connect to: a relay the test holds (bound to port 0 by
    the kernel) to whatever port the node process bound, read from the node at each connection."""
    return ADDRESSES[node_dir]


@pytest.fixture(autouse=True)
def _log_defaults() -> Iterator[None]:
    """A command run in this process sets the log level (one-shot commands log warnings only):
    put structlog back after each test, or a later test capturing a node's info events sees none."""
    yield
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _processes() -> Iterator[None]:
    """Every process the test starts is stopped when it ends, passed or failed: SIGTERM, then SIGKILL."""
    helpers.STARTED.clear()
    ADDRESSES.clear()
    yield
    helpers.stop_started()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failing test shows the last lines of every node log it started, one report section each."""
    report = yield
    if report.failed:
        for proc in helpers.STARTED:
            state = "running" if proc.alive() else f"exited {proc.proc.returncode if proc.proc else '?'}"
            title = f"{proc.dir.name}/{proc.log_path.name} ({state}), last {helpers.LOG_TAIL} lines"
            report.sections.append((title, proc.tail()))
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The safety net: no process this session started outlives it (even one a test forgot)."""
    killed = helpers.kill_leftovers()
    if killed:
        sys.stderr.write(f"\nkilled {len(killed)} leftover process(es) of this test session: {killed}\n")
