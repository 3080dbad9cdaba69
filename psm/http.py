"""The one HTTP client PSM uses to talk to upstream repositories.

Everything that leaves the server goes through here, so timeouts, retries, the proxy, the user
agent, the upstream host allowlist and size limits are decided in one place.

Which upstreams may be fetched is decided twice, each time on what is really used:
- `upstream_url_problem` checks every URL before it is requested (a mirror's source when it is
  saved, every URL an index gives, every redirect hop): http(s) only, read the same way by
  urllib3 (which requests connects with) and by urllib.parse, a plain host on the allowlist;
- the connection itself (`_CheckedConnection`) resolves the host, refuses loopback, private,
  link-local and other special addresses unless the allowlist names them, and connects to the
  address it checked, so a name that resolves differently later (DNS rebinding) gains nothing.
Through a proxy (PSM_HTTP_PROXY, or the HTTP(S)_PROXY variables) PSM connects to the proxy, not
the upstream: only the URL check applies, and the proxy must refuse internal addresses itself.

Every index document is fetched through `UpstreamClient.fetch_index`, conditionally on the
validators kept from last time. A failure is an UpstreamError saying what happened in one
sentence (`upstream_error`, `status_error`); the exception behind it goes to the log.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, BinaryIO, Literal
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection, parse_url
from urllib3.util.retry import Retry

# Redaction lives in psm.redaction; imported here for UpstreamError and older imports.
from .redaction import _secrets, redact, scrub  # noqa: F401

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

logger = logging.getLogger(__name__)

USER_AGENT = "psm/0.1 (+package security manager)"
CHUNK_SIZE = 1024 * 1024
MAX_REDIRECTS = 5


class UpstreamError(Exception):
    """An upstream request failed; the message says which URL and, in one sentence, why.

    `timed_out`: upstream did not connect or answer in time; `interrupted`: the connection
    broke while the body was being read. Build one from a requests/urllib3 exception with
    `upstream_error`, from an HTTP status with `status_error`.
    """

    def __init__(
        self,
        url: str,
        reason: str,
        *,
        status: int | None = None,
        transient: bool = False,
        timed_out: bool = False,
        interrupted: bool = False,
    ) -> None:
        # The reason may quote the raw URL; hide its secrets there too.
        for secret in _secrets(url):
            reason = reason.replace(secret, "***")
        self.url = url
        self.reason = reason
        self.status = status
        self.timed_out = timed_out
        self.interrupted = interrupted
        # Worth retrying: the connection failed or was cut, or upstream was briefly unavailable.
        self.transient = transient or status in (429, 500, 502, 503, 504)
        super().__init__(f"{redact(url)}: {reason}")


class UpstreamRefused(UpstreamError):
    """PSM's upstream rules forbid this URL or the address it leads to; never worth retrying."""


def status_error(url: str, status: int) -> UpstreamError:
    """The UpstreamError of an HTTP status PSM cannot use ("upstream answered HTTP 503
    Service Unavailable")."""
    try:
        phrase = f" {HTTPStatus(status).phrase}"
    except ValueError:
        phrase = ""
    return UpstreamError(url, f"upstream answered HTTP {status}{phrase}", status=status)


def upstream_error(
    url: str, exc: BaseException, *, target: str = "", interrupted: bool = False
) -> UpstreamError:
    """The UpstreamError of a failed request: what happened, in one sentence.

    `exc` is what requests or urllib3 raised for `url` (or `target`, the redirect hop being
    requested); `interrupted`: it was raised while reading the body. The exception itself,
    with its technical detail, goes to the log only.
    """
    failure = _describe(exc, target or url)
    log = logger.debug if failure.known else logger.warning
    log("request to %s failed: %s", redact(target or url), failure.reason, exc_info=exc)
    return UpstreamError(
        url,
        failure.reason,
        transient=failure.transient,
        timed_out=failure.timed_out,
        interrupted=interrupted,
    )


