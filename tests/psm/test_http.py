"""The one HTTP client: allowlist, redaction, size limits and failures as UpstreamError."""

from __future__ import annotations

import contextlib
import io
import socket
import ssl
from datetime import UTC, datetime, timedelta
from http.client import RemoteDisconnected

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from urllib3.connection import HTTPConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
)

from psm.http import (
    UpstreamClient,
    UpstreamError,
    UpstreamRefused,
    address_problem,
    fetch_bytes,
    new_session,
    open_stream,
    shared_client,
    upstream_error,
    upstream_url_problem,
)
from psm.redaction import redact
from tests.fixtures.loopback import FileHandler, LoopbackServer


@pytest.fixture
def session():
    session = new_session()
    yield session
    session.close()


def _allowed(url: str, allowlist: list[str]) -> bool:
    return upstream_url_problem(url, allowlist) == ""


@pytest.mark.parametrize(
    "url",
    [
        "https://pypi.org/simple/",
        "https://PYPI.org./simple/",
        "https://files.pypi.org/x",
        "https://a.b.pypi.org:8443/x",
        "https://user:pw@pypi.org/simple/",
        "https://pypi.org/simple/a%2fb/",  # encoded bytes in the path do not move the host
        "https://pypi.org/x#@evil.example/",
    ],
)
def test_host_and_its_subdomains_are_allowed(url):
    assert _allowed(url, ["pypi.org"])


@pytest.mark.parametrize(
    "url",
    [
        "https://evilpypi.org/simple/",
        "https://pypi.org.evil.example/simple/",
        "https://example.com/pypi.org/",
        "https://pypi.org@evil.example/",
        "https://pypi.org%2f@evil.example/",
        "not a url",
    ],
)
def test_lookalike_hosts_are_not_allowed(url):
    assert not _allowed(url, ["pypi.org"])


def test_star_allows_any_host():
    assert _allowed("https://anything.example/", ["pypi.org", "*"])


def test_allowlist_entries_are_matched_case_insensitively_with_a_leading_dot():
    assert _allowed("https://conda.anaconda.org/x", [" .Anaconda.ORG "])


def test_allowlist_defaults_to_the_setting(settings):
    settings.PSM_UPSTREAM_ALLOWLIST = ["mirror.example"]
    assert upstream_url_problem("https://mirror.example/x") == ""
    assert "not on the upstream allowlist" in upstream_url_problem("http://127.0.0.1/x")


