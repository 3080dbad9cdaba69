"""The lean GET of whole documents (`client._lean_get`) answers, refuses and fails exactly as
the requests path it stands in for: every case below runs both ways and compares what the
caller gets (bytes, validators, or the error's type, sentence and flags) and what the upstream
saw (requests, and the headers sent)."""

from __future__ import annotations

import gzip
import io

import pytest

from psm.http import UpstreamClient, UpstreamError, fetch_bytes, new_session
from psm.http import client as http_client
from tests.fixtures.loopback import FileHandler, LoopbackServer
from tests.psm.test_http import silent_url, tls_upstream  # noqa: F401 - fixtures

BOTH = pytest.mark.parametrize("lean", [True, False], ids=["lean", "requests"])


class _HeaderHandler(FileHandler):
    def request_entry(self, path: str) -> tuple:
        headers = tuple(sorted((k.lower(), v) for k, v in self.headers.items()))
        return (self.command, self.path, headers)

    def route(self, url) -> None:
        if url.path == "/gzipped":
            body = gzip.compress(b"compressed page")
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().route(url)


class _HeaderServer(LoopbackServer):
    handler = _HeaderHandler


@pytest.fixture
def seen(tmp_path):
    (tmp_path / "seen").mkdir()
    with _HeaderServer(tmp_path / "seen") as server:
        yield server


@pytest.fixture
def lean_calls(monkeypatch):
    """Whether the lean GET answered (a result or an error, not None), each time it was on."""
    taken = []
    original = http_client._lean_get

    def counted(*args, **kwargs):
        result = UpstreamError
        try:
            result = original(*args, **kwargs)
        finally:
            if http_client.LEAN_GETS:
                taken.append(result is not None)
        return result

    monkeypatch.setattr(http_client, "_lean_get", counted)
    return taken


def _outcome(call) -> tuple:
    """What a fetch gave the caller: its result, or its error's type, sentence and flags."""
    try:
        return ("ok", call())
    except UpstreamError as exc:
        return (type(exc).__name__, str(exc), exc.status, exc.transient, exc.timed_out)


def _both(monkeypatch, call) -> tuple[tuple, tuple]:
    outcomes = []
    for lean in (True, False):
        monkeypatch.setattr(http_client, "LEAN_GETS", lean)
        outcomes.append(_outcome(call))
    return outcomes[0], outcomes[1]


def _fetch(url: str, *, max_bytes: int = 1000, headers=None):
    session = new_session()
    try:
        return fetch_bytes(session, url, max_bytes=max_bytes, headers=headers)
    finally:
        session.close()


def _download(url: str, *, max_bytes: int = 1000, validators=None):
    client = UpstreamClient(max_bytes=max_bytes)
    try:
        body = io.BytesIO()
        fetched = client.fetch_index(url, body, validators or {}, headers={"Accept": "x/y"})
        return fetched, body.getvalue()
    finally:
        client.close()


def test_bodies_validators_and_statuses_are_the_same_and_the_same_headers_are_sent(
    settings, monkeypatch, seen, lean_calls
):
    settings.PSM_HTTP_RETRIES = 0
    page = seen.write("simple/a/index.html", b"<html>page</html>")
    seen.fail["/simple/broken/"] = 503
    cases = [
        lambda: _fetch(page),
        lambda: _fetch(page, headers={"Accept": "text/html", "user-agent": "other"}),
        lambda: _fetch(seen.url + "/missing"),
        lambda: _fetch(seen.url + "/gzipped"),
        lambda: _download(page),
        lambda: _download(page, validators=_download(page)[0].validators),  # a 304
        lambda: _download(seen.url + "/missing"),
        lambda: _download(seen.url + "/simple/broken/"),
        lambda: _fetch(page, max_bytes=5),
        lambda: _download(page, max_bytes=5),
    ]
    for case in cases:
        seen.requests.clear()
        lean, plain = _both(monkeypatch, case)
        assert lean == plain
        half = len(seen.requests) // 2
        assert seen.requests[:half] == seen.requests[half:]  # the same requests, headers and all
    assert lean_calls and all(lean_calls)


