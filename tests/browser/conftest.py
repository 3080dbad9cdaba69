"""A real browser for the admin and the package browser: headless Chromium through WebDriver.

Debian's `chromium` and `chromium-driver` (installed by scripts/test.sh) drive pages served by
pytest-django's `live_server` (a real HTTP server on 127.0.0.1, on the test database). One
browser serves the whole session; each test starts signed out with an empty cookie jar.

    def test_something(browser, live_server, sign_in):
        sign_in("alice", "pw")
        browser.get(live_server.url + "/admin/")
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import pytest

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = "chromedriver"
#: Seconds a `wait_for` waits before failing, generous for a loaded 2-core machine.
WAIT = 30


def _binary(names: tuple[str, ...]) -> str | None:
    return next((path for name in names if (path := shutil.which(name))), None)


@pytest.fixture(scope="session")
def _chromium() -> Iterator[object]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    binary, driver = _binary(CHROMIUM), _binary((DRIVER,))
    if binary is None or driver is None:
        pytest.skip(
            "Chromium and ChromeDriver are not installed (Debian: chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",  # as root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1366,900",  # the laptop width the admin must fit
        "--lang=en-US",
        "--no-proxy-server",  # loopback only, whatever the environment says
    ):
        options.add_argument(argument)
    # The clipboard, for "copy the install line" (granted to every page: a test browser).
    options.add_experimental_option(
        "prefs", {"profile.content_settings.exceptions.clipboard": {"*": {"setting": 1}}}
    )
    service = webdriver.ChromeService(executable_path=driver)
    chrome = webdriver.Chrome(options=options, service=service)
    chrome.set_page_load_timeout(WAIT)
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture
def browser(_chromium, live_server) -> Iterator[object]:
    """The session's Chromium, signed out, on a blank page."""
    _chromium.get(live_server.url + "/static/")  # any page of the server, to reach its cookies
    _chromium.delete_all_cookies()
    yield _chromium
    _chromium.delete_all_cookies()


@pytest.fixture
def sign_in(browser, live_server) -> Callable[[str, str], None]:
    """Sign in through the admin's login form, as a person would."""
    from selenium.webdriver.common.by import By

    def sign(username: str, password: str = "pw") -> None:
        browser.get(f"{live_server.url}/admin/login/?next=/admin/")
        browser.find_element(By.NAME, "username").send_keys(username)
        browser.find_element(By.NAME, "password").send_keys(password)
        browser.find_element(By.CSS_SELECTOR, "form input[type=submit], form button").click()
        wait_for(browser, lambda b: "/admin/login/" not in b.current_url, "the admin index")

    return sign


def wait_for(browser, condition: Callable[[object], object], what: str, timeout: float = WAIT):
    """Wait until `condition(browser)` is truthy and return it; fail saying what was awaited."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    # A live page replaces elements while it polls: an element found a moment ago may be gone.
    ignored = (StaleElementReferenceException,)
    try:
        return WebDriverWait(
            browser, timeout, poll_frequency=0.1, ignored_exceptions=ignored
        ).until(condition)
    except TimeoutException:
        pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} at {browser.current_url}")
