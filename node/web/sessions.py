"""Console sessions: a signed cookie naming the account, and the CSRF token of each session.

The cookie is `name|expiry|nonce|signature` (HMAC-SHA256 with the node's console secret,
`web.secret` in the node directory, made on first use, owner-only); it is HttpOnly,
SameSite=Strict, and Secure when the console is served over TLS. Nothing is kept server-side:
disabling an account takes effect at its next request (the account is read each time).
The CSRF token of a session is HMAC(secret, "csrf" + cookie): every form and every write
to the API carries it (`_csrf` field or `X-CSRF-Token` header).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

COOKIE = "lienthong_session"
SECRET_FILE = "web.secret"
LIFETIME = 12 * 3600.0


class Sessions:
    def __init__(self, node_dir: Path, lifetime: float = LIFETIME) -> None:
        self.lifetime = lifetime
        path = Path(node_dir) / SECRET_FILE
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(32))
        self._secret = path.read_bytes()

    def _sign(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()

    def issue(self, name: str, now: float | None = None) -> str:
        body = f"{name}|{int((now or time.time()) + self.lifetime)}|{secrets.token_hex(8)}"
        return f"{body}|{self._sign(body)}"

    def account_name(self, cookie: str | None, now: float | None = None) -> str | None:
        """The account a cookie names, or None when it is absent, forged or expired."""
        if not cookie or cookie.count("|") != 3:
            return None
        body, _, signature = cookie.rpartition("|")
        if not hmac.compare_digest(signature, self._sign(body)):
            return None
        name, expiry, _ = body.split("|")
        if not expiry.isdigit() or int(expiry) < (now or time.time()):
            return None
        return name

    def csrf(self, cookie: str) -> str:
        return self._sign("csrf" + cookie)

    def csrf_ok(self, cookie: str | None, token: str | None) -> bool:
        return bool(cookie and token) and hmac.compare_digest(self.csrf(cookie or ""), token or "")
