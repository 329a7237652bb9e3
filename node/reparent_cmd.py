"""`lienthong reparent`: move a node under a new parent (a merger of units or provinces)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import click
import tomlkit

from lienthong.config import settings as config
from lienthong.sync.errors import ConfigError
from lienthong.sync.upstream import Upstream

from . import runtime
from .cli_common import DIR_OPTION, audited, load_settings, opened_store
from .cli_i18n import _, ngettext


@click.command()
@DIR_OPTION
@click.option("--parent", "address", required=True, metavar="HOST:PORT", help="The new parent node's address.")
@click.option("--parent-id", default="", help="The new parent's node id; when given, its certificate must carry it.")
def reparent(node_dir: Path, address: str, parent_id: str) -> None:
    """Move this node under a new parent: it sends the new parent its whole history (its own
    records and its descendants'), which the new parent stores exactly once; the old parent
    keeps what it had. Run it with the node stopped; start the node again afterwards."""
    settings = load_settings(node_dir)
    path = node_dir / config.CONFIG_FILE
    document = tomlkit.parse(path.read_text(encoding="utf-8"))
    parent = document.setdefault("parent", tomlkit.table())
    old_address, old_id = settings.parent.address, settings.parent.id
    parent["address"], parent["id"] = address, parent_id
    config.validate(tomllib.loads(tomlkit.dumps(document)))  # a bad address fails here, naming the field
    if parent_id and parent_id == settings.node.id:
        raise ConfigError(f"parent.id: a node cannot be its own parent (got {parent_id!r})", "give the new parent's id")
    with runtime.run_lock(node_dir):  # refuses while the node runs
        with opened_store(node_dir) as store:
            entries = Upstream(store).reparent(parent_id)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(tomlkit.dumps(document), encoding="utf-8")
        tmp.rename(path)

    audited(node_dir, "admin.command", "reparent", old_parent=old_address, old_parent_id=old_id, parent=address, parent_id=parent_id)
    target = f"{address} ({parent_id})" if parent_id else address
    click.echo(_("Moved {0} from {1} to {2}.").format(settings.node.id, old_address or _("no parent"), target))
    click.echo(
        ngettext(
            "On its next start it sends the new parent its whole history ({0} change-log entry); the old parent keeps its copy.",
            "On its next start it sends the new parent its whole history ({0} change-log entries); the old parent keeps its copy.",
            entries,
        ).format(entries)
    )
    click.echo(_("Next: {0}").format(f"lienthong run --dir {node_dir}"))
