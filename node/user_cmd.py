"""`lienthong user`: the console's accounts (node/web/accounts.py)."""

from __future__ import annotations

from pathlib import Path

import click

from .cli_common import DIR_OPTION, audited, echo_json, load_settings
from .cli_i18n import _
from .web.accounts import ROLES, Accounts

PASSWORD_OPTION = click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    envvar="LIENTHONG_PASSWORD",
    help="The password (asked for when not given; or LIENTHONG_PASSWORD).",
)


@click.group()
def user() -> None:
    """Console accounts: who may open this node's console, with which role and scope."""


@user.command("add")
@DIR_OPTION
@click.argument("name")
@click.option(
    "--role", required=True, type=click.Choice(ROLES), help="viewer reads; operator also acts on feedback; admin also sees the audit log."
)
@click.option("--unit", "units", multiple=True, help="Scope: this unit and the units below it (repeatable).")
@click.option("--agency", "agencies", multiple=True, help="Scope: this agency's data only (repeatable).")
@PASSWORD_OPTION
def add(node_dir: Path, name: str, role: str, units: tuple[str, ...], agencies: tuple[str, ...], password: str) -> None:
    """Add an account (its password kept as an argon2 hash)."""
    load_settings(node_dir)
    account = Accounts(node_dir).add(name, role, password, list(units), list(agencies))
    audited(node_dir, "user.add", name, role=role, units=list(account.units), agencies=list(account.agencies))
    scope = ", ".join([*account.units, *account.agencies]) or "the whole node"
    click.echo(_("Added {0} ({1}; sees {2}).").format(name, role, scope))


@user.command("list")
@DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_users(node_dir: Path, as_json: bool) -> None:
    """List the accounts."""
    load_settings(node_dir)
    accounts = Accounts(node_dir).list()
    if as_json:
        echo_json([a.to_dict() for a in accounts])
        return
    if not accounts:
        click.echo(_("No accounts: the console answers on loopback only, read-only."))
        return
    for a in accounts:
        scope = ", ".join([*a.units, *a.agencies]) or "whole node"
        click.echo(f"{a.name:<24} {a.role:<9} {scope}" + ("  " + _("(disabled)") if a.disabled else ""))


@user.command("disable")
@DIR_OPTION
@click.argument("name")
def disable(node_dir: Path, name: str) -> None:
    """Disable an account (it is refused from its next request on)."""
    load_settings(node_dir)
    Accounts(node_dir).disable(name)
    audited(node_dir, "user.disable", name)
    click.echo(_("Disabled {0}.").format(name))


@user.command("passwd")
@DIR_OPTION
@click.argument("name")
@PASSWORD_OPTION
def passwd(node_dir: Path, name: str, password: str) -> None:
    """Set an account's password."""
    load_settings(node_dir)
    Accounts(node_dir).set_password(name, password)
    audited(node_dir, "user.passwd", name)
    click.echo(_("Changed the password of {0}.").format(name))