@dataclass(frozen=True)
class _Failure:
    reason: str
    timed_out: bool = False
    transient: bool = True  # all but a certificate that does not verify
    known: bool = True  # False: the generic sentence (the log then keeps the exception)


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and everything it wraps (urllib3's `reason`, exceptions in `args`, `__cause__`
    and `__context__`), outermost first."""
    found: list[BaseException] = []
    pending = [exc]
    while pending:
        current = pending.pop(0)
        if any(current is seen for seen in found):
            continue
        found.append(current)
        inner = [getattr(current, "reason", None), *current.args]
        inner += [current.__cause__, current.__context__]
        pending += [item for item in inner if isinstance(item, BaseException)]
    return found


def _endpoint(causes: list[BaseException], url: str) -> str:
    """host:port of the connection that failed: the innermost one urllib3 names (the proxy's,
    through a proxy), else the URL's."""
    for cause in reversed(causes):
        for named in (cause.__dict__.get("conn"), cause.__dict__.get("pool"), *cause.args[:1]):
            host, port = getattr(named, "host", None), getattr(named, "port", None)
            if isinstance(host, str) and host and port:
                return _host_port(host, port)
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        host, port = "", None
    return _host_port(host, port or (443 if url.lower().startswith("https:") else 80))


def _host_port(host: str, port: int) -> str:
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _first(causes: list[BaseException], kinds: type | tuple[type, ...]) -> Any:
    return next((cause for cause in causes if isinstance(cause, kinds)), None)


def _describe(exc: BaseException, url: str) -> _Failure:
    """Map a requests/urllib3 failure to a sentence, by the root cause found in its chain."""
    causes = _causes(exc)
    where = _endpoint(causes, url)
    failure = _describe_cause(causes, where, url)
    if _first(causes, (requests.exceptions.ProxyError, urllib3.exceptions.ProxyError)):
        reason = f"could not reach upstream through the proxy: {failure.reason}"
        return _Failure(reason, failure.timed_out, failure.transient, failure.known)
    return failure


