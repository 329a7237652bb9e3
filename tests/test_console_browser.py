"""The console's pages in a real headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium): log in, open every page, check the numbers shown against the CLI's --json for the same
store, update a feedback item from a commune's page and see the new state arrive at the province,
and a scoped viewer refused outside its scope. Screenshots of every page are saved in
tests/output/console/ (LIENTHONG_TEST_OUTPUT to put them elsewhere)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import MakeNode, listen_address
from .helpers import NodeProcess, cli, running, status, wait_until
from .web_helpers import BA_TRI, LITTER, PASSWORD, POTHOLE, add_user, fill_province, lienthong

pytestmark = pytest.mark.slow
OUTPUT = Path(os.environ.get("LIENTHONG_TEST_OUTPUT", Path(__file__).parent / "output")) / "console"


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium, the system's own (no browser download)."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.fail("chromium and chromium-driver are missing: scripts/test.sh installs them (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1100", "--lang=vi"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


def css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def text_of(driver: Any, selector: str) -> str | None:
    """The element's text, or None while the page is being replaced (the form's answer loading:
    an element found on the old page goes stale before its text is read — a loaded run met it)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    try:
        return str(css(driver, selector).text)
    except (StaleElementReferenceException, NoSuchElementException):
        return None


def all_css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def login(driver: Any, base: str, name: str) -> None:
    driver.delete_all_cookies()
    driver.get(base + "/login")
    css(driver, "input[name=name]").send_keys(name)
    css(driver, "input[name=password]").send_keys(PASSWORD)
    css(driver, "button[type=submit]").click()
    wait_until(lambda: "/login" not in driver.current_url, timeout=30, what=f"{name} to be logged in")


def shot(driver: Any, name: str) -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def cli_json(*args: str) -> Any:
    return json.loads(cli(*args, "--json").stdout)


