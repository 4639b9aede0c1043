"""The web console (docs/console.md) in a real browser: headless Chromium from Debian's
packages (scripts/setup-chromium.sh), driven by Selenium, against the real server binary with
data, on both backends. Each test loads a page, checks what it shows, and saves a screenshot
under FEATHERSTORE_SCREENSHOTS (else the test's temporary directory).

Without Chromium, ChromeDriver or Selenium the tests skip, unless
FEATHERSTORE_REQUIRE_FRAMEWORKS=1 (as in scripts/test.sh), where they fail."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator

import pytest

import featherstore
from conftest import ServerProcess, server_binary, unique, user_rows, user_spec

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_SECONDS = 30
READER = "console-reader-0123456789"
INGESTER = "console-ingester-0123456789"


def _require_browser() -> Any:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    try:
        from selenium import webdriver
    except ImportError:
        missing.append("the selenium package (pyproject's test extra)")
        webdriver = None
    if missing:
        reason = f"browser tests need {', '.join(missing)}: run scripts/setup-chromium.sh"
        if os.environ.get("FEATHERSTORE_REQUIRE_FRAMEWORKS") == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return webdriver


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium with a fresh profile; no network but loopback is needed."""
    webdriver = _require_browser()
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="featherstore-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go."""
    configured = os.environ.get("FEATHERSTORE_SCREENSHOTS")
    path = Path(configured) if configured else tmp_path_factory.mktemp("console-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def screenshot(driver: Any, shots: Path, name: str, height: int = 1000) -> Path:
    """Saves the page, `height` pixels tall, as `name`.png."""
    driver.set_window_size(1280, height)
    path = shots / f"{name}.png"
    assert driver.save_screenshot(str(path)), path
    driver.set_window_size(1280, 1000)
    return path


def wait(driver: Any, condition: Callable[[Any], Any], what: str) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    # The server page redraws every two seconds: an element read may go stale meanwhile.
    waiting = WebDriverWait(
        driver, WAIT_SECONDS, ignored_exceptions=[StaleElementReferenceException]
    )
    try:
        return waiting.until(condition)
    except TimeoutException:
        body = driver.find_element("tag name", "body").text
        raise AssertionError(f"timed out waiting for {what}; the page shows:\n{body[:2000]}")


def element(driver: Any, css: str) -> Any:
    """The element `css` selects, once it is on the page."""
    return wait(driver, lambda d: (d.find_elements("css selector", css) or [None])[0], css)


def table_rows(driver: Any, css: str) -> list:
    """The cell texts of each body row of the table `css` selects, read in one call (the
    server page redraws its tables every two seconds)."""
    element(driver, css)
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0] + ' tbody tr')]"
        ".map(row => [...row.cells].map(cell => cell.innerText.trim()))",
        css,
    )


NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
USERS = 20
EVENTS_PER_USER = 3


@pytest.fixture(scope="module")
def console_data(server: ServerProcess) -> Iterator[Dict[str, Any]]:
    """A set of 20 users with 3 events each (ages 20 to 39, later events one year older), a
    second version of it, and a feature service over it."""
    name = unique("console_users")
    service = unique("console_service")
    with featherstore.Client(server.flight, timeout=60) as client:
        client.create_feature_set(user_spec(name))
        rows = []
        for user in range(USERS):
            for event in range(EVENTS_PER_USER):
                rows.append(
                    {
                        "user_id": f"u{user}",
                        "event_timestamp": NOW - dt.timedelta(hours=EVENTS_PER_USER - event),
                        "age": 20 + user + event,
                        "ctr_7d": (user % 10) / 10 + event / 100,
                        "country": "FR" if user % 2 else "DE",
                        "embedding": [float(user), 0.0, 1.0, 2.0],
                    }
                )
        client.ingest(name, user_rows(rows))
        evolved = user_spec(name)
        evolved["features"].append(
            {"name": "sessions_7d", "type": "int32", "description": "sessions in 7 days"}
        )
        client.update_feature_set(evolved)
        client.create_feature_service(
            {
                "name": service,
                "features": [f"{name}:age", f"{name}:ctr_7d"],
                "description": "Features of the churn model",
            }
        )
        yield {"set": name, "service": service, "rows": USERS * EVENTS_PER_USER}
        client.delete_feature_service(service)
        client.delete_feature_set(name)


