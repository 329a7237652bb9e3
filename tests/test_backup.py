"""Backup and restore of a whole node: a consistent copy of everything a restore needs, put back
on a fresh directory, rejoining its parent with nothing lost (the epoch rule)."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest

from lienthong.node.backup import backup_node, restore_node
from lienthong.node.trust import tokens

from .conftest import MakeNode, listen_address
from .helpers import NodeProcess, cli, fill, indicator_rows, running, versions, wait_until, write_jsonl
from .test_privacy import feedback

pytestmark = pytest.mark.slow


def test_a_node_restored_on_a_fresh_directory_rejoins_with_nothing_lost(make_node: MakeNode, tmp_path: Path) -> None:
    """Backed up while running, the commune then writes more and receives more; it is destroyed,
    restored on a new directory, and rejoins: it holds again everything it held, its parent holds
    everything it wrote, and both stores verify (no fork in its chain of seals)."""
    province = make_node("86")
    commune = make_node("86-28894", parent=listen_address(province))
    fill(commune, indicator_rows(commune.name, 300))
    fill(province, [feedback(f"1022-{i}", commune.name) for i in range(5)])  # dispatched down to the commune
    archive = tmp_path / "commune.tar"
    with running(NodeProcess(province), NodeProcess(commune)):
        wait_until(lambda: len(versions(province, origin=commune.name)) == 300, timeout=30, what="the commune's records up")
        wait_until(lambda: len(versions(commune, origin="86")) >= 5, timeout=30, what="the feedback down")
        out = cli("backup", "--dir", str(commune), str(archive))  # online, while it runs
        assert "Backed up node 86-28894" in out.stdout
        # After the backup: the commune writes more, and the province sends it more.
        more = write_jsonl(tmp_path / "more.jsonl", indicator_rows(commune.name, 200, start=300))
        cli("ingest", "--dir", str(commune), str(more))
        fill(province, [feedback(f"1022-{i}", commune.name) for i in range(5, 9)])
        wait_until(lambda: len(versions(province, origin=commune.name)) == 500, timeout=30, what="the later records up")
        wait_until(lambda: len(versions(commune, origin="86")) >= 9, timeout=30, what="the later feedback down")
    held = versions(commune)
    own = versions(commune, origin=commune.name)
    assert own == versions(province, origin=commune.name)
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    for wanted in ("lienthong.db", "audit.db", "lienthong.toml", "tls/node.key", "tls/signing.key", "tls/node.crt", "tls/ca.crt"):
        assert f"node/{wanted}" in names, wanted
    assert not [n for n in names if n.endswith(("-wal", "-shm", "node.lock"))]
    assert {f["path"] for f in manifest["node"] if f["sqlite"]} >= {"lienthong.db", "audit.db"}

    shutil.rmtree(commune)  # the machine is lost
    restored = tmp_path / "new-machine" / "lienthong"
    out = cli("restore", "--dir", str(restored), str(archive))
    assert "Restored node 86-28894" in out.stdout and "new epoch" in out.stdout
    assert len(versions(restored)) < len(held)  # the copy lacks what came after it
    with running(NodeProcess(province), NodeProcess(restored)) as (_, _child):
        wait_until(lambda: versions(restored) >= held, timeout=60, what="the restored node to hold all it held")
        assert "link.child_restored" in NodeProcess(province).log()
        # It goes on writing where it left off, and that reaches the province too.
        cli("ingest", "--dir", str(restored), str(write_jsonl(tmp_path / "after.jsonl", indicator_rows(commune.name, 10, start=500))))
        wait_until(lambda: len(versions(province, origin=commune.name)) == 510, timeout=30, what="the new records up")
    assert versions(restored, origin=commune.name) == versions(province, origin=commune.name)
    assert versions(restored) >= held
    for node in (province, restored):
        report = json.loads(cli("verify", "--dir", str(node), "--json", check=False).stdout)
        assert report["ok"], (node.name, report["findings"][:5])
    assert "intact" in cli("audit", "verify", "--dir", str(restored)).stdout


def test_the_province_backup_carries_its_ca_and_enrollment_database(make_node: MakeNode, ca_dir: Path, tmp_path: Path) -> None:
    """The province's backup holds its token store and the CA it is the home of (registry, keys);
    restored after both are lost, the CA lists what it issued and the tokens are there."""
    province = make_node("86")
    tokens.create_token(province, "86-29560", 3600, "127.0.0.1:7444", "0" * 64, province_id="86")
    make_node("86-28894", parent=listen_address(province))
    archive = tmp_path / "province.tar"
    assert "and its CA" in cli("backup", "--dir", str(province), str(archive)).stdout
    again = cli("backup", "--dir", str(province), str(archive), check=False)
    assert again.returncode == 1 and again.stderr.startswith("Error: ") and "exists" in again.stderr
    issued = cli("ca", "list", str(ca_dir), "--json").stdout
    shutil.rmtree(province)
    shutil.rmtree(ca_dir)
    out = cli("restore", "--dir", str(province), str(archive))
    assert "put back" in out.stdout
    assert cli("ca", "list", str(ca_dir), "--json").stdout == issued
    assert [t["node_id"] for t in tokens.list_tokens(province)] == ["86-29560"]
    assert (ca_dir / "ca.key").exists() and "intact" in cli("audit", "verify", "--dir", str(province)).stdout
    refused = cli("restore", "--dir", str(province), str(archive), check=False)
    assert refused.returncode == 1 and "is not empty" in refused.stderr and "Traceback" not in refused.stderr


def test_a_restored_node_keeps_its_empty_inbox_folders(make_node: MakeNode, tmp_path: Path) -> None:
    """An agency's inbox folder that holds no file yet is part of the node: after a restore it is
    there again, so the agency's next export lands in it (found by bench/soak.py, seed 2)."""
    commune = make_node("86-28894", parent="127.0.0.1:9")
    (commune / "inbox" / "1022").mkdir(parents=True)
    (commune / "inbox" / "thongke" / "archive").mkdir(parents=True)
    archive = tmp_path / "commune.tar"
    cli("backup", "--dir", str(commune), str(archive))
    restored = tmp_path / "restored"
    cli("restore", "--dir", str(restored), str(archive))
    assert (restored / "inbox" / "1022").is_dir()
    assert (restored / "inbox" / "thongke" / "archive").is_dir()


