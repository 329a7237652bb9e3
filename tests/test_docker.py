"""The container's contract, exercised without a Docker engine: the Dockerfile passes
hadolint, and its exact ENTRYPOINT/CMD and HEALTHCHECK commands run a node that
answers its health check and stops gracefully on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import MakeNode
from .helpers import NodeProcess, wait_until

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instruction(name: str) -> str:
    """The last value of a Dockerfile instruction, with line continuations joined."""
    text = DOCKERFILE.replace("\\\n", " ")
    matches = re.findall(rf"^{name}\s+(.+)$", text, flags=re.M)
    assert matches, f"the Dockerfile has no {name}"
    return matches[-1].strip()


def exec_form(value: str) -> list[str]:
    argv = json.loads(value)
    assert isinstance(argv, list), "use the exec form so the node is PID 1 and receives SIGTERM"
    return argv


def executable(argv: list[str]) -> list[str]:
    """Resolve the image's `lienthong` to this environment's installed console script."""
    found = shutil.which(argv[0]) or str(Path(sys.executable).parent / argv[0])
    return [found, *argv[1:]]


def test_dockerfile_passes_hadolint() -> None:
    """The Dockerfile is linted (no engine runs here to build it)."""
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    out = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_image_runs_as_non_root_with_volume_port_and_healthcheck() -> None:
    """Non-root user, the node directory as a volume, the federation port exposed."""
    assert instruction("USER") not in ("root", "0", "0:0")
    assert exec_form(instruction("VOLUME")) == ["/var/lib/lienthong"]
    assert instruction("EXPOSE") == "7443"
    assert "LIENTHONG_DIR=/var/lib/lienthong" in DOCKERFILE
    assert re.search(r"^FROM .* AS build$", DOCKERFILE, flags=re.M) and re.search(r"COPY --from=build", DOCKERFILE)


@pytest.mark.slow
def test_entrypoint_serves_passes_healthcheck_and_stops_on_sigterm(make_node: MakeNode) -> None:
    """The image's exact start command runs the node; its HEALTHCHECK passes; SIGTERM exits 0."""
    node_dir = make_node("86")
    env = {**os.environ, "LIENTHONG_DIR": str(node_dir)}
    start = executable(exec_form(instruction("ENTRYPOINT")) + exec_form(instruction("CMD")))
    health = executable(exec_form(instruction("HEALTHCHECK").split("CMD", 1)[1].strip()))
    node = NodeProcess(node_dir, {"LIENTHONG_DIR": str(node_dir)}, argv=start, log_name="container.log").start()
    wait_until(
        lambda: subprocess.run(health, env=env, capture_output=True, check=False).returncode == 0,
        timeout=30,
        what="the HEALTHCHECK command to pass",
    )
    assert node.stop() == 0  # SIGTERM
    text = (node_dir / "container.log").read_text()
    assert '"event": "node.stopped"' in text
    # Once stopped, the health check fails with a clear sentence, not a traceback.
    out = subprocess.run(health, env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 1 and out.stderr.startswith("Error: ") and "Traceback" not in out.stderr
