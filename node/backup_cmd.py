"""`lienthong backup` and `lienthong restore`: the whole node in one file, and back (see backup.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import click

from lienthong.sync.store import Store

from . import runtime
from .cli_common import DIR_OPTION, JSON_OPTION, audited, echo_json, fail, load_settings
from .cli_i18n import _, ngettext
from .display import local_time
from .trust import tls


@click.command()
@DIR_OPTION
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--store-only", is_flag=True, help="Copy the store alone to DEST (one SQLite file), as earlier versions did.")
@JSON_OPTION
def backup(node_dir: Path, dest: Path, store_only: bool, as_json: bool) -> None:
    """Back up the whole node to the file DEST while it runs: store, audit log, enrollment
    database, keys, certificates, configuration, blobs, inbox (SQLite online backup), and its CA."""
    from .backup import backup_node
    from .trust.crl import crl_path

    if store_only:
        if dest.exists():
            fail(f"{dest} exists", "choose a new file name")
        if not dest.parent.is_dir():
            fail(f"cannot write the backup to {dest}: {dest.parent} is not a folder", "give DEST in an existing folder")
        store = Store.open(node_dir / runtime.STORE_FILE)
        try:
            store.backup(dest)
        except sqlite3.Error as exc:
            fail(f"cannot write the backup to {dest}: {exc}", "choose a folder you can write to, with room for the store")
        finally:
            store.close()
        audited(node_dir, "admin.command", "backup", dest=str(dest), store_only=True)
        if as_json:
            echo_json({"backup": str(dest), "store_only": True, "files": 1, "ca_dir": None})
            return
        click.echo(_("Backed up {0} to {1}.").format(node_dir / runtime.STORE_FILE, dest))
        return
    settings = load_settings(node_dir)
    crl = crl_path(node_dir, settings.tls.crl, settings.tls.ca_dir)
    ca_dir = node_dir / settings.tls.ca_dir if settings.tls.ca_dir else crl.parent if crl and (crl.parent / tls.CA_CERT).exists() else None
    audited(node_dir, "admin.command", "backup", dest=str(dest))  # before: the backup holds its own entry
    manifest = backup_node(node_dir, dest, settings.node.id, ca_dir)
    if as_json:
        echo_json(
            {
                "backup": str(dest),
                "store_only": False,
                "node": settings.node.id,
                "files": len(manifest["node"]),
                "ca_dir": manifest.get("ca_dir"),
                "made_at": manifest.get("made_at"),
                "epoch": manifest.get("epoch"),
            }
        )
        return
    count = len(manifest["node"])
    files = ngettext("{0} file", "{0} files", count).format(count)
    if "ca_dir" in manifest:
        click.echo(_("Backed up node {0} ({1}) and its CA {2} to {3}.").format(settings.node.id, files, manifest["ca_dir"], dest))
    else:
        click.echo(_("Backed up node {0} ({1}) to {2}.").format(settings.node.id, files, dest))
    click.echo(_("Restore it with: lienthong restore --dir NEW_DIR {0}").format(dest))


@click.command()
@DIR_OPTION
@click.argument("archive", metavar="BACKUP", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def restore(node_dir: Path, archive: Path) -> None:
    """Put a node back from BACKUP (made by `lienthong backup`) into DIR, a new or empty folder.

    The restored store starts a new change-log epoch: its parent takes everything again and
    sends back what it holds that the copy lacks. Start it with `lienthong run`."""
    from .backup import restore_node

    manifest = restore_node(archive, node_dir)
    audited(node_dir, "admin.command", "restore", source=str(archive), made_at=manifest["made_at"], epoch=manifest["epoch"])
    click.echo(
        _("Restored node {0} (backed up {1}) into {2}; new epoch {3}.").format(
            manifest["node_id"], local_time(manifest["made_at"]), node_dir, manifest["epoch"]
        )
    )
    if "ca_dir" in manifest:
        where = _("put back") if manifest["ca_restored"] else _("left as it is (it exists)")
        click.echo(_("Its CA {0}: {1}.").format(manifest["ca_dir"], where))
    click.echo(_("Next: {0}").format(f"lienthong run --dir {node_dir}"))
