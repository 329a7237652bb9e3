"""Shared fixtures: a CA made in the test, and node directories made by the CLI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lienthong.node.trust import ca

from .helpers import cli, free_port


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    """A fresh provincial CA, made with `cryptography` for this test only."""
    path = tmp_path / "ca"
    ca.init_ca(path, "Test CA")
    return path


MakeNode = Callable[..., Path]


@pytest.fixture
def make_node(tmp_path: Path, ca_dir: Path) -> MakeNode:
    """Create a node directory with `lienthong init`, as an operator would."""

    def make(node_id: str, *, parent: str = "", listen: bool = False, mode: str | None = None, **extra: str) -> Path:
        node_dir = tmp_path / node_id
        mode = mode or ("provincial" if not parent else "district")
        args = ["init", "--dir", str(node_dir), "--mode", mode, "--id", node_id, "--ca", str(ca_dir)]
        if listen or mode == "provincial":
            args += ["--listen", f"127.0.0.1:{free_port()}"]
        if parent:
            args += ["--parent", parent]
        for key, value in extra.items():
            args += [f"--{key.replace('_', '-')}", value]
        cli(*args)
        # Tests want quick reconnects; operators keep the defaults.
        config = node_dir / "lienthong.toml"
        config.write_text(
            config.read_text().replace("backoff_max = 30.0", "backoff_max = 1.0").replace("backoff_initial = 0.5", "backoff_initial = 0.1")
        )
        return node_dir

    return make


def listen_address(node_dir: Path) -> str:
    import tomllib

    return str(tomllib.loads((node_dir / "lienthong.toml").read_text())["server"]["listen"])
