"""The node's TLS seen by a client this project did not write (openssl s_client); each refusal is audited."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import MakeNode, listen_address
from .helpers import NodeProcess, cli, running, status, wait_until

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
    """The server sends a certificate request, refuses a client without one with a TLS alert, refuses
    TLS below 1.2, and writes each refused handshake to its audit log with the reason."""
    province = make_node("86")
    address = listen_address(province)
    ca = province / "tls" / "ca.crt"
    with running(NodeProcess(province)):
        wait_until(lambda: status(province)["node"]["running"], timeout=20, what="the node to start")
        for version in ("-tls1_2", "-tls1_3"):
            text = s_client(address, ca, version)
            assert "read server certificate request" in text, text
            assert "Verify return code: 0 (ok)" in text  # the server's certificate chains to the province's CA
            # No client certificate: the server ends the handshake with an alert, no application data.
            assert "alert handshake failure" in text or "alert certificate required" in text, text
        old = s_client(address, ca, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
        assert "Cipher is (NONE)" in old and "read server hello" not in old
    cli("audit", "export", "--dir", str(province), str(province / "audit.jsonl"))
    refused = [json.loads(line) for line in (province / "audit.jsonl").read_text().splitlines() if '"connection.refused"' in line]
    counts = {e["details"]["error"]: e["details"]["count"] for e in refused}
    # One entry per source and reason, with the count (a flood must not make one entry per probe).
    assert len(refused) == len(counts), refused
    assert counts.get("no client certificate") == 2, counts
    assert any(r.startswith("TLS version refused") for r in counts), counts
    assert all(e["details"]["stage"] == "handshake" and e["subject"] == "127.0.0.1" for e in refused)
