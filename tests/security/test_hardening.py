"""What a self-hosted server is expected to hold, attacked over real HTTP (live_server):

- guessing passwords on the admin login, or tokens on the API and the package routes, is locked
  out after PSM_LOGIN_FAILURE_LIMIT failures, even for the right guess, until the cool-off;
- a new token's secret is shown once, on the page that created it, and never travels in a cookie,
  the session, a redirect or a log line;
- the documented production settings pass `manage.py check --deploy` cleanly.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote

import pytest
import requests
from axes.models import AccessAttempt
from django.contrib.admin.models import LogEntry
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.db.models import F

from channels_app.models import Channel
from psm.models import ApiToken, AuditEvent
from psm.tokens import token_create, token_revoke
from tests.factories import ChannelFactory, UserFactory, grant

pytestmark = pytest.mark.django_db(transaction=True)

REPO = Path(__file__).resolve().parents[2]
LIMIT = 5
COOL_OFF = timedelta(minutes=15)
# Behind one proxy, clients are told apart by the address it appends to X-Forwarded-For.
ATTACKER = {"X-Forwarded-For": "203.0.113.9"}
BYSTANDER = {"X-Forwarded-For": "198.51.100.7"}
INDEX = "noarch/repodata.json"


@pytest.fixture
def throttle(settings):
    """The production limit and cool-off, behind one trusted proxy."""
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.AXES_COOLOFF_TIME = COOL_OFF
    settings.PSM_TRUSTED_PROXY_COUNT = 1


def _csrf(page: requests.Response) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)


def _login(browser: requests.Session, base: str, username: str, password: str, **headers):
    page = browser.get(f"{base}/admin/login/", headers=headers, timeout=10)
    return browser.post(
        f"{base}/admin/login/?next=/admin/",
        data={
            "csrfmiddlewaretoken": _csrf(page),
            "username": username,
            "password": password,
            "next": "/admin/",
        },
        headers=headers,
        allow_redirects=False,
        timeout=10,
    )


def _expire_failures() -> None:
    """Let the cool-off pass: every recorded failure moves back beyond it."""
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - COOL_OFF - timedelta(seconds=1))


# --- Admin login --------------------------------------------------------------------------


@pytest.mark.parametrize("lifted_by", ["cool-off", "administrator"])
def test_admin_login_is_locked_out_after_repeated_failures_even_for_the_right_password(
    live_server, throttle, lifted_by
):
    UserFactory(username="admin", is_superuser=True)  # password "pw"
    UserFactory(username="colleague")
    browser = requests.Session()

    for attempt in range(1, LIMIT):
        refused = _login(browser, live_server.url, "admin", f"guess-{attempt}")
        assert refused.status_code == 200 and "correct username and password" in refused.text
    locked = _login(browser, live_server.url, "admin", "guess-last")
    right = _login(browser, live_server.url, "admin", "pw")

    assert locked.status_code == right.status_code == 429
    assert "try again in 15 minutes" in right.text
    assert right.headers["Retry-After"] == str(int(COOL_OFF.total_seconds()))
    assert "sessionid" not in browser.cookies
    assert browser.get(f"{live_server.url}/admin/", allow_redirects=False, timeout=10).is_redirect
    # Positive control: the lock is on this account from this address, not on everyone.
    assert _login(requests.Session(), live_server.url, "colleague", "pw").status_code == 302

    if lifted_by == "cool-off":
        _expire_failures()
    else:
        call_command("axes_reset_username", "admin")
    again = _login(browser, live_server.url, "admin", "pw")
    assert again.status_code == 302 and again.headers["Location"] == "/admin/"
    assert "sessionid" in browser.cookies


def test_admin_lockout_is_per_address_and_ignores_addresses_a_client_writes(live_server, throttle):
    UserFactory(username="admin", is_superuser=True)
    for attempt in range(LIMIT):
        _login(requests.Session(), live_server.url, "admin", f"guess-{attempt}", **ATTACKER)

    # The attacker's own entries on the left of X-Forwarded-For change nothing.
    spoofed = {"X-Forwarded-For": "192.0.2.44, 203.0.113.9"}
    assert _login(requests.Session(), live_server.url, "admin", "pw", **spoofed).status_code == 429
    # The administrator, from elsewhere, still logs in.
    assert (
        _login(requests.Session(), live_server.url, "admin", "pw", **BYSTANDER).status_code == 302
    )


# --- Tokens on the API --------------------------------------------------------------------


def _api(base: str, authorization: str, headers: dict) -> requests.Response:
    return requests.get(
        f"{base}/api/channels/",
        headers={"Authorization": authorization, **headers},
        timeout=10,
    )


def test_guessing_tokens_on_the_api_is_locked_out(live_server, throttle):
    owner = UserFactory(is_superuser=True)
    ChannelFactory(name="main")
    _, secret = token_create(user=owner, name="ci", kind="scope", scopes=["channel:read"])
    revoked, revoked_secret = token_create(user=owner, name="old", kind="scope", scopes=["*:read"])
    token_revoke(token=revoked, user=owner)
    # Positive control: before any failure, the token works from the attacker's address.
    assert _api(live_server.url, f"Bearer {secret}", ATTACKER).status_code == 200

    guesses = [
        "Bearer psm_guess-1",
        "Token psm_guess-2",
        f"Bearer {revoked_secret}",
        "Bearer psm_guess-4 psm_guess-5",
    ]
    for guess in guesses:
        assert _api(live_server.url, guess, ATTACKER).status_code == 401, guess
    locked = _api(live_server.url, "Token not-even-a-psm-token", ATTACKER)

    assert locked.status_code == 429
    assert locked.headers["Retry-After"] == str(int(COOL_OFF.total_seconds()))
    assert "try again in 15 minutes" in locked.json()["detail"]
    # The right token, from the locked-out address, fails like every guess.
    right = _api(live_server.url, f"Bearer {secret}", ATTACKER)
    assert (
        right.status_code == 429 and right.headers["Retry-After"] == locked.headers["Retry-After"]
    )
    assert right.json() == locked.json()
    spoofed = {"X-Forwarded-For": "192.0.2.1, 203.0.113.9"}  # its own entry, on the left
    assert _api(live_server.url, f"Token {secret}", spoofed).status_code == 429
    # Positive control: other clients are not affected.
    assert _api(live_server.url, f"Bearer {secret}", BYSTANDER).status_code == 200

    _expire_failures()
    assert _api(live_server.url, f"Bearer {secret}", ATTACKER).status_code == 200


# --- Tokens on the package routes ---------------------------------------------------------


def test_guessing_tokens_on_package_routes_is_locked_out(live_server, throttle, caplog):
    private = ChannelFactory(name="secret", visibility=Channel.Visibility.PRIVATE)
    ChannelFactory(name="open")
    reader = UserFactory(username="reader")
    grant(private, reader)
    _, secret = token_create(user=reader, name="conda", resources=[(private, "read")])
    base = f"{live_server.url}/api/repo"

    def get(url: str, headers: dict | None = None, auth=None) -> requests.Response:
        return requests.get(url, headers={**ATTACKER, **(headers or {})}, auth=auth, timeout=10)

    assert get(f"{base}/t/{secret}/secret/{INDEX}").status_code == 200  # positive control

    guesses = [
        lambda: get(f"{base}/secret/{INDEX}", {"Authorization": "Basic !!not-base64!!"}),
        lambda: get(f"{base}/secret/{INDEX}", auth=("psm_guess-user", "x-auth-token")),
        lambda: get(f"{base}/secret/{INDEX}", auth=("anyone", "psm_guess-password")),
        lambda: get(f"{base}/secret/{INDEX}", {"X-Auth": "psm_guess-header"}),
    ]
    for guess in guesses:
        refused = guess()
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"] == 'Basic realm="PSM"'
    locked = get(f"{base}/t/psm_guess-in-path/secret/{INDEX}")

    assert locked.status_code == 429
    assert locked.headers["Content-Type"].startswith("text/plain")
    assert locked.headers["Retry-After"] == str(int(COOL_OFF.total_seconds()))
    assert "try again in 15 minutes" in locked.text
    assert get(f"{base}/t/{secret}/secret/{INDEX}").status_code == 429
    assert get(f"{base}/secret/{INDEX}", auth=(secret, "x-auth-token")).status_code == 429
    # Without a credential there is nothing to guess: public channels stay open.
    assert get(f"{base}/open/{INDEX}").status_code == 200
    # Positive control: other clients are not affected.
    assert requests.get(f"{base}/t/{secret}/secret/{INDEX}", headers=BYSTANDER, timeout=10).ok
    # What the lockout keeps and logs about the failures never holds a token given in the path.
    kept = AccessAttempt.objects.get()
    assert kept.path_info == f"/api/repo/t/***/secret/{INDEX}"
    assert "psm_guess" not in kept.get_data + kept.post_data
    lockout_lines = [r.getMessage() for r in caplog.records if r.name.startswith("axes")]
    assert any("Locking out" in line for line in lockout_lines)
    assert not any("psm_guess" in line for line in lockout_lines)


def test_token_failures_on_the_api_and_package_routes_count_together(live_server, throttle):
    ChannelFactory(name="secret", visibility=Channel.Visibility.PRIVATE)
    for n in range(LIMIT - 1):
        url = f"{live_server.url}/api/repo/t/psm_guess-{n}/secret/{INDEX}"
        assert requests.get(url, headers=ATTACKER, timeout=10).status_code == 401

    assert _api(live_server.url, "Bearer psm_guess-last", ATTACKER).status_code == 429


# --- A new token's secret -----------------------------------------------------------------


def test_a_new_tokens_secret_is_shown_once_on_its_page_and_never_kept_elsewhere(
    live_server, caplog
):
    user = UserFactory(username="alice")
    channel = ChannelFactory(name="main")
    browser = requests.Session()
    assert _login(browser, live_server.url, "alice", "pw").status_code == 302
    add = f"{live_server.url}/admin/psm/apitoken/add/"

    created = browser.post(
        add,
        data={
            "csrfmiddlewaretoken": _csrf(browser.get(add, timeout=10)),
            "name": "laptop",
            "kind": "resource",
            "channels": [channel.pk],
            "level": "read",
        },
        allow_redirects=False,
        timeout=10,
    )

    assert created.status_code == 200  # no redirect: nothing carries the secret to a next page
    secret = re.search(r'value="(psm_[^"]+)"', created.text).group(1)
    token = ApiToken.objects.get(name="laptop", user=user)
    assert token.digest == hashlib.sha256(secret.encode()).hexdigest()
    assert "no-store" in created.headers["Cache-Control"]
    assert secret not in created.headers.get("Set-Cookie", "")
    assert "messages" not in browser.cookies
    assert all(secret not in unquote(cookie.value) for cookie in browser.cookies)
    assert all(secret not in json.dumps(s.get_decoded()) for s in Session.objects.all())
    # Shown once: neither the list nor the token's page shows it again.
    assert secret not in browser.get(f"{live_server.url}/admin/psm/apitoken/", timeout=10).text
    change = f"{live_server.url}/admin/psm/apitoken/{token.pk}/change/"
    assert secret not in browser.get(change, timeout=10).text
    # Nor the audit trail, the admin's history or any log line.
    assert secret not in json.dumps(list(AuditEvent.objects.values("target_name", "details")))
    assert all(secret not in entry.change_message for entry in LogEntry.objects.all())
    assert secret not in caplog.text
    assert token.hint == secret[:8]


def test_the_api_returns_a_new_secret_once_and_uncached(live_server):
    UserFactory(username="alice")
    browser = requests.Session()
    assert _login(browser, live_server.url, "alice", "pw").status_code == 302

    created = browser.post(
        f"{live_server.url}/api/tokens/",
        json={"name": "ci", "kind": "scope", "scopes": ["channel:read"]},
        headers={"X-CSRFToken": browser.cookies["csrftoken"]},
        timeout=10,
    )

    assert created.status_code == 201, created.text
    assert created.json()["token"].startswith("psm_")
    assert "no-store" in created.headers["Cache-Control"]
    listed = browser.get(f"{live_server.url}/api/tokens/", timeout=10)
    assert listed.json()["results"][0]["token"] is None


def test_the_documented_password_request_issues_a_token_and_guesses_lock_out(live_server, throttle):
    alice = UserFactory(username="alice")  # password "pw"
    grant(ChannelFactory(name="secret", visibility=Channel.Visibility.PRIVATE), alice)
    url = f"{live_server.url}/api/tokens/"
    # The README's `curl -X POST -u alice …/api/tokens/`, body included.
    body = {
        "name": "laptop",
        "kind": "resource",
        "resources": [{"channel": "secret", "level": "read"}],
        "expires_at": "2999-12-31T00:00:00Z",
    }

    def post(auth, headers=ATTACKER) -> requests.Response:
        return requests.post(url, json=body, auth=auth, headers=headers, timeout=10)

    created = post(("alice", "pw"))
    assert created.status_code == 201, created.text
    assert "no-store" in created.headers["Cache-Control"]
    secret = created.json()["token"]
    index = f"{live_server.url}/api/repo/t/{secret}/secret/{INDEX}"
    assert requests.get(index, timeout=10).status_code == 200
    # A password only creates tokens: it lists, revokes and reads nothing else.
    assert requests.get(url, auth=("alice", "pw"), timeout=10).status_code == 401
    channels = requests.get(f"{live_server.url}/api/channels/", auth=("alice", "pw"), timeout=10)
    assert channels.status_code == 401
    # Accounts without a usable password (single sign-on) or deactivated get no token.
    sso = UserFactory(username="sso-user")
    sso.set_unusable_password()
    sso.save()
    UserFactory(username="gone", is_active=False)
    assert post(("sso-user", ""), BYSTANDER).status_code == 401
    assert post(("gone", "pw"), BYSTANDER).status_code == 401

    # Wrong passwords count per user name and address, as admin logins do.
    for attempt in range(1, LIMIT):
        assert post(("alice", f"guess-{attempt}")).status_code == 401
    locked = post(("alice", "guess-last"))
    assert locked.status_code == 429
    assert locked.headers["Retry-After"] == str(int(COOL_OFF.total_seconds()))
    assert post(("alice", "pw")).status_code == 429  # the right password too, from there
    assert post(("alice", "pw"), BYSTANDER).status_code == 201  # not from elsewhere
    _expire_failures()
    assert post(("alice", "pw")).status_code == 201


# --- Production settings ------------------------------------------------------------------

PRODUCTION = {
    "PSM_DEBUG": "false",
    "PSM_SECRET_KEY": "Yx3v-" + "q8Lm2Rt7Wz" * 5,
    "PSM_ALLOWED_HOSTS": "psm.example.com",
    "PSM_CSRF_TRUSTED_ORIGINS": "https://psm.example.com",
    "PSM_HTTPS": "true",
    "PSM_SECURE_PROXY_SSL_HEADER": "true",
    "PSM_TRUSTED_PROXY_COUNT": "1",
}
PROBE = (
    "import django; django.setup(); from django.conf import settings as s; import json; "
    "print(json.dumps([s.SECURE_PROXY_SSL_HEADER, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
    "s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, "
    "s.SESSION_COOKIE_HTTPONLY, s.X_FRAME_OPTIONS, s.AXES_FAILURE_LIMIT, "
    "s.AXES_COOLOFF_TIME.total_seconds()]))"
)


def _run(tmp_path, *args: str, **variables: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PSM_", "DATABASE"))}
    environment.update(
        PSM_DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="psm.settings", **variables
    )
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=environment, capture_output=True, text=True
    )


def test_documented_production_settings_pass_the_deployment_check(tmp_path):
    result = _run(tmp_path, "manage.py", "check", "--deploy", **PRODUCTION)

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr
    assert "WARNING" not in result.stderr


def test_without_the_https_settings_the_deployment_check_complains(tmp_path):
    plain = {k: v for k, v in PRODUCTION.items() if k != "PSM_HTTPS"}

    result = _run(tmp_path, "manage.py", "check", "--deploy", **plain)

    for warning in ("W004", "W008", "W012", "W016"):
        assert f"security.{warning}" in result.stderr


def test_production_settings_turn_on_secure_cookies_hsts_and_the_proxy_header(tmp_path):
    result = _run(tmp_path, "-c", PROBE, **PRODUCTION)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        ["HTTP_X_FORWARDED_PROTO", "https"],
        True,
        True,
        True,
        31536000,
        True,
        True,
        "DENY",
        5,
        900.0,
    ]


@pytest.mark.parametrize("key", ["short-key", "a" * 60, "django-insecure-" + "k3y" * 20])
def test_production_refuses_a_weak_secret_key(tmp_path, key):
    result = _run(tmp_path, "manage.py", "check", **{**PRODUCTION, "PSM_SECRET_KEY": key})

    assert result.returncode != 0
    assert "PSM_SECRET_KEY is too weak" in result.stderr
