"""What every `lienthong` command module shares: the --dir option and settings loading."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import click

from lienthong.config import settings as config
from lienthong.sync.errors import LienthongError

DIR_OPTION = click.option(
    "--dir",
    "node_dir",
    required=True,
    envvar="LIENTHONG_DIR",
    show_envvar=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The node directory (created by `lienthong init`).",
)


def fail(message: str, hint: str = "") -> NoReturn:
    raise LienthongError(message, hint)


def load_settings(node_dir: Path) -> config.Settings:
    return config.load(node_dir)
