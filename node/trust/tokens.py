"""Enrollment tokens: the one-time token that enrolls a new node, and the province's
store of the tokens it made (DESIGN §5).

    province:  create_token(node_dir, node_id, ttl, address, fingerprint, province_id=…) -> "lt1.…"
    province:  list_tokens(node_dir)                                                      -> what was made and used
    new node:  parse_token(text)                                                          -> Token

The token is spent by the province's enrollment service (`enroll_server.py`) when
the new node (`enroll_client.py`) exchanges it for a certificate.

Token format (what `lienthong token create` prints, one line, no spaces):

    lt1.<base64url, no padding, of a JSON object>

    a  the province's enrollment address, HOST:PORT (IPv6 as [::1]:PORT)
    f  SHA-256 of the provincial CA certificate's DER, 64 lowercase hex digits (the pin)
    i  the token id, 16 lowercase hex digits (public: it names the row on the province)
    s  the secret, 32 random bytes, base64url without padding (the province keeps only SHA-256 of it)
    n  the node id the token is bound to (the CSR's CN must be this)
    e  when the token expires, Unix seconds (the province's clock decides)
    p  the province's node id (its certificate's CN), or "" when not given

The token is not signed: changing `a` or `f` only makes the new node refuse the
server (the pin no longer matches); changing `i`, `s` or `n` only makes the
province refuse it. Whoever holds a token can enroll its node once, so it is
passed like a password, and it expires (24 h by default, 30 days at most).

Token store: `NODE_DIR/enroll.db` (SQLite) in the province's node directory, not a
table in the CA registry `issued.db`: the registry's schema and version belong to
`ca.py` (a table added behind its back would be invisible to its migrations, and a
version bump would lock older lienthong out of the registry), while tokens are
operational state of the enrollment service the running node serves, beside the
audit log that records their use. The file holds no secrets, only their hashes.
Its schema is numbered migrations (`MIGRATIONS`, run by `lienthong.sync.sqlite.migrate`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lienthong.sync import sqlite
from lienthong.sync.errors import SchemaTooNew, TrustError
from lienthong.sync.sqlite import transaction

from .issue import DNS_NAME, NODE_ID

TOKEN_PREFIX = "lt1."
TOKENS_FILE = "enroll.db"
DEFAULT_TTL = 24 * 3600
MAX_TTL = 30 * 24 * 3600
SECRET_BYTES = 32
_TOKEN_ID = re.compile(r"[0-9a-f]{16}")
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
BAD_TOKEN_HINT = "copy the whole token (it starts with lt1.) again, or ask the province's operator for a new one (`lienthong token create`)"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    token_id    TEXT PRIMARY KEY,           -- 16 hex digits, public
    node_id     TEXT NOT NULL,              -- the only node id this token enrolls
    secret_hash TEXT NOT NULL,              -- SHA-256 (hex) of the 32-byte secret; the secret is never stored
    created     TEXT NOT NULL,              -- ISO 8601, UTC
    expires     TEXT NOT NULL,              -- ISO 8601, UTC
    used_at     TEXT,                       -- when it enrolled its node; NULL while unused
    used_by     TEXT NOT NULL DEFAULT '',   -- the IP address it was used from
    serial      TEXT NOT NULL DEFAULT ''    -- the certificate it was exchanged for (hex)
);
CREATE INDEX IF NOT EXISTS tokens_node ON tokens (node_id);
"""


def _tokens_v1(conn: sqlite3.Connection) -> None:
    sqlite.execute_script(conn, _SCHEMA)


def _tokens_v2(conn: sqlite3.Connection) -> None:
    # `lienthong token revoke`: a token withdrawn before use (ISO 8601, UTC; NULL while it stands).
    conn.execute("ALTER TABLE tokens ADD COLUMN revoked_at TEXT")


# The token store's schema, version by version (`PRAGMA user_version`); append, never edit.
MIGRATIONS: dict[int, sqlite.Migration] = {1: _tokens_v1, 2: _tokens_v2}


class EnrollError(TrustError):
    """Enrollment failed or was refused; the message says why, the hint what to do."""


