"""REST API for channels and subchannels: /api/channels/ and /api/channels/{parent}/subchannels/."""

from __future__ import annotations

import pytest

from channels_app.models import Channel
from psm.tokens import token_create
from tests.factories import ChannelFactory, PolicyFactory

pytestmark = pytest.mark.django_db

ALL_CHANNEL_PERMS = tuple(
    f"channels_app.{action}_{model}"
    for model in ("channel", "subchannel")
    for action in ("view", "add", "change", "delete", "freeze")
)


@pytest.fixture
def admin_client(api_client, make_user):
    """A client logged in as a user holding every channel and subchannel permission."""
    api_client.force_authenticate(make_user(*ALL_CHANNEL_PERMS))
    return api_client


def errors_of(response) -> str:
    return str(response.json())


# --- authentication ----------------------------------------------------------------------------


def test_anonymous_user_is_refused(api_client):
    ChannelFactory(name="main")

    assert api_client.get("/api/channels/").status_code in (401, 403)
    assert api_client.get("/api/channels/main/").status_code in (401, 403)
    assert api_client.post("/api/channels/", {"name": "x", "kind": "conda"}).status_code in (
        401,
        403,
    )
    assert api_client.post("/api/channels/main/freeze/").status_code in (401, 403)
    assert not Channel.objects.get(name="main").frozen


def test_session_login_authenticates(api_client, make_user):
    user = make_user("channels_app.view_channel", username="alice")
    ChannelFactory(name="main")

    assert api_client.login(username=user.username, password="pw")
    response = api_client.get("/api/channels/")

    assert response.status_code == 200
    assert [c["name"] for c in response.json()["results"]] == ["main"]


def test_force_login_session_authenticates(api_client, make_user):
    api_client.force_login(make_user("channels_app.view_channel"))

    assert api_client.get("/api/channels/").status_code == 200


def test_token_header_authenticates(api_client, make_user):
    _, secret = token_create(
        user=make_user("channels_app.view_channel"), name="cli", kind="scope", scopes=["*:manage"]
    )
    ChannelFactory(name="main")

    api_client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    response = api_client.get("/api/channels/main/")

    assert response.status_code == 200
    assert response.json()["name"] == "main"


def test_wrong_token_is_refused(api_client, make_user):
    token_create(user=make_user("channels_app.view_channel"), name="cli")

    api_client.credentials(HTTP_AUTHORIZATION="Token psm_" + "0" * 40)

    assert api_client.get("/api/channels/").status_code in (401, 403)


# --- permissions -------------------------------------------------------------------------------


def _request(client, method: str, url: str, data=None):
    return getattr(client, method)(url, data, format="json")


CHANNEL_REQUESTS = [
    # (permission, method, url, body, success status)
    ("channels_app.view_channel", "get", "/api/channels/", None, 200),
    ("channels_app.view_channel", "get", "/api/channels/main/", None, 200),
    ("channels_app.add_channel", "post", "/api/channels/", {"name": "new", "kind": "conda"}, 201),
    ("channels_app.change_channel", "patch", "/api/channels/main/", {"description": "d"}, 200),
    (
        "channels_app.change_channel",
        "put",
        "/api/channels/main/",
        {"name": "main", "kind": "conda", "description": "d"},
        200,
    ),
    ("channels_app.delete_channel", "delete", "/api/channels/main/", None, 204),
    ("channels_app.freeze_channel", "post", "/api/channels/main/freeze/", None, 200),
    ("channels_app.freeze_channel", "post", "/api/channels/main/unfreeze/", None, 200),
    ("channels_app.view_subchannel", "get", "/api/channels/main/subchannels/", None, 200),
    ("channels_app.view_subchannel", "get", "/api/channels/main/subchannels/sub/", None, 200),
    (
        "channels_app.add_subchannel",
        "post",
        "/api/channels/main/subchannels/",
        {"name": "new", "kind": "conda"},
        201,
    ),
    (
        "channels_app.change_subchannel",
        "patch",
        "/api/channels/main/subchannels/sub/",
        {"description": "d"},
        200,
    ),
    ("channels_app.delete_subchannel", "delete", "/api/channels/main/subchannels/sub/", None, 204),
    (
        "channels_app.freeze_subchannel",
        "post",
        "/api/channels/main/subchannels/sub/freeze/",
        None,
        200,
    ),
]


