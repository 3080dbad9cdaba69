"""Keycloak single sign-on against a real OpenID Connect provider on 127.0.0.1.

The provider (tests/fixtures/oidc) issues Keycloak-shaped tokens: `realm_access.roles`,
`resource_access.<client>.roles`, `groups`. The admin logs in through the real authorization-code
redirects; the API takes the provider's access tokens as bearer tokens.
"""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.contrib.auth import get_user_model

from psm.models import AuditEvent, OidcIdentity
from tests.factories import ChannelFactory, UserFactory, grant
from tests.fixtures.oidc_provider import forged_token, sso_login

User = get_user_model()


def _user(*realm_roles: str, sub: str | None = None, **extra) -> dict:
    return {
        "sub": sub or str(uuid.uuid4()),
        "email": extra.pop("email", "alice@example.com"),
        "given_name": "Alice",
        "family_name": "Liddell",
        "realm_roles": list(realm_roles),
        **extra,
    }


def _group_names(user) -> set[str]:
    return set(user.groups.values_list("name", flat=True))


# --- the admin's authorization-code login --------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_admin_login_page_offers_single_sign_on(oidc, live_server):
    page = requests.get(f"{live_server.url}/admin/login/", timeout=10)

    assert page.status_code == 200
    assert "Log in with single sign-on" in page.text
    assert 'name="password"' in page.text  # local accounts still log in (break-glass)


@pytest.mark.django_db(transaction=True)
def test_admin_logs_in_through_the_provider_with_mapped_roles(oidc, live_server):
    alice = _user("psm:channel:manage", "psm:channel.mirror:write", "offline_access")
    oidc.set_users({"alice": alice})
    ChannelFactory(name="main")
    browser = requests.Session()

    done = sso_login(browser, live_server.url, oidc, "alice")

    assert done.status_code == 302 and done.headers["Location"] == "/admin/"
    index = browser.get(f"{live_server.url}/admin/", timeout=10)
    assert index.status_code == 200
    assert "<strong>Alice</strong>" in index.text and "Channels" in index.text
    user = User.objects.get(oidc_identity__subject=alice["sub"])
    assert (user.username, user.email, user.first_name) == ("alice", alice["email"], "Alice")
    assert user.is_staff and not user.is_superuser
    assert _group_names(user) == {"Channels: Manage", "Channel mirrors: Write"}
    assert user.has_perm("channels_app.freeze_channel")
    assert user.has_perm("mirrors_app.run_mirror")
    assert not user.has_perm("mirrors_app.view_all_mirrors")  # All Mirrors needs Manage
    assert not user.has_perm("policies_app.change_policy")
    channels = browser.get(f"{live_server.url}/admin/channels_app/channel/", timeout=10)
    assert channels.status_code == 200 and "main" in channels.text
    all_mirrors = browser.get(f"{live_server.url}/admin/mirrors_app/mirror/", timeout=10)
    assert all_mirrors.status_code == 403
    assert AuditEvent.objects.filter(actor=user, action="login", details__method="sso").exists()


@pytest.mark.django_db(transaction=True)
def test_roles_are_resynced_at_each_login_and_removing_them_removes_access(oidc, live_server):
    alice = _user("psm:policy:manage")
    oidc.set_users({"alice": alice})
    sso_login(requests.Session(), live_server.url, oidc, "alice")
    user = User.objects.get(oidc_identity__subject=alice["sub"])
    assert user.has_perm("policies_app.change_policy")

    # The administrator lowers the role in Keycloak: read only, at the next login.
    oidc.set_users({"alice": {**alice, "realm_roles": ["psm:policy:read"]}})
    sso_login(requests.Session(), live_server.url, oidc, "alice")
    user = User.objects.get(pk=user.pk)
    assert _group_names(user) == {"Policy engine: Read"}
    assert user.has_perm("policies_app.view_policy")
    assert not user.has_perm("policies_app.change_policy")

    # Every PSM role removed: no permission left, and no admin access.
    oidc.set_users({"alice": {**alice, "realm_roles": []}})
    browser = requests.Session()
    sso_login(browser, live_server.url, oidc, "alice")
    user = User.objects.get(pk=user.pk)
    assert _group_names(user) == set()
    assert not user.is_staff and not user.get_all_permissions()
    index = browser.get(f"{live_server.url}/admin/", allow_redirects=False, timeout=10)
    assert index.status_code == 302 and "/admin/login/" in index.headers["Location"]


