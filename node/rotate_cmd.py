"""`lienthong ca rotate-issuing`: the root replaces the issuing CA (node/trust/root.py)."""

from __future__ import annotations

from pathlib import Path

import click

from .cli_common import audited, ca_dir_argument
from .cli_i18n import _
from .trust import ca as ca_ops
from .trust import root


@click.command("rotate-issuing")
@ca_dir_argument()
@click.option("--reason", type=click.Choice(["superseded", "key_compromise"]), default="superseded", show_default=True, help="Why.")
def rotate_issuing(ca_dir: Path, reason: str) -> None:
    """Replace the issuing CA (the root key must be back in CA_DIR); nodes move to the new one as they renew."""
    old, new = root.rotate_issuing(ca_dir, ca_ops.passphrase_from_env(), reason)
    audited(
        ca_dir, "admin.command", "ca rotate-issuing", reason=reason, old=format(old.serial_number, "x"), new=format(new.serial_number, "x")
    )
    click.echo(
        _("New issuing CA {0} until {1}; the old one's key is deleted.").format(
            format(new.serial_number, "x"), f"{new.not_valid_after_utc:%Y-%m-%d}"
        )
    )
    if reason == "key_compromise":
        click.echo(_("The old issuing CA {0} is revoked in {1}.").format(format(old.serial_number, "x"), ca_dir / root.ROOT_CRL))
    click.echo(
        _("Move {0} offline again. Nodes keep their trust (the root) and renew onto the new issuing CA.").format(ca_dir / root.ROOT_KEY)
    )