@pytest.mark.parametrize(("perm", "method", "url", "body", "ok"), CHANNEL_REQUESTS)
def test_request_without_its_permission_is_forbidden(
    api_client, make_user, perm, method, url, body, ok
):
    main = ChannelFactory(name="main")
    ChannelFactory(name="sub", parent=main)
    others = [p for p in ALL_CHANNEL_PERMS if p != perm]
    api_client.force_authenticate(make_user(*others))

    response = _request(api_client, method, url, body)

    assert response.status_code == 403
    assert Channel.objects.count() == 2
    assert not Channel.objects.filter(frozen=True).exists()
    assert not Channel.objects.exclude(description="").exists()


@pytest.mark.parametrize(("perm", "method", "url", "body", "ok"), CHANNEL_REQUESTS)
def test_request_with_its_permission_succeeds(api_client, make_user, perm, method, url, body, ok):
    main = ChannelFactory(name="main")
    ChannelFactory(name="sub", parent=main)
    api_client.force_authenticate(make_user(perm))

    response = _request(api_client, method, url, body)

    assert response.status_code == ok, errors_of(response) if response.content else ""


def test_user_with_no_permissions_cannot_list_channels(api_client, make_user):
    api_client.force_authenticate(make_user())

    assert api_client.get("/api/channels/").status_code == 403


# --- channel CRUD ------------------------------------------------------------------------------


