"""Signing in to the admin in a real browser."""

from __future__ import annotations

from selenium.webdriver.common.by import By

from tests.factories import UserFactory

from .conftest import wait_for


def test_a_person_signs_in_through_the_login_form(browser, live_server, sign_in):
    UserFactory(username="alice", is_superuser=True)
    sign_in("alice")
    assert browser.current_url == f"{live_server.url}/admin/"
    wait_for(browser, lambda b: b.find_element(By.ID, "site-name"), "the admin header")


def test_a_wrong_password_keeps_the_person_on_the_login_page(browser, live_server):
    UserFactory(username="bob")
    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("bob")
    browser.find_element(By.NAME, "password").send_keys("wrong")
    browser.find_element(By.CSS_SELECTOR, "form input[type=submit]").click()
    note = wait_for(browser, lambda b: b.find_element(By.CSS_SELECTOR, ".errornote"), "an error")
    assert "correct username and password" in note.text
