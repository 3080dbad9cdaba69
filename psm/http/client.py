"""The upstream client: a session with PSM's user agent, retries and proxy; streamed GETs
whose every redirect hop passes the gate; size limits; and the conditional GETs of index
documents (`UpstreamClient.fetch_index`), on the validators kept from last time.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from typing import BinaryIO, Literal
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
import urllib3.exceptions
from django.conf import settings
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_netrc_auth, select_proxy
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.util.retry import Retry

from .errors import UpstreamError, UpstreamRefused, status_error, upstream_error
from .gate import CheckedAdapter, odd_character, upstream_url_problem

USER_AGENT = "psm/0.1 (+package security manager)"
CHUNK_SIZE = 1024 * 1024
MAX_REDIRECTS = 5


class _Session(requests.Session):
    """A session that reads the proxy and CA settings of the environment once per scheme and
    host: requests reads all of `os.environ` twice per request, a fifth of the time of a small
    one (a Python project page, 600,000 of them at PyPI scale)."""

    def __init__(self) -> None:
        super().__init__()
        self._environment: dict[tuple, dict] = {}
        self._netrc: dict[tuple, bool] = {}
        self._pool_keys: dict[tuple, tuple[dict, dict]] = {}

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        if proxies or not isinstance(verify, bool | None) or not isinstance(cert, str | None):
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        key = (*urlsplit(url)[:2], stream, verify, cert)
        merged = self._environment.get(key)
        if merged is None:
            merged = super().merge_environment_settings(url, {}, stream, verify, cert)
            self._environment[key] = merged
        return {**merged, "proxies": dict(merged["proxies"])}

    def pool_for(self, adapter: HTTPAdapter, url: str, verify, cert) -> HTTPConnectionPool:
        """The adapter's pool for a direct request to `url`, as
        `get_connection_with_tls_context` chooses it without a proxy (its key, which looks
        at the file system for the CA bundle, worked out once per scheme, host and TLS
        settings)."""
        key = (*urlsplit(url)[:2], verify, cert)
        found = self._pool_keys.get(key)
        if found is None:
            found = adapter.build_connection_pool_key_attributes(_Target(url), verify, cert)
            self._pool_keys[key] = found
        host_params, pool_kwargs = found
        return adapter.poolmanager.connection_from_host(**host_params, pool_kwargs=pool_kwargs)

    def netrc_applies(self, url: str) -> bool:
        """Whether requests would send `.netrc` credentials to this URL's host (read once
        per scheme and host, as the proxy environment)."""
        key = tuple(urlsplit(url)[:2])
        found = self._netrc.get(key)
        if found is None:
            found = bool(self.trust_env and get_netrc_auth(url))
            self._netrc[key] = found
        return found


def new_session(
    *, proxy: str = "", retries: int | None = None, waiting: bool = False
) -> requests.Session:
    """Return a session with PSM's user agent, retries on transient errors (`retries`, else
    PSM_HTTP_RETRIES) and the proxy. `waiting`: a client waits for the answer, so a read
    timeout is not retried (it answers 504 within one timeout, before the client gives up)."""
    session = _Session()
    retry = Retry(
        total=settings.PSM_HTTP_RETRIES if retries is None else retries,
        read=0 if waiting else None,
        backoff_factor=0.5,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=("GET", "HEAD"),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    adapter = CheckedAdapter(max_retries=retry, pool_maxsize=16)
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
            odd = odd_character(location)
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


#: A URL that requests sends exactly as it is (nothing to quote, no user or fragment): the
#: only kind the lean GET takes.
_PLAIN_URL = re.compile(r"https?://[a-z0-9.-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~+!,;=:@-]*)*")
_REDIRECTS = frozenset((301, 302, 303, 307, 308))
#: Whether whole documents (index pages) are fetched by `_lean_get` where it applies.
LEAN_GETS = True


def _lean_get(
    session: requests.Session,
    url: str,
    headers: Mapping[str, str] | None,
    limit: int,
    write: Callable[[bytes], object],
    *,
    any_status: bool = False,
) -> Download | None:
    """A whole-document GET straight on the session adapter's connection pool: what
    `open_stream` and `copy_body` do (the body of a 200, or with `any_status` of any answer
    but 404, as `fetch_bytes` reads it), without requests' per-request layers (about 40% of
    the CPU time of a small page; a PyPI-sized sync GETs 600,000). The same gate (the URL
    checked here, every address at connect time by the adapter's pool), retries, timeout,
    headers, TLS settings, size limit and error sentences; the body is written as it
    arrives. None, having sent nothing, where requests would do more than this: a proxy,
    credentials (in the URL, the session or `.netrc`), cookies, a URL it would rewrite; and
    None after a redirect, which `open_stream` then follows hop by hop from the start. A
    cookie an upstream sets here is not kept (nothing PSM fetches depends on one).
    """
    if not (LEAN_GETS and isinstance(session, _Session)) or not _PLAIN_URL.fullmatch(url):
        return None
    if session.auth is not None or session.cookies or session.hooks["response"]:
        return None
    settings_for = session.merge_environment_settings(url, {}, True, None, None)
    if select_proxy(url, settings_for["proxies"]) or session.netrc_applies(url):
        return None
    adapter = session.get_adapter(url)
    if not isinstance(adapter, CheckedAdapter):
        return None
    problem = upstream_url_problem(url)
    if problem:
        raise UpstreamRefused(url, problem)
    # requests' merge of the session's headers with the request's (`merge_setting`), without
    # its generic conversions: the request's win whatever their case, None removes one.
    sent = CaseInsensitiveDict(session.headers)
    sent.update(headers or {})
    for name in [name for name, value in sent.items() if value is None]:
        del sent[name]
    verify, cert = settings_for["verify"], settings_for["cert"]
    try:
        try:
            pool = session.pool_for(adapter, url, verify, cert)
            adapter.cert_verify(pool, url, verify, cert)
            response = pool.urlopen(
                "GET",
                url[url.index("/", url.index("//") + 2) :] if url.count("/") > 2 else "/",
                headers=sent,
                redirect=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
                retries=adapter.max_retries,
                timeout=urllib3.Timeout(
                    connect=settings.PSM_HTTP_TIMEOUT, read=settings.PSM_HTTP_TIMEOUT
                ),
            )
        except UpstreamRefused as exc:  # the connection refused the address
            raise UpstreamRefused(url, exc.reason) from None
    except (OSError, ValueError, urllib3.exceptions.HTTPError) as exc:
        raise upstream_error(url, exc, target=url) from exc
    try:
        status = response.status
        if status in _REDIRECTS and "location" in response.headers:
            return None  # `open_stream` follows it, checking every hop
        if status >= 400 and status != 404:
            raise status_error(url, status)
        result = Download(
            status=status,
            url=url,
            etag=response.headers.get("ETag", ""),
            last_modified=response.headers.get("Last-Modified", ""),
        )
        if status == 304:
            response.drain_conn()  # no body: the connection stays open for the next GET
        if status != 200 and not (any_status and status != 404):
            return result
        declared = response.headers.get("Content-Length", "")
        if not any_status and declared.isdigit() and int(declared) > limit:
            raise _too_large(url, limit)
        total = 0
        try:
            for chunk in response.stream(CHUNK_SIZE, decode_content=True):
                total += len(chunk)
                if total > limit:
                    raise _too_large(url, limit)
                write(chunk)
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise upstream_error(url, exc, target=url, interrupted=True) from exc
        return result
    finally:
        response.close()  # a body read to its end went back to the pool already


class _Target:
    """The URL a pool is chosen by (`HTTPAdapter.build_connection_pool_key_attributes`
    reads only the request's URL)."""

    def __init__(self, url: str) -> None:
        self.url = url


def fetch_bytes(
    session: requests.Session,
    url: str,
    *,
    max_bytes: int,
    headers: dict[str, str] | None = None,
) -> bytes | None:
    """GET a whole document of at most `max_bytes`; None when upstream says 404."""
    chunks: list[bytes] = []
    lean = _lean_get(session, url, headers, max_bytes, chunks.append, any_status=True)
    if lean is not None:
        return None if lean.status == 404 else b"".join(chunks)
    with open_stream(session, url, headers=headers) as response:
        if response.status_code == 404:
            return None
        copy_body(response, url, max_bytes, chunks.append)
        return b"".join(chunks)


def copy_body(response: requests.Response, url: str, limit: int, write) -> int:
    """Hand the body to `write` chunk by chunk, refusing more than `limit` bytes; a connection
    lost midway is an UpstreamError saying so. Returns the bytes copied."""
    total = 0
    try:
        for chunk in response.iter_content(CHUNK_SIZE):
            total += len(chunk)
            if total > limit:
                raise _too_large(url, limit)
            write(chunk)
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        raise upstream_error(url, exc, target=response.url, interrupted=True) from exc
    return total


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


@dataclass(frozen=True)
class Part:
    """What `UpstreamClient.fetch_from` got: 206 and the bytes from the offset asked, or 200
    and the whole document (a server that ignores ranges)."""

    status: int
    body: bytes


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

    def fetch_from(self, url: str, start: int, *, max_bytes: int | None = None) -> Part | None:
        """GET a document from byte `start` on (a Range request, unless 0), within `max_bytes`
        (the index size limit); None when upstream has no such document (404) or none that
        long (416)."""
        # A range of the bytes as stored: no content coding, whose bytes would differ.
        headers = {"Range": f"bytes={start}-", "Accept-Encoding": "identity"} if start else None
        try:
            with open_stream(self.session, url, headers=headers) as response:
                status = response.status_code
                if status == 404:
                    return None
                if status not in (200, 206) or (status == 206 and not start):
                    raise status_error(url, status)
                if status == 206:
                    given = response.headers.get("Content-Range", "")
                    if not given.startswith(f"bytes {start}-"):
                        raise UpstreamError(url, f"upstream sent another range ({given!r})")
                chunks: list[bytes] = []
                copy_body(response, url, max_bytes or self.max_bytes, chunks.append)
                return Part(status, b"".join(chunks))
        except UpstreamError as exc:
            if exc.status == 416:
                return None
            raise

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
        lean = _lean_get(self.session, url, headers, limit, dest.write)
        if lean is not None:
            return lean
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
            copy_body(response, url, limit, dest.write)
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


_shared: tuple[tuple, UpstreamClient] | None = None
_shared_lock = threading.Lock()


def shared_client() -> UpstreamClient:
    """The process's client for requests a package client waits on (`waiting`): its pooled
    connections are reused from one passive first request to the next, so none of them pays
    for a new connection (TCP and TLS handshakes) to an upstream that was asked before.
    Never closed by its users. A process started by fork, or a changed proxy, retry count or
    allowlist (every connection's address was checked against the allowlist of its time),
    gets a new one."""
    global _shared
    key = (
        os.getpid(),
        settings.PSM_HTTP_PROXY,
        settings.PSM_HTTP_RETRIES,
        tuple(settings.PSM_UPSTREAM_ALLOWLIST),
    )
    found = _shared
    if found is not None and found[0] == key:
        return found[1]
    with _shared_lock:
        if _shared is None or _shared[0] != key:
            # The one it replaces is left to its users and the garbage collector.
            client = UpstreamClient(waiting=True)
            # Requests made for different packages and mirrors must not carry each other's
            # state: no cookie an upstream sets is kept (as with a client per request).
            client.session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
            _shared = (key, client)
        return _shared[1]