def test_create_channel_returns_it(admin_client):
    response = admin_client.post(
        "/api/channels/",
        {"name": "conda-main", "kind": "conda", "description": "Main conda channel"},
        format="json",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["name"] == "conda-main"
    assert body["path"] == "conda-main"
    assert body["kind"] == "conda"
    assert body["parent"] is None
    assert body["frozen"] is False
    assert body["frozen_by"] is None
    assert body["subchannels"] == []
    channel = Channel.objects.get(name="conda-main")
    assert channel.kind == "conda"
    assert channel.description == "Main conda channel"
    assert channel.parent is None


@pytest.mark.parametrize("name", ["Conda", "my channel", "-leading-dash", "a/b", ""])
def test_create_channel_with_bad_name_is_rejected_on_name(admin_client, name):
    response = admin_client.post("/api/channels/", {"name": name, "kind": "conda"}, format="json")

    assert response.status_code == 400
    assert "name" in response.json()
    assert not Channel.objects.exists()


def test_create_channel_with_duplicate_name_is_rejected(admin_client):
    ChannelFactory(name="main")

    response = admin_client.post("/api/channels/", {"name": "main", "kind": "conda"}, format="json")

    assert response.status_code == 400
    assert "already exists" in errors_of(response)
    assert Channel.objects.filter(name="main").count() == 1


def test_create_channel_with_unknown_kind_is_rejected_on_kind(admin_client):
    response = admin_client.post("/api/channels/", {"name": "x", "kind": "npm"}, format="json")

    assert response.status_code == 400
    assert "kind" in response.json()
    assert not Channel.objects.exists()


@pytest.mark.parametrize("kind", ["conda", "pypi", "cran"])
def test_create_channel_accepts_every_known_kind(admin_client, kind):
    response = admin_client.post(
        "/api/channels/", {"name": f"c-{kind}", "kind": kind}, format="json"
    )

    assert response.status_code == 201, response.json()
    assert Channel.objects.get(name=f"c-{kind}").kind == kind


def test_create_channel_ignores_read_only_frozen_fields(admin_client):
    response = admin_client.post(
        "/api/channels/",
        {"name": "x", "kind": "conda", "frozen": True, "frozen_at": "2024-01-01T00:00:00Z"},
        format="json",
    )

    assert response.status_code == 201
    channel = Channel.objects.get(name="x")
    assert channel.frozen is False
    assert channel.frozen_at is None


def test_create_channel_with_policy_by_id(admin_client):
    policy = PolicyFactory()

    response = admin_client.post(
        "/api/channels/", {"name": "x", "kind": "conda", "policy": policy.pk}, format="json"
    )

    assert response.status_code == 201
    assert response.json()["policy"] == policy.pk
    assert Channel.objects.get(name="x").policy == policy


def test_list_channels_shows_top_level_channels_with_their_subchannels(admin_client):
    main = ChannelFactory(name="main")
    ChannelFactory(name="beta", parent=main)
    ChannelFactory(name="alpha", parent=main)
    ChannelFactory(name="other")

    response = admin_client.get("/api/channels/")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    results = {c["name"]: c for c in body["results"]}
    assert set(results) == {"main", "other"}
    assert sorted(results["main"]["subchannels"]) == ["alpha", "beta"]
    assert results["other"]["subchannels"] == []


def test_retrieve_channel_by_name(admin_client):
    ChannelFactory(name="main", kind="pypi", description="Python packages")

    response = admin_client.get("/api/channels/main/")

    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "main"
    assert body["kind"] == "pypi"
    assert body["description"] == "Python packages"
    assert body["path"] == "main"


def test_retrieve_unknown_channel_is_404(admin_client):
    assert admin_client.get("/api/channels/nope/").status_code == 404


def test_subchannel_is_not_addressable_as_a_top_level_channel(admin_client):
    main = ChannelFactory(name="main")
    ChannelFactory(name="sub", parent=main)

    assert admin_client.get("/api/channels/sub/").status_code == 404


def test_patch_channel_updates_description(admin_client):
    ChannelFactory(name="main")

    response = admin_client.patch("/api/channels/main/", {"description": "updated"}, format="json")

    assert response.status_code == 200
    assert response.json()["description"] == "updated"
    assert Channel.objects.get(name="main").description == "updated"


def test_patch_channel_rename_to_bad_name_is_rejected_on_name(admin_client):
    ChannelFactory(name="main")

    response = admin_client.patch("/api/channels/main/", {"name": "Main Channel"}, format="json")

    assert response.status_code == 400
    assert "name" in response.json()
    assert Channel.objects.filter(name="main").exists()


def test_patch_channel_rename_to_existing_name_is_rejected(admin_client):
    ChannelFactory(name="main")
    ChannelFactory(name="other")

    response = admin_client.patch("/api/channels/other/", {"name": "main"}, format="json")

    assert response.status_code == 400
    assert "already exists" in errors_of(response)


def test_delete_channel_removes_it(admin_client):
    ChannelFactory(name="main")

    response = admin_client.delete("/api/channels/main/")

    assert response.status_code == 204
    assert not Channel.objects.filter(name="main").exists()


def test_delete_unknown_channel_is_404(admin_client):
    assert admin_client.delete("/api/channels/nope/").status_code == 404


# --- freeze / unfreeze -------------------------------------------------------------------------


def test_freeze_channel_records_who_and_when(api_client, make_user):
    user = make_user("channels_app.freeze_channel", username="freezer")
    api_client.force_authenticate(user)
    ChannelFactory(name="main")

    response = api_client.post("/api/channels/main/freeze/")

    assert response.status_code == 200
    body = response.json()
    assert body["frozen"] is True
    assert body["frozen_by"] == "freezer"
    assert body["frozen_at"]
    channel = Channel.objects.get(name="main")
    assert channel.frozen is True
    assert channel.frozen_by == user
    assert channel.frozen_at is not None


def test_freeze_already_frozen_channel_keeps_original_freezer(api_client, make_user):
    first = make_user("channels_app.freeze_channel", username="first")
    second = make_user("channels_app.freeze_channel", username="second")
    ChannelFactory(name="main")
    api_client.force_authenticate(first)
    api_client.post("/api/channels/main/freeze/")
    frozen_at = Channel.objects.get(name="main").frozen_at

    api_client.force_authenticate(second)
    response = api_client.post("/api/channels/main/freeze/")

    assert response.status_code == 200
    assert response.json()["frozen_by"] == "first"
    assert Channel.objects.get(name="main").frozen_at == frozen_at


def test_unfreeze_channel_clears_freezer_and_time(admin_client, make_user):
    ChannelFactory(name="main", frozen=True, frozen_by=make_user())
    Channel.objects.filter(name="main").update(frozen_at="2024-01-01T00:00:00Z")

    response = admin_client.post("/api/channels/main/unfreeze/")

    assert response.status_code == 200
    body = response.json()
    assert body["frozen"] is False
    assert body["frozen_by"] is None
    assert body["frozen_at"] is None
    channel = Channel.objects.get(name="main")
    assert (channel.frozen, channel.frozen_by, channel.frozen_at) == (False, None, None)


def test_unfreeze_channel_that_is_not_frozen_is_harmless(admin_client):
    ChannelFactory(name="main")

    response = admin_client.post("/api/channels/main/unfreeze/")

    assert response.status_code == 200
    assert response.json()["frozen"] is False


def test_freeze_unknown_channel_is_404(admin_client):
    assert admin_client.post("/api/channels/nope/freeze/").status_code == 404


def test_freeze_is_post_only(admin_client):
    ChannelFactory(name="main")

    assert admin_client.get("/api/channels/main/freeze/").status_code == 405
    assert not Channel.objects.get(name="main").frozen


def test_patch_cannot_freeze_a_channel(admin_client):
    ChannelFactory(name="main")

    response = admin_client.patch("/api/channels/main/", {"frozen": True}, format="json")

    assert response.status_code == 200
    assert Channel.objects.get(name="main").frozen is False


# --- subchannels -------------------------------------------------------------------------------


def test_create_subchannel_under_parent(admin_client):
    main = ChannelFactory(name="main")

    response = admin_client.post(
        "/api/channels/main/subchannels/", {"name": "staging", "kind": "conda"}, format="json"
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["name"] == "staging"
    assert body["parent"] == "main"
    assert body["path"] == "main/staging"
    sub = Channel.objects.get(name="staging")
    assert sub.parent == main


def test_create_subchannel_ignores_parent_in_body(admin_client):
    main = ChannelFactory(name="main")
    ChannelFactory(name="other")

    response = admin_client.post(
        "/api/channels/main/subchannels/",
        {"name": "staging", "kind": "conda", "parent": "other"},
        format="json",
    )

    assert response.status_code == 201
    assert Channel.objects.get(name="staging").parent == main


def test_subchannel_may_share_a_name_with_a_top_level_channel(admin_client):
    ChannelFactory(name="main")
    ChannelFactory(name="staging")

    response = admin_client.post(
        "/api/channels/main/subchannels/", {"name": "staging", "kind": "conda"}, format="json"
    )

    assert response.status_code == 201
    assert Channel.objects.filter(name="staging").count() == 2


def test_duplicate_subchannel_name_in_same_parent_is_rejected(admin_client):
    main = ChannelFactory(name="main")
    ChannelFactory(name="staging", parent=main)

    response = admin_client.post(
        "/api/channels/main/subchannels/", {"name": "staging", "kind": "conda"}, format="json"
    )

    assert response.status_code == 400
    assert "already has a subchannel" in errors_of(response)
    assert Channel.objects.filter(name="staging").count() == 1


def test_r_channel_subchannel_may_not_be_named_cran(admin_client):
    ChannelFactory(name="rpkgs", kind="cran")

    response = admin_client.post(
        "/api/channels/rpkgs/subchannels/", {"name": "cran", "kind": "cran"}, format="json"
    )

    assert response.status_code == 400
    assert "'cran' is a folder of every standard R channel" in errors_of(response)
    assert not Channel.objects.filter(name="cran").exists()


def test_same_subchannel_name_under_different_parents_is_allowed(admin_client):
    ChannelFactory(name="a")
    b = ChannelFactory(name="b")
    ChannelFactory(name="staging", parent=b)

    response = admin_client.post(
        "/api/channels/a/subchannels/", {"name": "staging", "kind": "conda"}, format="json"
    )

    assert response.status_code == 201


def test_create_subchannel_with_bad_name_is_rejected_on_name(admin_client):
    ChannelFactory(name="main")

    response = admin_client.post(
        "/api/channels/main/subchannels/", {"name": "Bad Name", "kind": "conda"}, format="json"
    )

    assert response.status_code == 400
    assert "name" in response.json()


def test_create_subchannel_of_unknown_parent_is_404(admin_client):
    response = admin_client.post(
        "/api/channels/nope/subchannels/", {"name": "staging", "kind": "conda"}, format="json"
    )

    assert response.status_code == 404
    assert not Channel.objects.exists()


def test_create_subchannel_of_unknown_parent_is_404_even_with_a_bad_body(admin_client):
    response = admin_client.post("/api/channels/nope/subchannels/", {}, format="json")

    assert response.status_code == 404


def test_list_subchannels_of_unknown_parent_is_404(admin_client):
    assert admin_client.get("/api/channels/nope/subchannels/").status_code == 404


def test_subchannels_are_one_level_deep(admin_client):
    main = ChannelFactory(name="main")
    ChannelFactory(name="sub", parent=main)

    # The subchannel is not a top-level channel, so it cannot be a parent.
    response = admin_client.post(
        "/api/channels/sub/subchannels/", {"name": "deeper", "kind": "conda"}, format="json"
    )

    assert response.status_code == 404
    assert not Channel.objects.filter(name="deeper").exists()


def test_list_subchannels_shows_only_that_parents_subchannels(admin_client):
    main = ChannelFactory(name="main")
    other = ChannelFactory(name="other")
    ChannelFactory(name="one", parent=main)
    ChannelFactory(name="two", parent=main)
    ChannelFactory(name="three", parent=other)

    response = admin_client.get("/api/channels/main/subchannels/")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert {c["path"] for c in body["results"]} == {"main/one", "main/two"}


def test_retrieve_subchannel(admin_client):
    main = ChannelFactory(name="main")
    ChannelFactory(name="staging", parent=main, kind="conda")

    response = admin_client.get("/api/channels/main/subchannels/staging/")

    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "staging"
    assert body["parent"] == "main"
    assert body["path"] == "main/staging"


def test_retrieve_unknown_subchannel_is_404(admin_client):
    main = ChannelFactory(name="main")
    other = ChannelFactory(name="other")
    ChannelFactory(name="staging", parent=other)
    assert main

    assert admin_client.get("/api/channels/main/subchannels/staging/").status_code == 404
    assert admin_client.get("/api/channels/main/subchannels/nope/").status_code == 404


def test_patch_subchannel(admin_client):
    main = ChannelFactory(name="main")
    ChannelFactory(name="staging", parent=main)

    response = admin_client.patch(
        "/api/channels/main/subchannels/staging/", {"description": "pre-release"}, format="json"
    )

    assert response.status_code == 200
    sub = Channel.objects.get(name="staging")
    assert sub.description == "pre-release"
    assert sub.parent == main


def test_delete_subchannel_keeps_parent(admin_client):
    main = ChannelFactory(name="main")
    ChannelFactory(name="staging", parent=main)

    response = admin_client.delete("/api/channels/main/subchannels/staging/")

    assert response.status_code == 204
    assert list(Channel.objects.values_list("name", flat=True)) == ["main"]


def test_delete_channel_deletes_its_subchannels(admin_client):
    main = ChannelFactory(name="main")
    ChannelFactory(name="staging", parent=main)

    response = admin_client.delete("/api/channels/main/")

    assert response.status_code == 204
    assert not Channel.objects.exists()


def test_freeze_and_unfreeze_subchannel(api_client, make_user):
    api_client.force_authenticate(make_user("channels_app.freeze_subchannel", username="ops"))
    main = ChannelFactory(name="main")
    ChannelFactory(name="staging", parent=main)

    frozen = api_client.post("/api/channels/main/subchannels/staging/freeze/")

    assert frozen.status_code == 200
    assert frozen.json()["frozen"] is True
    assert frozen.json()["frozen_by"] == "ops"
    assert frozen.json()["path"] == "main/staging"
    assert Channel.objects.get(name="staging").frozen is True
    assert Channel.objects.get(name="main").frozen is False

    unfrozen = api_client.post("/api/channels/main/subchannels/staging/unfreeze/")

    assert unfrozen.status_code == 200
    assert unfrozen.json()["frozen"] is False
    assert unfrozen.json()["frozen_at"] is None
    assert Channel.objects.get(name="staging").frozen is False


def test_patch_refuses_to_change_the_type_of_a_channel_with_mirrors(admin_client):
    from tests.factories import MirrorFactory

    channel = MirrorFactory(channel=ChannelFactory(name="main", kind="conda")).channel

    response = admin_client.patch("/api/channels/main/", {"kind": "pypi"}, format="json")

    assert response.status_code == 400
    assert "package type cannot change" in " ".join(response.json()["kind"])
    channel.refresh_from_db()
    assert channel.kind == "conda"