@pytest.mark.django_db(transaction=True)
def test_client_roles_groups_and_the_explicit_map_grant_access(oidc, live_server, settings):
    settings.PSM_OIDC_ROLE_MAP = {"platform-admins": ["*:manage"], "cve-team": ["cve:view"]}
    bob = _user(
        sub="bob-sub",
        email="bob@example.com",
        client_roles=["psm:audit:read"],
        groups=["/platform-admins", "/cve-team"],
    )
    oidc.set_users({"bob": bob})

    sso_login(requests.Session(), live_server.url, oidc, "bob")

    user = User.objects.get(oidc_identity__subject="bob-sub")
    assert "Audit logs: Manage" in _group_names(user)  # the map's *:manage wins over read
    assert "CVE: Manage" in _group_names(user)
    assert user.has_perm("mirrors_app.view_all_mirrors")
    assert not user.is_superuser
    assert OidcIdentity.objects.get(user=user).roles == sorted(
        {"psm:audit:read", "/platform-admins", "platform-admins", "/cve-team", "cve-team"}
    )


@pytest.mark.django_db(transaction=True)
def test_admin_role_makes_a_superuser_and_losing_it_unmakes_one(oidc, live_server):
    carol = _user("psm:admin", sub="carol-sub")
    oidc.set_users({"carol": carol})
    sso_login(requests.Session(), live_server.url, oidc, "carol")
    assert User.objects.get(oidc_identity__subject="carol-sub").is_superuser

    oidc.set_users({"carol": {**carol, "realm_roles": ["psm:channel:read"]}})
    sso_login(requests.Session(), live_server.url, oidc, "carol")
    carol_user = User.objects.get(oidc_identity__subject="carol-sub")
    assert not carol_user.is_superuser and carol_user.is_staff


@pytest.mark.django_db(transaction=True)
def test_users_are_matched_on_sub_not_on_email_or_name(oidc, live_server):
    local = UserFactory(username="alice", email="alice@example.com", is_superuser=True)
    alice = _user("psm:channel:read", sub="sub-1")
    oidc.set_users({"alice": alice})

    sso_login(requests.Session(), live_server.url, oidc, "alice")

    # The local account with the same name and e-mail is neither taken over nor changed.
    sso_user = User.objects.get(oidc_identity__subject="sub-1")
    assert sso_user.pk != local.pk and sso_user.username == "alice-sub-1"
    local.refresh_from_db()
    assert local.is_superuser and not hasattr(local, "oidc_identity")

    # A new e-mail and name at the provider: the same account, its profile updated.
    oidc.set_users({"alice2": {**alice, "email": "alice@new.example", "given_name": "Al"}})
    sso_login(requests.Session(), live_server.url, oidc, "alice2")
    sso_user.refresh_from_db()
    assert (sso_user.username, sso_user.email, sso_user.first_name) == (
        "alice2",
        "alice@new.example",
        "Al",
    )
    assert User.objects.filter(oidc_identity__isnull=False).count() == 1


@pytest.mark.django_db(transaction=True)
def test_unknown_user_at_the_provider_is_not_logged_in(oidc, live_server):
    browser = requests.Session()
    start = browser.get(f"{live_server.url}/oidc/authenticate/", allow_redirects=False, timeout=10)
    refused = browser.get(
        start.headers["Location"] + "&login_hint=mallory", allow_redirects=False, timeout=10
    )
    callback = browser.get(refused.headers["Location"], allow_redirects=False, timeout=10)

    assert callback.status_code == 302
    assert "/admin/" not in callback.headers["Location"] or "login" in callback.headers["Location"]
    assert not User.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_logout_ends_the_session_here_and_at_the_provider(oidc, live_server):
    oidc.set_users({"alice": _user("psm:channel:read")})
    browser = requests.Session()
    sso_login(browser, live_server.url, oidc, "alice")
    browser.get(f"{live_server.url}/admin/", timeout=10)

    logout = browser.post(
        f"{live_server.url}/admin/logout/",
        headers={"X-CSRFToken": browser.cookies["csrftoken"], "Referer": live_server.url},
        allow_redirects=False,
        timeout=10,
    )

    assert logout.status_code == 302
    at_provider = urlsplit(logout.headers["Location"])
    assert f"{at_provider.scheme}://{at_provider.netloc}{at_provider.path}" == oidc.endpoint(
        "endsession"
    )
    query = parse_qs(at_provider.query)
    assert query["id_token_hint"][0].count(".") == 2
    assert query["post_logout_redirect_uri"] == [f"{live_server.url}/admin/"]
    back = browser.get(logout.headers["Location"], timeout=10)  # the provider sends us back
    assert back.url.startswith(f"{live_server.url}/admin/login/")


@pytest.mark.django_db(transaction=True)
def test_local_admin_login_stays_available(oidc, live_server):
    UserFactory(username="root", is_superuser=True)
    browser = requests.Session()
    page = browser.get(f"{live_server.url}/admin/login/", timeout=10)

    done = browser.post(
        f"{live_server.url}/admin/login/?next=/admin/",
        data={
            "username": "root",
            "password": "pw",
            "csrfmiddlewaretoken": browser.cookies["csrftoken"],
        },
        headers={"Referer": page.url},
        timeout=10,
    )

    assert done.status_code == 200 and "<strong>root</strong>" in done.text


