"""Live run progress in a real browser: a person creates a channel and a mirror with Save & Run,
a real worker runs it against a loopback conda channel, and the details page shows it progress
and complete without being reloaded."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from channels_app.models import Channel
from mirrors_app.models import Mirror
from tests.factories import UserFactory
from tests.fixtures.conda_channel import ChannelServer, FakePackage, build_channel
from tests.fixtures.loopback import Gate

from .conftest import wait_for

PACKAGES = [
    FakePackage("alpha", "1.0"),
    FakePackage("beta", "2.0", subdir="linux-64"),
    FakePackage("gamma", "0.1", subdir="linux-64"),
]
#: Held back until the page has shown the other files stored: an intermediate state that is
#: seen for certain, with no timing involved.
HELD = "/noarch/alpha-1.0-0.tar.bz2"


@pytest.fixture
def source(tmp_path):
    with ChannelServer(build_channel(tmp_path / "upstream", PACKAGES)) as server:
        server.delay = Gate(HELD, timeout=120)
        yield server
        server.delay.release.set()  # never leave the worker's download hanging


def _bar(browser) -> tuple[str, int, int] | None:
    """(phase, value, max) of the details page's live progress bar, if one is shown, read in
    one script: the page replaces the bar while it polls."""
    found = browser.execute_script(
        "const bar = document.querySelector('#mirror-status progress.mirror-progress');"
        "return bar && [bar.getAttribute('data-phase'), Number(bar.getAttribute('value')),"
        " Number(bar.getAttribute('max'))];"
    )
    return tuple(found) if found else None


def _text(browser, selector: str) -> str | None:
    """The text of the element `selector` names now, read in one script (see `_bar`)."""
    return browser.execute_script(
        "const found = document.querySelector(arguments[0]);"
        "return found && found.innerText.trim();",
        selector,
    )


def test_save_and_run_progress_completes_without_a_reload(
    browser, live_server, sign_in, worker, source
):
    UserFactory(username="root", is_superuser=True)
    sign_in("root")

    # A channel, through the admin's form.
    browser.get(f"{live_server.url}/admin/channels_app/channel/add/")
    browser.find_element(By.NAME, "name").send_keys("forge")
    Select(browser.find_element(By.NAME, "kind")).select_by_value("conda")
    browser.find_element(By.NAME, "_save").click()
    wait_for(browser, lambda b: Channel.objects.filter(name="forge").exists(), "the channel")
    channel = Channel.objects.get(name="forge")

    # Its mirror, with Save & Run.
    browser.get(f"{live_server.url}/admin/mirrors_app/mirror/add/?channel={channel.pk}")
    browser.find_element(By.NAME, "name").send_keys("upstream")
    browser.find_element(By.CSS_SELECTOR, "input[name=mode][value=active]").click()
    browser.find_element(By.NAME, "source_url").send_keys(source.url)
    browser.find_element(By.NAME, "_saveandrun").click()
    wait_for(browser, lambda b: Mirror.objects.filter(name="upstream").exists(), "the mirror")
    mirror = Mirror.objects.get(name="upstream")

    browser.get(f"{live_server.url}/admin/mirrors_app/mirror/{mirror.pk}/details/")
    browser.execute_script("window.psmNotReloaded = true;")

    # Two files stored, the third held upstream: the page shows it part way.
    assert source.delay.arrived.wait(60), "the worker never asked for the held file"
    phase, done, total = wait_for(
        browser,
        lambda b: (bar := _bar(b)) and bar[0] == "downloading" and bar[1] == 2 and bar,
        "2 of 3 files stored",
    )
    assert (phase, done, total) == ("downloading", 2, 3)
    assert _text(browser, "#mirror-status .files-done") == "2 / 3 files"

    source.delay.release.set()
    wait_for(
        browser,
        lambda b: b.find_elements(By.CSS_SELECTOR, "#mirror-status [data-status=completed]"),
        "the run completed",
    )
    assert _bar(browser) == ("finished", 3, 3)
    summary = _text(browser, "#mirror-status .mirror-progress-text")
    assert "completed in" in summary and "3 files downloaded" in summary
    assert browser.execute_script("return window.psmNotReloaded === true;")

    # The channel's mirrors table fills in the same from the endpoint.
    browser.get(f"{live_server.url}/admin/channels_app/channel/{channel.pk}/change/")
    wait_for(
        browser,
        lambda b: "3 files downloaded" in (_text(b, f"[data-mirror-progress='{mirror.pk}']") or ""),
        "the channel page's live status",
    )
