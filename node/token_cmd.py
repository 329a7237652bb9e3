"""`lienthong token`: the province's one-time enrollment tokens, made, listed and revoked."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from .cli_common import DIR_OPTION, JSON_OPTION, audited, echo_json, fail, load_settings
from .cli_i18n import _
from .trust import ca as ca_ops


@click.group()
def token() -> None:
    """One-time enrollment tokens (on the province)."""


@token.command("create")
@DIR_OPTION
@click.option("--id", "child_id", required=True, help="The node id the token is for (it can enroll no other).")
@click.option("--ttl", default="24h", show_default=True, help="How long the token stays valid (e.g. 30m, 24h, 7d).")
@JSON_OPTION
def token_create(node_dir: Path, child_id: str, ttl: str, as_json: bool) -> None:
    """Print a one-time token for a new node: it carries this province's enrollment address and CA fingerprint."""
    from .trust import tokens

    settings = load_settings(node_dir)
    if not settings.server.enroll_listen or not settings.tls.ca_dir:
        fail("this node does not enroll new nodes", "set server.enroll_listen and tls.ca_dir in lienthong.toml, and restart it")
    address = settings.server.enroll_address or settings.server.enroll_listen
    if address.startswith(("0.0.0.0:", "[::]:")) or address.endswith(":0"):
        fail(f"new nodes cannot reach {address}", "set server.enroll_address to the host:port they use to reach this node")
    ca_dir = node_dir / settings.tls.ca_dir
    text = tokens.create_token(
        node_dir, child_id, tokens.parse_ttl(ttl), address, ca_ops.ca_fingerprint(ca_dir), province_id=settings.node.id
    )
    parsed = tokens.parse_token(text)
    audited(node_dir, "admin.command", "token create", node=child_id, ttl=ttl, token_id=parsed.token_id)
    if as_json:
        expires = dt.datetime.fromtimestamp(parsed.expires, dt.UTC).isoformat()
        echo_json({"token": text, "token_id": parsed.token_id, "node": child_id, "expires": expires, "address": address})
        return
    click.echo(text)


@token.command("list")
@DIR_OPTION
@JSON_OPTION
def token_list(node_dir: Path, as_json: bool) -> None:
    """Every enrollment token made on this node, oldest first: for whom, until when, whether used or revoked (never a secret)."""
    from .trust import tokens

    load_settings(node_dir)
    rows = tokens.list_tokens(node_dir)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo(_("No enrollment token was made on this node."))
        return
    from .render import print_tokens

    print_tokens(rows)


@token.command("revoke")
@DIR_OPTION
@click.argument("token_id")
@JSON_OPTION
def token_revoke(node_dir: Path, token_id: str, as_json: bool) -> None:
    """Withdraw an unused token (TOKEN_ID from `token list`): it then enrolls nothing."""
    from .trust import tokens

    load_settings(node_dir)
    row = tokens.revoke_token(node_dir, token_id)
    audited(node_dir, "admin.command", "token revoke", node=row["node_id"], token_id=row["token_id"])
    if as_json:
        echo_json({"token_id": row["token_id"], "node": row["node_id"], "revoked_at": row["revoked_at"]})
        return
    click.echo(_("Token {0} for node {1} is revoked: it enrolls nothing now.").format(row["token_id"], row["node_id"]))
