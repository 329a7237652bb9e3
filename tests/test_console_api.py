"""The console's read API on a real running node: answers equal the CLI's --json for the same
store, bad parameters are clear 4xx JSON, accounts log in (rate-limited, audited), scoped accounts
cannot read outside their scope through any endpoint, and operators' feedback actions follow the
CLI's rules and are audited."""

from __future__ import annotations

import json

import pytest

from lienthong.node.trust.audit import AuditLog

from .conftest import MakeNode
from .helpers import NodeProcess, cli, running, status
from .web_helpers import BA_TRI, BAD_ROWS, LITTER, LONG_CHAU, POTHOLE, Client, add_user, fill_province, lienthong

pytestmark = pytest.mark.slow

ENDPOINTS = [
    "/api/v1/node",
    "/api/v1/units",
    "/api/v1/indicators?period=2026-10",
    "/api/v1/indicators/rollup?period=2026-10",
    "/api/v1/reports",
    "/api/v1/completeness?period=2026-10",
    "/api/v1/feedback",
    "/api/v1/feedback/counts",
    f"/api/v1/feedback/{POTHOLE}",
    "/api/v1/files",
    "/api/v1/audit",
]


def client(proc: NodeProcess) -> Client:
    return Client(f"http://127.0.0.1:{proc.port('web_port')}")


def test_without_accounts_the_api_answers_read_only_what_the_cli_says(make_node: MakeNode) -> None:
    """No accounts: loopback reads work and equal the CLI's --json; writes are refused; bad input is a 4xx JSON error."""
    node = make_node("86")
    fill_province(node)
    lienthong("feedback", "assign", "--dir", str(node), POTHOLE, "--unit", BA_TRI)
    proc = NodeProcess(node)
    with running(proc):
        web = client(proc)
        assert status(node)["node"]["web_port"] == proc.port("web_port")
        # Feedback: the same items, states, assignees and overdue flags as `feedback list --json`.
        cli_items = {i["id"]: i for i in json.loads(cli("feedback", "list", "--dir", str(node), "--json").stdout)}
        api_items = web.ok("/api/v1/feedback?limit=1000")
        assert api_items["total"] == len(cli_items)
        for item in api_items["items"]:
            want = cli_items[item["id"]]
            assert {k: item[k] for k in ("source_id", "state", "assignee", "due_at", "overdue", "on_time")} == {
                k: want[k] for k in ("source_id", "state", "assignee", "due_at", "overdue", "on_time")
            }
        overdue = [i["overdue"] for i in api_items["items"]]
        assert overdue == sorted(overdue, reverse=True), "overdue items come first"
        shown = web.ok(f"/api/v1/feedback/{POTHOLE}")
        assert shown == json.loads(cli("feedback", "show", "--dir", str(node), POTHOLE, "--json").stdout)
        # Completeness and the roll-up: as the commands print them.
        assert web.ok("/api/v1/completeness?period=2026-10") == json.loads(
            cli("reports", "completeness", "--dir", str(node), "--period", "2026-10", "--json").stdout
        )
        rolled = json.loads(cli("query", "--dir", str(node), "indicators", "--rollup", "--period", "2026-10", "--json").stdout)
        assert web.ok("/api/v1/indicators/rollup?period=2026-10")["items"] == rolled
        values = json.loads(cli("query", "--dir", str(node), "indicators", "--period", "2026-10", "--json").stdout)
        got = web.ok("/api/v1/indicators?period=2026-10&limit=1000")
        assert got["total"] == len(values)
        assert sorted((v["indicator"], v["unit"], v["value"]) for v in values) == sorted(
            (v["indicator"], v["unit"], v["value_number"]) for v in got["items"]
        )
        report = web.ok("/api/v1/reports")["items"][0]
        assert report["unit"] == BA_TRI and report["files"] and report["files"][0]["sha256"]
        # The inbox: each file with its receipt's refused rows (line and reason).
        cli("ingest", "--dir", str(node), "--agency", "thongke", str(BAD_ROWS), check=False)  # exits 1: rows refused
        files = web.ok("/api/v1/files")
        assert files["total"] == 5
        bad = next(f for f in files["items"] if f["name"] == BAD_ROWS.name)
        assert bad["refused"] > 0 and len(bad["refused_rows"]) == bad["refused"]
        assert all(r["line"] and r["message"] for r in bad["refused_rows"])
        # Pagination.
        first, second = web.ok("/api/v1/indicators?limit=2"), web.ok("/api/v1/indicators?limit=2&offset=2")
        assert len(first["items"]) == 2 and first["items"] != second["items"] and first["total"] == second["total"]
        # The OpenAPI description names every endpoint.
        paths = web.ok("/api/v1/openapi.json")["paths"]
        for endpoint in ENDPOINTS:
            template = endpoint.split("?")[0].replace(POTHOLE, "{item}")
            assert template in paths
        # Read-only without accounts.
        code, body = web.request("POST", f"/api/v1/feedback/{POTHOLE}/events", body={"status": "accepted"})
        assert code == 403 and body["error"]["code"] == "read_only"
        # Bad parameters: a 4xx JSON error with a hint, never a 500.
        for path, code_, error in (
            ("/api/v1/indicators?limit=0", 400, "bad_parameter"),
            ("/api/v1/indicators?limit=abc", 400, "bad_parameter"),
            ("/api/v1/indicators?period=October", 400, "bad_parameter"),
            ("/api/v1/completeness", 400, "missing_parameter"),
            ("/api/v1/completeness?period=2026W99", 400, "bad_parameter"),
            ("/api/v1/feedback?state=lost", 400, "bad_parameter"),
            ("/api/v1/feedback?overdue=maybe", 400, "bad_parameter"),
            ("/api/v1/feedback/nothing-like-this", 404, "not_found"),
            ("/api/v1/indicators/rollup?period=2026-10&format=xls", 400, "bad_parameter"),
            ("/api/v1/no-such-thing", 404, "not_found"),
        ):
            got_code, body = web.get(path)
            assert (got_code, body["error"]["code"]) == (code_, error), path
            assert body["error"]["message"]
        csv_code, csv_text = web.get("/api/v1/indicators/rollup?period=2026-10&format=csv")
        assert csv_code == 200 and csv_text.splitlines()[0].startswith("indicator")


