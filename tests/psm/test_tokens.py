"""PSM API tokens: created by a user, shown once, stored hashed, scoped, expiring, revocable."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.utils import timezone

from psm.models import ApiToken, AuditEvent
from psm.tokens import token_create
from tests.factories import ChannelFactory, UserFactory

pytestmark = pytest.mark.django_db


def _bearer(api_client, secret: str):
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return api_client


def test_created_token_is_shown_once_and_stored_only_as_a_hash(api_client, make_user):
    user = make_user("channels_app.view_channel", username="alice")
    ChannelFactory(name="main")
    api_client.force_login(user)

    created = api_client.post(
        "/api/tokens/",
        {"name": "ci", "kind": "scope", "scopes": ["channel:read"]},
        format="json",
    )

    assert created.status_code == 201, created.content
    secret = created.json()["token"]
    assert secret.startswith("psm_") and len(secret) > 40
    stored = ApiToken.objects.get(name="ci")
    assert stored.digest == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(ApiToken.objects.filter(pk=stored.pk).values().get())
    listed = api_client.get("/api/tokens/").json()["results"]
    assert listed[0]["token"] is None and listed[0]["hint"] == secret[:8]
    assert AuditEvent.objects.filter(action="token.create", actor=user).exists()


def test_scope_token_acts_as_its_owner_within_its_scopes(api_client):
    owner = UserFactory(is_superuser=True)
    ChannelFactory(name="main")
    _, secret = token_create(user=owner, name="ro", kind="scope", scopes=["channel:read"])
    client = _bearer(api_client, secret)

    assert client.get("/api/channels/").status_code == 200
    assert client.post("/api/channels/", {"name": "x", "kind": "conda"}).status_code == 403
    assert client.get("/api/policies/").status_code == 403  # not in its scopes


def test_scope_token_never_exceeds_its_owner(api_client, make_user):
    owner = make_user("channels_app.view_channel")
    _, secret = token_create(user=owner, name="t", kind="scope", scopes=["channel:manage"])

    response = _bearer(api_client, secret).post(
        "/api/channels/", {"name": "x", "kind": "conda"}, format="json"
    )

    assert response.status_code == 403


def test_product_action_words_are_accepted_as_scopes(api_client, make_user):
    owner = make_user("mirrors_app.view_mirror", "mirrors_app.view_all_mirrors")
    _, secret = token_create(user=owner, name="t", kind="scope", scopes=["channel.mirror:edit"])

    assert _bearer(api_client, secret).get("/api/mirrors/").status_code == 200


def test_resource_token_opens_no_api(api_client):
    owner = UserFactory(is_superuser=True)
    channel = ChannelFactory(name="main")
    _, secret = token_create(user=owner, name="conda", resources=[(channel, "read")])

    assert _bearer(api_client, secret).get("/api/channels/").status_code == 403


def test_expired_token_is_refused(api_client):
    owner = UserFactory(is_superuser=True)
    _, secret = token_create(
        user=owner,
        name="old",
        kind="scope",
        scopes=["*:read"],
        expires_at=timezone.now() - timedelta(minutes=1),
    )

    response = _bearer(api_client, secret).get("/api/channels/")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_revoked_token_is_refused_at_once(api_client, make_user):
    owner = make_user("channels_app.view_channel")
    token, secret = token_create(user=owner, name="t", kind="scope", scopes=["channel:read"])
    assert _bearer(api_client, secret).get("/api/channels/").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None

    api_client.credentials()
    api_client.force_login(owner)
    assert api_client.delete(f"/api/tokens/{token.pk}/").status_code == 204
    api_client.logout()

    assert _bearer(api_client, secret).get("/api/channels/").status_code == 401
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert AuditEvent.objects.filter(action="token.revoke", target_id=str(token.pk)).exists()


def test_a_token_cannot_mint_tokens(api_client):
    owner = UserFactory(is_superuser=True)
    _, secret = token_create(user=owner, name="t", kind="scope", scopes=["*:manage"])

    response = _bearer(api_client, secret).post(
        "/api/tokens/", {"name": "more", "kind": "scope", "scopes": ["*:manage"]}, format="json"
    )

    assert response.status_code == 403


def test_users_see_and_revoke_only_their_own_tokens(api_client, make_user):
    alice, bob = make_user(username="alice"), make_user(username="bob")
    theirs, _ = token_create(user=bob, name="bob's", kind="scope", scopes=["channel:read"])
    api_client.force_login(alice)

    assert api_client.get("/api/tokens/").json()["results"] == []
    assert api_client.delete(f"/api/tokens/{theirs.pk}/").status_code == 404


@pytest.mark.parametrize(
    "body, field",
    [
        ({"kind": "scope", "scopes": ["channel:admin"]}, "scopes"),
        ({"kind": "scope", "scopes": ["nothing:read"]}, "scopes"),
        ({"kind": "scope", "scopes": ["superuser"]}, "non_field_errors"),
        (
            {"kind": "resource", "scopes": ["channel:read"], "resources": [{"channel": "main"}]},
            "non_field_errors",
        ),
        ({"kind": "resource", "resources": [{"channel": "nope"}]}, "resources"),
    ],
)
def test_bad_tokens_are_refused_with_the_reason(api_client, make_user, body, field):
    ChannelFactory(name="main")
    api_client.force_login(make_user())

    response = api_client.post("/api/tokens/", {"name": "t", **body}, format="json")

    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert not ApiToken.objects.exists()


def test_admin_creates_a_token_and_shows_the_secret_once(client, make_user):
    user = make_user(username="alice")
    channel = ChannelFactory(name="main")
    client.force_login(user)

    response = client.post(
        "/admin/psm/apitoken/add/",
        {"name": "laptop", "kind": "resource", "channels": [channel.pk], "level": "read"},
    )

    assert response.status_code == 200  # the secret is on this page, not behind a redirect
    token = ApiToken.objects.get(name="laptop")
    assert token.user == user and list(token.resources.values_list("channel__name", flat=True)) == [
        "main"
    ]
    secret = response.context["secret"]
    assert token.digest == hashlib.sha256(secret.encode()).hexdigest()
    assert secret in response.content.decode() and "shown only on this page" in (
        response.content.decode()
    )
    assert "no-store" in response["Cache-Control"]
    assert not list(response.context["messages"])  # never carried in a message
    other = token_create(user=make_user(username="bob"), name="bob's token")[0]
    listing = client.get("/admin/psm/apitoken/")
    assert "laptop" in listing.content.decode()
    assert other.name not in listing.content.decode()
