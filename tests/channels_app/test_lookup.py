"""The serving hot path (channels_app/lookup.py): one statement per request, nothing kept
between requests, so a change of privacy, freeze, publish or token is seen at once."""

from __future__ import annotations

import io
from wsgiref.util import FileWrapper

import orjson
import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, connection
from django.test.utils import CaptureQueriesContext

from channels_app import http_files, lookup, publishing, services
from channels_app.models import Channel, Package
from psm.tokens import token_create, token_revoke
from tests.factories import ChannelFactory, grant
from tests.fixtures.http import response_body

pytestmark = pytest.mark.django_db

INDEX = "noarch/repodata.json"


def _get(client, path, **headers):
    return client.get(f"/api/repo/{path}", headers=headers)


def _etag(client, path):
    response = _get(client, path)
    assert response.status_code == 200
    return response["ETag"]


def test_a_304_is_one_statement(client):
    ChannelFactory(name="c")
    etag = _etag(client, f"c/{INDEX}")
    with CaptureQueriesContext(connection) as queries:
        assert _get(client, f"c/{INDEX}", if_none_match=etag).status_code == 304
    # The lookup runs on its own cursor (prepared on PostgreSQL): nothing through the ORM.
    assert len(queries) <= (1 if connection.vendor != "postgresql" else 0)


def test_a_channel_made_private_is_hidden_at_the_next_request(client):
    channel = ChannelFactory(name="c")
    etag = _etag(client, f"c/{INDEX}")
    assert _get(client, f"c/{INDEX}", if_none_match=etag).status_code == 304
    channel.visibility = Channel.Visibility.PRIVATE
    channel.save()
    for headers in ({}, {"if_none_match": etag}):
        response = _get(client, f"c/{INDEX}", **headers)
        assert response.status_code == 404 and "Cookie" in response["Vary"]


def test_a_republish_is_served_at_the_next_request_and_a_freeze_pins_it(client, admin_user):
    channel = ChannelFactory(name="c")
    old = _etag(client, f"c/{INDEX}")
    Package.objects.create(
        channel=channel, unit="noarch", filename="a-1-0.tar.bz2", name="a", version="1",
        record=orjson.dumps({"name": "a", "version": "1", "build": "0", "build_number": 0,
                             "depends": [], "subdir": "noarch"}).decode(),
        on_demand=True, upstream_url="http://127.0.0.1:9/a-1-0.tar.bz2",
    )  # fmt: skip
    Channel.objects.filter(pk=channel.pk).update(content_version=channel.content_version + 1)
    channel.refresh_from_db()
    services.channel_freeze(channel=channel, user=admin_user)
    channel.refresh_from_db()
    assert not publishing.channel_publish(channel=channel)
    assert _get(client, f"c/{INDEX}", if_none_match=old).status_code == 304  # pinned
    services.channel_unfreeze(channel=channel, user=admin_user)
    channel.refresh_from_db()
    assert publishing.channel_publish(channel=channel)
    response = _get(client, f"c/{INDEX}", if_none_match=old)
    assert response.status_code == 200 and response["ETag"] != old
    listed = orjson.loads(response_body(response))["packages"]
    assert list(listed) == ["a-1-0.tar.bz2"]


def test_a_revoked_token_is_refused_at_the_next_request(client, make_user):
    channel = ChannelFactory(name="secret", visibility=Channel.Visibility.PRIVATE)
    user = make_user("channels_app.view_channel", username="reader")
    grant(channel, user)
    token, secret = token_create(user=user, name="conda", resources=[(channel, "read")])
    path = f"/api/repo/t/{secret}/secret/{INDEX}"
    etag = client.get(path)["ETag"]
    assert client.get(path, headers={"If-None-Match": etag}).status_code == 304
    token_revoke(token=token, user=user)
    assert client.get(path, headers={"If-None-Match": etag}).status_code == 401
    assert client.get(f"/api/repo/secret/{INDEX}").status_code == 404


def test_a_grant_taken_away_hides_the_channel_at_the_next_request(client, make_user):
    channel = ChannelFactory(name="secret", visibility=Channel.Visibility.PRIVATE)
    user = make_user("channels_app.view_channel", username="reader")
    group = grant(channel, user)
    client.force_login(user)
    assert _get(client, f"secret/{INDEX}").status_code == 200
    group.user_set.remove(user)
    assert _get(client, f"secret/{INDEX}").status_code == 404


def test_a_subchannel_wins_over_its_parents_folder_and_a_rename_is_seen(client):
    parent = ChannelFactory(name="p", kind="conda")
    sub = ChannelFactory(name="s", parent=parent, kind="pypi")
    resolved = lookup.resolve("p/s/simple/", "text/html")
    assert resolved.channel == sub and resolved.inner == "simple/"
    assert resolved.negotiated.path == "simple/index.html"
    assert _get(client, "p/s/simple/", accept="text/html").status_code == 200
    sub.name = "t2"
    sub.save()
    assert lookup.resolve("p/s/simple/", None).channel == parent  # now a folder of p
    assert _get(client, "p/s/simple/").status_code == 404
    assert _get(client, "p/t2/simple/", accept="text/html").status_code == 200


def test_unknown_channels_and_short_paths_are_404(client):
    ChannelFactory(name="c")
    for path in ("c", "nope/noarch/repodata.json", "c/noarch/nothing-1-0.tar.bz2"):
        assert _get(client, path).status_code == 404


def test_a_wsgi_file_wrapper_sends_the_whole_file_and_closes_it(client, settings, monkeypatch):
    """A file too large to read at once goes out through `wsgi.file_wrapper` (sendfile); a
    range or a server without one iterates the chunks."""
    monkeypatch.setattr(http_files, "SMALL_FILE", 0)  # the index stands in for a large file
    ChannelFactory(name="c")
    expected = response_body(_get(client, f"c/{INDEX}"))
    wrapped = []

    def file_wrapper(file, block_size):
        wrapped.append(file)
        return FileWrapper(file, block_size)

    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": f"/api/repo/c/{INDEX}", "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80", "HTTP_HOST": "127.0.0.1", "wsgi.input": io.BytesIO(),
        "wsgi.url_scheme": "http", "wsgi.file_wrapper": file_wrapper,
    }  # fmt: skip
    # As Django's test client does: the end of a request must not close the test's connection.
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    try:
        body = WSGIHandler()(environ, lambda status, headers: None)
        assert b"".join(body) == expected and len(wrapped) == 1
        body.close()
        assert wrapped[0].closed
        ranged = WSGIHandler()(environ | {"HTTP_RANGE": "bytes=0-9"}, lambda *args: None)
        assert b"".join(ranged) == expected[:10] and len(wrapped) == 1
        ranged.close()
    finally:
        for signal in (request_started, request_finished):
            signal.connect(close_old_connections)
