"""Output people can trust: JSON from every command that reports a result, results on stdout and
logs on stderr, Vietnam time, tables uncut off a terminal, plurals, every unit in `status`,
tokens listed and revoked, `--dir` for the CA, whole descriptions in `--help` (issue #17, item 4)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from click.testing import CliRunner, Result

from lienthong.node import cli_i18n, display
from lienthong.node.cli import cli as lienthong_cli
from lienthong.sync.errors import LienthongError

from .helpers import write_jsonl

PROVINCE = "86"
UNITS = [("86-28894", "Xã Ba Tri"), ("86-29077", "Phường An Hội"), ("86-29100", "Xã Tân Thủy")]
LONG_TITLE = "Báo cáo tình hình kinh tế - xã hội tháng 10 năm 2026 của Ủy ban nhân dân xã Ba Tri, tỉnh Vĩnh Long"
ROWS: list[dict[str, Any]] = [
    *(
        {"kind": "definition", "type": "unit", "code": code, "fields": {"name": name, "level": "commune", "parent": PROVINCE}}
        for code, name in UNITS
    ),
    {
        "kind": "report",
        "report_type": "BC-IOC-THANG-KINH-TE-XA-HOI-TONG-HOP",
        "unit": "86-28894",
        "period": "2026-10",
        "title": LONG_TITLE,
        "submitted_at": "2026-10-24T16:20:00+07:00",
    },
]


def run(*args: str, code: int = 0, env: dict[str, str] | None = None) -> Result:
    """`lienthong ARGS` in this process (stdout not a terminal, as in cron or a pipe); fails on another exit code."""
    result = CliRunner().invoke(lienthong_cli, list(args), env={"LIENTHONG_LANG": "en", **(env or {})})
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == code, f"lienthong {' '.join(args)} exited {result.exit_code}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(autouse=True)
def _restore_process_state() -> Iterator[None]:
    """Commands run in this process set the log config, the display zone and the language: put them back."""
    yield
    structlog.reset_defaults()
    display.set_zone(display.DEFAULT_ZONE)
    cli_i18n.choose("en")


@pytest.fixture(scope="module")
def province(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A province made from a CA, enrolling on loopback, holding three communes' definitions and one report."""
    root = tmp_path_factory.mktemp("output")
    try:
        run("ca", "init", "--dir", str(root / "ca"))
        node = root / "p"
        run("init", "--dir", str(node), "--mode", "provincial", "--id", PROVINCE, "--listen", "127.0.0.1:0", "--ca", str(root / "ca"))
        config = node / "lienthong.toml"
        text = config.read_text().replace('enroll_listen = ""', 'enroll_listen = "127.0.0.1:7444"')
        config.write_text(text.replace('ca_dir = ""', f'ca_dir = "{root / "ca"}"', 1))
        run("ingest", "--dir", str(node), str(write_jsonl(root / "rows.jsonl", ROWS)))
    finally:
        structlog.reset_defaults()
    return node


def parsed(result: Result) -> Any:
    return json.loads(result.stdout)


