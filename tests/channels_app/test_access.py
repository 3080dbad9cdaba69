"""Channel privacy on /api/repo/: public, authenticated, private; tokens in every client form."""

from __future__ import annotations

import base64

import pytest
from django.core.exceptions import ValidationError

from channels_app.models import Channel
from psm.tokens import token_create
from tests.factories import ChannelFactory, UserFactory, grant

pytestmark = pytest.mark.django_db

INDEX = "noarch/repodata.json"


@pytest.fixture
def private():
    return ChannelFactory(name="secret", visibility=Channel.Visibility.PRIVATE)


@pytest.fixture
def reader(make_user, private):
    """Read on channels, and a member of the group granted Read on the private channel."""
    user = make_user("channels_app.view_channel", username="reader")
    grant(private, user)
    return user


@pytest.fixture
def secret(reader, private) -> str:
    return token_create(user=reader, name="conda", resources=[(private, "read")])[1]


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_public_channel_is_open_to_anyone(client):
    ChannelFactory(name="open")

    response = client.get(f"/api/repo/open/{INDEX}")

    assert response.status_code == 200
    assert response["Cache-Control"].startswith("public")


def test_private_channel_is_a_404_for_anonymous_exactly_like_a_missing_one(client, private):
    hidden = client.get(f"/api/repo/secret/{INDEX}")
    missing = client.get(f"/api/repo/nothing-here/{INDEX}")

    assert hidden.status_code == missing.status_code == 404
    assert hidden.content == missing.content


def test_private_channel_reads_with_a_token_in_the_path(client, private, secret):
    response = client.get(f"/api/repo/t/{secret}/secret/{INDEX}")

    assert response.status_code == 200
    assert response["Cache-Control"].startswith("private")


@pytest.mark.parametrize(
    "header",
    [
        lambda s: {"HTTP_AUTHORIZATION": _basic(s, "x-auth-token")},
        lambda s: {"HTTP_AUTHORIZATION": _basic("anyone", s)},
        lambda s: {"HTTP_X_AUTH": s},
        lambda s: {"HTTP_AUTHORIZATION": f"Bearer {s}"},
    ],
    ids=["basic-token-user", "basic-token-password", "x-auth", "bearer"],
)
def test_private_channel_reads_with_a_token_in_a_header(client, private, secret, header):
    assert client.get(f"/api/repo/secret/{INDEX}", **header(secret)).status_code == 200


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"path": "/api/repo/t/psm_wrong/secret/" + INDEX},
        {
            "path": "/api/repo/secret/" + INDEX,
            "HTTP_AUTHORIZATION": _basic("psm_no", "x-auth-token"),
        },
        {"path": "/api/repo/nothing-here/" + INDEX, "HTTP_X_AUTH": "psm_no"},
    ],
    ids=["path", "basic", "missing-channel"],
)
def test_a_wrong_token_is_a_401_asking_for_credentials(client, private, request_kwargs):
    response = client.get(**request_kwargs)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Basic realm="PSM"'


def test_a_token_for_another_channel_does_not_open_this_one(client, reader, private):
    other = ChannelFactory(name="other", visibility=Channel.Visibility.PRIVATE)
    grant(other, reader)
    _, secret = token_create(user=reader, name="other", resources=[(other, "read")])

    assert client.get(f"/api/repo/t/{secret}/other/{INDEX}").status_code == 200
    assert client.get(f"/api/repo/t/{secret}/secret/{INDEX}").status_code == 404


def test_a_token_stops_working_when_its_owner_loses_access(client, reader, private, secret):
    reader.groups.clear()

    assert client.get(f"/api/repo/t/{secret}/secret/{INDEX}").status_code == 404


