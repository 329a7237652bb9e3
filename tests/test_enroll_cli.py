"""Enrollment as operators do it: a token made on the province, `enroll` on the new node, then `run`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lienthong.node.trust import tls

from .conftest import MakeNode, listen_address
from .helpers import NodeProcess, cli, running, status, wait_until

pytestmark = pytest.mark.slow


def test_token_enroll_run_and_no_second_use(make_node: MakeNode, ca_dir, tmp_path) -> None:
    """A new commune joins with a one-time token and its own key; the same token enrolls no other node."""
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
        # The same node again (same key): the same certificate, nothing new issued. Another node: refused.
        cert = (child / "tls" / "node.crt").read_bytes()
        assert "Enrolled with 86" in cli("enroll", "--dir", str(child), token).stdout
        assert (child / "tls" / "node.crt").read_bytes() == cert
        other = tmp_path / "other"
        cli("init", "--dir", str(other), "--mode", "district", "--id", "86-29560", "--parent", listen_address(province))
        again = cli("enroll", "--dir", str(other), token, check=False)
        assert again.returncode == 1 and again.stderr.startswith("Error: ") and "Traceback" not in again.stderr
        assert "already used" in again.stderr
    exported = tmp_path / "audit.jsonl"
    cli("audit", "export", "--dir", str(province), str(exported))
    assert exported.read_text().count('"action": "enroll"') >= 2  # the enrollment and the refused reuse


def test_enroll_with_a_relative_dir_writes_inside_it(ca_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`enroll --dir rel TOKEN` (run from rel's parent) writes rel/tls/node.crt, not rel/rel/tls/, and the node's files load."""
    from .test_enroll import province

    async def main() -> None:
        async with province(tmp_path, ca_dir, monkeypatch) as prov:
            token = prov.token("86-29560")
            await asyncio.to_thread(
                cli, "init", "--dir", "rel", "--mode", "district", "--id", "86-29560", "--parent", prov.address, cwd=tmp_path
            )
            out = await asyncio.to_thread(cli, "enroll", "--dir", "rel", token, cwd=tmp_path)
            assert "Enrolled with 86" in out.stdout
        assert not (tmp_path / "rel" / "rel").exists()
        files = tls.NodeTlsPaths(
            tmp_path / "rel" / "tls" / "ca.crt", tmp_path / "rel" / "tls" / "node.crt", tmp_path / "rel" / "tls" / "node.key"
        )
        files.load()
        assert f"certificate {tmp_path / 'rel' / 'tls' / 'node.crt'}" in out.stdout

    asyncio.run(main())