# --- bearer tokens on the API ----------------------------------------------------------------


@pytest.fixture
def bearer(oidc, api_client):
    def use(token: str):
        api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        return api_client

    return use


@pytest.mark.django_db
def test_bearer_token_authenticates_the_api_with_the_users_roles(oidc, bearer):
    oidc.set_users({"dave": _user("psm:channel:read", sub="dave-sub")})
    ChannelFactory(name="main")
    client = bearer(oidc.access_token("dave"))

    listed = client.get("/api/channels/")
    created = client.post("/api/channels/", {"name": "new", "kind": "conda"}, format="json")

    assert listed.status_code == 200, listed.content
    assert [c["name"] for c in listed.json()["results"]] == ["main"]
    assert created.status_code == 403  # Read does not create
    assert User.objects.get(oidc_identity__subject="dave-sub").username == "dave"


@pytest.mark.django_db
def test_bearer_token_roles_follow_keycloak(oidc, bearer):
    dave = _user("psm:channel:write", sub="dave-sub")
    oidc.set_users({"dave": dave})
    assert (
        bearer(oidc.access_token("dave"))
        .post("/api/channels/", {"name": "new", "kind": "conda"}, format="json")
        .status_code
        == 201
    )

    oidc.set_users({"dave": {**dave, "realm_roles": []}})

    assert bearer(oidc.access_token("dave")).get("/api/channels/").status_code == 403


@pytest.mark.django_db
def test_expired_bearer_token_is_refused(oidc, bearer):
    oidc.set_users({"dave": _user("psm:channel:read")})

    response = bearer(oidc.access_token("dave", expires_in=-60)).get("/api/channels/")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.django_db
def test_forged_bearer_token_is_refused(oidc, bearer):
    oidc.set_users({"dave": _user("psm:admin")})
    genuine = oidc.access_token("dave")

    response = bearer(forged_token(genuine)).get("/api/channels/")

    assert response.status_code == 401
    assert not User.objects.filter(is_superuser=True).exists()


@pytest.mark.django_db
def test_bearer_token_issued_to_another_application_is_refused(oidc, bearer):
    oidc.set_users({"dave": _user("psm:channel:read")})

    response = bearer(oidc.access_token("dave", client_id="grafana")).get("/api/channels/")

    assert response.status_code == 401


@pytest.mark.django_db
def test_bearer_token_reads_a_private_channel_of_package_clients(oidc, client, settings):
    settings.PSM_OIDC_ROLE_MAP = {"/team-a": ["group:team-a"]}
    oidc.set_users({"dave": _user(groups=["/team-a"]), "eve": _user("psm:channel:read")})
    grant(ChannelFactory(name="secret", visibility="private"), group="team-a")
    url = "/api/repo/secret/noarch/repodata.json"

    dave = client.get(url, HTTP_AUTHORIZATION=f"Bearer {oidc.access_token('dave')}")
    eve = client.get(url, HTTP_AUTHORIZATION=f"Bearer {oidc.access_token('eve')}")
    forged = client.get(url, HTTP_AUTHORIZATION=f"Bearer {forged_token(oidc.access_token('dave'))}")

    assert dave.status_code == 200
    assert eve.status_code == 404  # Read on channels, not in the granted group: as if missing
    assert forged.status_code == 401


@pytest.mark.django_db(transaction=True)
def test_a_keycloak_group_maps_to_a_channel_group_and_leaving_it_closes_the_channel(
    oidc, live_server, settings
):
    settings.PSM_OIDC_ROLE_MAP = {"/team-a": ["group:team-a"]}
    frank = _user(sub="frank-sub", groups=["/team-a"])
    oidc.set_users({"frank": frank})
    grant(ChannelFactory(name="secret", visibility="private"), group="team-a")
    url = f"{live_server.url}/api/repo/secret/noarch/repodata.json"

    browser = requests.Session()
    sso_login(browser, live_server.url, oidc, "frank")
    user = User.objects.get(oidc_identity__subject="frank-sub")
    assert _group_names(user) == {"team-a"} and user.is_staff
    assert browser.get(url, timeout=10).status_code == 200
    channels = browser.get(f"{live_server.url}/admin/channels_app/channel/", timeout=10)
    assert channels.status_code == 200 and "secret" in channels.text

    # Removed from the group in Keycloak: at the next login, the channel is gone for them.
    oidc.set_users({"frank": {**frank, "groups": []}})
    browser = requests.Session()
    sso_login(browser, live_server.url, oidc, "frank")
    assert _group_names(User.objects.get(pk=user.pk)) == set()
    assert browser.get(url, timeout=10).status_code == 404