def test_what_only_the_lost_disk_held_comes_back_when_its_agency_files_are_dropped_again(make_node: MakeNode, tmp_path: Path) -> None:
    """A restore from an older backup cannot bring back what the commune took after the backup and
    never sent up (its parent was out of reach): those records went with the disk. Dropping the
    agency's files again into the restored node's inbox brings them back, to it and to its parent;
    rows the backup already holds change nothing (what bench/soak.py counts as dropped by its
    restore, and docs/install.md tells an operator to do)."""
    province = make_node("86")
    commune = make_node("86-28894", parent=listen_address(province))
    fill(commune, indicator_rows(commune.name, 30, agency="thongke"))
    (commune / "inbox" / "thongke").mkdir(parents=True, exist_ok=True)
    archive = tmp_path / "commune.tar"
    backup_node(commune, archive, commune.name)
    before = versions(commune, origin=commune.name)
    export = write_jsonl(
        tmp_path / "thongke-export.jsonl", indicator_rows(commune.name, 50, agency="thongke")
    )  # 20 rows newer than the backup
    shutil.copy(export, commune / "inbox" / "thongke" / export.name)
    with running(NodeProcess(commune)):  # its parent is not running: nothing of this leaves the disk
        wait_until(lambda: len(versions(commune, origin=commune.name)) == 50, timeout=30, what="the export taken")
    shutil.rmtree(commune)  # the disk is lost
    restored = tmp_path / "restored"
    restore_node(archive, restored)
    assert versions(restored, origin=commune.name) == before  # the restore alone cannot bring them back
    shutil.copy(export, restored / "inbox" / "thongke" / export.name)  # the agency's export, dropped again
    with running(NodeProcess(province), NodeProcess(restored)):
        wait_until(lambda: len(versions(province, origin=commune.name)) == 50, timeout=60, what="the re-dropped records up")
    assert versions(restored, origin=commune.name) == versions(province, origin=commune.name) > before
    assert len(versions(restored, origin=commune.name)) == 50  # the rows the backup held: unchanged, not new versions
    assert not list((restored / "inbox" / "thongke").glob("*.jsonl"))
    assert not list((restored / "inbox" / "thongke" / "rejected").glob("*"))