def test_scope_tokens_read_private_channels_with_a_channel_scope(client, reader, private):
    _, readable = token_create(user=reader, name="a", kind="scope", scopes=["channel:read"])
    _, other = token_create(user=reader, name="b", kind="scope", scopes=["policy:read"])

    assert client.get(f"/api/repo/t/{readable}/secret/{INDEX}").status_code == 200
    assert client.get(f"/api/repo/t/{other}/secret/{INDEX}").status_code == 404


def test_signed_in_users_read_private_channels_with_a_grant_or_manage(
    client, make_user, reader, private
):
    for user, status in [
        (UserFactory(), 404),
        (make_user("channels_app.view_channel", username="category-read"), 404),
        (reader, 200),
        (make_user("channels_app.change_channel", username="category-manage"), 200),
        (UserFactory(is_superuser=True), 200),
    ]:
        client.force_login(user)
        assert client.get(f"/api/repo/secret/{INDEX}").status_code == status, user.username


def test_authenticated_channel_needs_any_valid_credential(client, make_user):
    ChannelFactory(name="staff", visibility=Channel.Visibility.AUTHENTICATED)
    _, secret = token_create(user=make_user(), name="any")

    assert client.get(f"/api/repo/staff/{INDEX}").status_code == 404
    assert client.get(f"/api/repo/t/{secret}/staff/{INDEX}").status_code == 200
    client.force_login(UserFactory())
    assert client.get(f"/api/repo/staff/{INDEX}").status_code == 200


def test_subchannels_have_their_own_privacy(client):
    parent = ChannelFactory(name="main")
    ChannelFactory(name="internal", parent=parent, visibility=Channel.Visibility.PRIVATE)

    assert client.get(f"/api/repo/main/{INDEX}").status_code == 200
    assert client.get(f"/api/repo/main/internal/{INDEX}").status_code == 404


def test_python_redirects_keep_the_token_in_the_path(client, reader):
    channel = ChannelFactory(name="py", kind="pypi", visibility=Channel.Visibility.PRIVATE)
    grant(channel, reader)
    _, secret = token_create(user=reader, name="pip", resources=[(channel, "read")])

    response = client.get(f"/api/repo/t/{secret}/py/simple/Alpha_Pkg/")

    assert response.status_code == 301
    assert response["Location"] == f"/api/repo/t/{secret}/py/simple/alpha-pkg/"


def test_t_is_reserved_as_a_channel_name():
    with pytest.raises(ValidationError, match="reserved"):
        Channel(name="t", kind="conda").full_clean()
    parent = ChannelFactory(name="main")
    Channel(name="t", kind="conda", parent=parent).full_clean()  # fine as a subchannel


def test_privacy_is_set_through_the_api(api_client, make_user):
    # Strict privacy: only Manage on channels (or a grant) shows a private channel again.
    api_client.force_login(
        make_user(
            "channels_app.view_channel", "channels_app.add_channel", "channels_app.change_channel"
        )
    )

    response = api_client.post(
        "/api/channels/", {"name": "x", "kind": "conda", "visibility": "private"}, format="json"
    )

    assert response.status_code == 201, response.content
    assert Channel.objects.get(name="x").visibility == "private"
    assert api_client.get("/api/channels/x/").json()["visibility"] == "private"


def test_a_token_naming_a_channel_reads_its_private_subchannels_but_not_the_reverse(
    client, private, reader, secret
):
    ChannelFactory(name="tools", parent=private, visibility=Channel.Visibility.PRIVATE)
    other = ChannelFactory(name="other", visibility=Channel.Visibility.PRIVATE)
    sub = ChannelFactory(name="inner", parent=other, visibility=Channel.Visibility.PRIVATE)
    grant(other, reader)
    _, sub_only = token_create(user=reader, name="sub", resources=[(sub, "read")])

    assert client.get(f"/api/repo/t/{secret}/secret/tools/{INDEX}").status_code == 200
    assert client.get(f"/api/repo/t/{sub_only}/other/inner/{INDEX}").status_code == 200
    assert client.get(f"/api/repo/t/{sub_only}/other/{INDEX}").status_code == 404
