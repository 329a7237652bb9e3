"""The console's exposure rules: loopback without TLS is fine; another address needs TLS and
accounts; over TLS the session cookie is Secure."""

from __future__ import annotations

import http.client
import ssl
from pathlib import Path

import pytest

from lienthong.node.web.app import is_loopback

from .conftest import MakeNode
from .helpers import NodeProcess, cli, running
from .web_helpers import PASSWORD, add_user

pytestmark = pytest.mark.slow


def set_web(node: Path, listen: str, cert: str = "", key: str = "") -> None:
    config = node / "lienthong.toml"
    text = config.read_text().replace(
        'listen = "127.0.0.1:0"\ntls_cert = ""\ntls_key = ""', f'listen = "{listen}"\ntls_cert = "{cert}"\ntls_key = "{key}"'
    )
    config.write_text(text)


def test_loopback_addresses() -> None:
    """What counts as loopback for the console's rules."""
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "", "10.0.0.5", "ioc.vinhlong.example"))


def test_a_non_loopback_console_with_tls_but_no_accounts_is_refused(make_node: MakeNode) -> None:
    """TLS alone is not enough off loopback: the node names the missing accounts and does not start."""
    node = make_node("86")
    set_web(node, "0.0.0.0:0", str(node / "tls" / "node.crt"), str(node / "tls" / "node.key"))
    result = cli("run", "--dir", str(node), check=False, timeout=60)
    assert result.returncode != 0
    assert "has no console accounts" in result.stderr and "Try: add one with `lienthong user add" in result.stderr


def test_over_tls_the_session_cookie_is_secure(make_node: MakeNode) -> None:
    """A console with tls_cert/tls_key answers HTTPS (the node's own certificate, checked against the CA) and sets a Secure, HttpOnly, SameSite cookie."""
    node = make_node("86")
    set_web(node, "127.0.0.1:0", str(node / "tls" / "node.crt"), str(node / "tls" / "node.key"))
    add_user(node, "admin", "admin")
    proc = NodeProcess(node)
    with running(proc):
        port = proc.port("web_port")
        context = ssl.create_default_context(cafile=str(node / "tls" / "ca.crt"))
        context.check_hostname = False  # the node's certificate names the node id, not 127.0.0.1
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
        conn.request(
            "POST", "/login", body=f"name=admin&password={PASSWORD}", headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        response = conn.getresponse()
        cookie = response.getheader("Set-Cookie") or ""
        assert response.status == 303
        assert "lienthong_session=" in cookie
        for flag in ("Secure", "HttpOnly", "SameSite=Strict"):
            assert flag in cookie, cookie
        conn.close()
        plain = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            plain.request("GET", "/healthz")
            plain.getresponse()