@dataclass(frozen=True)
class Token:
    """A parsed enrollment token (see the module doc for the wire format)."""

    address: str
    fingerprint: str
    token_id: str
    secret: bytes
    node_id: str
    expires: int
    province_id: str = ""

    def encode(self) -> str:
        body = {
            "a": self.address,
            "e": self.expires,
            "f": self.fingerprint,
            "i": self.token_id,
            "n": self.node_id,
            "p": self.province_id,
            "s": _b64(self.secret),
        }
        return TOKEN_PREFIX + _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_token(text: str) -> Token:
    """Read a token printed by `create_token`; EnrollError if it is malformed."""
    text = "".join(text.split())  # tolerate a token wrapped by a mail client or terminal
    if not text.startswith(TOKEN_PREFIX):
        raise EnrollError("this is not a lienthong enrollment token (it must start with lt1.)", BAD_TOKEN_HINT)
    try:
        body = json.loads(_unb64(text[len(TOKEN_PREFIX) :]))
        if not isinstance(body, dict):
            raise ValueError("not an object")
        token = Token(
            address=_str(body["a"]),
            fingerprint=_str(body["f"]),
            token_id=_str(body["i"]),
            secret=_unb64(_str(body["s"])),
            node_id=_str(body["n"]),
            expires=body["e"],
            province_id=_str(body.get("p", "")),
        )
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise EnrollError("the enrollment token is damaged: it cannot be read", BAD_TOKEN_HINT) from None
    problems = []
    if not split_address(token.address):
        problems.append("its address is not HOST:PORT")
    if not _FINGERPRINT.fullmatch(token.fingerprint):
        problems.append("its CA fingerprint is not 64 hex digits")
    if not _TOKEN_ID.fullmatch(token.token_id):
        problems.append("its id is malformed")
    if len(token.secret) != SECRET_BYTES:
        problems.append("its secret has the wrong length")
    if not NODE_ID.fullmatch(token.node_id):
        problems.append("its node id is not acceptable")
    if token.province_id and not NODE_ID.fullmatch(token.province_id):
        problems.append("its province id is not acceptable")
    if isinstance(token.expires, bool) or not isinstance(token.expires, int):
        problems.append("its expiry is not a time")
    if problems:
        raise EnrollError(f"the enrollment token is damaged: {'; '.join(problems)}", BAD_TOKEN_HINT)
    return token


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def split_address(address: str) -> tuple[str, int] | None:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdecimal() or not 0 < int(port) < 65536:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
    elif not host or ":" in host or not DNS_NAME.fullmatch(host):
        return None
    return host, int(port)


