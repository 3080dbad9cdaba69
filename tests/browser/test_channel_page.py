"""The channel page in a real browser: freeze and unfreeze from its Manage menu, the frozen
banner on it and on its mirror's details; and All Mirrors fitting a 1366-pixel-wide window."""

from __future__ import annotations

from selenium.webdriver.common.by import By

from mirrors_app.models import Mirror, SyncRun
from tests.factories import (
    ChannelFactory,
    MirrorFactory,
    PolicyFactory,
    SyncRunFactory,
    UserFactory,
)

from .conftest import wait_for


def _banner(browser) -> list:
    return browser.find_elements(By.ID, "frozen-banner")


def _manage(browser, item: str) -> None:
    """Open the Manage menu and choose `item`."""
    browser.find_element(By.CSS_SELECTOR, "#manage-menu summary").click()
    link = wait_for(
        browser,
        lambda b: next(
            (a for a in b.find_elements(By.CSS_SELECTOR, "#manage-menu a") if a.text == item),
            None,
        ),
        f"{item!r} in the Manage menu",
    )
    wait_for(browser, lambda b: link.is_displayed(), f"{item!r} shown")
    link.click()


def _confirm(browser, button: str) -> None:
    submit = wait_for(
        browser,
        lambda b: b.find_element(By.CSS_SELECTOR, f"input[type=submit][value='{button}']"),
        f"the {button!r} confirmation",
    )
    submit.click()


def test_freeze_and_unfreeze_from_the_channel_page(browser, live_server, sign_in):
    UserFactory(username="alice", is_superuser=True)
    channel = ChannelFactory(name="forge")
    mirror = MirrorFactory(channel=channel, name="forge-main", status=Mirror.Status.COMPLETED)
    page = f"{live_server.url}/admin/channels_app/channel/{channel.pk}/change/"
    sign_in("alice")

    browser.get(page)
    assert not _banner(browser)
    _manage(browser, "Freeze")
    _confirm(browser, "Freeze channel")
    banner = wait_for(browser, lambda b: _banner(b), "the frozen banner")[0]
    assert browser.current_url == page
    assert "Channel forge is frozen by alice" in banner.text

    # The mirror's details say so too.
    browser.find_element(By.LINK_TEXT, "See details").click()
    wait_for(browser, lambda b: "/details/" in b.current_url, "the mirror's details")
    assert f"/mirror/{mirror.pk}/details/" in browser.current_url
    assert "Channel forge is frozen" in _banner(browser)[0].text

    browser.get(page)
    _manage(browser, "Unfreeze")
    _confirm(browser, "Unfreeze channel")
    wait_for(
        browser,
        lambda b: b.current_url == page and "is now unfrozen" in b.page_source,
        "the channel page, unfrozen",
    )
    assert not _banner(browser)

    browser.find_element(By.LINK_TEXT, "See details").click()
    wait_for(browser, lambda b: b.find_elements(By.ID, "package-counts"), "the details")
    assert not _banner(browser)


def test_all_mirrors_fits_a_1366_pixel_window(browser, live_server, sign_in):
    UserFactory(username="alice", is_superuser=True)
    policy = PolicyFactory(allow_specs=["numpy"], include_dependencies=True)
    for i, status in enumerate(
        [Mirror.Status.COMPLETED, Mirror.Status.RUNNING, Mirror.Status.FAILED, "scheduled"] * 2
    ):
        channel = ChannelFactory(name=f"team-{i}-conda-forge-packages")
        mirror = MirrorFactory(
            channel=channel,
            name=f"conda-forge-main-mirror-{i}",
            status=status,
            policy=policy,
            source_url=f"https://127.0.0.1:9/conda-forge/label/main/channel-{i}",
        )
        if status == Mirror.Status.RUNNING:
            SyncRunFactory(mirror=mirror, state=SyncRun.State.RUNNING, step="downloading")
    sign_in("alice")

    browser.get(f"{live_server.url}/admin/mirrors_app/mirror/")
    wait_for(browser, lambda b: b.find_elements(By.ID, "result_list"), "the All Mirrors list")

    assert browser.execute_script("return window.innerWidth") >= 1300  # the test's window
    page_width = browser.execute_script(
        "return [document.scrollingElement.scrollWidth, window.innerWidth]"
    )
    assert page_width[0] <= page_width[1], page_width
    # Django scrolls a too-wide list inside its own box: that would not show in the page's width.
    results = browser.execute_script(
        "const r = document.querySelector('#changelist .results');"
        "return [r.scrollWidth, r.clientWidth]"
    )
    widths = browser.execute_script(
        "return [...document.querySelectorAll('#result_list thead th')].map(t => [t.className, t.offsetWidth])"
    )
    assert results[0] <= results[1], (results, widths)
    assert len(browser.find_elements(By.LINK_TEXT, "Dependency report")) == 8