def test_every_command_that_reports_a_result_speaks_json(province: Path, tmp_path: Path) -> None:
    """ingest, health, backup, token create/list/revoke, ca issue/revoke/list, audit verify/head, status: --json parses back."""
    ca = province.parent / "ca"
    more = write_jsonl(tmp_path / "more.jsonl", [{**ROWS[-1], "unit": "86-29077"}, {"kind": "indicator", "unit": "86-1"}])
    ingest = parsed(run("ingest", "--dir", str(province), str(more), "--json", code=1))
    assert ingest["refused"] is True and ingest["files"][0]["importCount"] == {"imported": 1, "updated": 0, "unchanged": 0, "refused": 1}
    health = parsed(run("health", "--dir", str(province), "--json", code=1))
    assert health["healthy"] is False and health["reasons"]
    backup = parsed(run("backup", "--dir", str(province), str(tmp_path / "b.tar"), "--json"))
    assert backup["node"] == PROVINCE and backup["files"] > 1 and Path(backup["backup"]).exists()
    token = parsed(run("token", "create", "--dir", str(province), "--id", "86-29100", "--json"))
    assert token["token"].startswith("lt1.") and token["node"] == "86-29100" and token["expires"].endswith("+00:00")
    listed = parsed(run("token", "list", "--dir", str(province), "--json"))
    assert [(t["token_id"], t["state"]) for t in listed] == [(token["token_id"], "unused")]
    revoked = parsed(run("token", "revoke", "--dir", str(province), token["token_id"], "--json"))
    assert revoked["token_id"] == token["token_id"] and revoked["revoked_at"]
    from lienthong.node.trust import issue, tls

    key = tmp_path / "node.key"
    csr = tmp_path / "node.csr"
    tls.write_public(csr, issue.make_csr(key, "86-28894", []), tls.NODE_FILE_MODE)
    issued = parsed(
        run("ca", "issue", "--dir", str(ca), "--csr", str(csr), "--role", "district", "--out", str(tmp_path / "n.crt"), "--json")
    )
    assert issued["serial"] and issued["certificate"] == str(tmp_path / "n.crt") and issued["pseudonym_secret"]
    gone = parsed(run("ca", "revoke", "--dir", str(ca), issued["serial"], "--reason", "superseded", "--json"))
    assert gone["revoked"] == [issued["serial"]] and gone["enforced"] is False
    assert {c["serial"]: c["status"] for c in parsed(run("ca", "list", "--dir", str(ca), "--json"))}[issued["serial"]] == "revoked"
    verified = parsed(run("audit", "verify", "--dir", str(province), "--json"))
    head = parsed(run("audit", "head", "--dir", str(province), "--json"))
    assert verified["ok"] is True and verified["head"] == head["head"] == f"{head['seq']}:{head['hash']}"
    assert parsed(run("status", "--dir", str(province), "--json"))["node"]["id"] == PROVINCE


def test_ingest_prints_results_on_stdout_and_nothing_else(province: Path, tmp_path: Path) -> None:
    """Each stdout line of `ingest` is its result; refusals go to stderr; no log line reaches stdout."""
    data = write_jsonl(tmp_path / "x.jsonl", [{**ROWS[-1], "unit": "86-29100"}, {"kind": "indicator", "unit": "86-1"}])
    result = run("ingest", "--dir", str(province), str(data), code=1)
    assert result.stdout.splitlines() == [f"{data}: 1 imported, 0 updated, 0 unchanged, 1 refused [jsonl]"]
    assert "line 2" in result.stderr


def test_tables_are_not_cut_when_output_is_not_a_terminal(province: Path) -> None:
    """A report's long title and type reach a file or a cron mail whole, not cut at 80 columns, in plain columns."""
    out = run("query", "--dir", str(province), "reports").stdout
    assert LONG_TITLE in out and "BC-IOC-THANG-KINH-TE-XA-HOI-TONG-HOP" in out and "…" not in out
    assert not set("┃│┏━─") & set(out), "plain columns, no box drawing, off a terminal"


def test_times_are_shown_in_vietnam_time_and_json_keeps_the_offset(province: Path) -> None:
    """Tables show Vietnam time (UTC+7) by default, the zone `[display] timezone` names otherwise; --json keeps ISO with offset."""
    out = run("query", "--dir", str(province), "reports").stdout
    assert "2026-10-24 16:20 (UTC+7)" in out and "+00:00" not in out
    assert "(UTC+7)" in run("status", "--dir", str(province)).stdout
    rows = parsed(run("query", "--dir", str(province), "reports", "--json"))
    assert {r["submitted_at"] for r in rows} == {"2026-10-24T16:20:00+07:00"}
    config = province / "lienthong.toml"
    text = config.read_text()
    try:
        config.write_text(text.replace('timezone = "Asia/Ho_Chi_Minh"', 'timezone = "UTC"'))
        assert "2026-10-24 09:20 (UTC+0)" in run("query", "--dir", str(province), "reports").stdout
    finally:
        config.write_text(text)


def test_counts_are_in_words_with_the_right_plural(province: Path) -> None:
    """'1 report', not '1 reports' nor '1 report(s)'."""
    assert run("query", "--dir", str(province), "reports", "--unit", "86-28894").stdout.startswith("1 report\n")
    status = run("status", "--dir", str(province)).stdout
    assert re.search(r"\b3 definitions, [0-9]+ seals?\b", status) and "0 feedback items" in status and "record(s)" not in status


