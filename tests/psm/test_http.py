"""The one HTTP client: allowlist, redaction, size limits and failures as UpstreamError."""

from __future__ import annotations

import pytest

from psm.http import (
    UpstreamClient,
    UpstreamError,
    fetch_bytes,
    is_host_allowed,
    new_session,
    redact,
)


@pytest.fixture
def session():
    session = new_session()
    yield session
    session.close()


@pytest.mark.parametrize(
    "url",
    [
        "https://pypi.org/simple/",
        "https://PYPI.org./simple/",
        "https://files.pypi.org/x",
        "https://a.b.pypi.org:8443/x",
        "https://user:pw@pypi.org/simple/",
    ],
)
def test_host_and_its_subdomains_are_allowed(url):
    assert is_host_allowed(url, ["pypi.org"])


@pytest.mark.parametrize(
    "url",
    [
        "https://evilpypi.org/simple/",
        "https://pypi.org.evil.example/simple/",
        "https://example.com/pypi.org/",
        "https://pypi.org@evil.example/",
        "not a url",
    ],
)
def test_lookalike_hosts_are_not_allowed(url):
    assert not is_host_allowed(url, ["pypi.org"])


def test_star_allows_any_host():
    assert is_host_allowed("https://anything.example/", ["pypi.org", "*"])


def test_allowlist_entries_are_matched_case_insensitively_with_a_leading_dot():
    assert is_host_allowed("https://conda.anaconda.org/x", [" .Anaconda.ORG "])


def test_allowlist_defaults_to_the_setting(settings):
    settings.PSM_UPSTREAM_ALLOWLIST = ["mirror.example"]
    assert is_host_allowed("https://mirror.example/x")
    assert not is_host_allowed("http://127.0.0.1/x")


def test_redact_hides_user_and_password():
    redacted = redact("https://alice:s3cret@repo.example:8443/channel?x=1")
    assert "alice" not in redacted
    assert "s3cret" not in redacted
    assert redacted == "https://***@repo.example:8443/channel?x=***"


def test_redact_hides_token_path_segments():
    redacted = redact("https://repo.anaconda.cloud/repo/t/abc123token/org-1/main/")
    assert "abc123token" not in redacted
    assert redacted == "https://repo.anaconda.cloud/repo/t/***/org-1/main/"


def test_redact_leaves_plain_urls_alone():
    assert (
        redact("https://conda.anaconda.org/conda-forge") == "https://conda.anaconda.org/conda-forge"
    )


def test_fetch_bytes_returns_the_body(session, stub_upstream):
    url = stub_upstream.route("/index.json", 200, b'{"ok": true}')
    assert fetch_bytes(session, url, max_bytes=100) == b'{"ok": true}'


def test_fetch_bytes_returns_none_on_404(session, stub_upstream):
    assert fetch_bytes(session, stub_upstream.url + "/missing", max_bytes=100) is None


def test_fetch_bytes_raises_on_a_server_error(session, stub_upstream):
    url = stub_upstream.route("/broken", 500, b"oops")
    with pytest.raises(UpstreamError) as caught:
        fetch_bytes(session, url, max_bytes=100)
    assert caught.value.status == 500
    assert str(caught.value) == f"{url}: HTTP 500"


def test_fetch_bytes_raises_when_the_body_exceeds_max_bytes(session, stub_upstream):
    url = stub_upstream.route("/big", 200, b"x" * 101)
    with pytest.raises(UpstreamError, match="larger than the 100 byte limit"):
        fetch_bytes(session, url, max_bytes=100)
    assert fetch_bytes(session, url, max_bytes=101) == b"x" * 101


def test_fetch_bytes_refuses_a_host_off_the_allowlist(settings, session, stub_upstream):
    url = stub_upstream.route("/index.json", 200, b"{}")
    settings.PSM_UPSTREAM_ALLOWLIST = ["pypi.org"]
    with pytest.raises(UpstreamError, match="not on the upstream allowlist"):
        fetch_bytes(session, url, max_bytes=100)


def test_fetch_bytes_raises_on_a_refused_connection(session, refused_url):
    with pytest.raises(UpstreamError, match="request failed: ConnectionError"):
        fetch_bytes(session, refused_url + "/x", max_bytes=100)


def test_upstream_error_hides_credentials_and_tokens_even_in_the_reason(session, refused_url):
    url = refused_url.replace("http://", "http://bob:s3cret@") + "/t/SECRETTOKEN/x?key=QUERYKEY"
    with pytest.raises(UpstreamError) as caught:
        fetch_bytes(session, url, max_bytes=100)
    message = str(caught.value)
    assert "Connection refused" in message
    for secret in ("s3cret", "SECRETTOKEN", "QUERYKEY"):
        assert secret not in message
        assert secret not in caught.value.reason
    assert caught.value.url == url  # the real URL stays available to the code


def test_client_applies_the_index_size_limit(settings, stub_upstream):
    settings.PSM_MAX_INDEX_BYTES = 10
    url = stub_upstream.route("/repodata.json", 200, b"y" * 11)
    client = UpstreamClient()
    try:
        with pytest.raises(UpstreamError, match="10 byte limit"):
            client.fetch(url)
    finally:
        client.close()


def test_session_sends_the_psm_user_agent(session):
    assert session.headers["User-Agent"].startswith("psm/")
