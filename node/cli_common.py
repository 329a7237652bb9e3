"""What every `lienthong` command module shares: the --dir option, settings loading, and auditing an operator's command."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, NoReturn

import click

from lienthong.config import settings as config
from lienthong.sync.errors import LienthongError

from .trust.audit import AuditLog

DIR_OPTION = click.option(
    "--dir",
    "node_dir",
    required=True,
    envvar="LIENTHONG_DIR",
    show_envvar=True,
    # Resolved once, here: every path below is then absolute, never joined to DIR twice.
    type=click.Path(file_okay=False, path_type=Path, resolve_path=True),
    help="The node directory (created by `lienthong init`).",
)


def aware_datetime(text: str, option: str, example: str) -> dt.datetime:
    """An option's ISO date-time with its UTC offset, or one sentence and a hint."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option} is not a date-time (got {text!r})", f"write it as {example}")
    if moment.tzinfo is None:
        fail(f"{option} has no UTC offset (got {text!r})", f"add the offset, e.g. {example}")
    return moment


def fail(message: str, hint: str = "") -> NoReturn:
    raise LienthongError(message, hint)


def load_settings(node_dir: Path) -> config.Settings:
    return config.load(node_dir)


def audited(directory: Path, action: str, subject: str, **details: Any) -> None:
    """Record an operator's action in the audit log of a node or CA directory."""
    with AuditLog.open(directory) as log_:
        log_.append(action, subject, details)