def parse_ttl(text: str) -> int:
    """'24h', '90m', '2d', '3600s' or '3600' as seconds; EnrollError if not acceptable."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text.lower())
    if not match:
        raise EnrollError(f"{text!r} is not a duration", "write it like 24h, 90m, 2d or 3600s")
    seconds = int(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
    _check_ttl(seconds)
    return seconds


def _check_ttl(seconds: int) -> None:
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 60 <= seconds <= MAX_TTL:
        raise EnrollError(f"a token must live between a minute and {MAX_TTL // 86400} days (got {seconds!r} s)", "the default is 24h")


@contextlib.contextmanager
def token_store(node_dir: Path) -> Iterator[sqlite3.Connection]:
    """The token store (autocommit; wrap writes in `transaction`), created (mode 0600) on first use."""
    node_dir = Path(node_dir)
    if not node_dir.is_dir():
        raise EnrollError(
            f"no node directory at {node_dir}", "create the province's node first with `lienthong init`, or give the right --dir"
        )
    path = node_dir / TOKENS_FILE
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise EnrollError(f"the token store {path} cannot be opened: {exc}", "check the node directory's permissions") from None
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=30000")
        try:
            sqlite.migrate(conn, MIGRATIONS, f"the token store {path}")
        except SchemaTooNew as exc:  # an EnrollError like every other token-store trouble
            raise EnrollError(exc.message, exc.hint) from exc
        yield conn
    except sqlite3.Error as exc:
        raise EnrollError(f"the token store {path} cannot be used: {exc}", "check free disk space and the file's permissions") from None
    finally:
        conn.close()


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC).isoformat()


def _hash(secret: bytes) -> str:
    return hashlib.sha256(secret).hexdigest()


def create_token(
    node_dir: Path,
    node_id: str,
    ttl_seconds: int,
    address: str,
    ca_fingerprint: str,
    *,
    province_id: str = "",
    now: float | None = None,
) -> str:
    """Make a one-time token that enrolls `node_id` within `ttl_seconds`; returns its text.

    `node_dir` is the province's node directory (the token store is `enroll.db` there);
    `address` is where its enrollment listener is reached (HOST:PORT, as the new node
    sees it); `ca_fingerprint` is `ca.ca_fingerprint(CA_DIR)`; `province_id` is the
    province's node id, which the new node then requires of the server's certificate.
    """
    if not NODE_ID.fullmatch(node_id):
        raise EnrollError(
            f"node id {node_id!r} is not acceptable", "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    if province_id and not NODE_ID.fullmatch(province_id):
        raise EnrollError(f"province id {province_id!r} is not acceptable", "give the province node's id from its lienthong.toml")
    if node_id == province_id:
        raise EnrollError(f"node {node_id!r} is the province itself", "make tokens for the province's children")
    if not split_address(address):
        raise EnrollError(
            f"{address!r} is not an address the new node can reach", "give HOST:PORT of the enrollment listener, e.g. ioc.example.vn:7444"
        )
    fingerprint = ca_fingerprint.strip().lower().replace(":", "")
    if not _FINGERPRINT.fullmatch(fingerprint):
        raise EnrollError(f"{ca_fingerprint!r} is not a SHA-256 fingerprint", "use ca.ca_fingerprint(CA_DIR)")
    _check_ttl(ttl_seconds)
    created = int(time.time() if now is None else now)
    expires = created + ttl_seconds
    secret = secrets.token_bytes(SECRET_BYTES)
    token_id = secrets.token_hex(8)
    with token_store(node_dir) as conn, transaction(conn):
        conn.execute(
            "INSERT INTO tokens (token_id, node_id, secret_hash, created, expires) VALUES (?, ?, ?, ?, ?)",
            (token_id, node_id, _hash(secret), _iso(created), _iso(expires)),
        )
    return Token(address, fingerprint, token_id, secret, node_id, expires, province_id).encode()


def list_tokens(node_dir: Path, now: float | None = None) -> list[dict[str, Any]]:
    """Every token made on this node, oldest first (never a secret): token_id, node_id,
    created, expires, used_at (None while unused), used_by, serial, revoked_at (None unless
    revoked), and state: unused, used, expired or revoked."""
    moment = time.time() if now is None else now
    with token_store(node_dir) as conn:
        rows = conn.execute(
            "SELECT token_id, node_id, created, expires, used_at, used_by, serial, revoked_at FROM tokens ORDER BY created, rowid"
        )
        out = [dict(r) for r in rows]
    for row in out:
        row["state"] = (
            "used"
            if row["used_at"]
            else "revoked"
            if row["revoked_at"]
            else "expired"
            if moment >= dt.datetime.fromisoformat(row["expires"]).timestamp()
            else "unused"
        )
    return out


def revoke_token(node_dir: Path, token_id: str, now: float | None = None) -> dict[str, Any]:
    """Withdraw an unused token so that it enrolls nothing; returns its row. A used token cannot
    be withdrawn (its node holds a certificate: revoke that with `lienthong ca revoke`)."""
    with token_store(node_dir) as conn, transaction(conn):
        row = find(conn, token_id.strip().lower())
        if row is None:
            raise EnrollError(f"no token {token_id!r} was made on this node", "see the token ids with `lienthong token list`")
        if row["used_at"]:
            raise EnrollError(
                f"token {row['token_id']} already enrolled node {row['node_id']} at {row['used_at']}",
                f"revoke the node's certificate instead: lienthong ca revoke --dir CA_DIR {row['node_id']}",
            )
        if not row["revoked_at"]:
            conn.execute(
                "UPDATE tokens SET revoked_at = ? WHERE token_id = ?", (_iso(time.time() if now is None else now), row["token_id"])
            )
        return dict(conn.execute("SELECT * FROM tokens WHERE token_id = ?", (row["token_id"],)).fetchone())


def find(conn: sqlite3.Connection, token_id: str) -> sqlite3.Row | None:
    """The stored token with this id, or None (also for an id that is not 16 hex digits)."""
    if not _TOKEN_ID.fullmatch(token_id):
        return None
    row: sqlite3.Row | None = conn.execute("SELECT * FROM tokens WHERE token_id = ?", (token_id,)).fetchone()
    return row


def secret_matches(row: sqlite3.Row | None, secret: bytes) -> bool:
    """Whether `secret` is the token's; compared in constant time, and compared even when
    there is no such token (`row` None), so an unknown id takes as long as a wrong secret."""
    return hmac.compare_digest(_hash(secret), row["secret_hash"] if row else "0" * 64)


def mark_used(conn: sqlite3.Connection, token_id: str, when: float, ip: str, serial: str) -> None:
    """Spend the token: it enrolled its node at `when` (Unix seconds) from `ip`, for certificate `serial`."""
    conn.execute("UPDATE tokens SET used_at = ?, used_by = ?, serial = ? WHERE token_id = ?", (_iso(when), ip, serial, token_id))
