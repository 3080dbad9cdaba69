"""The package browser in a real browser: find a package through search and copy its install
line (the copy button writes the clipboard; the test reads it back)."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from channels_app.models import Channel, Package
from tests.factories import ChannelFactory, UserFactory, grant

from .conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

READ_CLIPBOARD = """
const done = arguments[arguments.length - 1];
navigator.clipboard.readText().then(done, (error) => done("refused: " + error));
"""


def _package(channel, name, version, unit="noarch") -> None:
    Package.objects.create(
        channel=channel,
        unit=unit,
        filename=f"{name}-{version}-0.conda",
        name=name,
        version=version,
        size=4096,
        on_demand=True,
    )


def _find_and_copy(browser, live_server, channel: str, query: str, package: str) -> str:
    """From the site's root: open the channel, search, open the package, copy its first
    install line; return the line shown on the page."""
    browser.get(live_server.url + "/")
    browser.find_element(By.LINK_TEXT, channel).click()
    search = wait_for(browser, lambda b: b.find_element(By.ID, "search"), "the search box")
    search.send_keys(query)
    search.submit()
    wait_for(browser, lambda b: f"q={query}" in b.current_url, "the search results")
    browser.find_element(By.LINK_TEXT, package).click()
    wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#install .line"), "install")
    line = browser.find_element(By.CSS_SELECTOR, "#install .line .cmd").text
    button = browser.find_element(By.CSS_SELECTOR, "#install .line button.copy")
    button.click()
    wait_for(browser, lambda b: button.get_attribute("data-copied"), "the copy to be done")
    return line


def test_a_visitor_finds_a_package_and_copies_its_install_line(browser, live_server):
    channel = ChannelFactory(name="forge", description="conda-forge, curated")
    for name, version in [("numpy", "1.26.4"), ("numpy", "2.0.1"), ("numba", "0.60.0")]:
        _package(channel, name, version, unit="linux-64")
    _package(channel, "scipy", "1.14.0")
    line = _find_and_copy(browser, live_server, "forge", "nump", "numpy")
    assert line == f"conda install -c {live_server.url}/api/repo/forge --override-channels numpy"
    assert browser.execute_async_script(READ_CLIPBOARD) == line
    versions = browser.find_elements(By.CSS_SELECTOR, "#versions code.ver")
    assert [v.text for v in versions] == ["2.0.1", "1.26.4"]


def test_a_signed_in_member_copies_a_private_channel_s_line_with_a_token_placeholder(
    browser, live_server, sign_in
):
    channel = ChannelFactory(name="team", visibility=Channel.Visibility.PRIVATE)
    ChannelFactory(name="others", visibility=Channel.Visibility.PRIVATE)
    _package(channel, "internal-tool", "1.0")
    grant(channel, UserFactory(username="alice"))
    browser.get(live_server.url + "/")
    assert not browser.find_elements(By.LINK_TEXT, "team")  # signed out: not even listed
    sign_in("alice")
    browser.get(live_server.url + "/")
    assert not browser.find_elements(By.LINK_TEXT, "others")
    line = _find_and_copy(browser, live_server, "team", "tool", "internal-tool")
    expected = f"{live_server.url}/api/repo/t/<TOKEN>/team --override-channels internal-tool"
    assert line == f"conda install -c {expected}"
    assert browser.execute_async_script(READ_CLIPBOARD) == line
