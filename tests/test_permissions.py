"""Citizens' data is the node's user's alone: every file under a node directory 0600, every
folder 0700, whatever the umask; an old directory is closed at start; a CA key others can read is refused."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import MakeNode, listen_address
from .helpers import NodeProcess, cli, running, versions, wait_until, write_jsonl

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """The usual umask of a shell (022): what the nodes started from here inherit."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def readable_by_others(root: Path) -> list[str]:
    out = []
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode) and mode & 0o077:
            out.append(f"{path.relative_to(root.parent)} {stat.S_IMODE(mode):04o}")
    return out


def feedback(i: int) -> dict[str, object]:
    return {
        "kind": "feedback",
        "source_id": f"1022-{i}",
        "unit": "86-28894",
        "category": "GT-01",
        "description": "Ổ gà",
        "received_at": "2026-11-20T07:42:10+07:00",
        "citizen": {"name": "Nguyễn Văn An", "phone": "0903123456", "email": "an@example.com"},
    }


def test_nothing_a_node_writes_is_readable_by_other_users(make_node: MakeNode, tmp_path: Path) -> None:
    """Province and commune made, run, fed through the inbox (archive, receipt), exported and backed up,
    all under umask 022: no file or folder under either node directory is open to group or others."""
    with umask(0o022):
        province = make_node("86")
        commune = make_node("86-28894", parent=listen_address(province))
        inbox = commune / "inbox" / "1022"
        inbox.mkdir(parents=True, exist_ok=True)
        with running(NodeProcess(province), NodeProcess(commune)):
            write_jsonl(tmp_path / "feedback.jsonl", [feedback(i) for i in range(20)]).rename(inbox / "feedback.jsonl")
            wait_until(lambda: len(versions(province, origin="86-28894")) >= 20, timeout=30, what="the feedback at the province")
            assert (commune / "lienthong.db-wal").exists()
            assert not readable_by_others(commune) and not readable_by_others(province)  # while running: WAL and SHM too
            cli("query", "--dir", str(commune), "indicators", "--format", "csv", "--out", str(commune / "exports" / "i.csv"))
            cli("audit", "export", "--dir", str(commune), str(commune / "audit.jsonl"))
            cli("backup", "--dir", str(commune), str(commune / "copy.tar"))
        assert list((inbox / "archive").rglob("*.receipt.json"))
    assert readable_by_others(commune) == [] and readable_by_others(province) == []


def test_an_old_node_directory_is_closed_at_start(make_node: MakeNode) -> None:
    """A directory an older lienthong wrote (0644 files in 0755 folders) is closed when the node starts, and the log says so."""
    node = make_node("86")
    for path in [node, *node.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    with running(NodeProcess(node)) as (proc,):
        proc.port()
        wait_until(lambda: "permissions.closed" in proc.log(), timeout=10, what="the warning")
        assert readable_by_others(node) == []


def test_a_ca_key_others_can_read_is_refused(ca_dir: Path, tmp_path: Path) -> None:
    (ca_dir / "ca.key").chmod(0o644)
    out = cli("init", "--dir", str(tmp_path / "86"), "--mode", "provincial", "--id", "86", "--ca", str(ca_dir), check=False)
    assert out.returncode == 1 and out.stderr.startswith("Error: the CA key") and "can be read by other users" in out.stderr
    assert "Try: run `chmod 600" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "86").exists()
