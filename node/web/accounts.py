"""Console accounts: who may open a node's console, with which role and scope.

One SQLite file per node directory, `accounts.db` (owner-only), made on first use.
A password is kept as its argon2id hash (argon2-cffi's defaults: memory-hard, salted).

    role       viewer    reads pages and the API
               operator  also acts on feedback (assign, update) and takes approval steps from the pages
               admin     also sees the security page (audit log)
    units      a unit scope: the account sees these units and the units below them
    agencies   an agency scope: the account sees these agencies' data only
               (no units and no agencies: the whole node)
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from lienthong.sync import sqlite
from lienthong.sync.errors import LienthongError
from lienthong.sync.sqlite import transaction

FILE_NAME = "accounts.db"
ROLES = ("viewer", "operator", "admin")
_HASHER = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """What an unknown name's password is checked against (so it takes as long as a known one's).
    Made on first use, not at import: every command imports this module, and one argon2id hash
    takes 64 MiB and about a tenth of a second."""
    return _HASHER.hash("not a password")


class AccountError(LienthongError):
    """An account command or a login that cannot be done as asked."""


def _v1(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE accounts (name TEXT PRIMARY KEY, role TEXT NOT NULL, units TEXT NOT NULL, agencies TEXT NOT NULL, "
        "hash TEXT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, changed REAL NOT NULL)"
    )


MIGRATIONS = {1: _v1}


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    units: tuple[str, ...] = ()
    agencies: tuple[str, ...] = ()
    disabled: bool = False

    @property
    def scoped(self) -> bool:
        return bool(self.units or self.agencies)

    def may(self, role: str) -> bool:
        """Whether this account's role is at least `role`."""
        return ROLES.index(self.role) >= ROLES.index(role)

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "role": self.role, "units": list(self.units), "agencies": list(self.agencies), "disabled": self.disabled}


# Who the console answers when a node has no accounts: loopback only, read-only, unscoped.
ANONYMOUS = Account("", "viewer")


class Accounts:
    """The accounts of one node directory. Thread-safe (one connection per call)."""

    def __init__(self, node_dir: Path) -> None:
        self.path = Path(node_dir) / FILE_NAME

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        sqlite.migrate(conn, MIGRATIONS, f"the accounts file {self.path}")
        return conn

    def any(self) -> bool:
        """Whether any account (enabled) exists: without one the console is loopback-only and read-only."""
        if not self.path.exists():
            return False
        conn = self._connect()
        try:
            return conn.execute("SELECT 1 FROM accounts WHERE disabled = 0 LIMIT 1").fetchone() is not None
        finally:
            conn.close()

    def add(self, name: str, role: str, password: str, units: list[str], agencies: list[str]) -> Account:
        _check_name(name)
        if role not in ROLES:
            raise AccountError(f"role must be one of {', '.join(ROLES)} (got {role!r})", "give --role viewer, operator or admin")
        _check_password(password)
        now = time.time()
        conn = self._connect()
        try:
            with transaction(conn):
                if conn.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)).fetchone():
                    raise AccountError(
                        f"an account named {name!r} already exists", "choose another name, or change it with `lienthong user passwd`"
                    )
                conn.execute(
                    "INSERT INTO accounts VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
                    (name, role, json.dumps(sorted(set(units))), json.dumps(sorted(set(agencies))), _HASHER.hash(password), now, now),
                )
        finally:
            conn.close()
        return Account(name, role, tuple(sorted(set(units))), tuple(sorted(set(agencies))))

    def list(self) -> list[Account]:
        if not self.path.exists():
            return []
        conn = self._connect()
        try:
            return [_account(row) for row in conn.execute("SELECT name, role, units, agencies, disabled FROM accounts ORDER BY name")]
        finally:
            conn.close()

    def get(self, name: str) -> Account | None:
        if not self.path.exists():
            return None
        conn = self._connect()
        try:
            row = conn.execute("SELECT name, role, units, agencies, disabled FROM accounts WHERE name = ?", (name,)).fetchone()
        finally:
            conn.close()
        return _account(row) if row else None

    def disable(self, name: str) -> None:
        self._change(name, "disabled = 1")

    def set_password(self, name: str, password: str) -> None:
        _check_password(password)
        self._change(name, "hash = ?", _HASHER.hash(password))

    def _change(self, name: str, assignment: str, *args: object) -> None:
        conn = self._connect()
        try:
            with transaction(conn):
                cur = conn.execute(f"UPDATE accounts SET {assignment}, changed = ? WHERE name = ?", (*args, time.time(), name))
                if cur.rowcount == 0:
                    raise AccountError(f"no account named {name!r}", "list the accounts with `lienthong user list --dir DIR`")
        finally:
            conn.close()

    def authenticate(self, name: str, password: str) -> Account | None:
        """The enabled account with this name and password, or None (as slow for an unknown name)."""
        row = None
        if self.path.exists():
            conn = self._connect()
            try:
                row = conn.execute("SELECT name, role, units, agencies, disabled, hash FROM accounts WHERE name = ?", (name,)).fetchone()
            finally:
                conn.close()
        try:
            _HASHER.verify(row[5] if row else _dummy_hash(), password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None or row[4]:
            return None
        return _account(row[:5])


def _account(row: tuple[object, ...]) -> Account:
    name, role, units, agencies, disabled = row
    return Account(str(name), str(role), tuple(json.loads(str(units))), tuple(json.loads(str(agencies))), bool(disabled))


def _check_name(name: str) -> None:
    if not name or len(name) > 64 or not all(c.isalnum() or c in "._-@" for c in name):
        raise AccountError(f"an account name is 1-64 letters, digits and . _ - @ (got {name!r})", "choose a name such as nguyen.van.a")


def _check_password(password: str) -> None:
    if len(password) < 10:
        raise AccountError("a password must have at least 10 characters", "choose a longer password (a phrase of several words)")
