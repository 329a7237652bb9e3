"""What every `lienthong` command module shares: the --dir option, settings loading, the store opened for one
command, printing a result as JSON, and auditing an operator's command."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import click

from lienthong.config import settings as config
from lienthong.sync.errors import LienthongError
from lienthong.sync.store import Store

from . import display, runtime
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
    settings = config.load(node_dir)
    display.set_zone(settings.display.timezone)  # every time this command shows is in the node's zone
    return settings


@contextlib.contextmanager
def opened_store(node_dir: Path) -> Iterator[Store]:
    """The node's store, opened for one command and closed after it, also when the command fails."""
    store = Store.open(node_dir / runtime.STORE_FILE)
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def writing_store(node_dir: Path, settings: config.Settings, *, sign: bool = True) -> Iterator[Store]:
    """The node's store for a command that writes records: sealing what it writes (with `sign`;
    see `runtime.open_store`), closed after the command, also when it fails."""
    store = runtime.open_store(node_dir, settings, sign=sign)
    try:
        yield store
    finally:
        store.close()


def audited(directory: Path, action: str, subject: str, **details: Any) -> None:
    """Record an operator's action in the audit log of a node or CA directory."""
    with AuditLog.open(directory) as log_:
        log_.append(action, subject, details)


def ca_dir_argument(exists: bool = True, then: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The CA's folder as `--dir CA_DIR`, like every other command's folder, or as the first
    argument as it always was (both keep working). `then` names the positional argument that
    follows CA_DIR: given `--dir`, the one positional word is that argument."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def wrapper(*args: Any, ca_dir_arg: str | None = None, ca_dir_opt: Path | None = None, **kwargs: Any) -> Any:
            if ca_dir_opt is not None and ca_dir_arg is not None:
                if not then or kwargs.get(then) is not None:
                    fail(f"the CA folder is given twice ({ca_dir_arg} and --dir {ca_dir_opt})", "give it once, as --dir CA_DIR")
                kwargs[then], ca_dir_arg = ca_dir_arg, None
            if then and kwargs.get(then) is None:
                fail(f"missing {then.upper()}", "see the command's --help")
            ca_dir = ca_dir_opt if ca_dir_opt is not None else Path(ca_dir_arg) if ca_dir_arg is not None else None
            if ca_dir is None:
                fail("which CA? no CA folder was given", "give --dir CA_DIR (the folder `lienthong ca init` made)")
            if exists and not ca_dir.is_dir():
                fail(f"{ca_dir} is not a CA folder (no such folder)", "give --dir CA_DIR (the folder `lienthong ca init` made)")
            return command(*args, ca_dir=ca_dir, **kwargs)

        option = click.option(
            "--dir",
            "ca_dir_opt",
            metavar="CA_DIR",
            type=click.Path(file_okay=False, path_type=Path),
            help="The CA's folder (may also be given as the first argument, CA_DIR).",
        )
        return click.argument("ca_dir_arg", required=False, metavar="[CA_DIR]")(option(wrapper))

    return decorate


JSON_OPTION = click.option(
    "--json", "as_json", is_flag=True, help="Print the result as JSON for scripts (times in ISO 8601 with their offset)."
)


def echo_json(data: Any) -> None:
    """A command's result as JSON on stdout: UTF-8 text, not escapes; times stay ISO 8601 with their offset."""
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))
