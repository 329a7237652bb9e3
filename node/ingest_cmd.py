"""`lienthong ingest`: files taken in as if dropped into an inbox, each one's receipt on stdout."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lienthong.sync.clock import HybridClock

from . import cli_i18n, runtime
from .cli_common import DIR_OPTION, JSON_OPTION, echo_json, load_settings, writing_store
from .cli_i18n import _, ngettext
from .intake import StoreSink


@click.command()
@DIR_OPTION
@click.option("--agency", default="", help="The agency the files come from (as an inbox folder name would say).")
@click.option("--adapter", "adapter_name", default="", help="Read the files with this adapter instead of recognising them.")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@JSON_OPTION
def ingest(node_dir: Path, agency: str, adapter_name: str, files: tuple[Path, ...], as_json: bool) -> None:
    """Take FILES in, as if dropped into an inbox (the files stay where they are).

    Any format an adapter recognises: canonical JSON Lines, Vietnamese CSV, DHIS2,
    Open311, report manifests. Valid rows are stored, refused rows are listed with
    their reason; the exit code is 1 when anything was refused.
    """
    from lienthong.adapters.held import FileChanged
    from lienthong.adapters.intake import Inbox, Limits, take
    from lienthong.adapters.registry import Registry

    settings = load_settings(node_dir)
    registry = Registry()
    if adapter_name:
        registry.get(adapter_name)  # an UnknownAdapter lists the installed ones
    refused_any = False
    taken: list[dict[str, object]] = []
    vi = cli_i18n.language() == "vi"  # receipts carry both languages; the operator reads one
    with writing_store(node_dir, settings) as store:
        sink = StoreSink(store, HybridClock(store.max_version()), node_dir, runtime.own_units(settings), settings.node.mode == "provincial")
        limits = Limits(max_file_bytes=settings.ingest.max_file_mb * 1024 * 1024)
        for path in files:
            inbox = Inbox(agency=agency, path=path.resolve().parent, adapter=adapter_name)
            try:
                result = take(path, inbox, registry, sink, settings.node.id, limits, move=False)
            except FileChanged as exc:
                taken.append({"file": str(path), "status": "NOT_TAKEN", "reason": str(exc)})
                if not as_json:
                    click.echo(_("{0}: not taken: {1}. Try: run the command again once the file is complete.").format(path, exc), err=True)
                refused_any = True
                continue
            counts = result["importCount"]
            refused_any = refused_any or result["status"] == "ERROR" or bool(counts["refused"])
            taken.append({"file": str(path), **result})
            if as_json:
                continue
            click.echo(
                _("{0}: {1} imported, {2} updated, {3} unchanged, {4} refused").format(
                    path, counts["imported"], counts["updated"], counts["unchanged"], counts["refused"]
                )
                + (f" [{result['adapter']}]" if result["adapter"] else "")
            )
            description = result["description" if vi and result.get("description") else "description_en"]
            if result["status"] == "ERROR":
                click.echo(_("  refused whole: {0}").format(description), err=True)
            elif description:
                click.echo(f"  {description}")
            for conflict in result["conflicts"][:50]:
                where = f" {conflict['field']}:" if conflict["field"] else ""
                message = conflict["message" if vi and conflict.get("message") else "message_en"]
                click.echo(_("  line {0}:{1} {2}").format(conflict["line"], where, message), err=True)
            if counts["refused"] > 50:
                more = counts["refused"] - 50
                click.echo(ngettext("  … and {0} more refused row", "  … and {0} more refused rows", more).format(more), err=True)
    if as_json:
        echo_json({"files": taken, "refused": refused_any})
    if refused_any:
        sys.exit(1)
