"""`lienthong files`: the files (attachments) named by records, out of the node's blobs/ folder."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import click

from lienthong.sync.blobs import BLOBS, Blobs, valid

from .cli_common import DIR_OPTION, fail, load_settings, opened_store
from .cli_i18n import ngettext


@click.group()
def files() -> None:
    """Files named by reports and request answers (see `query reports --json`: each report's `files`)."""


@files.command("get")
@DIR_OPTION
@click.argument("sha256")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Where to write the file.")
def get(node_dir: Path, sha256: str, out_file: Path) -> None:
    """Write the file whose SHA-256 is SHA256 to --out, checked against that SHA-256 on the way."""
    load_settings(node_dir)
    sha = sha256.strip().lower()
    if not valid(sha):
        fail(f"{sha256!r} is not a SHA-256", "give the 64 hex digits `lienthong query reports --json` prints under each report's files")
    blobs = Blobs(node_dir / BLOBS)
    if not blobs.has(sha):
        fail(*_why_absent(node_dir, sha, blobs))
    digest = hashlib.sha256()
    out_file.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out_file.name}.", dir=out_file.parent)
    try:
        with os.fdopen(fd, "wb") as dst, blobs.path(sha).open("rb") as src:
            for block in iter(lambda: src.read(1 << 20), b""):
                digest.update(block)
                dst.write(block)
        if digest.hexdigest() != sha:
            fail(f"the copy of file {sha} held here is damaged (its bytes no longer match)", "restore blobs/ from a backup")
        os.replace(name, out_file)
    finally:
        Path(name).unlink(missing_ok=True)
    size = out_file.stat().st_size
    click.echo(
        ngettext("Wrote {0} ({1:,} byte, SHA-256 verified).", "Wrote {0} ({1:,} bytes, SHA-256 verified).", size).format(out_file, size)
    )


def _why_absent(node_dir: Path, sha: str, blobs: Blobs) -> tuple[str, str]:
    with opened_store(node_dir) as store:
        row = store.reader().execute("SELECT name, size, origin, source, state, error FROM blob_wants WHERE sha256 = ?", (sha,)).fetchone()
    if row is None:
        return f"this node holds no file {sha}", "check the SHA-256 in `lienthong query reports --json` (a report's files)"
    name, size, origin, source, state, error = row
    if state == "refused":
        return f"the file {name} of {origin} was refused here: {error}", "raise the limit in [files] of lienthong.toml and restart the node"
    whence = "the parent" if source == "^" else f"node {source}"
    mb = 1024 * 1024
    return (
        f"the file {name} of {origin} is still arriving from {whence}: {blobs.received(sha) / mb:,.1f} of {size / mb:,.1f} MB here"
        + (f" ({error})" if error else ""),
        "wait, and follow it with `lienthong status`",
    )