def test_status_lists_every_unit_connected_or_not_silent_first(province: Path, tmp_path: Path) -> None:
    """Communes in the unit registry and nodes the CA issued under this node, none connected yet, are listed,
    the silent ones first, in the table and in --json."""
    units = parsed(run("status", "--dir", str(province), "--json"))["units"]
    assert [u["id"] for u in units] == sorted(code for code, _ in UNITS)
    assert all(u["silent"] and u["never_connected"] and not u["connected"] and u["registered"] for u in units)
    out = run("status", "--dir", str(province)).stdout
    assert "3 units under this node" in out and all(code in out and name in out for code, name in UNITS)
    assert out.count("never connected") == 3
    # A node the province's CA issued a certificate under this province is listed too, before it ever connects.
    from lienthong.node.trust import issue, tls

    key, csr = tmp_path / "node.key", tmp_path / "node.csr"
    tls.write_public(csr, issue.make_csr(key, "86-30001", []), tls.NODE_FILE_MODE)
    ca = str(province.parent / "ca")
    run("ca", "issue", "--dir", ca, "--csr", str(csr), "--role", "district", "--parent", PROVINCE, "--out", str(tmp_path / "n.crt"))
    units = parsed(run("status", "--dir", str(province), "--json"))["units"]
    assert {u["id"]: u["registered"] for u in units}["86-30001"] is False and len(units) == 4

    # With links: the one up is listed last, the one silent for two hours before it, those never heard from first.
    import datetime as dt
    import time

    from lienthong.config import settings as config
    from lienthong.node.runtime import STORE_FILE
    from lienthong.node.status import subordinates
    from lienthong.sync.store import Store

    now = time.time()
    earlier = dt.datetime.fromtimestamp(now - 7200, dt.UTC).isoformat()  # past [web] silence_minutes (60)
    links = [
        {"id": "86-28894", "connected": True, "last_contact": earlier, "applied": 7},
        {"id": "86-29077", "connected": False, "last_contact": earlier, "applied": 3},
    ]
    store = Store.open(province / STORE_FILE)
    try:
        order = subordinates(province, config.load(province), store, links, now)
    finally:
        store.close()
    assert [(u["id"], u["silent"]) for u in order] == [("86-29100", True), ("86-30001", True), ("86-29077", True), ("86-28894", False)]


def test_token_revoke_refuses_what_cannot_be_revoked(province: Path) -> None:
    """An unknown token id is one sentence and a hint; a revoked token is listed as revoked."""
    with pytest.raises(LienthongError, match="no token 'ffffffffffffffff' was made on this node"):
        run("token", "revoke", "--dir", str(province), "ffffffffffffffff")
    token = parsed(run("token", "create", "--dir", str(province), "--id", "86-29077", "--json"))
    run("token", "revoke", "--dir", str(province), token["token_id"])
    assert {t["token_id"]: t["state"] for t in parsed(run("token", "list", "--dir", str(province), "--json"))}[
        token["token_id"]
    ] == "revoked"
    assert "revoked" in run("token", "list", "--dir", str(province)).stdout


def test_ca_takes_dir_like_every_other_command_and_keeps_the_positional(province: Path) -> None:
    """`ca list --dir CA` and `ca list CA` say the same; `ca revoke --dir CA X` reads X as the node; CA given twice is refused."""
    ca = str(province.parent / "ca")
    assert run("ca", "list", "--dir", ca, "--json").stdout == run("ca", "list", ca, "--json").stdout
    with pytest.raises(LienthongError, match="this CA issued no certificate to node or with serial 'nobody-here'"):
        run("ca", "revoke", "--dir", ca, "nobody-here")
    with pytest.raises(LienthongError, match="this CA issued no certificate to node or with serial '86-00000'"):
        run("ca", "revoke", ca, "86-00000")
    with pytest.raises(LienthongError, match="given twice"):
        run("ca", "list", ca, "--dir", ca)


def test_top_level_help_shows_whole_descriptions() -> None:
    """`lienthong --help` lists each command with its whole first paragraph, never cut with '...'."""
    out = " ".join(run("--help").stdout.split())
    assert "..." not in out.replace("[ARGS]...", "")
    for name, command in lienthong_cli.commands.items():
        first = " ".join((command.help or "").split("\n\n")[0].split())
        assert first in out, f"`{name}` is not described whole in --help"
