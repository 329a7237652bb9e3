"""deploy/compose.yaml, the trial federation (a province and two communes), checked without a
Docker engine: its services reference each other and the image consistently, and the one-shot
commands that make the CA and the nodes really run (volumes mapped to folders) and are safe to
run again. With `docker compose` installed, `docker compose config` validates the file too."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "deploy" / "compose.yaml"
NODE_DIR = "/var/lib/lienthong"  # the Dockerfile's VOLUME


def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_services_fit_together() -> None:
    """Every dependency exists; one image, built once; each node runs the image's own command
    (`lienthong run`) on a volume its init service made; communes reach the province by its service name."""
    all_ = services()
    assert {"province", "commune-ba-tri", "commune-cau-ke"} <= set(all_)
    assert sum("build" in s for s in all_.values()) == 1 and {s["image"] for s in all_.values()} == {"lienthong:local"}
    for name, service in all_.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in all_, f"{name} depends on {dependency}, which is not a service"
    nodes = [name for name in all_ if f"{name}-init" in all_]
    assert sorted(nodes) == ["commune-ba-tri", "commune-cau-ke", "province"]
    for name in nodes:
        node, init = all_[name], all_[f"{name}-init"]
        assert "command" not in node and "entrypoint" not in node and node["restart"] == "on-failure"
        assert node["depends_on"][f"{name}-init"]["condition"] == "service_completed_successfully"
        volume = next(v for v in node["volumes"] if v.endswith(f":{NODE_DIR}"))
        assert volume in init["volumes"]
    province_port = all_["province"]["ports"][0].split(":")[-1]
    for name in ("commune-ba-tri", "commune-cau-ke"):
        assert f"--parent province:{province_port}" in all_[f"{name}-init"]["command"][0]


def test_one_shot_commands_make_a_federation_and_are_safe_to_rerun(tmp_path: Path) -> None:
    """The CA and the three nodes are made by the compose file's own commands, in dependency
    order; run again (a restart), they change nothing."""
    all_ = services()
    order = ["ca", "province-init", "commune-ba-tri-init", "commune-cau-ke-init"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    rounds: list[dict[Path, int]] = []
    for _ in range(2):
        for name in order:
            command = all_[name]["command"][0].replace("chown -R 10001:10001", f"chown -R {os.getuid()}:{os.getgid()}")
            for mount in all_[name]["volumes"]:
                volume, _, path = mount.partition(":")
                command = command.replace(path, str(tmp_path / volume))
            out = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, check=False, timeout=240)
            assert out.returncode == 0, f"{name}: {out.stdout}{out.stderr}"
        rounds.append({p: p.stat().st_mtime_ns for p in [*tmp_path.rglob("lienthong.toml"), *tmp_path.rglob("*.crt")]})
    assert len([p for p in rounds[0] if p.name == "lienthong.toml"]) == 3
    assert rounds[1] == rounds[0]  # the second round made and re-issued nothing
    province = tomllib.loads((tmp_path / "province" / "lienthong.toml").read_text())
    assert province["tls"]["ca_dir"] == str(tmp_path / "ca")  # the CA's home
    commune = tomllib.loads((tmp_path / "commune-ba-tri" / "lienthong.toml").read_text())
    assert commune["parent"]["address"] == "province:7443" and (tmp_path / "commune-ba-tri" / "tls" / "node.crt").exists()


@pytest.mark.skipif(
    shutil.which("docker") is None or subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode != 0,
    reason="docker compose is not installed here",
)
def test_docker_compose_accepts_the_file() -> None:
    out = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
