"""A small HTTP client for the console (urllib, a cookie jar, JSON answers), and a province node
with the sample files, shared by the console's tests."""

from __future__ import annotations

import http.cookiejar
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from lienthong.node.cli import cli as lienthong_cli

SAMPLES = Path(__file__).parent / "testdata" / "samples" / "inbox"
DEFINITIONS = Path(__file__).parents[1] / "node" / "demo_data" / "definitions.jsonl"
BAD_ROWS = Path(__file__).parents[1] / "node" / "demo_data" / "inbox" / "86-28894" / "thongke" / "chi-tieu-loi.csv"
BA_TRI, LONG_CHAU = "86-28894", "86-29254"
POTHOLE, LITTER = "1022-20261120-000153", "1022-20261120-000161"
PASSWORD = "mat-khau-dai-du-10"


def lienthong(*args: str, env: dict[str, str] | None = None) -> str:
    """An operator's command, in this process; returns its output."""
    result = CliRunner().invoke(lienthong_cli, list(args), env=env)
    assert result.exit_code == 0 and result.exception is None, f"lienthong {' '.join(args)}: {result.exception!r}\n{result.output}"
    return result.output


def fill_province(node: Path) -> None:
    """Definitions, the 1022 hotline's feedback, indicator values and a report with its file."""
    lienthong("ingest", "--dir", str(node), str(DEFINITIONS))
    lienthong("ingest", "--dir", str(node), "--agency", "1022", str(SAMPLES / "1022" / "open311-2026-11-20.json"))
    lienthong("ingest", "--dir", str(node), "--agency", "thongke", str(SAMPLES / "thongke" / "chi-tieu-ktxh-thang-10-2026.csv"))
    lienthong("ingest", "--dir", str(node), "--agency", "vanphong", str(SAMPLES / "vanphong" / "bc-ioc-thang-10-2026-ba-tri.report.json"))


def add_user(node: Path, name: str, role: str, *scope: str) -> None:
    lienthong("user", "add", "--dir", str(node), name, "--role", role, *scope, env={"LIENTHONG_PASSWORD": PASSWORD})


class Client:
    """One browser-less session with a console at `base` (http://127.0.0.1:PORT)."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.csrf = ""

    def request(
        self, method: str, path: str, body: Any = None, form: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        data, head = None, dict(headers or {})
        if body is not None:
            data, head["Content-Type"] = json.dumps(body).encode(), "application/json"
        elif form is not None:
            data, head["Content-Type"] = urllib.parse.urlencode(form).encode(), "application/x-www-form-urlencoded"
        if self.csrf and method != "GET":
            head.setdefault("X-CSRF-Token", self.csrf)
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=head)
        try:
            with self.opener.open(req, timeout=30) as resp:
                status, raw, kind = resp.status, resp.read(), resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            status, raw, kind = exc.code, exc.read(), exc.headers.get("Content-Type", "")
        return status, json.loads(raw) if "json" in kind else raw.decode(errors="replace")

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def ok(self, path: str) -> Any:
        status, data = self.get(path)
        assert status == 200, f"GET {path}: {status} {data}"
        return data

    def login(self, name: str, password: str = PASSWORD) -> int:
        status, data = self.request("POST", "/login", form={"name": name, "password": password, "next": "/api/v1/me"})
        if status == 200:
            self.csrf = data["csrf"]
        return status
