"""`lienthong service install --dir D`: a systemd unit that runs the node as a service.

One unit per node, `lienthong-<node id>.service`, so a machine may run several nodes (a
province and a test commune) and `systemctl status lienthong-86-28894` names the unit it
concerns. The unit runs `lienthong run --dir D` as a dedicated system user, restarts it on
failure, stops it with SIGTERM (the node's graceful stop), and leaves its log to the journal:
stderr is not a terminal there, so the node writes one JSON object per line
(`journalctl -u lienthong-ID -o cat | jq`). The file system is read-only to it except its
node directory (and the CA and any inbox folder outside it, when configured).
"""

from __future__ import annotations

import pwd
import shutil
import sys
from pathlib import Path

import click

from lienthong.config import settings as config

from .cli_common import DIR_OPTION, fail, load_settings

UNIT_DIR = Path("/etc/systemd/system")

UNIT = """\
# lienthong node {node_id}{name}: made by `lienthong service install --dir {node_dir}`.
[Unit]
Description=lienthong node {node_id}{name}
After=network-online.target
Wants=network-online.target

[Service]
Type=exec
User={user}
Group={user}
ExecStart={lienthong} run --dir {node_dir}
# SIGTERM is the node's graceful stop; it finishes the batch in hand and closes its store.
KillSignal=SIGTERM
TimeoutStopSec=60
Restart=on-failure
RestartSec=5
# The log goes to the journal, one JSON object per line: journalctl -u {unit} -o cat
SyslogIdentifier={unit_name}
Environment=PYTHONUNBUFFERED=1
UMask=0077
LimitNOFILE=65536
NoNewPrivileges=yes
{private_tmp}ProtectSystem=strict
ProtectHome=read-only
ProtectKernelTunables=yes
ProtectControlGroups=yes
ReadWritePaths={writable}

[Install]
WantedBy=multi-user.target
"""


def unit_name(node_id: str) -> str:
    return f"lienthong-{node_id}.service"


def lienthong_executable() -> str:
    """The `lienthong` this command was run as (an absolute path: systemd wants one)."""
    beside = Path(sys.executable).parent / "lienthong"
    found = str(beside) if beside.exists() else shutil.which("lienthong")
    if not found:
        fail("cannot find the installed `lienthong` command", "install lienthong (pip install lienthong-*.whl) and run this again")
    return str(Path(found).absolute())


def writable_paths(node_dir: Path, settings: config.Settings) -> list[str]:
    """The node directory, and what the node writes outside it: the CA (its home) and inbox folders elsewhere."""
    paths = [node_dir]
    if settings.tls.ca_dir:
        paths.append(node_dir / settings.tls.ca_dir)
    for options in settings.inbox.values():
        if options.path:
            paths.append(node_dir / options.path)
    out: list[str] = []
    for path in paths:
        text = str(path.resolve())
        if text not in out and not any(text.startswith(f"{o}/") for o in out):
            out.append(text)
    return out


def render_unit(node_dir: Path, settings: config.Settings, user: str, executable: str) -> str:
    name = unit_name(settings.node.id)
    writable = writable_paths(node_dir, settings)
    return UNIT.format(
        node_id=settings.node.id,
        name=f" ({settings.node.name})" if settings.node.name else "",
        node_dir=node_dir,
        user=user,
        lienthong=executable,
        unit=name,
        unit_name=name.removesuffix(".service"),
        writable=" ".join(writable),
        # A node kept under /tmp (a trial) would vanish behind a private /tmp.
        private_tmp="" if any(p == "/tmp" or p.startswith("/tmp/") for p in writable) else "PrivateTmp=yes\n",
    )


@click.group()
def service() -> None:
    """Run a node as a system service (systemd)."""


@service.command("install")
@DIR_OPTION
@click.option("--user", default="lienthong", show_default=True, help="The system user the node runs as.")
@click.option(
    "--unit-dir",
    default=str(UNIT_DIR),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the unit file.",
)
def install(node_dir: Path, user: str, unit_dir: Path) -> None:
    """Write the systemd unit lienthong-ID.service that runs this node, and print the commands that start it."""
    settings = load_settings(node_dir)
    if not unit_dir.is_dir():
        fail(f"{unit_dir} is not a folder", "give --unit-dir an existing folder (systemd reads /etc/systemd/system)")
    name = unit_name(settings.node.id)
    path = unit_dir / name
    try:
        path.write_text(render_unit(node_dir, settings, user, lienthong_executable()), encoding="utf-8")
        path.chmod(0o644)  # systemd and `systemctl status` read it as any user
    except PermissionError:
        fail(f"cannot write {path}", "run it as root: sudo lienthong service install --dir …")
    click.echo(f"Wrote {path}.")
    click.echo("Next:")
    try:
        pwd.getpwnam(user)
    except KeyError:
        click.echo(f"  useradd --system --home-dir {node_dir} --no-create-home --shell /usr/sbin/nologin {user}")
    for folder in writable_paths(node_dir, settings):
        click.echo(f"  chown -R {user}:{user} {folder}")
    click.echo(f"  runuser -u {user} -- {lienthong_executable()} doctor --dir {node_dir}")
    click.echo(f"  systemctl daemon-reload && systemctl enable --now {name}")
    click.echo(f"  journalctl -u {name} -f -o cat      (its log: one JSON object per line)")