def test_root_redirects_to_the_set_list_which_searches(
    server: ServerProcess, browser: Any, console_data: Dict[str, Any], shots: Path
) -> None:
    name = console_data["set"]
    browser.get(server.http + "/")
    assert browser.current_url.startswith(server.http + "/ui"), browser.current_url
    wait(browser, lambda d: name in element(d, "#sets-table").text, f"{name} in the list")
    row = next(r for r in table_rows(browser, "#sets-table") if r[0] == name)
    # Name, entity, features, rows, entities, latest event, freshness, version.
    assert row[1] == "user_id (string)"
    assert row[2].startswith("5: age, ctr_7d, country, embedding")
    assert (row[3], row[4], row[7]) == ("60", "20", "2")
    assert row[5] == (NOW - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert row[6].endswith(" h") or row[6].endswith(" min"), row[6]
    screenshot(browser, shots, f"sets-{server.backend}")

    search = element(browser, "#set-search")
    search.send_keys(name)
    wait(browser, lambda d: len(table_rows(d, "#sets-table")) == 1, "one row for the set's name")
    assert element(browser, "#set-count").text.startswith("1 of ")
    search.clear()
    search.send_keys("no-such-set-anywhere")
    wait(browser, lambda d: table_rows(d, "#sets-table") == [], "no rows")
    search.clear()
    search.send_keys("team=growth user_id")
    wait(browser, lambda d: name in element(d, "#sets-table").text, "a search by tag and entity")


def test_set_page_shows_schema_versions_charts_and_looks_up(
    server: ServerProcess, browser: Any, console_data: Dict[str, Any], shots: Path
) -> None:
    name = console_data["set"]
    browser.get(f"{server.http}/ui#/sets/{name}")
    assert element(browser, "#set-name").text == name
    assert element(browser, "#set-tags").text == "team=growth"
    stats = element(browser, "#set-stats").text
    assert "Rows\n60" in stats and "Entities\n20" in stats and "Version\n2" in stats, stats
    schema = table_rows(browser, "#schema-table")
    assert ["ctr_7d", "feature", "float32", "click-through rate, 7 days"] in schema
    assert ["sessions_7d", "feature", "int32", "sessions in 7 days"] in schema
    assert schema[0][:3] == ["user_id", "entity", "string"]
    versions = table_rows(browser, "#versions-table")
    assert [v[0] for v in versions] == ["2", "1"]
    assert "sessions_7d" in versions[0][2] and "sessions_7d" not in versions[1][2]

    # The freshness chart and a histogram per numeric feature, drawn on canvases.
    element(browser, "#freshness-chart canvas")
    for feature in ("age", "ctr_7d", "sessions_7d"):
        element(browser, f"#hist-{feature} .hist-stats")
    age = element(browser, "#hist-age .hist-stats").text
    assert age == "sampled 60 rows · nulls 0 · min 20 · mean 30.5 · max 41", age
    element(browser, "#hist-age canvas")
    # Rows stored before the feature existed read it as null.
    assert "nulls 60" in element(browser, "#hist-sessions_7d .hist-stats").text
    assert browser.find_elements("css selector", "#hist-country") == []

    keys = element(browser, "#lookup-keys")
    keys.send_keys("u3, nobody, u7")
    element(browser, "#lookup-submit").click()
    lookup = wait(browser, lambda d: table_rows(d, "#lookup-table"), "lookup rows")
    assert [r[0] for r in lookup] == ["u3", "nobody", "u7"]
    # The latest event: age 20 + 3 + 2.
    assert lookup[0][1] == "25", lookup
    assert lookup[1][1] == "null"

    history_key = element(browser, "#history-key")
    history_key.send_keys("u3")
    element(browser, "#history-submit").click()
    history = wait(browser, lambda d: table_rows(d, "#history-table"), "history rows")
    assert [r[1] for r in history] == ["23", "24", "25"], history
    element(browser, "#history-chart canvas")
    screenshot(browser, shots, f"set-{server.backend}", height=3200)

    # A bad key is an error shown on the page, not a broken page.
    history_key.clear()
    history_key.send_keys("a, b")
    element(browser, "#history-submit").click()
    wait(browser, lambda d: "exactly one" in element(d, "#history-result").text, "the error")


def test_feature_service_pages(
    server: ServerProcess, browser: Any, console_data: Dict[str, Any], shots: Path
) -> None:
    service, name = console_data["service"], console_data["set"]
    browser.get(f"{server.http}/ui#/services")
    wait(browser, lambda d: service in element(d, "#services-table").text, "the service")
    row = next(r for r in table_rows(browser, "#services-table") if r[0] == service)
    assert row[1:4] == ["Features of the churn model", "2", name]
    browser.find_element("link text", service).click()
    assert element(browser, "#service-name").text == service
    features = table_rows(browser, "#service-features")
    assert features == [[f"{name}:age", name, "age"], [f"{name}:ctr_7d", name, "ctr_7d"]]
    screenshot(browser, shots, f"service-{server.backend}")
    browser.find_element("link text", name).click()
    wait(browser, lambda d: element(d, "#set-name").text == name, "the set's page")


def test_server_page_shows_rates_latency_and_storage(
    server: ServerProcess, browser: Any, console_data: Dict[str, Any], shots: Path
) -> None:
    browser.get(f"{server.http}/ui#/server")
    cards = wait(browser, lambda d: element(d, "#server-cards").text, "the cards")
    assert f"Storage backend\n{server.backend}" in cards, cards
    assert "Storage state\nok" in cards and "Online store\nmemory (ok)" in cards, cards
    methods = wait(browser, lambda d: table_rows(d, "#methods-table"), "the request table")
    assert any(r[:2] == ["http", "GET /v1/feature-sets"] for r in methods), methods
    # Rates need two samples, two seconds apart.
    wait(
        browser,
        lambda d: int(element(d, "#rate-chart").get_attribute("data-points") or 0) >= 2,
        "two rate samples",
    )
    element(browser, "#latency-chart canvas")
    screenshot(browser, shots, f"server-{server.backend}", height=1600)


TOKENS = f"""
auth:
  tokens:
    - {{name: reader, token: "{READER}", scopes: [read]}}
    - {{name: ingester, token: "{INGESTER}", scopes: [write]}}
"""


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    binary = server_binary()
    if not binary.exists():
        pytest.fail(f"featherstore server binary not found at {binary}", pytrace=False)
    config = tmp_path_factory.mktemp("console-auth") / "featherstore.yaml"
    config.write_text(TOKENS)
    server = ServerProcess(binary, "duckdb", extra_args=["--config", str(config)])
    yield server
    server.cleanup()


def test_a_token_entered_once_is_used_for_the_session(
    auth_server: ServerProcess, browser: Any, shots: Path
) -> None:
    browser.get(f"{auth_server.http}/ui#/sets")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    element(browser, "#token-form")
    screenshot(browser, shots, "token-form")

    element(browser, "#token-input").send_keys("not-a-token-of-this-server")
    element(browser, "#token-save").click()
    wait(browser, lambda d: "not accepted" in element(d, "#token-form").text, "a refusal")

    # A token without the read scope: the server's own message.
    field = element(browser, "#token-input")
    field.clear()
    field.send_keys(INGESTER)
    element(browser, "#token-save").click()
    wait(browser, lambda d: "read scope" in element(d, ".error").text, "forbidden")

    element(browser, "#token-change").click()
    element(browser, "#token-input").send_keys(READER)
    element(browser, "#token-save").click()
    element(browser, "#sets-table")
    assert browser.execute_script("return sessionStorage.getItem('featherstore.token')") == READER
    # Kept for the session: other pages and a reload need no second entry.
    browser.get(f"{auth_server.http}/ui#/server")
    element(browser, "#server-cards")
    browser.refresh()
    element(browser, "#methods-table")
    screenshot(browser, shots, "token-server")

    element(browser, "#token-clear").click()
    element(browser, "#token-form")
    assert browser.execute_script("return sessionStorage.getItem('featherstore.token')") is None