def test_accounts_scopes_and_feedback_actions(make_node: MakeNode) -> None:
    """Logins are checked, rate-limited and audited; a scoped viewer sees only its unit through every endpoint; an operator's update follows the CLI's rules and is audited."""
    node = make_node("86")
    fill_province(node)
    add_user(node, "admin", "admin")
    add_user(node, "ba-tri", "viewer", "--unit", BA_TRI)
    add_user(node, "soyte", "viewer", "--agency", "soyte")
    add_user(node, "dieu-phoi", "operator")
    assert [u["name"] for u in json.loads(lienthong("user", "list", "--dir", str(node), "--json"))] == [
        "admin",
        "ba-tri",
        "dieu-phoi",
        "soyte",
    ]
    proc = NodeProcess(node)
    with running(proc):
        anonymous = client(proc)
        base = anonymous.base
        code, body = anonymous.get("/api/v1/feedback")
        assert code == 401 and body["error"]["code"] == "login_required"
        assert anonymous.get("/healthz")[0] == 200

        admin = Client(base)
        assert admin.login("admin") == 200
        everything = {path: admin.ok(path) for path in ENDPOINTS}
        assert everything["/api/v1/feedback"]["total"] >= 2

        # A viewer scoped to Ba Tri: only Ba Tri's data, through every endpoint.
        ba_tri = Client(base)
        assert ba_tri.login("ba-tri") == 200
        lienthong("feedback", "assign", "--dir", str(node), POTHOLE, "--unit", BA_TRI)
        items = ba_tri.ok("/api/v1/feedback")["items"]
        assert {i["source_id"] for i in items} == {POTHOLE}
        assert all(BA_TRI in (i["unit"], i["responsible"]) for i in items)
        assert {v["unit"] for v in ba_tri.ok("/api/v1/indicators?limit=1000")["items"]} <= {BA_TRI}
        assert {r["unit"] for r in ba_tri.ok("/api/v1/reports")["items"]} <= {BA_TRI}
        assert {r["unit"] for r in ba_tri.ok("/api/v1/completeness?period=2026-10")["reports"]} <= {BA_TRI}
        assert {r["unit"] for r in ba_tri.ok("/api/v1/indicators/rollup?period=2026-10")["items"]} <= {BA_TRI}
        assert {u["code"] for u in ba_tri.ok("/api/v1/units")["items"]} == {BA_TRI}
        assert ba_tri.ok("/api/v1/node")["node"]["records"] is None
        for path in (
            f"/api/v1/feedback/{LITTER}",
            f"/api/v1/indicators?unit={LONG_CHAU}",
            f"/api/v1/reports?unit={LONG_CHAU}",
            f"/api/v1/completeness?period=2026-10&unit={LONG_CHAU}",
            f"/api/v1/feedback?unit={LONG_CHAU}",
            "/api/v1/files",
            "/api/v1/audit",
            f"/api/v1/indicators/rollup?period=2026-10&unit={LONG_CHAU}",
        ):
            code, body = ba_tri.get(path)
            assert code in (403, 404), f"{path}: {code} {body}"
        # A viewer scoped to an agency: only its data.
        soyte = Client(base)
        assert soyte.login("soyte") == 200
        assert {v["agency"] for v in soyte.ok("/api/v1/indicators?limit=1000")["items"]} <= {"soyte"}
        assert soyte.ok("/api/v1/feedback")["total"] == 0
        assert soyte.get("/api/v1/indicators?agency=thongke")[0] == 403
        assert soyte.get("/api/v1/completeness?period=2026-10")[0] == 403

        # Viewers do not write; an operator's write needs the session's CSRF token.
        assert ba_tri.request("POST", f"/api/v1/feedback/{POTHOLE}/events", body={"status": "accepted"})[0] == 403
        operator = Client(base)
        assert operator.login("dieu-phoi") == 200
        token, operator.csrf = operator.csrf, ""
        code, body = operator.request("POST", f"/api/v1/feedback/{LITTER}/events", body={"status": "assigned", "unit": LONG_CHAU})
        assert code == 403 and body["error"]["code"] == "csrf"
        operator.csrf = token
        code, body = operator.request("POST", f"/api/v1/feedback/{LITTER}/events", body={"status": "accepted"})
        assert code == 409 and body["error"]["code"] == "refused", "the CLI's rules: a closed item is not accepted"
        code, body = operator.request(
            "POST", f"/api/v1/feedback/{POTHOLE}/events", body={"status": "assigned", "unit": LONG_CHAU, "note": "Chuyển"}
        )
        assert code == 200 and body["state"] == "assigned", body
        shown = json.loads(cli("feedback", "show", "--dir", str(node), POTHOLE, "--json").stdout)
        assert (shown["state"], shown["assignee"]) == ("assigned", LONG_CHAU)
        assert operator.ok(f"/api/v1/feedback/{POTHOLE}")["assignee"] == LONG_CHAU

        # Wrong passwords: refused, then the address is blocked for a while; all audited.
        stranger = Client(base)
        assert [stranger.login("admin", "wrong-password-x") for _ in range(5)] == [401] * 5
        assert stranger.login("admin") == 429
        lienthong("user", "disable", "--dir", str(node), "soyte")
        assert soyte.get("/api/v1/indicators")[0] == 401
    with AuditLog.open(node) as log:
        actions = [(e.action, e.actor) for e in log.entries()]
    assert ("web.login", "web:admin") in actions
    assert ("web.login_refused", "web:admin") in actions
    assert ("web.login_blocked", "web:admin") in actions
    assert ("feedback.assigned", "web:dieu-phoi") in actions
    assert any(action == "user.add" for action, _ in actions)
