"""/metrics and /healthz on real running nodes, a province and a commune: the metrics pass
`promtool check metrics`, say what `lienthong status --json` says, and the monitoring rules in
docs/monitoring/ pass `promtool check rules`; the console refuses a non-loopback address without TLS."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from lienthong.node.trust.audit import AuditLog

from .conftest import MakeNode, listen_address
from .helpers import NodeProcess, cli, indicator_rows, running, status, wait_until, write_jsonl
from .web_helpers import BA_TRI, Client, fill_province

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[1]


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: scripts/test.sh installs it (apt-get install prometheus)")
    return path


def samples(text: str) -> dict[str, float]:
    """'name{labels}' -> value, from Prometheus' text format."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_metrics_pass_promtool_and_match_status(make_node: MakeNode) -> None:
    """A province with a connected commune: its metrics are valid, name the child, and equal status --json."""
    province = make_node("86")
    commune = make_node(BA_TRI, parent=listen_address(province))
    fill_province(province)
    procs = NodeProcess(province), NodeProcess(commune)
    with running(*procs):
        wait_until(lambda: any(c["connected"] for c in status(province)["children"]), timeout=60, what="the commune to connect")
        for proc in procs:
            web = Client(f"http://127.0.0.1:{proc.port('web_port')}")
            code, text = web.get("/metrics")
            assert code == 200
            checked = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
            assert checked.returncode == 0, checked.stdout + checked.stderr
            assert web.get("/healthz") == (200, {"healthy": True, "reasons": []})
        province_web = Client(f"http://127.0.0.1:{procs[0].port('web_port')}")
        got = samples(province_web.get("/metrics")[1])
        now = status(province)
        assert got[f'lienthong_child_connected{{child="{BA_TRI}"}}'] == 1
        assert f'lienthong_child_last_contact_age_seconds{{child="{BA_TRI}"}}' in got
        assert got['lienthong_records{kind="feedback"}'] == now["records"]["feedback"]
        assert got['lienthong_records{kind="indicator"}'] == now["records"]["indicator"]
        assert got["lienthong_feedback_open"] == now["feedback"]["open"]
        assert got["lienthong_feedback_overdue"] == now["feedback"]["overdue"]
        assert got['lienthong_inbox_files{status="success"}'] + got['lienthong_inbox_files{status="warning"}'] == now["ingest"]["files"]
        assert got["lienthong_certificate_expiry_timestamp_seconds"] > 0
        assert got["lienthong_disk_free_bytes"] > 0
        assert got["lienthong_silent_units"] == 6, "8 units defined, 6 communes below the province never connected"
        with AuditLog.open(province) as log:
            assert got["lienthong_audit_chain_length"] >= 1 and got["lienthong_audit_chain_length"] <= log.head()[0]
        inbox = commune / "inbox" / "thongke"
        inbox.mkdir(parents=True, exist_ok=True)
        write_jsonl(inbox / "values.jsonl", indicator_rows(BA_TRI, 3))
        wait_until(lambda: not (inbox / "values.jsonl").exists(), timeout=60, what="the file taken")
        commune_got = samples(Client(f"http://127.0.0.1:{procs[1].port('web_port')}").get("/metrics")[1])
        assert commune_got["lienthong_inbox_drop_to_commit_seconds_count"] == 1  # the histogram of drop-to-commit latency
        assert commune_got["lienthong_parent_connected"] == 1
        assert "lienthong_parent_lag_records" in commune_got


def test_the_monitoring_rules_are_valid() -> None:
    """docs/monitoring/alerts.yml passes promtool, and the dashboard is JSON naming only metrics the node serves."""
    checked = subprocess.run(
        [promtool(), "check", "rules", str(ROOT / "docs" / "monitoring" / "alerts.yml")], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    dashboard = json.loads((ROOT / "docs" / "monitoring" / "grafana-dashboard.json").read_text())
    served = (ROOT / "node" / "web" / "metrics.py").read_text()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in {w for w in target["expr"].replace("(", " ").replace("{", " ").split() if w.startswith("lienthong_")}:
                assert name.removesuffix("_total") in served, f"{panel['title']}: {name} is not served"


def test_a_non_loopback_console_without_tls_or_accounts_is_refused(make_node: MakeNode) -> None:
    """web.listen on 0.0.0.0 without TLS: the node does not start, and says what to set."""
    node = make_node("86")
    config = node / "lienthong.toml"
    config.write_text(config.read_text().replace('listen = "127.0.0.1:0"\ntls_cert', 'listen = "0.0.0.0:0"\ntls_cert'))
    result = cli("run", "--dir", str(node), check=False, timeout=60)
    assert result.returncode != 0
    assert "web.listen: 0.0.0.0:0 is not a loopback address" in result.stderr and "Try: set web.tls_cert" in result.stderr
