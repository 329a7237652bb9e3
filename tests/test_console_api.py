"""The console's read API on a real running node: answers equal the CLI's --json for the same
store, bad parameters are clear 4xx JSON, accounts log in (rate-limited, audited), scoped accounts
cannot read outside their scope through any endpoint, and operators' feedback and approval actions
follow the CLI's rules and are audited with the account's name."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from lienthong.node.trust.audit import AuditLog

from .conftest import MakeNode
from .helpers import STORE_FILE, NodeProcess, cli, running, status
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
    """Logins are checked, rate-limited and audited; a scoped viewer sees only its unit through every endpoint; an operator's update follows the CLI's rules and is audited; so do its approval steps."""
    node = make_node("86")
    fill_province(node)
    add_user(node, "admin", "admin")
    add_user(node, "ba-tri", "viewer", "--unit", BA_TRI)
    add_user(node, "soyte", "viewer", "--agency", "soyte")
    add_user(node, "dieu-phoi", "operator")
    add_user(node, "long-chau", "operator", "--unit", LONG_CHAU)
    approved_by_commune(node, BA_TRI)
    assert [u["name"] for u in json.loads(lienthong("user", "list", "--dir", str(node), "--json"))] == [
        "admin",
        "ba-tri",
        "dieu-phoi",
        "long-chau",
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
        long_chau = Client(base)
        assert long_chau.login("long-chau") == 200
        approval_steps(operator, ba_tri, long_chau)

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
    approval_steps_recorded(node)


def approved_by_commune(node: Path, unit: str) -> None:
    """The commune's own approval of its October report, as its node sends it up (written with the
    commune's key pair's node id, applied by the province's store as from that child)."""
    from lienthong.sync import records
    from lienthong.sync.clock import HybridClock
    from lienthong.sync.downstream import Downstream
    from lienthong.sync.store import Store

    fields = {"unit": unit, "dataset": "BC-IOC-THANG", "period": "2026-10", "action": "approved", "by": "Chủ tịch UBND xã"}
    store = Store.open(node / STORE_FILE)
    try:
        down = Downstream(store)
        down.register_child(unit, "127.0.0.1:1")
        raw = records.approval(unit, {**fields, "reason": "", "at": "2026-11-20T09:00:00+07:00"}).envelope(unit, HybridClock(0).now())
        assert down.apply_from_child(unit, "e", 0, 1, b"", [raw.SerializeToString()]) == []
    finally:
        store.close()


def approval_steps(operator: Client, viewer: Client, scoped: Client) -> None:
    """An operator accepts, un-accepts and returns a commune's report and approves the province's own
    from the console (API and the page's form), under `lienthong approve`'s rules: a step that does
    not follow is refused in one sentence; viewers and accounts scoped elsewhere are refused."""
    step = {"unit": BA_TRI, "dataset": "BC-IOC-THANG", "period": "2026-10"}
    assert viewer.request("POST", "/api/v1/approvals", body={**step, "action": "accept"})[1]["error"]["code"] == "forbidden"
    assert scoped.request("POST", "/api/v1/approvals", body={**step, "action": "accept"})[1]["error"]["code"] == "outside_scope"
    assert operator.request("POST", "/api/v1/approvals", body={**step, "action": "lose"})[0] == 400

    def take(action: str, reason: str = "") -> tuple[int, dict[str, Any]]:
        code, body = operator.request("POST", "/api/v1/approvals", body={**step, "action": action, "reason": reason})
        return code, body

    refused = [take("approve"), take("return"), take("unaccept", "?")]
    assert [(code, body["error"]["code"]) for code, body in refused] == [(409, "refused")] * 3
    messages = [body["error"]["message"] for _, body in refused]
    assert messages[0] == f"this node is the level above it: for unit {BA_TRI} it may accept, not approve"
    assert messages[1] == "a return or an un-approval needs its reason"
    assert messages[2] == f"BC-IOC-THANG 2026-10 of unit {BA_TRI} is not accepted (it is approved)"
    assert all(body["error"]["hint"] for _, body in refused)
    code, body = take("accept")
    assert (code, body["state"], body["action"], body["by"]) == (200, "accepted", "accepted", "dieu-phoi"), body
    assert take("accept")[1]["error"]["message"] == f"BC-IOC-THANG 2026-10 of unit {BA_TRI} is already accepted"
    assert take("unaccept", "thiếu phụ lục")[1]["state"] == "approved"
    assert take("return", "bổ sung phụ lục")[1]["state"] == "returned"
    completeness = operator.ok(f"/api/v1/completeness?period=2026-10&unit={BA_TRI}")["reports"]
    assert [r["approval"] for r in completeness if r["report_type"] == "BC-IOC-THANG"] == ["returned"]

    # The page: the state, the last step with its reason, and the form, which posts and comes back.
    page = f"/reports/cell?unit={BA_TRI}&period=2026-10&report_type=BC-IOC-THANG"
    code, text = operator.get(page)
    assert code == 200 and 'data-approval="returned"' in text and "bổ sung phụ lục" in text and "data-approval-form" in text
    assert "data-approval-form" not in viewer.get(page)[1]
    own = {"unit": "86", "dataset": "BC-IOC-THANG", "period": "2026-10", "action": "approve", "_csrf": operator.csrf}
    code, text = operator.request("POST", "/api/v1/approvals?next=" + urllib.parse.quote(page.replace(BA_TRI, "86")), form=own)
    assert code == 200 and 'data-approval="approved"' in text and "dieu-phoi" in text


def approval_steps_recorded(node: Path) -> None:
    """The steps taken from the console carry the account's name: in the records' `by` and the audit log."""
    from lienthong.sync import approval
    from lienthong.sync.store import Store

    store = Store.open(node / STORE_FILE)
    try:
        held = approval.approvals(store.reader())
    finally:
        store.close()
    above = held[(BA_TRI, "BC-IOC-THANG", "2026-10")].above
    assert above is not None and (above.action, above.by, above.reason) == ("returned", "dieu-phoi", "bổ sung phụ lục")
    own_step = held[("86", "BC-IOC-THANG", "2026-10")].own
    assert own_step is not None and (own_step.action, own_step.by) == ("approved", "dieu-phoi")
    with AuditLog.open(node) as log:
        steps = [(e.action, e.actor, e.details.get("by")) for e in log.entries() if e.action.startswith("approval.")]
    assert steps == [
        ("approval.accepted", "web:dieu-phoi", "dieu-phoi"),
        ("approval.unaccepted", "web:dieu-phoi", "dieu-phoi"),
        ("approval.returned", "web:dieu-phoi", "dieu-phoi"),
        ("approval.approved", "web:dieu-phoi", "dieu-phoi"),
    ]