# --- URLs that URL parsers read differently are refused, whatever the allowlist ----------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        # urllib3 (which connects) ends the host at the backslash; urllib.parse reads the part
        # before it as user info. Both are allowed hosts here: the URL itself is refused.
        ("http://127.0.0.1:18471\\@allowed.example/", "a backslash"),
        ("http://allowed.example\\@127.0.0.1/", "a backslash"),
        ("http://allowed.example/a\\b", "a backslash"),
        ("http://allowed.example\t/", "'\\t'"),
        ("http://allowed.ex\nample/", "'\\n'"),
        ("http://allowed.example\r\n/", "'\\r'"),
        ("http://allowed.example /", "' '"),
        (" http://allowed.example/", "' '"),
        ("http://allowed.example/\x00", "'\\x00'"),
        ("http://allowed.example/\x7f", "'\\x7f'"),
        ("http://allowed.example\u3002evil.example/", "'\u3002'"),  # ideographic full stop
        ("http://allowed.example\uff0f@evil.example/", "'\uff0f'"),  # fullwidth solidus
        ("http://\u0430llowed.example/", "'\u0430'"),  # Cyrillic a
        ("http://a@b@allowed.example/", "more than one '@'"),
        ("http://allowed.ex%61mple/", "disagree"),  # urllib3 decodes it, urllib.parse does not
        ("http://allowed.example%2f.evil/", "disagree"),
        ("http://allowed.example:80:80/", "cannot be read"),
        ("http://allowed.example:99999/", "cannot be read"),
        ("http://allowed.example:0/", "port 0"),
        ("http:///x", "no host"),
        ("http:x", "no host"),
        ("http://:80/", "no host"),
        ("//allowed.example/", "without a scheme"),
        ("file:///etc/passwd", "not file"),
        ("ftp://allowed.example/", "not ftp"),
        ("gopher://allowed.example/", "not gopher"),
        ("http://allowed.example../", "not a plain DNS name"),
        ("http://allowed..example/", "not a plain DNS name"),
        ("http://allowed!.example/", "not a plain DNS name"),
    ],
)
def test_urls_parsers_read_differently_are_refused(url, reason):
    problem = upstream_url_problem(url, ["allowed.example", "127.0.0.1", "*"])
    assert reason in problem


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/",  # 127.0.0.1 as one decimal number
        "http://0x7f000001/",
        "http://0x7f.1/",
        "http://0x7f.0.0.1/",
        "http://0177.0.0.1/",  # octal
        "http://127.000.000.001/",
        "http://127.1/",
        "http://127.0.1/",
        "http://127.0.0.1./",  # an address with a trailing dot
        "http://allowed.example.0x10/",
        "http://allowed.example.123/",
    ],
)
def test_addresses_in_non_standard_forms_are_refused(url):
    problem = upstream_url_problem(url, ["127.0.0.1", "allowed.example", "*"])
    assert "non-standard form" in problem


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1:8080/", True),
        ("http://[::1]:8080/", False),
        ("http://[::ffff:127.0.0.1]/", True),  # the same IPv4 host
        ("http://[::ffff:7f00:1]/", True),
        ("http://[::ffff:127.0.0.2]/", False),
        ("http://[0:0:0:0:0:ffff:127.0.0.1]/", True),
        ("http://127.0.0.2/", False),
        ("http://10.1.2.3/", False),
        ("http://[fe80::1%25eth0]/", False),
        ("http://[127.0.0.1]/", False),
        ("http://[::1/", False),
    ],
)
def test_address_hosts_need_an_address_entry(url, allowed):
    assert _allowed(url, ["127.0.0.1", "localhost", "allowed.example"]) is allowed


def test_a_name_entry_never_allows_an_address_host():
    # Text matching would let "0.1" allow 127.0.0.1, or "localhost" allow its address.
    assert not _allowed("http://127.0.0.1/", ["0.1", "localhost"])
    assert not _allowed("http://[::1]/", ["1", "localhost"])


def test_address_and_network_entries_allow_address_hosts():
    assert _allowed("http://10.1.2.3/", ["10.0.0.0/8"])
    assert _allowed("http://[fd00::5]:8443/", ["fd00::/8"])
    assert _allowed("http://[::1]/", ["[::1]"])
    assert not _allowed("http://11.1.2.3/", ["10.0.0.0/8"])


def test_star_allows_public_addresses_but_not_private_ones():
    assert _allowed("http://93.184.216.34/", ["*"])
    assert "not a public address (loopback)" in upstream_url_problem("http://127.0.0.1/", ["*"])
    assert "link-local" in upstream_url_problem("http://169.254.169.254/", ["*"])