@BOTH
def test_retries_on_a_5xx_are_the_same(settings, monkeypatch, upstream, lean, lean_calls):
    settings.PSM_HTTP_RETRIES = 2
    monkeypatch.setattr(http_client, "LEAN_GETS", lean)
    upstream.fail["/busy"] = 503
    outcome = _outcome(lambda: _fetch(upstream.url + "/busy"))
    assert outcome[0] == "UpstreamError" and outcome[2] == 503 and outcome[3]
    assert len(upstream.requests) == 3  # the first and two retries
    assert any(lean_calls) == lean


def test_refusals_are_the_same(settings, monkeypatch, upstream, outside, resolver, lean_calls):
    """Off the allowlist, a name on it that leads to loopback, a redirect to a host off it:
    refused alike, and the outside server never reached (`outside` checks)."""
    page = upstream.write("x", b"ok")
    upstream.redirects["/away"] = outside.write("secret", b"secret")
    upstream.redirects["/here"] = "/x"
    cases = [
        (["127.0.0.1"], page.replace("127.0.0.1", "localhost"), "UpstreamRefused"),
        (["localhost"], page.replace("127.0.0.1", "localhost"), "UpstreamRefused"),
        (["mirror.example"], page.replace("127.0.0.1", "mirror.example"), "UpstreamRefused"),
        (["127.0.0.1"], upstream.url + "/away", "UpstreamRefused"),
        (["127.0.0.1"], upstream.url + "/here", "ok"),  # allowed: followed hop by hop
    ]
    resolver.answers.update(
        {"127.0.0.1": ["127.0.0.1"], "localhost": ["127.0.0.1"], "mirror.example": ["10.1.2.3"]}
    )
    for allowlist, url, kind in cases:
        settings.PSM_UPSTREAM_ALLOWLIST = allowlist
        for call in (lambda url=url: _fetch(url), lambda url=url: _download(url)):
            lean, plain = _both(monkeypatch, call)
            assert lean == plain, url
            assert lean[0] == kind, url
    assert _outcome(lambda: _fetch(upstream.url + "/here")) == ("ok", b"ok")
    assert any(lean_calls)


def test_failures_read_the_same(settings, monkeypatch, refused_url, silent_url, upstream):  # noqa: F811
    settings.PSM_HTTP_TIMEOUT, settings.PSM_HTTP_RETRIES = 0.3, 0
    upstream.cut["/cut"] = 3
    upstream.write("cut", b"0123456789")
    for url in (refused_url + "/x", silent_url + "/x", upstream.url + "/cut"):
        for call in (lambda url=url: _fetch(url), lambda url=url: _download(url)):
            lean, plain = _both(monkeypatch, call)
            assert lean == plain, url
            assert lean[0] == "UpstreamError"


def test_tls_verifies_the_same(settings, monkeypatch, tls_upstream, lean_calls):  # noqa: F811
    settings.PSM_UPSTREAM_ALLOWLIST = ["localhost", "127.0.0.1"]
    good, good_ca, _ = tls_upstream("localhost")
    bad, bad_ca, _ = tls_upstream("other.example")
    for port, ca in ((good, good_ca), (bad, bad_ca)):
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca)
        url = f"https://localhost:{port}/x"
        lean, plain = _both(monkeypatch, lambda url=url: _fetch(url))
        assert lean == plain
    assert lean == ("UpstreamError", lean[1], None, False, False)
    assert "could not be verified" in lean[1]
    assert any(lean_calls)


def test_requests_keeps_what_the_lean_get_does_not_do(settings, monkeypatch, upstream, lean_calls):
    """A proxy, credentials in the URL, session cookies or a URL requests would rewrite: the
    requests path, with its own handling."""
    settings.PSM_UPSTREAM_ALLOWLIST = ["127.0.0.1", "upstream.example"]
    page = upstream.write("x", b"ok")
    with_cookie = new_session()
    with_cookie.cookies.set("k", "v")
    proxied = new_session(proxy=upstream.url)
    cases = [
        (new_session(), page.replace("http://", "http://user:pw@")),
        (new_session(), page + "?q=1"),
        (new_session(), upstream.url + "/%78"),
        (with_cookie, page),
        (proxied, "http://upstream.example/x"),
    ]
    for session, url in cases:
        lean_calls.clear()
        assert fetch_bytes(session, url, max_bytes=100) == b"ok"
        assert lean_calls == [False], url
        session.close()
