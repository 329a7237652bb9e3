"""`lienthong doctor`: each check broken on purpose names its problem in one line with a hint;
a sound node passes with exit 0, a broken one exits 1, and `--json` says the same."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from lienthong.node.doctor import Report, examine
from lienthong.node.trust.crl import write_crl
from lienthong.sync.store import Store
from lienthong.sync.upstream import Upstream

from .conftest import MakeNode
from .helpers import cli, reissue

DAY = 86_400


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def commune(make_node: MakeNode) -> Path:
    """A commune with its certificate and an agency folder, whose parent does not run."""
    return make_node("86-28894", parent=f"127.0.0.1:{closed_port()}", parent_id="86", agency="thongke")


@contextlib.contextmanager
def upstream(node_dir: Path) -> Iterator[Upstream]:
    store = Store.open(node_dir / "lienthong.db")
    try:
        yield Upstream(store)
    finally:
        store.close()


def problems(report: Report, check: str) -> list[str]:
    return [f.message for f in report.findings if f.check == check and f.level == "problem"]


def edit(node_dir: Path, old: str, new: str) -> None:
    config = node_dir / "lienthong.toml"
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new))


def test_a_sound_province_passes_and_a_broken_config_fails_in_one_line(make_node: MakeNode) -> None:
    """The province made from its CA passes every check that applies (exit 0); a typo in its
    configuration is one problem line with a hint, exit 1, and every other check is skipped."""
    province = make_node("86")
    out = cli("doctor", "--dir", str(province), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["ok"] is True, out.stdout
    verdicts = json.loads(out.stdout)["checks"]
    assert verdicts["config"] == verdicts["certificate"] == verdicts["ca"] == verdicts["disk"] == "ok"
    assert verdicts["parent"] == verdicts["clock"] == "skipped"

    edit(province, "batch_size = 4000", "batch_sise = 4000")
    out = cli("doctor", "--dir", str(province), check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    (line,) = [line for line in out.stdout.splitlines() if line.startswith("problem: ")]
    assert line.startswith("problem: config: ") and "batch_sise" in line and "Try: " in line
    assert "0 warnings" in out.stdout.splitlines()[-1]
    data = examine(province).as_dict()
    assert data["ok"] is False and data["checks"]["config"] == "problem" and data["checks"]["disk"] == "skipped"


def test_certificates_ca_and_revocation_list_expiry(make_node: MakeNode, ca_dir: Path) -> None:
    """An expired node certificate is a problem, one expiring within days a warning; on the CA's
    home a stale revocation list and an expired issuing CA are problems."""
    province = make_node("86")
    cert = province / "tls" / "node.crt"
    chain = cert.read_bytes()
    expired = reissue(chain, ca_dir, -40, -1).public_bytes(serialization.Encoding.PEM)
    cert.write_bytes(expired)
    assert any("expired on" in m for m in problems(examine(province, timeout=1), "certificate"))
    cert.write_bytes(reissue(chain, ca_dir, -25, 3).public_bytes(serialization.Encoding.PEM))
    report = examine(province, timeout=1)
    assert not report.problems and [f.check for f in report.findings] == ["certificate"]
    assert "expires on" in report.findings[0].message
    cert.write_bytes(chain)

    write_crl(ca_dir, next_update=dt.timedelta(hours=1))
    assert not problems(examine(province, timeout=1), "revocation")
    later = examine(province, now=time.time() + 2 * 3600, timeout=1)
    assert any("is stale" in m for m in problems(later, "revocation"))
    issuing = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    years = examine(province, now=issuing.not_valid_after_utc.timestamp() + DAY, timeout=1)
    assert any("the issuing CA certificate" in m and "expired" in m for m in problems(years, "ca"))


def test_clock_disk_permissions_inotify_and_inbox(commune: Path, tmp_path: Path) -> None:
    """Each of these checks, broken in the real node directory, is named with its own hint."""
    with upstream(commune) as up:  # the parent measured this node two days behind
        up.set_uplink(clock_offset_ms=2 * DAY * 1000)
    report = examine(commune, timeout=1)
    assert any("behind" in m for m in problems(report, "clock"))
    (clock,) = [f for f in report.findings if f.check == "clock"]
    assert "timedatectl" in clock.hint

    edit(commune, "min_free_mb = 256", "min_free_mb = 1000000")
    assert any("MB free" in m or "is full" in m for m in problems(examine(commune, timeout=1), "disk"))

    (commune / "lienthong.db").chmod(0o644)
    report = examine(commune, timeout=1)
    assert any("other users can read" in f.message and f.level == "warning" for f in report.findings if f.check == "permissions")
    (commune / "lienthong.db").chmod(0o600)

    limits = tmp_path / "inotify"
    limits.mkdir()
    (limits / "max_user_watches").write_text("100\n")
    (limits / "max_user_instances").write_text("2\n")
    found = problems(examine(commune, timeout=1, inotify=limits), "inotify")
    assert len(found) == 2 and "watches" in found[0] and "instances" in found[1]
    (limits / "max_user_watches").write_text("524288\n")
    (limits / "max_user_instances").write_text("128\n")
    assert not problems(examine(commune, timeout=1, inotify=limits), "inotify")

    (commune / "inbox" / "thongke").rmdir()
    assert [f.check for f in examine(commune, timeout=1).findings if f.level == "warning"] == ["inbox"]
    with (commune / "lienthong.toml").open("a") as config:
        config.write('\n[inbox.soyte]\npath = "/nonexistent/soyte"\n')
    assert any("/nonexistent/soyte is missing" in m for m in problems(examine(commune, timeout=1), "inbox"))


def test_parent_unreachable_and_refusing(commune: Path) -> None:
    """A parent nobody answers at is a problem naming its address and the firewall; a parent
    that refused this node at its last handshake is one too."""
    report = examine(commune, timeout=1)
    (unreachable,) = problems(report, "parent")
    assert "does not answer" in unreachable and "firewall" in next(f.hint for f in report.findings if f.check == "parent")
    with upstream(commune) as up:
        up.set_refusal("certificate revoked (key_compromise)")
    assert any("refused this node" in m and "revoked" in m for m in problems(examine(commune, timeout=1), "parent"))
    out = cli("doctor", "--dir", str(commune), "--timeout", "1", check=False)
    assert out.returncode == 1 and out.stdout.count("problem: parent: ") == 2
