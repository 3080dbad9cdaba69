"""The login throttle's pieces: the client address behind proxies, and no cost on valid requests."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext

from channels_app.models import Channel
from psm.throttle import client_ip
from psm.tokens import token_create
from tests.factories import ChannelFactory, UserFactory, grant


@pytest.mark.parametrize(
    ("proxies", "forwarded_for", "expected"),
    [
        (0, "203.0.113.9", "10.0.0.2"),  # no proxy: the header is the client's own words
        (1, "203.0.113.9", "203.0.113.9"),
        (1, "192.0.2.1, 203.0.113.9", "203.0.113.9"),  # the client's entry on the left
        (2, "192.0.2.1, 203.0.113.9, 10.0.0.7", "203.0.113.9"),
        (2, "203.0.113.9", "10.0.0.2"),  # fewer hops than proxies: not through them
        (1, "", "10.0.0.2"),
        (1, "not-an-address", "10.0.0.2"),
        (1, "2001:db8::1", "2001:db8::1"),
    ],
)
def test_client_address_is_read_from_the_proxies_end_of_x_forwarded_for(
    settings, proxies, forwarded_for, expected
):
    settings.PSM_TRUSTED_PROXY_COUNT = proxies
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=forwarded_for)

    assert client_ip(request) == expected


@pytest.mark.django_db
def test_valid_tokens_cost_no_query_for_the_throttle(client, settings):
    settings.AXES_FAILURE_LIMIT = 5
    private = ChannelFactory(name="secret", visibility=Channel.Visibility.PRIVATE)
    reader = UserFactory(username="reader")
    grant(private, reader)
    _, secret = token_create(user=reader, name="conda", resources=[(private, "read")])
    url = f"/api/repo/t/{secret}/secret/noarch/repodata.json"
    assert client.get(url).status_code == 200  # the token's last use is written once

    def queries(**extra) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url, **extra).status_code == 200
        return len(captured)

    settings.AXES_ENABLED = False
    without = queries()
    settings.AXES_ENABLED = True
    assert queries() == without
    # A refusal from another address does not make this one's requests dearer.
    bad = "/api/repo/t/psm_guess/secret/noarch/repodata.json"
    assert client.get(bad, REMOTE_ADDR="192.0.2.8").status_code == 401
    assert queries() == without
