"""REST API for policies: /api/policies/."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token

from policies_app.models import Policy
from tests.factories import ChannelFactory, MirrorFactory, PolicyFactory

pytestmark = pytest.mark.django_db

ALL_POLICY_PERMS = (
    "policies_app.view_policy",
    "policies_app.add_policy",
    "policies_app.change_policy",
    "policies_app.delete_policy",
)


@pytest.fixture
def admin_client(api_client, make_user):
    api_client.force_authenticate(make_user(*ALL_POLICY_PERMS))
    return api_client


# --- authentication and permissions ------------------------------------------------------------


def test_anonymous_user_is_refused(api_client):
    policy = PolicyFactory()

    assert api_client.get("/api/policies/").status_code in (401, 403)
    assert api_client.delete(f"/api/policies/{policy.pk}/").status_code in (401, 403)
    assert Policy.objects.filter(pk=policy.pk).exists()


def test_session_login_authenticates(api_client, make_user):
    user = make_user("policies_app.view_policy")
    PolicyFactory(name="strict")

    assert api_client.login(username=user.username, password="pw")
    response = api_client.get("/api/policies/")

    assert response.status_code == 200
    assert [p["name"] for p in response.json()["results"]] == ["strict"]


def test_token_header_authenticates(api_client, make_user):
    token = Token.objects.create(user=make_user("policies_app.add_policy"))

    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    response = api_client.post("/api/policies/", {"name": "strict"}, format="json")

    assert response.status_code == 201
    assert Policy.objects.filter(name="strict").exists()


POLICY_REQUESTS = [
    # (permission, method, url ("{id}" is the policy's id), body, success status)
    ("policies_app.view_policy", "get", "/api/policies/", None, 200),
    ("policies_app.view_policy", "get", "/api/policies/{id}/", None, 200),
    ("policies_app.add_policy", "post", "/api/policies/", {"name": "new"}, 201),
    ("policies_app.change_policy", "patch", "/api/policies/{id}/", {"description": "x"}, 200),
    (
        "policies_app.change_policy",
        "put",
        "/api/policies/{id}/",
        {"name": "renamed", "description": "x"},
        200,
    ),
    ("policies_app.delete_policy", "delete", "/api/policies/{id}/", None, 204),
]


@pytest.mark.parametrize(("perm", "method", "url", "body", "ok"), POLICY_REQUESTS)
def test_request_without_its_permission_is_forbidden(
    api_client, make_user, perm, method, url, body, ok
):
    policy = PolicyFactory(name="base", description="original")
    api_client.force_authenticate(make_user(*[p for p in ALL_POLICY_PERMS if p != perm]))

    response = getattr(api_client, method)(url.format(id=policy.pk), body, format="json")

    assert response.status_code == 403
    assert list(Policy.objects.values_list("name", "description")) == [("base", "original")]


@pytest.mark.parametrize(("perm", "method", "url", "body", "ok"), POLICY_REQUESTS)
def test_request_with_its_permission_succeeds(api_client, make_user, perm, method, url, body, ok):
    policy = PolicyFactory(name="base")
    api_client.force_authenticate(make_user(perm))

    response = getattr(api_client, method)(url.format(id=policy.pk), body, format="json")

    assert response.status_code == ok


# --- CRUD --------------------------------------------------------------------------------------


def test_create_policy(admin_client):
    response = admin_client.post(
        "/api/policies/", {"name": "strict", "description": "No GPL"}, format="json"
    )

    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "strict"
    assert body["description"] == "No GPL"
    assert body["id"] == Policy.objects.get(name="strict").pk
    assert body["created_at"]


def test_create_policy_without_name_is_rejected_on_name(admin_client):
    response = admin_client.post("/api/policies/", {"description": "x"}, format="json")

    assert response.status_code == 400
    assert "name" in response.json()


def test_create_policy_with_duplicate_name_is_rejected(admin_client):
    PolicyFactory(name="strict")

    response = admin_client.post("/api/policies/", {"name": "strict"}, format="json")

    assert response.status_code == 400
    assert "name" in response.json()
    assert Policy.objects.filter(name="strict").count() == 1


def test_list_policies_sorted_by_name(admin_client):
    PolicyFactory(name="b")
    PolicyFactory(name="a")

    response = admin_client.get("/api/policies/")

    assert response.status_code == 200
    assert [p["name"] for p in response.json()["results"]] == ["a", "b"]


def test_retrieve_policy(admin_client):
    policy = PolicyFactory(name="strict", description="No GPL")

    response = admin_client.get(f"/api/policies/{policy.pk}/")

    assert response.status_code == 200
    assert response.json()["name"] == "strict"
    assert response.json()["description"] == "No GPL"


def test_retrieve_unknown_policy_is_404(admin_client):
    assert admin_client.get("/api/policies/999999/").status_code == 404


def test_patch_policy(admin_client):
    policy = PolicyFactory(name="strict")

    response = admin_client.patch(
        f"/api/policies/{policy.pk}/", {"description": "updated"}, format="json"
    )

    assert response.status_code == 200
    policy.refresh_from_db()
    assert policy.description == "updated"


def test_put_policy_replaces_it(admin_client):
    policy = PolicyFactory(name="strict", description="old")

    response = admin_client.put(
        f"/api/policies/{policy.pk}/", {"name": "lenient", "description": "new"}, format="json"
    )

    assert response.status_code == 200
    policy.refresh_from_db()
    assert (policy.name, policy.description) == ("lenient", "new")


def test_rename_policy_to_existing_name_is_rejected(admin_client):
    PolicyFactory(name="strict")
    policy = PolicyFactory(name="lenient")

    response = admin_client.patch(f"/api/policies/{policy.pk}/", {"name": "strict"}, format="json")

    assert response.status_code == 400
    assert "name" in response.json()
    policy.refresh_from_db()
    assert policy.name == "lenient"


def test_patch_policy_keeping_its_own_name_is_accepted(admin_client):
    policy = PolicyFactory(name="strict")

    response = admin_client.patch(
        f"/api/policies/{policy.pk}/", {"name": "strict", "description": "same"}, format="json"
    )

    assert response.status_code == 200


def test_delete_unused_policy(admin_client):
    policy = PolicyFactory()

    response = admin_client.delete(f"/api/policies/{policy.pk}/")

    assert response.status_code == 204
    assert not Policy.objects.exists()


def test_delete_policy_used_by_a_channel_is_a_conflict(admin_client):
    policy = PolicyFactory(name="strict")
    ChannelFactory(name="main", policy=policy)

    response = admin_client.delete(f"/api/policies/{policy.pk}/")

    assert response.status_code == 409
    detail = response.json()["detail"]
    assert "'strict'" in detail
    assert "remove it" in detail
    assert Policy.objects.filter(pk=policy.pk).exists()


def test_delete_policy_used_by_a_mirror_is_a_conflict(admin_client):
    policy = PolicyFactory(name="strict")
    MirrorFactory(channel=ChannelFactory(name="main"), policy=policy)

    response = admin_client.delete(f"/api/policies/{policy.pk}/")

    assert response.status_code == 409
    assert "'strict'" in response.json()["detail"]
    assert Policy.objects.filter(pk=policy.pk).exists()


def test_delete_unknown_policy_is_404(admin_client):
    assert admin_client.delete("/api/policies/999999/").status_code == 404
