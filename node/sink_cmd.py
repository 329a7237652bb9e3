"""`lienthong sink`: the PostgreSQL sink's state, and rebuilding the warehouse from the store."""

from __future__ import annotations

import json
from pathlib import Path

import click

from . import pg_sink, runtime, sink_task
from .cli_common import DIR_OPTION, fail, load_settings, opened_store


@click.group()
def sink() -> None:
    """The PostgreSQL sink ([sink.postgres]): the read tables streamed into PostgreSQL."""


@sink.command("status")
@DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(node_dir: Path, as_json: bool) -> None:
    """How far PostgreSQL is behind this node's store, and the sink's last error."""
    settings = load_settings(node_dir)
    with opened_store(node_dir) as store:
        state = sink_task.state_of(node_dir, settings, store.head())
    if as_json:
        click.echo(json.dumps({"sink": state}, indent=2))
        return
    click.echo(sink_task.describe(state))


@sink.command("resync")
@DIR_OPTION
def resync(node_dir: Path) -> None:
    """Load PostgreSQL again, whole, from this node's store (after the warehouse was lost or emptied)."""
    settings = load_settings(node_dir)
    if not settings.sink.postgres.dsn:
        fail("this node has no PostgreSQL sink", f"set [sink.postgres] dsn in {node_dir / 'lienthong.toml'}")
    try:
        pg = sink_task.connect(settings.sink.postgres)
    except Exception as exc:  # psycopg's errors: shown as one line
        fail(f"cannot reach PostgreSQL: {sink_task.one_line(exc)}", "check [sink.postgres] dsn, the password and that the server runs")
    sq = pg_sink.open_store(node_dir / runtime.STORE_FILE)
    try:
        done = pg_sink.step(pg, sq, settings.sink.postgres.batch, resync=True)
    except Exception as exc:
        fail(
            f"the resync did not finish: {sink_task.one_line(exc)}",
            "fix the cause and run `lienthong sink resync` again (nothing was half-written)",
        )
    finally:
        pg.close()
        sq.close()
    click.echo(f"Loaded {done.rows:,} rows into PostgreSQL, up to change-log position {done.position}.")