# --- addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("::ffff:10.0.0.1", "private"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),  # shared address space (carrier-grade NAT)
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("::7f00:1", "reserved"),  # IPv4-compatible (deprecated) form of 127.0.0.1
        ("fec0::1", "site-local"),
    ],
)
def test_non_public_addresses_are_refused(settings, address, kind):
    settings.PSM_UPSTREAM_ALLOWLIST = ["*"]
    assert f"not a public address ({kind})" in address_problem(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:4700::1111", "64:ff9b::808:808"])
def test_public_addresses_are_allowed(address):
    assert address_problem(address, []) == ""


def test_an_address_or_network_entry_allows_its_addresses():
    assert address_problem("127.0.0.1", ["127.0.0.1"]) == ""
    assert address_problem("::ffff:127.0.0.1", ["127.0.0.1"]) == ""
    assert address_problem("10.9.8.7", ["10.0.0.0/8"]) == ""
    assert address_problem("169.254.169.254", ["169.254.169.254/32"]) == ""
    assert address_problem("::1", ["::1"]) == ""
    assert "loopback" in address_problem("127.0.0.2", ["127.0.0.1"])
    assert "loopback" in address_problem("::1", ["127.0.0.1"])


def test_allow_private_opens_private_and_loopback_addresses_only(settings):
    settings.PSM_UPSTREAM_ALLOW_PRIVATE = True
    for address in ("10.0.0.1", "192.168.1.1", "fd00::1", "127.0.0.1", "::1"):
        assert address_problem(address, []) == "", address
    for address in ("169.254.169.254", "fe80::1", "0.0.0.0", "224.0.0.1", "240.0.0.1"):
        assert address_problem(address, []) != "", address


def test_refusals_say_how_to_allow_the_address():
    problem = address_problem("10.0.0.1", [])
    assert problem == (
        "10.0.0.1 is not a public address (private); an administrator can allow it by listing "
        "it, or a network containing it, in PSM_UPSTREAM_ALLOWLIST (or set "
        "PSM_UPSTREAM_ALLOW_PRIVATE=true)"
    )
    assert "PSM_UPSTREAM_ALLOW_PRIVATE" not in address_problem("169.254.169.254", [])


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


def test_fetch_bytes_returns_the_body(session, upstream):
    url = upstream.write("index.json", b'{"ok": true}')
    assert fetch_bytes(session, url, max_bytes=100) == b'{"ok": true}'


def test_fetch_bytes_returns_none_on_404(session, upstream):
    assert fetch_bytes(session, upstream.url + "/missing", max_bytes=100) is None


def test_fetch_bytes_raises_on_a_server_error(session, upstream):
    upstream.fail["/broken"] = 500
    url = upstream.url + "/broken"
    with pytest.raises(UpstreamError) as caught:
        fetch_bytes(session, url, max_bytes=100)
    assert caught.value.status == 500
    assert str(caught.value) == f"{url}: upstream answered HTTP 500 Internal Server Error"


def test_fetch_bytes_raises_when_the_body_exceeds_max_bytes(session, upstream):
    url = upstream.write("big", b"x" * 101)
    with pytest.raises(UpstreamError, match="larger than the 100 byte limit"):
        fetch_bytes(session, url, max_bytes=100)
    assert fetch_bytes(session, url, max_bytes=101) == b"x" * 101


def test_fetch_bytes_refuses_a_host_off_the_allowlist(settings, session, upstream):
    url = upstream.write("index.json", b"{}")
    settings.PSM_UPSTREAM_ALLOWLIST = ["pypi.org"]
    with pytest.raises(UpstreamError, match="not on the upstream allowlist"):
        fetch_bytes(session, url, max_bytes=100)
    assert upstream.requests == []


def test_fetch_bytes_raises_on_a_refused_connection(session, refused_url):
    where = refused_url.removeprefix("http://")
    with pytest.raises(UpstreamError) as caught:
        fetch_bytes(session, refused_url + "/x", max_bytes=100)
    assert caught.value.reason == f"could not connect to {where}: connection refused"
    assert caught.value.transient and not caught.value.timed_out


def test_upstream_error_hides_credentials_and_tokens_even_in_the_reason(session, refused_url):
    url = refused_url.replace("http://", "http://bob:s3cret@") + "/t/SECRETTOKEN/x?key=QUERYKEY"
    with pytest.raises(UpstreamError) as caught:
        fetch_bytes(session, url, max_bytes=100)
    message = str(caught.value)
    assert "connection refused" in message
    for secret in ("s3cret", "SECRETTOKEN", "QUERYKEY"):
        assert secret not in message
        assert secret not in caught.value.reason
    assert caught.value.url == url  # the real URL stays available to the code


def test_client_applies_the_index_size_limit(settings, upstream):
    settings.PSM_MAX_INDEX_BYTES = 10
    url = upstream.write("repodata.json", b"y" * 11)
    client = UpstreamClient()
    try:
        with pytest.raises(UpstreamError, match="10 byte limit"):
            client.fetch(url)
    finally:
        client.close()


def test_the_shared_client_reuses_its_connections_until_the_gate_changes(settings, upstream):
    """Requests a package client waits on share one client per process: the second GET goes
    over the first one's connection; with another allowlist (its connections were checked
    against the old one) or proxy, a new client opens new connections."""
    url = upstream.write("pkg.conda", b"x" * 1000)
    client = shared_client()
    assert shared_client() is client and client.waiting
    for _ in range(2):
        with open_stream(client.session, url) as response:
            assert response.content == b"x" * 1000
    pools = client.session.get_adapter(url).poolmanager.pools
    port = int(url.split(":")[2].split("/")[0])
    assert [pools[key].num_connections for key in pools.keys() if key.key_port == port] == [1]
    settings.PSM_UPSTREAM_ALLOWLIST = [*settings.PSM_UPSTREAM_ALLOWLIST, "example.org"]
    other_gate = shared_client()
    assert other_gate is not client
    settings.PSM_HTTP_PROXY = "http://127.0.0.1:9"
    assert shared_client() is not other_gate


class _CookieHandler(FileHandler):
    def _send_headers(self, status: int, headers: dict[str, str]) -> None:
        super()._send_headers(status, {**headers, "Set-Cookie": "track=1; Path=/"})


class _CookieServer(LoopbackServer):
    handler = _CookieHandler


def test_the_shared_client_keeps_no_cookie_an_upstream_sets(tmp_path):
    (tmp_path / "cookies").mkdir()
    with _CookieServer(tmp_path / "cookies") as server:
        url = server.write("pkg.conda", b"x")
        client = shared_client()
        with open_stream(client.session, url) as response:
            assert "track=1" in response.headers["Set-Cookie"]
        assert not client.session.cookies


def test_session_sends_the_psm_user_agent(session):
    assert session.headers["User-Agent"].startswith("psm/")


# --- the connection checks the address it connects to --------------------------------------------


def test_a_name_on_the_allowlist_does_not_allow_its_loopback_address(settings, session, upstream):
    settings.PSM_UPSTREAM_ALLOWLIST = ["localhost"]
    url = upstream.write("index.json", b"{}").replace("127.0.0.1", "localhost")
    with pytest.raises(UpstreamRefused) as caught:
        fetch_bytes(session, url, max_bytes=100)
    assert "127.0.0.1 is not a public address (loopback)" in caught.value.reason
    assert caught.value.url == url
    assert not caught.value.transient
    assert upstream.requests == []


def test_an_address_entry_or_allow_private_lets_a_name_reach_loopback(settings, session, upstream):
    url = upstream.write("index.json", b"{}").replace("127.0.0.1", "localhost")
    settings.PSM_UPSTREAM_ALLOWLIST = ["localhost", "127.0.0.0/8"]
    assert fetch_bytes(session, url, max_bytes=100) == b"{}"
    settings.PSM_UPSTREAM_ALLOWLIST = ["localhost"]
    settings.PSM_UPSTREAM_ALLOW_PRIVATE = True
    assert fetch_bytes(new_session(), url, max_bytes=100) == b"{}"


def test_a_name_that_resolves_to_a_private_address_is_refused_and_not_retried(
    settings, resolver, upstream
):
    settings.PSM_UPSTREAM_ALLOWLIST = ["mirror.example"]
    settings.PSM_HTTP_RETRIES = 3
    resolver.answers["mirror.example"] = ["127.0.0.1"]
    url = upstream.write("x", b"secret").replace("127.0.0.1", "mirror.example")
    client = UpstreamClient()
    try:
        with pytest.raises(UpstreamRefused, match="mirror.example resolves to 127.0.0.1: "):
            client.fetch(url)
    finally:
        client.close()
    assert resolver.asked == ["mirror.example"]
    assert upstream.requests == []


def test_each_connection_uses_the_address_it_checked(settings, resolver, upstream):
    """DNS rebinding gains nothing: a new answer is checked again, and only checked addresses
    are connected to."""
    settings.PSM_UPSTREAM_ALLOWLIST = ["mirror.example", "127.0.0.1"]
    url = upstream.write("x", b"ok").replace("127.0.0.1", "mirror.example")
    resolver.answers["mirror.example"] = ["127.0.0.1"]
    assert fetch_bytes(new_session(), url, max_bytes=10) == b"ok"
    resolver.answers["mirror.example"] = ["127.0.0.2"]  # the name now points elsewhere
    with pytest.raises(UpstreamRefused, match="127.0.0.2 is not a public address"):
        fetch_bytes(new_session(), url, max_bytes=10)
    # Of several answers only the allowed ones are tried (127.0.0.2 would refuse the connection).
    resolver.answers["mirror.example"] = ["127.0.0.2", "::1", "127.0.0.1"]
    assert fetch_bytes(new_session(), url, max_bytes=10) == b"ok"


def test_through_a_proxy_only_the_url_is_checked(settings, upstream):
    """PSM connects to the proxy (configured by the administrator), which may be on a private
    address; the upstream's name is still checked against the allowlist."""
    settings.PSM_UPSTREAM_ALLOWLIST = ["upstream.example"]
    upstream.write("x", b"via proxy")  # the proxy answers for http://upstream.example/x
    session = new_session(proxy=upstream.url)
    assert fetch_bytes(session, "http://upstream.example/x", max_bytes=100) == b"via proxy"
    with pytest.raises(UpstreamRefused, match="not on the upstream allowlist"):
        fetch_bytes(session, "http://other.example/x", max_bytes=100)
    assert upstream.gets() == ["/x"]


# --- TLS still verifies the name, not the address ------------------------------------------------


def _certificate(tmp_path, name: str) -> tuple[str, str, str]:
    """(CA file, certificate file, key file) for a certificate issued to `name`."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)

    def issue(subject: str, issuer: str, public_key, *, ca: bool, san: str | None = None):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False
            )
        return builder.sign(key, hashes.SHA256())

    ca = issue("psm test ca", "psm test ca", key.public_key(), ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = issue(name, "psm test ca", leaf_key.public_key(), ca=False, san=name)
    paths = [tmp_path / f"{name}-{part}.pem" for part in ("ca", "cert", "key")]
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return tuple(str(path) for path in paths)


@pytest.fixture
def tls_upstream(tmp_path):
    """An HTTPS server on 127.0.0.1 with a certificate for the name asked; records SNI."""
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "x").write_bytes(b"ok")
    with contextlib.ExitStack() as stack:

        def start(name: str):
            ca, cert, key = _certificate(tmp_path, name)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            seen: list[str | None] = []
            context.sni_callback = lambda sock, server_name, ctx: seen.append(server_name)
            server = stack.enter_context(LoopbackServer(tmp_path / "root", tls=context))
            return server.port, ca, seen

        yield start


def test_tls_sends_and_verifies_the_host_name(settings, monkeypatch, tls_upstream):
    settings.PSM_UPSTREAM_ALLOWLIST = ["localhost", "127.0.0.1"]
    port, ca, seen = tls_upstream("localhost")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca)  # requests prefers it to session.verify
    session = new_session()
    assert fetch_bytes(session, f"https://localhost:{port}/x", max_bytes=10) == b"ok"
    assert seen == ["localhost"]


def test_tls_refuses_a_certificate_for_another_name(settings, monkeypatch, tls_upstream):
    settings.PSM_UPSTREAM_ALLOWLIST = ["localhost", "127.0.0.1"]
    port, ca, _ = tls_upstream("other.example")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca)
    session = new_session()
    with pytest.raises(UpstreamError, match="Hostname mismatch") as caught:
        fetch_bytes(session, f"https://localhost:{port}/x", max_bytes=10)
    assert caught.value.reason.startswith("the TLS certificate of localhost could not be verified")
    assert not caught.value.transient  # asking again will not help


# --- failures read as one sentence -------------------------------------------------------------


@pytest.fixture
def silent_url():
    """A URL on 127.0.0.1 whose server accepts connections (the kernel does) and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def _failure(url: str) -> UpstreamError:
    client = UpstreamClient()
    try:
        with pytest.raises(UpstreamError) as caught:
            client.download(url, io.BytesIO())
    finally:
        client.close()
    return caught.value


def test_a_server_that_never_answers_times_out_reading(settings, silent_url):
    settings.PSM_HTTP_TIMEOUT, settings.PSM_HTTP_RETRIES = 0.2, 0
    failure = _failure(silent_url + "/x")
    where = silent_url.removeprefix("http://")
    assert failure.reason == f"timed out after 0.2 s reading from {where}"
    assert failure.timed_out and failure.transient


def test_a_name_that_does_not_resolve_says_so(settings):
    settings.PSM_UPSTREAM_ALLOWLIST, settings.PSM_HTTP_RETRIES = ["example.invalid"], 0
    failure = _failure("https://mirror.example.invalid/simple/")
    assert failure.reason == "the name mirror.example.invalid could not be resolved"
    assert not failure.timed_out


def test_a_body_cut_short_says_how_much_arrived(tmp_path):
    (tmp_path / "index.json").write_bytes(b"x" * 100)
    with LoopbackServer(tmp_path) as server:
        server.cut["/index.json"] = 10
        failure = _failure(server.url + "/index.json")
    assert failure.reason == "the response was cut short after 10 of 100 bytes"
    assert failure.interrupted and failure.transient


def test_an_error_status_is_named(upstream):
    upstream.fail["/x"] = 503
    failure = _failure(upstream.url + "/x")
    assert failure.reason == "upstream answered HTTP 503 Service Unavailable"
    assert failure.status == 503 and failure.transient


def _refused() -> NewConnectionError:
    error = NewConnectionError(HTTPConnection("proxy.internal", 3128), "Failed: refused")
    error.__cause__ = ConnectionRefusedError(111, "Connection refused")
    return error


_URL = "https://mirror.example/t/SECRET/simple/"
_POOL = HTTPConnection("mirror.example", 8443)


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        pytest.param(
            requests.ConnectTimeout(
                MaxRetryError(None, _URL, ConnectTimeoutError(_POOL, "timed out (connect=60)"))
            ),
            "timed out after 60 s connecting to mirror.example:8443",
            id="connect-timeout",
        ),
        pytest.param(
            requests.ConnectionError(
                ProtocolError("Connection aborted.", RemoteDisconnected("closed"))
            ),
            "mirror.example:443 closed the connection without answering",
            id="no-answer",
        ),
        pytest.param(
            requests.exceptions.ChunkedEncodingError(
                ProtocolError("Connection broken", ConnectionResetError(104, "reset by peer"))
            ),
            "the connection to mirror.example:443 was reset",
            id="reset",
        ),
        pytest.param(
            requests.exceptions.ProxyError(
                MaxRetryError(None, _URL, ProxyError("Unable to connect to proxy", _refused()))
            ),
            "could not reach upstream through the proxy: could not connect to "
            "proxy.internal:3128: connection refused",
            id="proxy",
        ),
        pytest.param(
            requests.exceptions.InvalidHeader("Invalid leading whitespace in header"),
            "the request to mirror.example:443 failed (InvalidHeader)",
            id="other",
        ),
    ],
)
def test_failures_without_a_cheap_real_socket_read_as_one_sentence(settings, exc, reason):
    settings.PSM_HTTP_TIMEOUT = 60
    failure = upstream_error(_URL, exc)
    assert failure.reason == reason
    assert str(failure) == f"https://mirror.example/t/***/simple/: {reason}"
    assert failure.timed_out == ("timed out" in reason)


def test_the_proxy_environment_is_read_once_per_host_and_still_applies(monkeypatch):
    """The environment's proxies (and NO_PROXY) apply per host as requests applies them,
    read once per scheme and host of a session; what a request changes is its own."""
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "direct.example")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/bundle.pem")
    session = new_session()
    plain = requests.Session()
    for url in ("http://up.example/a/", "http://direct.example/a/", "https://up.example/"):
        for _ in range(2):
            merged = session.merge_environment_settings(url, {}, True, None, None)
            assert merged == plain.merge_environment_settings(url, {}, True, None, None)
            merged["proxies"]["http"] = "http://changed.example"
    proxies = session.merge_environment_settings("http://up.example/b/", {}, True, None, None)
    assert proxies["proxies"]["http"] == "http://proxy.example:3128"
    assert session.merge_environment_settings("http://up.example/", {}, True, False, None) == (
        plain.merge_environment_settings("http://up.example/", {}, True, False, None)
    )
    monkeypatch.setenv("HTTP_PROXY", "http://other.example:3128")  # a new session reads it
    proxies = new_session().merge_environment_settings("http://up.example/", {}, True, None, None)
    assert proxies["proxies"]["http"] == "http://other.example:3128"
