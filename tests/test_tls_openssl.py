"""The node's TLS seen by a client this project did not write (openssl s_client)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import MakeNode, listen_address
from .helpers import NodeProcess, running, status, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")]


def s_client(address: str, ca: Path, *args: str) -> str:
    out = subprocess.run(
        ["openssl", "s_client", "-connect", address, "-CAfile", str(ca), "-state", "-ign_eof", *args],
        input="",
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    return out.stdout + out.stderr


def test_server_demands_a_client_certificate_and_refuses_old_tls(make_node: MakeNode) -> None:
    """The server sends a certificate request, drops a client without one, and refuses TLS below 1.2."""
    province = make_node("86")
    address = listen_address(province)
    ca = province / "tls" / "ca.crt"
    with running(NodeProcess(province)):
        wait_until(lambda: status(province)["node"]["running"], timeout=20, what="the node to start")
        for version in ("-tls1_2", "-tls1_3"):
            text = s_client(address, ca, version)
            assert "read server certificate request" in text, text
            assert "Verify return code: 0 (ok)" in text  # the server's certificate chains to the province's CA
            assert "unexpected eof" in text  # no client certificate: the server hangs up, no application data
        old = s_client(address, ca, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
        assert "Cipher is (NONE)" in old and "read server hello" not in old
