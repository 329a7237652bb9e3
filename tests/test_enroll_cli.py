"""Enrollment as operators do it: a token made on the province, `enroll` on the new node, then `run`."""

from __future__ import annotations

import pytest

from .conftest import MakeNode, listen_address
from .helpers import NodeProcess, cli, running, status, wait_until

pytestmark = pytest.mark.slow


def test_token_enroll_run_and_no_second_use(make_node: MakeNode, ca_dir, tmp_path) -> None:
    """A new commune joins with a one-time token and its own key; the same token cannot be used again."""
    province = make_node("86")
    config = province / "lienthong.toml"
    text = config.read_text().replace('enroll_listen = ""', 'enroll_listen = "127.0.0.1:0"').replace('ca_dir = ""', f'ca_dir = "{ca_dir}"')
    config.write_text(text)
    child = tmp_path / "new-commune"
    cli("init", "--dir", str(child), "--mode", "district", "--id", "86-29560", "--parent", listen_address(province), "--parent-id", "86")
    key_before = (child / "tls" / "node.key").read_bytes()

    with running(NodeProcess(province)) as (prov,):
        # The province bound its enrollment port itself (port 0) and reports it; tokens carry the address new nodes use.
        enroll_port = prov.port("enroll_port")
        assert status(province)["node"]["enroll_port"] == enroll_port
        config.write_text(config.read_text().replace('enroll_address = ""', f'enroll_address = "127.0.0.1:{enroll_port}"'))
        token = cli("token", "create", "--dir", str(province), "--id", "86-29560", "--ttl", "1h").stdout.strip()
        assert token.startswith("lt1.")
        out = cli("enroll", "--dir", str(child), token)
        assert "Enrolled with 86" in out.stdout
        assert (child / "tls" / "node.key").read_bytes() == key_before  # the key made at init, never sent
        with running(NodeProcess(child)):
            wait_until(lambda: status(child)["parent"]["connected"], timeout=30, what="the enrolled node to connect")
        again = cli("enroll", "--dir", str(child), token, check=False)
        assert again.returncode == 1 and again.stderr.startswith("Error: ") and "Traceback" not in again.stderr
    exported = tmp_path / "audit.jsonl"
    cli("audit", "export", "--dir", str(province), str(exported))
    assert exported.read_text().count('"action": "enroll"') >= 2  # the enrollment and the refused reuse