def _describe_cause(causes: list[BaseException], where: str, url: str) -> _Failure:
    seconds = f"{settings.PSM_HTTP_TIMEOUT:g}"  # the timeout every request is made with
    if resolution := _first(causes, (NameResolutionError, socket.gaierror)):
        host = getattr(resolution, "_host", "") or urlsplit(url).hostname or where
        return _Failure(f"the name {host} could not be resolved")
    if certificate := _first(causes, ssl.SSLCertVerificationError):
        host = where.rsplit(":", 1)[0].strip("[]")
        detail = (certificate.verify_message or certificate.reason or "").rstrip(".")
        return _Failure(
            f"the TLS certificate of {host} could not be verified: {detail}", transient=False
        )
    if tls := _first(causes, ssl.SSLError):
        detail = str(tls.reason or tls.strerror or "").replace("_", " ").lower()
        reason = f"the TLS handshake with {where} failed"
        return _Failure(f"{reason}: {detail}" if detail else reason)
    if _first(causes, ConnectionRefusedError):
        return _Failure(f"could not connect to {where}: connection refused")
    # urllib3's NewConnectionError is a ConnectTimeoutError too (for compatibility): not one.
    timeouts = [
        cause
        for cause in causes
        if isinstance(cause, (TimeoutError, urllib3.exceptions.TimeoutError, requests.Timeout))
        and not isinstance(cause, NewConnectionError)
    ]
    if timeouts:
        connecting = (ConnectTimeoutError, requests.exceptions.ConnectTimeout)
        doing = "connecting to" if _first(timeouts, connecting) else "reading from"
        return _Failure(f"timed out after {seconds} s {doing} {where}", timed_out=True)
    if short := _first(causes, http.client.IncompleteRead):
        received = short.partial if isinstance(short.partial, int) else len(short.partial)
        announced = f" of {received + short.expected}" if short.expected else ""
        return _Failure(f"the response was cut short after {received}{announced} bytes")
    if _first(causes, http.client.RemoteDisconnected):
        return _Failure(f"{where} closed the connection without answering")
    if _first(causes, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return _Failure(f"the connection to {where} was reset")
    if _first(causes, (requests.exceptions.ContentDecodingError, urllib3.exceptions.DecodeError)):
        return _Failure("the response could not be decompressed (a wrong Content-Encoding)")
    if _first(causes, http.client.HTTPException):
        return _Failure(f"the answer from {where} is not valid HTTP")
    if _first(causes, (urllib3.exceptions.ProtocolError, requests.exceptions.ChunkedEncodingError)):
        return _Failure(f"the response from {where} was cut short")
    system = _first(causes, OSError)
    if system is not None and system.strerror:
        problem = system.strerror[:1].lower() + system.strerror[1:]
        if _first(causes, NewConnectionError):
            return _Failure(f"could not connect to {where}: {problem}")
        return _Failure(f"the connection to {where} failed: {problem}")
    root = causes[-1]
    return _Failure(f"the request to {where} failed ({root.__class__.__name__})", known=False)


@dataclass(frozen=True)
class _Allowlist:
    names: tuple[str, ...]  # a name allows itself and its subdomains
    networks: tuple[IPNetwork, ...]  # an address or CIDR entry allows the addresses in it
    any_name: bool  # "*": any name, and any public address


def _allowlist(entries: list[str] | None = None) -> _Allowlist:
    """The allowlist (the setting's by default), parsed once per distinct list: it is read
    for every URL and every connection."""
    return _parse_allowlist(tuple(settings.PSM_UPSTREAM_ALLOWLIST if entries is None else entries))


@functools.lru_cache(maxsize=16)
def _parse_allowlist(entries: tuple[str, ...]) -> _Allowlist:
    names: list[str] = []
    networks: list[IPNetwork] = []
    any_name = False
    for raw in entries:
        entry = raw.strip().lower()
        if entry == "*":
            any_name = True
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            names.append(entry.strip("."))
    return _Allowlist(tuple(names), tuple(networks), any_name)


# A DNS name as resolvers read it: ASCII letters, digits, "-" and "_" in non-empty labels.
_HOST_NAME = re.compile(r"(?:[a-z0-9_-]{1,63}\.)*[a-z0-9_-]{1,63}\.?")
# A last label that URL parsers and inet_aton read as a number: the host is then an address.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")


def _odd_character(text: str) -> str:
    """Name the first character URL parsers disagree about (backslash, space, control,
    non-ASCII), or ""."""
    for char in text:
        if char == "\\":
            return "a backslash"
        if char.isspace() or not " " < char < "\x7f":
            return f"the character {char!r}"
    return ""


def upstream_url_problem(url: str, allowlist: list[str] | None = None) -> str:
    """Say why PSM must not fetch `url` ("" when it may), without touching the network."""
    odd = _odd_character(url)
    if odd:
        return (
            f"the URL contains {odd}, which URL parsers read differently; percent-encode it "
            "(in a host name, use its xn-- form)"
        )
    try:
        split = urlsplit(url)
        port = split.port
    except ValueError as exc:  # a bad port or IPv6 bracket; the message quotes no secret
        return f"the URL cannot be read: {exc}"
    try:
        parsed = parse_url(url)  # what requests and urllib3 connect to
    except ValueError:  # its message quotes the whole URL, secrets and all
        return "the URL cannot be read: its host or port is malformed"
    scheme = split.scheme.lower()
    if scheme not in ("http", "https"):
        return f"only http and https URLs are fetched, not {scheme or 'a URL without a scheme'}"
    userinfo, _, hostport = split.netloc.rpartition("@")
    if "@" in userinfo:
        return "the URL has more than one '@' before its host"
    host = split.hostname or ""
    if not host:
        return "the URL has no host"
    if port == 0:
        return "the URL names port 0"
    if (parsed.scheme, (parsed.host or "").strip("[]"), parsed.port) != (scheme, host, port):
        return "URL parsers disagree on the scheme, host or port of the URL"
    address: IPAddress | None = None
    if hostport.startswith("["):
        try:
            ipv6 = ipaddress.IPv6Address(host)
        except ValueError:
            return f"the host [{host}] is not an IPv6 address"
        if ipv6.scope_id:
            return "the URL names an IPv6 zone"
        address = ipv6.ipv4_mapped or ipv6  # the same IPv4 host: IPv4 entries apply
    elif not _HOST_NAME.fullmatch(host):
        return f"the host {host!r} is not a plain DNS name or IP address"
    elif _NUMERIC_LABEL.fullmatch(host.rstrip(".").rsplit(".", 1)[-1]):
        try:
            address = ipaddress.IPv4Address(host)
        except ValueError:
            return (
                f"the host {host!r} is an address in a non-standard form; write IPv4 addresses "
                "as four decimal numbers (a.b.c.d)"
            )
    rules = _allowlist(allowlist)
    if address is None:
        name = host.rstrip(".")
        if rules.any_name or any(name == n or name.endswith("." + n) for n in rules.names):
            return ""
    elif rules.any_name or any(address in network for network in rules.networks):
        return address_problem(str(address), allowlist)
    return (
        f"the host {host} is not on the upstream allowlist; an administrator can add it to "
        "PSM_UPSTREAM_ALLOWLIST"
    )


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the last 32 bits


def _special_kind(ip: IPAddress) -> str:
    """What makes `ip` no public Internet address ("" when it is one)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64:  # a gateway forwards it to the IPv4 address inside: that one counts
            return _special_kind(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is not None and (kind := _special_kind(embedded)):
            return kind
        if ip.is_site_local:
            return "site-local"
    if ip.is_loopback:
        return "loopback"
    if ip.is_unspecified or (ip.version == 4 and ip.packed[0] == 0):
        return "unspecified"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private or not ip.is_global:
        return "private"
    return ""


def address_problem(address: str, allowlist: list[str] | None = None) -> str:
    """Say why PSM must not connect to the IP `address` ("" when it may).

    Public addresses may be used. Others only when PSM_UPSTREAM_ALLOWLIST names the address or a
    network containing it, or, for private and loopback ones, PSM_UPSTREAM_ALLOW_PRIVATE is on.
    """
    try:
        ip: IPAddress = ipaddress.ip_address(address)
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped  # the same IPv4 host: IPv4 entries apply
    if any(ip in network for network in _allowlist(allowlist).networks):
        return ""
    kind = _special_kind(ip)
    if not kind:
        return ""
    if kind in ("private", "loopback"):
        if settings.PSM_UPSTREAM_ALLOW_PRIVATE:
            return ""
        remedy = " (or set PSM_UPSTREAM_ALLOW_PRIVATE=true)"
    else:
        remedy = ""
    return (
        f"{ip} is not a public address ({kind}); an administrator can allow it by listing it, "
        f"or a network containing it, in PSM_UPSTREAM_ALLOWLIST{remedy}"
    )


def resolve_host(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, in the resolver's order, without repeats."""
    family = connection.allowed_gai_family()
    infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _CheckedConnection(HTTPConnection):
    """Connects only to an address the upstream rules allow: resolved, checked, then used.

    The host name stays the connection's `host`, so TLS sends it (SNI) and verifies the
    certificate against it as usual.
    """

    def _new_conn(self) -> socket.socket:
        try:
            addresses = resolve_host(self._dns_host, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        problems = {address: address_problem(address) for address in addresses}
        allowed = [address for address, problem in problems.items() if not problem]
        if not allowed:
            scheme = "https" if isinstance(self, HTTPSConnection) else "http"
            shown = self.host if ":" not in self.host else f"[{self.host}]"
            reason = "; ".join(problems.values()) or "the host resolves to no address"
            if addresses != [self._dns_host.strip("[]")]:
                reason = f"{self.host} resolves to {', '.join(addresses)}: {reason}"
            raise UpstreamRefused(f"{scheme}://{shown}:{self.port}/", reason)
        error: Exception | None = None
        for address in allowed:
            try:
                return connection.create_connection(
                    (address, self.port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except TimeoutError as exc:
                error = ConnectTimeoutError(
                    self, f"Connection to {self.host} ({address}) timed out: {exc}"
                )
                error.__cause__ = exc  # raised below, outside this block: keep the cause
            except OSError as exc:
                error = NewConnectionError(
                    self, f"Failed to establish a new connection to {address}: {exc}"
                )
                error.__cause__ = exc
        assert error is not None
        raise error


class _CheckedHTTPSConnection(_CheckedConnection, HTTPSConnection):
    pass


class _CheckedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _CheckedConnection


class _CheckedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _CheckedHTTPSConnection


class _CheckedAdapter(HTTPAdapter):
    """An adapter whose direct connections go through `_CheckedConnection` (proxied ones go to
    the proxy, through requests' own proxy manager)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _CheckedHTTPPool,
            "https": _CheckedHTTPSPool,
        }


def new_session(
    *, proxy: str = "", retries: int | None = None, waiting: bool = False
) -> requests.Session:
    """Return a session with PSM's user agent, retries on transient errors (`retries`, else
    PSM_HTTP_RETRIES) and the proxy. `waiting`: a client waits for the answer, so a read
    timeout is not retried (it answers 504 within one timeout, before the client gives up)."""
    session = requests.Session()
    retry = Retry(
        total=settings.PSM_HTTP_RETRIES if retries is None else retries,
        read=0 if waiting else None,
        backoff_factor=0.5,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=("GET", "HEAD"),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    adapter = _CheckedAdapter(max_retries=retry, pool_maxsize=16)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    proxy = proxy or settings.PSM_HTTP_PROXY
    if proxy:
        session.proxies = {"http": proxy, "https": proxy}
    return session


@contextmanager
def open_stream(
    session: requests.Session, url: str, *, headers: dict[str, str] | None = None
) -> Iterator[requests.Response]:
    """Open a streamed GET of an allowed URL, turning failures into UpstreamError.

    The caller reads `response.iter_content()`; a 404 is returned (not raised) so callers can
    treat a missing optional file as absent.
    """
    response = None
    target = url
    try:
        # Redirects are followed by hand so that every hop is checked like the first URL.
        for _hop in range(MAX_REDIRECTS + 1):
            problem = upstream_url_problem(target)
            if problem:
                raise UpstreamRefused(target, problem)
            try:
                response = session.get(
                    target,
                    headers=headers,
                    stream=True,
                    timeout=settings.PSM_HTTP_TIMEOUT,
                    allow_redirects=False,
                )
            except UpstreamRefused as exc:  # the connection refused the address
                raise UpstreamRefused(target, exc.reason) from None
            if not response.is_redirect:
                break
            location = response.headers["Location"]
            response.close()
            odd = _odd_character(location)
            if odd:
                raise UpstreamRefused(
                    target, f"redirected to a URL containing {odd}, which parsers read differently"
                )
            target = urljoin(target, location)
        else:
            raise UpstreamError(url, f"upstream redirected more than {MAX_REDIRECTS} times")
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        raise upstream_error(url, exc, target=target) from exc
    try:
        if response.status_code >= 400 and response.status_code != 404:
            raise status_error(url, response.status_code)
        yield response
    finally:
        response.close()


def fetch_bytes(
    session: requests.Session,
    url: str,
    *,
    max_bytes: int,
    headers: dict[str, str] | None = None,
) -> bytes | None:
    """GET a whole document of at most `max_bytes`; None when upstream says 404."""
    with open_stream(session, url, headers=headers) as response:
        if response.status_code == 404:
            return None
        chunks: list[bytes] = []
        total = 0
        try:
            for chunk in response.iter_content(CHUNK_SIZE):
                total += len(chunk)
                if total > max_bytes:
                    raise _too_large(url, max_bytes)
                chunks.append(chunk)
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise upstream_error(url, exc, target=response.url, interrupted=True) from exc
        return b"".join(chunks)


def _too_large(url: str, limit: int) -> UpstreamError:
    return UpstreamError(url, f"the response is larger than the {limit} byte limit")


@dataclass(frozen=True)
class Download:
    """What a streamed download ended with: 200 (body written), 304 or 404 (nothing written)."""

    status: int
    url: str
    etag: str = ""
    last_modified: str = ""


@dataclass(frozen=True)
class IndexFetch:
    """What a conditional GET of an index document ended with (`UpstreamClient.fetch_index`).

    `changed`: the body was written; `unchanged`: upstream answered 304 to the validators
    sent; `missing`: 404. `validators` (URL, ETag, Last-Modified) are to be kept and sent
    back next time; none for a missing document.
    """

    status: Literal["changed", "unchanged", "missing"]
    url: str
    validators: dict[str, str]


def conditional_headers(url: str, validators: Mapping[str, str]) -> dict[str, str]:
    """If-None-Match / If-Modified-Since from `validators` kept for `url` (their "url"):
    validators of another URL (a changed source, the other compression of an index) say
    nothing about this one."""
    if validators.get("url") != url:
        return {}
    headers = {}
    if validators.get("etag"):
        headers["If-None-Match"] = validators["etag"]
    if validators.get("last_modified"):
        headers["If-Modified-Since"] = validators["last_modified"]
    return headers


def _validators(url: str, *found: Mapping[str, str]) -> dict[str, str]:
    """The validators to keep for `url`: its ETag and Last-Modified, the later given win."""
    kept = {"url": url}
    for values in found:
        kept.update((key, values[key]) for key in ("etag", "last_modified") if values.get(key))
    return kept


@dataclass(frozen=True)
class Peek:
    """The start of a document (`head`, empty unless 200): enough to tell what it is."""

    status: int
    content_type: str
    head: bytes


#: What `UpstreamClient.peek` reads at most.
PEEK_BYTES = 64 * 1024


class UpstreamClient:
    """A session plus the limits that apply to one mirror run; handed to format modules."""

    def __init__(
        self,
        *,
        proxy: str = "",
        max_bytes: int | None = None,
        retries: int | None = None,
        waiting: bool = False,
    ) -> None:
        """`waiting`: a package client waits on these requests (a passive first request):
        timeouts are not retried, here or by `storage.download`."""
        self.session = new_session(proxy=proxy, retries=retries, waiting=waiting)
        self.waiting = waiting
        self.max_bytes = max_bytes or settings.PSM_MAX_INDEX_BYTES

    def fetch(self, url: str, *, headers: dict[str, str] | None = None) -> bytes | None:
        """GET a document within the index size limit; None when upstream says 404."""
        return fetch_bytes(self.session, url, max_bytes=self.max_bytes, headers=headers)

    def peek(
        self, url: str, *, headers: dict[str, str] | None = None, max_bytes: int = PEEK_BYTES
    ) -> Peek:
        """GET the first `max_bytes` of a document and hang up: a look at an index that may be
        hundreds of MB, without downloading it. 404 is returned, other errors raised."""
        with open_stream(self.session, url, headers=headers) as response:
            head = b""
            if response.status_code == 200:
                try:
                    for chunk in response.iter_content(min(CHUNK_SIZE, max_bytes)):
                        head += chunk
                        if len(head) >= max_bytes:
                            break
                except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
                    raise upstream_error(url, exc, target=response.url, interrupted=True) from exc
            content_type = response.headers.get("Content-Type", "")
            return Peek(response.status_code, content_type, head[:max_bytes])

    def download(
        self,
        url: str,
        dest: BinaryIO,
        *,
        headers: dict[str, str] | None = None,
        max_bytes: int | None = None,
    ) -> Download:
        """Stream a GET into `dest` (at most `max_bytes`); 304 and 404 write nothing.

        The caller owns `dest` and must discard it if this raises: the body may be partial.
        """
        limit = max_bytes or self.max_bytes
        with open_stream(self.session, url, headers=headers) as response:
            result = Download(
                status=response.status_code,
                url=url,
                etag=response.headers.get("ETag", ""),
                last_modified=response.headers.get("Last-Modified", ""),
            )
            if response.status_code != 200:
                return result
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > limit:
                raise _too_large(url, limit)
            total = 0
            try:
                for chunk in response.iter_content(CHUNK_SIZE):
                    total += len(chunk)
                    if total > limit:
                        raise _too_large(url, limit)
                    dest.write(chunk)
            except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
                raise upstream_error(url, exc, target=response.url, interrupted=True) from exc
            return result

    def fetch_index(
        self,
        url: str,
        dest: BinaryIO,
        validators: Mapping[str, str] | None = None,
        *,
        headers: dict[str, str] | None = None,
        max_bytes: int | None = None,
    ) -> IndexFetch:
        """GET an index document into `dest`, conditionally on `validators` (see
        `conditional_headers`): every index document PSM reads comes through here.

        200 is `changed` (the body in `dest`, rewound), 304 `unchanged`, 404 `missing` (nothing
        written); any other answer raises UpstreamError. The caller owns `dest` and must
        discard it if this raises.
        """
        conditional = conditional_headers(url, validators or {})
        download = self.download(
            url, dest, headers={**(headers or {}), **conditional}, max_bytes=max_bytes
        )
        fresh = {"etag": download.etag, "last_modified": download.last_modified}
        if download.status == 304 and conditional:
            # A 304 may update the validators (RFC 9111 4.3.4); those it leaves out stay.
            return IndexFetch("unchanged", url, _validators(url, validators or {}, fresh))
        if download.status == 404:
            return IndexFetch("missing", url, {})
        if download.status != 200:
            raise status_error(url, download.status)
        dest.seek(0)
        return IndexFetch("changed", url, _validators(url, fresh))

    def close(self) -> None:
        self.session.close()
