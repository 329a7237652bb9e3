"""SQLite plumbing shared by every database file a node keeps (the store, the CA
registry, the enrollment tokens, the audit log): transactions and numbered
migrations.

A database's schema version is `PRAGMA user_version`. A migration is a function
taking the connection; `migrate` runs the ones the file has not seen, each in its
own transaction with the version bump, so a crash mid-upgrade leaves the file at
the last complete version. A file written by a newer lienthong is refused, never
downgraded.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Mapping

from .errors import SchemaTooNew

Migration = Callable[[sqlite3.Connection], None]


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE … COMMIT on a connection in autocommit mode; ROLLBACK on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, migrations: Mapping[int, Migration], what: str) -> None:
    """Bring the database on `conn` (autocommit mode) to the highest version in `migrations`
    (numbered 1, 2, …). `what` names the file in errors ("the store at /srv/x/node.db")."""
    target = max(migrations, default=0)
    current = schema_version(conn)
    if current > target:
        raise SchemaTooNew(
            f"{what} has schema version {current}, newer than this lienthong understands ({target})",
            "upgrade lienthong on this machine",
        )
    for version in range(current + 1, target + 1):
        with transaction(conn):
            if schema_version(conn) >= version:
                continue  # another process upgraded it while we waited for the lock
            migrations[version](conn)
            conn.execute(f"PRAGMA user_version={version}")


def execute_script(conn: sqlite3.Connection, script: str) -> None:
    """Run several `;`-separated statements inside the caller's transaction
    (sqlite3's `executescript` would commit it first)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                conn.execute(pending)
            pending = ""
    if pending.strip():
        conn.execute(pending)
