"""The console in a real headless Chromium (Debian's, driven by its chromedriver):
log in, press Rotate, confirm, watch the job finish and see the new key version.

Screenshots are kept as test artifacts in ``$KMSBOX_TEST_ARTIFACTS`` (default: a
folder under pytest's temporary directory, printed by the test). With
``KMSBOX_ADMIN_DOC_SCREENSHOTS=docs/images/admin`` (relative to where pytest
starts) they are also copied there for docs/admin.md. Without Chromium the test skips, saying why; under ``CI=true`` it fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from admin_helpers import GatedOperations, Seed, Server

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    """A headless Chromium with a fresh profile and no background traffic."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        reason = f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver; .ci/run does)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser test must run in CI: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots are kept."""
    named = os.environ.get("KMSBOX_TEST_ARTIFACTS")
    folder = Path(named) if named else tmp_path_factory.getbasetemp() / "artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_console_logs_in_rotates_with_confirmation_and_shows_the_new_version(
    browser: object,
    artifacts: Path,
    start_server: Callable[..., Server],
    seeded: Seed,
    request: pytest.FixtureRequest,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    assert isinstance(browser, WebDriver)
    driver = browser
    with seeded.open() as store:  # enough secrets for the rewrap to take several batches
        values = {f"service-{index:04d}/api-key": f"v-{index}" for index in range(1500)}
        store.import_secrets(values, namespace="app:production", category="api")
    server = start_server(operations_class=GatedOperations)
    gates = server.operations
    assert isinstance(gates, GatedOperations)
    wait = WebDriverWait(driver, 30)
    shots: list[Path] = []

    def shot(name: str, height: int = 1000) -> None:
        driver.set_window_size(1280, height)
        path = artifacts / f"admin-{name}.png"
        assert driver.save_screenshot(str(path)), f"no screenshot {path}"
        shots.append(path)

    def text(element_id: str) -> str:
        return str(driver.find_element(By.ID, element_id).text)

    driver.get(server.url + "/")
    wait.until(ec.visibility_of_element_located((By.ID, "login")))
    shot("login", 600)
    driver.find_element(By.ID, "token").send_keys("kbx_wrong")
    driver.find_element(By.ID, "login-button").click()
    wait.until(lambda d: text("login-error") == "unknown token")
    driver.find_element(By.ID, "token").send_keys(server.tokens.admin)
    driver.find_element(By.ID, "login-button").click()
    wait.until(ec.visibility_of_element_located((By.ID, "app")))
    wait.until(lambda d: text("card-active") == "v1")
    assert text("who-actor") == "alice" and text("who-role") == "admin"
    assert text("card-secrets") == "1503"
    assert text("card-legacy") == "0"
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#secrets-table tbody tr")) == 20)
    shot("overview", 1500)

    driver.find_element(By.ID, "rotate-button").click()
    wait.until(lambda d: d.find_element(By.ID, "rotate-dialog").get_attribute("open") is not None)
    assert "app:production" in text("rotate-dialog")
    shot("confirm", 700)
    gates.hold_after_first_batch()  # hold the job after its first batch: the bar must show it live
    driver.find_element(By.ID, "rotate-confirm").click()
    wait.until(lambda d: text("rotate-status").endswith("running (500 / 1503)"))
    progress = driver.find_element(By.ID, "rotate-progress")
    assert (progress.get_attribute("value"), progress.get_attribute("max")) == ("500", "1503")
    shot("rotating", 700)
    gates.release()
    wait.until(lambda d: "rotated to v2" in text("rotate-status"))
    assert text("rotate-status") == "rotated to v2; 1503 DEKs rewrapped"
    assert progress.get_attribute("value") == progress.get_attribute("max")
    wait.until(lambda d: text("card-active") == "v2")
    first_key, old_key = (row.text for row in driver.find_elements(By.CSS_SELECTOR, "#keys-table tbody tr"))
    assert first_key.startswith("v2 active 1503 env://KMSBOX_ADMIN_TEST_KEK#v1 ")
    assert old_key.startswith("v1 retired 0 env://KMSBOX_ADMIN_TEST_KEK#v1 ")
    assert text("card-legacy") == "0"
    wait.until(lambda d: "succeeded" in text("jobs-table"))
    shot("rotated", 1300)

    # The audit viewer: filter on rotations, then verify the chain.
    driver.find_element(By.ID, "audit-action").send_keys("rotate")
    driver.find_element(By.ID, "audit-search").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#audit-table tbody tr")) == 1)
    assert "rotate success alice" in driver.find_element(By.CSS_SELECTOR, "#audit-table tbody tr").text
    driver.find_element(By.ID, "verify-button").click()
    wait.until(lambda d: text("verify-result").startswith("Audit log intact"))
    assert "1506 secrets and 2 namespaces match" in text("verify-result")  # both namespaces, all checked
    driver.find_element(By.ID, "diagnose-button").click()
    wait.until(lambda d: text("diagnosis-summary").startswith("No problems (1503 secret versions checked)"))
    driver.find_element(By.ID, "audit-table").location_once_scrolled_into_view  # noqa: B018 - scrolls
    shot("audit", 1000)

    page = str(driver.page_source)
    assert not any(value in page for value in seeded.values)
    assert "v-1499" not in page and server.tokens.admin not in page
    violations = [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]
    assert violations == []

    print(f"screenshots: {', '.join(str(p) for p in shots)}")
    docs = os.environ.get("KMSBOX_ADMIN_DOC_SCREENSHOTS")
    if docs:
        # Relative to where pytest was started (the test itself runs in a temporary folder).
        folder = request.config.invocation_params.dir / docs
        folder.mkdir(parents=True, exist_ok=True)
        for path in shots:
            shutil.copy(path, folder / path.name)


def test_console_for_a_viewer_has_no_rotate_button_and_logs_out(
    browser: object, start_server: Callable[..., Server]
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    assert isinstance(browser, WebDriver)
    driver = browser
    server = start_server()
    wait = WebDriverWait(driver, 30)
    driver.get(server.url + "/")
    wait.until(ec.visibility_of_element_located((By.ID, "token"))).send_keys(server.tokens.viewer)
    driver.find_element(By.ID, "login-button").click()
    wait.until(lambda d: d.find_element(By.ID, "card-active").text == "v1")
    assert driver.find_element(By.ID, "who-role").text == "viewer"
    assert not driver.find_element(By.ID, "rotate-button").is_displayed()
    driver.refresh()  # the session cookie outlives a reload; the page fetches its CSRF token again
    wait.until(lambda d: d.find_element(By.ID, "card-active").text == "v1")
    driver.find_element(By.ID, "logout-button").click()
    wait.until(ec.visibility_of_element_located((By.ID, "login")))
    assert driver.find_element(By.ID, "login-error").text == "Logged out."
    driver.refresh()
    wait.until(ec.visibility_of_element_located((By.ID, "login")))
