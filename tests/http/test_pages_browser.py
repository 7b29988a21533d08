"""The status pages in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver`` through selenium) against the real service: no console error, the table
the API's, sorting and filtering, a device turning red at the refresh after it goes down;
screenshots of the fleet and a device page are saved into ``docs/screenshots``."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from fleet_monitor.domain.timestamps import MINUTE_NS, format_minute, format_rfc3339
from tests.conftest import REPO, LiveServer, live_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="no headless browser: install Debian's chromium and chromium-driver "
    "(.ci/run does, as root) to run the browser tests",
)
if CHROMIUM is not None and DRIVER is not None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

SCREENSHOTS = REPO / "docs" / "screenshots"
DEVICES = "device_id,site\ncam-01,paris\ncam-02,paris\ncam-03,lyon\ncam-04,\n"
RED, UP = "rgb(198, 40, 40)", "rgb(46, 125, 50)"  # --down, --up


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(DRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    devices = tmp_path / "devices.csv"
    devices.write_text(DEVICES)
    args = ["--devices", str(devices), "--expected-every", "4", "--grace", "1"]
    with live_server(tmp_path, args) as running:
        yield running


def beat(server: LiveServer, device: str) -> None:
    body = {"sent_at": format_rfc3339(time.time_ns())}
    reply = requests.post(f"{server.url}/api/v1/devices/{device}/heartbeat", json=body, timeout=10)
    assert reply.status_code == 204


def table(driver: webdriver.Chrome) -> dict[str, str]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#devices tbody tr[data-device]")
    return {
        row.get_attribute("data-device") or "": row.get_attribute("data-state") or ""
        for row in rows
    }


def severe(driver: webdriver.Chrome) -> list[str]:
    entries: list[dict[str, str]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return [entry["message"] for entry in entries if entry["level"] == "SEVERE"]


def test_the_fleet_page_in_a_browser(server: LiveServer, browser: webdriver.Chrome) -> None:
    for device in ("cam-01", "cam-02", "cam-03"):
        beat(server, device)
    browser.get(f"{server.url}/?refresh=0")
    api = requests.get(f"{server.url}/api/v1/devices", timeout=10).json()["devices"]
    assert table(browser) == {d["device_id"]: d["state"] for d in api}
    assert table(browser)["cam-04"] == "new"
    assert severe(browser) == []

    header = browser.find_element(By.XPATH, "//th[button='device']/button")
    header.click()
    header.click()  # descending
    assert list(table(browser)) == ["cam-04", "cam-03", "cam-02", "cam-01"]
    assert (
        browser.find_element(By.XPATH, "//th[button='device']").get_attribute("aria-sort")
        == "descending"
    )

    Select(browser.find_element(By.NAME, "state")).select_by_value("new")
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(browser, 10).until(lambda d: "state=new" in d.current_url)
    assert table(browser) == {"cam-04": "new"}
    browser.find_element(By.NAME, "label").send_keys("site:paris")
    Select(browser.find_element(By.NAME, "state")).select_by_value("")
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(browser, 10).until(lambda d: "site%3Aparis" in d.current_url)
    assert set(table(browser)) == {"cam-01", "cam-02"}
    assert severe(browser) == []


def shown_state(driver: webdriver.Chrome, device: str) -> list[str] | None:
    """The device's state cell as the page shows it now, its text and colour (read in one
    script: the page may reload between two reads)."""
    found: list[str] | None = driver.execute_script(
        "var c = document.querySelector('tr[data-device=\"' + arguments[0] + '\"] .state');"
        "return c ? [c.textContent, getComputedStyle(c).color] : null;",
        device,
    )
    return found


def test_a_device_going_down_turns_red_at_the_refresh(
    server: LiveServer, browser: webdriver.Chrome
) -> None:
    beat(server, "cam-01")
    browser.get(f"{server.url}/?refresh=1&label=site:paris")
    assert shown_state(browser, "cam-01") == ["up", UP]
    # silent past expected_every + grace (5 s): down at a refresh
    WebDriverWait(browser, 30, poll_frequency=0.2).until(
        lambda d: shown_state(d, "cam-01") == ["down", RED]
    )
    assert severe(browser) == []


def test_screenshots_of_the_fleet_and_a_device(
    server: LiveServer, browser: webdriver.Chrome
) -> None:
    now = time.time_ns() // MINUTE_NS
    history = {  # the last 90 minutes: cam-01 all but a gap, cam-02 half, cam-03 until 30 ago
        "cam-01": [m for m in range(now - 90, now + 1) if not 40 <= now - m < 47],
        "cam-02": list(range(now - 90, now + 1, 2)),
        "cam-03": list(range(now - 90, now - 30)),
    }
    events: list[dict[str, str | int]] = [
        {"device_id": device, "type": "heartbeat", "sent_at": format_minute(minute)}
        for device, minutes in history.items()
        for minute in minutes
    ]
    events += [
        {
            "device_id": "cam-01",
            "type": "upload",
            "sent_at": format_minute(now - m),
            "upload_time": (20 + m % 17) * 1_000_000_000,
        }
        for m in range(0, 90, 3)
    ]
    reply = requests.post(f"{server.url}/api/v1/events", json={"events": events}, timeout=10)
    assert reply.json()["accepted"] == len(events)
    SCREENSHOTS.mkdir(exist_ok=True)
    browser.get(f"{server.url}/?refresh=0&bar=1m")
    assert browser.save_screenshot(str(SCREENSHOTS / "fleet.png"))
    browser.get(f"{server.url}/devices/cam-01?refresh=0&bar=1m")
    assert browser.find_element(By.ID, "state").text in ("up", "late")
    assert browser.save_screenshot(str(SCREENSHOTS / "device.png"))
    assert severe(browser) == []