def test_every_page_shows_what_the_cli_says_and_an_update_from_a_page_reaches_the_province(make_node: MakeNode, browser: Any) -> None:
    """Overview, reports grid, feedback, indicators, inbox and security pages against the CLI; a commune's operator accepts an item from its page and the province sees it."""
    province = make_node("86")
    commune = make_node(BA_TRI, parent=listen_address(province))
    fill_province(province)
    lienthong("feedback", "assign", "--dir", str(province), POTHOLE, "--unit", BA_TRI)
    add_user(province, "giam-sat", "admin")
    add_user(province, "ba-tri", "viewer", "--unit", BA_TRI)
    add_user(commune, "xa-ba-tri", "operator")
    procs = NodeProcess(province), NodeProcess(commune)
    with running(*procs):
        wait_until(lambda: any(c["connected"] for c in status(province)["children"]), timeout=60, what="the commune to connect")
        base = f"http://127.0.0.1:{procs[0].port('web_port')}"
        login(browser, base, "giam-sat")

        # Tổng quan: silent units in red at the top, the child connected, counts as `status --json`.
        browser.get(base + "/")
        now = status(province)
        assert int(css(browser, "[data-feedback-open]").text) == now["feedback"]["open"]
        assert int(css(browser, "[data-feedback-overdue]").text) == now["feedback"]["overdue"]
        for kind in ("indicator", "report", "feedback"):
            assert int(css(browser, f'[data-records="{kind}"]').text) == now["records"][kind]
        assert css(browser, f'[data-child="{BA_TRI}"] [data-connected]').get_attribute("data-connected") == "1"
        silent = css(browser, ".silent")
        assert silent.location["y"] < css(browser, "[data-children]").location["y"], "silent units come first"
        assert BA_TRI not in [e.get_attribute("data-silent") for e in all_css(browser, "[data-silent]")]
        assert silent.value_of_css_property("color") == "rgba(198, 40, 40, 1)"
        shot(browser, "overview")
        browser.get(base + "/?lang=en")
        assert css(browser, '[data-nav="overview"]').text == "Overview"
        browser.get(base + "/?lang=vi")
        assert css(browser, '[data-nav="overview"]').text == "Tổng quan"

        # Báo cáo: the grid's cells for 2026-10 are `reports completeness --json`'s statuses.
        browser.get(base + "/reports?report_type=BC-IOC-THANG&period=2026-10")
        want = cli_json("reports", "completeness", "--dir", str(province), "--period", "2026-10", "--report-type", "BC-IOC-THANG")
        shown = {
            row.get_attribute("data-unit"): css(row, '[data-period="2026-10"]').get_attribute("data-status")
            for row in all_css(browser, "[data-unit]")
        }
        assert shown == {r["unit"]: r["status"] for r in want["reports"]}
        for level in want["levels"]:
            row = css(browser, f'[data-level="{level["level"]}"]')
            assert int(css(row, "[data-expected]").text) == level["expected"]
            assert int(css(row, "[data-submitted]").text) == level["submitted"]
        shot(browser, "reports")
        css(browser, f'[data-unit="{BA_TRI}"] [data-period="2026-10"] a').click()
        assert all_css(browser, "[data-file]"), "the submission's files are listed"
        shot(browser, "report-cell")

        # Phản ánh: the counts and the overdue-first order of `feedback list --json`.
        browser.get(base + "/feedback")
        items = cli_json("feedback", "list", "--dir", str(province))
        assert int(css(browser, "[data-feedback-open]").text) == sum(1 for i in items if i["state"] not in ("resolved", "closed"))
        assert int(css(browser, "[data-feedback-overdue]").text) == sum(1 for i in items if i["overdue"])
        rows = all_css(browser, "[data-item]")
        assert {r.get_attribute("data-item"): r.get_attribute("data-state") for r in rows} == {i["source_id"]: i["state"] for i in items}
        flags = [r.get_attribute("data-overdue") for r in rows]
        assert flags == sorted(flags, reverse=True)
        shot(browser, "feedback")
        css(browser, f'[data-item="{POTHOLE}"] a').click()
        assert css(browser, "[data-item-state]").text == "assigned" and css(browser, "[data-item-assignee]").text.startswith(BA_TRI)
        history = cli_json("feedback", "show", "--dir", str(province), POTHOLE)["history"]
        assert [e.get_attribute("data-event") for e in all_css(browser, "[data-event]")] == [h["status"] for h in history]
        shot(browser, "feedback-item")

        # Chỉ tiêu: the roll-up shown equals `query indicators --rollup --json`.
        browser.get(base + "/indicators?period=2026-10")
        rolled = cli_json("query", "--dir", str(province), "indicators", "--rollup", "--period", "2026-10")
        plain = {f"{r['indicator']}|{r['unit']}": r["exact_value"] for r in rolled if not r["disaggregation"]}
        shown_values = {}
        for element in all_css(browser, "[data-rollup]"):
            shown_values[element.get_attribute("data-rollup")] = element.find_element("css selector", "b").get_attribute("textContent")
        assert shown_values and all(plain[key] == (value if value != "—" else "") for key, value in shown_values.items())
        assert all_css(browser, "svg[data-chart] polyline")
        assert {a.get_attribute("data-download") for a in all_css(browser, "[data-download]")} == {"csv", "json", "dhis2"}
        shot(browser, "indicators")

        # Tệp and An ninh.
        browser.get(base + "/inbox")
        assert int(css(browser, "[data-files]").get_attribute("data-files")) == now["ingest"]["files"]
        shot(browser, "inbox")
        browser.get(base + "/security")
        assert css(browser, "[data-audit-ok]").get_attribute("data-audit-ok") == "1"
        assert int(css(browser, "[data-audit]").get_attribute("data-audit")) > 0
        shot(browser, "security")

        # A viewer scoped to Ba Tri: its item, but not another unit's, nor the inbox or the audit log.
        login(browser, base, "ba-tri")
        browser.get(base + "/feedback")
        assert {r.get_attribute("data-item") for r in all_css(browser, "[data-item]")} == {POTHOLE}
        litter_id = next(i["id"] for i in items if i["source_id"] == LITTER)
        for path in (f"/feedback/{litter_id}", "/inbox", "/security"):
            browser.get(base + path)
            assert css(browser, "h1").text in ("403", "404"), path
        shot(browser, "scoped-viewer-refused")

        # The commune's operator accepts the pothole from its page; the province sees it.
        wait_until(
            lambda: any(i["source_id"] == POTHOLE for i in cli_json("feedback", "list", "--dir", str(commune))),
            timeout=60,
            what="the item at the commune",
        )
        commune_base = f"http://127.0.0.1:{procs[1].port('web_port')}"
        login(browser, commune_base, "xa-ba-tri")
        browser.get(commune_base + "/feedback")
        css(browser, f'[data-item="{POTHOLE}"] a').click()
        from selenium.webdriver.support.select import Select

        form = css(browser, "[data-update-form]")
        Select(css(form, "select[name=status]")).select_by_value("accepted")
        css(form, "input[name=note]").send_keys("Đã tiếp nhận, cử cán bộ khảo sát")
        css(form, "button[type=submit]").click()
        wait_until(lambda: text_of(browser, "[data-item-state]") == "accepted", timeout=30, what="the page to show accepted")
        shot(browser, "feedback-updated-at-commune")

        def at_province() -> str:
            return str(cli_json("feedback", "show", "--dir", str(province), POTHOLE)["state"])

        wait_until(lambda: at_province() == "accepted", timeout=60, what="the acceptance to reach the province")
        login(browser, base, "giam-sat")
        browser.get(base + "/feedback")
        assert css(browser, f'[data-item="{POTHOLE}"]').get_attribute("data-state") == "accepted"
