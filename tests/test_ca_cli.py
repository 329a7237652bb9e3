"""The CA from the command line: the offline path from a node's request to a working link, list and revoke."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

from .conftest import listen_address
from .helpers import NodeProcess, cli, running, status, wait_until


def test_offline_path_request_issue_install_connect(tmp_path: Path, make_node) -> None:
    """A node made without the CA sends only its request; the issued certificate lets it join; ca list shows both."""
    ca_dir = tmp_path / "ca"
    province = make_node("86")
    child = tmp_path / "86-28894"
    cli("init", "--dir", str(child), "--mode", "district", "--id", "86-28894", "--parent", listen_address(province), "--parent-id", "86")
    key = child / "tls" / "node.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and (child / "tls" / "node.csr").exists()
    assert not (child / "tls" / "node.crt").exists()

    cli(
        "ca",
        "issue",
        str(ca_dir),
        "--csr",
        str(child / "tls" / "node.csr"),
        "--role",
        "district",
        "--parent",
        "86",
        "--out",
        str(tmp_path / "c.crt"),
    )
    shutil.copy(tmp_path / "c.crt", child / "tls" / "node.crt")
    shutil.copy(ca_dir / "ca.crt", child / "tls" / "ca.crt")
    # The pseudonym secret comes with a unit's certificate (0600), as it would at enrollment.
    assert stat.S_IMODE((tmp_path / "pseudonym.key").stat().st_mode) == 0o600
    assert (tmp_path / "pseudonym.key").read_bytes() == (ca_dir / "pseudonym.key").read_bytes()
    shutil.move(tmp_path / "pseudonym.key", child / "tls" / "pseudonym.key")
    with running(NodeProcess(province), NodeProcess(child)):
        wait_until(lambda: status(child)["parent"]["connected"], timeout=30, what="the issued child to connect")

    listed = {row["node_id"]: row for row in json.loads(cli("ca", "list", str(ca_dir), "--json").stdout)}
    assert listed["86"]["status"] == "valid" and listed["86-28894"]["parent"] == "86"

    out = cli("ca", "revoke", str(ca_dir), "86-28894", "--reason", "key_compromise")
    assert listed["86-28894"]["serial"] in out.stdout and (ca_dir / "ca.crl.pem").exists()
    assert "revoked" in cli("ca", "list", str(ca_dir)).stdout


def test_protected_ca_needs_its_passphrase(tmp_path: Path) -> None:
    """A passphrase-protected CA signs only with LIENTHONG_CA_PASSPHRASE set; without it, one sentence and a hint."""
    ca_dir = tmp_path / "ca"
    cli("ca", "init", str(ca_dir), "--protect", env={"LIENTHONG_CA_PASSPHRASE": "bí mật"})
    node = tmp_path / "n"
    out = cli("init", "--dir", str(node), "--mode", "provincial", "--id", "86", "--ca", str(ca_dir), check=False)
    assert out.returncode == 1 and out.stderr.startswith("Error: ") and "LIENTHONG_CA_PASSPHRASE" in out.stderr
    assert "Traceback" not in out.stderr and not node.exists()
    cli("init", "--dir", str(node), "--mode", "provincial", "--id", "86", "--ca", str(ca_dir), env={"LIENTHONG_CA_PASSPHRASE": "bí mật"})
    assert (node / "tls" / "node.crt").exists()


def test_unwritable_destinations_fail_in_one_sentence_and_issue_nothing(tmp_path: Path, make_node) -> None:
    """`ca issue --out` and `backup` into a folder that does not exist say so (no traceback), and the CA
    registry records no certificate that never reached its file."""
    ca_dir = tmp_path / "ca2"
    cli("ca", "init", str(ca_dir))
    node = tmp_path / "commune"
    cli("init", "--dir", str(node), "--mode", "district", "--id", "86-28894", "--parent", "127.0.0.1:1")
    issued = cli(
        "ca",
        "issue",
        str(ca_dir),
        "--csr",
        str(node / "tls" / "node.csr"),
        "--role",
        "district",
        "--out",
        str(tmp_path / "no" / "x.crt"),
        check=False,
    )
    assert issued.returncode == 1 and issued.stderr.startswith("Error: cannot write the certificate") and "Try:" in issued.stderr
    assert json.loads(cli("ca", "list", str(ca_dir), "--json").stdout) == []
    province = make_node("86")
    backup = cli("backup", "--dir", str(province), str(tmp_path / "no" / "b.db"), check=False)
    assert backup.returncode == 1 and backup.stderr.startswith("Error: cannot write the backup") and "Traceback" not in backup.stderr


def test_the_pseudonym_secret_is_made_with_the_ca_and_rotated(tmp_path: Path) -> None:
    """`ca init` makes the pseudonym secret beside the CA key (0600); `ca rotate-pseudonym` starts a
    new generation with a new key id and keeps the old one; the province's own node never gets it."""
    ca_dir = tmp_path / "ca"
    out = cli("ca", "init", str(ca_dir)).stdout
    secret = ca_dir / "pseudonym.key"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    first = json.loads(secret.read_text())["key_id"]
    assert first in out
    out = cli("ca", "rotate-pseudonym", str(ca_dir)).stdout
    second = json.loads(secret.read_text())["key_id"]
    assert second != first and second in out
    assert json.loads((ca_dir / f"pseudonym.key.{first}").read_text())["key_id"] == first
    province = tmp_path / "86"
    cli("init", "--dir", str(province), "--mode", "provincial", "--id", "86", "--listen", "127.0.0.1:0", "--ca", str(ca_dir))
    assert not list(province.rglob("pseudonym.key*"))
