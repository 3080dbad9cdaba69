"""The one HTTP client PSM uses to talk to upstream repositories.

Everything that leaves the server goes through here, so timeouts, retries, the proxy, the user
agent, the upstream host allowlist and size limits are decided in one place.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

# Redaction lives in psm.redaction; imported here for UpstreamError and older imports.
from .redaction import _secrets, redact, scrub  # noqa: F401

USER_AGENT = "psm/0.1 (+package security manager)"
CHUNK_SIZE = 1024 * 1024
MAX_REDIRECTS = 5


class UpstreamError(Exception):
    """An upstream request failed; the message says which URL and why."""

    def __init__(
        self, url: str, reason: str, *, status: int | None = None, transient: bool = False
    ) -> None:
        # The reason may quote the raw URL (requests' messages do); hide its secrets there too.
        for secret in _secrets(url):
            reason = reason.replace(secret, "***")
        self.url = url
        self.reason = reason
        self.status = status
        # Worth retrying: the connection failed or was cut, or upstream was briefly unavailable.
        self.transient = transient or status in (429, 500, 502, 503, 504)
        super().__init__(f"{redact(url)}: {reason}")


def is_host_allowed(url: str, allowlist: list[str] | None = None) -> bool:
    """Whether the URL's host is on the upstream allowlist (a host or any of its subdomains)."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    entries = settings.PSM_UPSTREAM_ALLOWLIST if allowlist is None else allowlist
    for entry in entries:
        entry = entry.lower().strip().lstrip(".")
        if entry == "*" or host == entry or host.endswith("." + entry):
            return True
    return False


def new_session(*, proxy: str = "") -> requests.Session:
    """Return a session with PSM's user agent, retries on transient errors and the proxy."""
    session = requests.Session()
    retry = Retry(
        total=settings.PSM_HTTP_RETRIES,
        backoff_factor=0.5,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=("GET", "HEAD"),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    adapter = HTTPAdapter(max_retries=retry, pool_maxsize=16)
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
    """Open a streamed GET, refusing hosts off the allowlist and turning failures into UpstreamError.

    The caller reads `response.iter_content()`; a 404 is returned (not raised) so callers can
    treat a missing optional file as absent.
    """
    response = None
    target = url
    try:
        # Redirects are followed by hand so that every hop is checked against the allowlist.
        for _hop in range(MAX_REDIRECTS + 1):
            if not is_host_allowed(target):
                raise UpstreamError(
                    target, "host is not on the upstream allowlist (PSM_UPSTREAM_ALLOWLIST)"
                )
            response = session.get(
                target,
                headers=headers,
                stream=True,
                timeout=settings.PSM_HTTP_TIMEOUT,
                allow_redirects=False,
            )
            if not response.is_redirect:
                break
            target = urljoin(target, response.headers["Location"])
            response.close()
        else:
            raise UpstreamError(url, f"more than {MAX_REDIRECTS} redirects")
    except requests.RequestException as exc:
        raise UpstreamError(
            url, f"request failed: {exc.__class__.__name__}: {exc}", transient=True
        ) from exc
    try:
        if response.status_code >= 400 and response.status_code != 404:
            raise UpstreamError(url, f"HTTP {response.status_code}", status=response.status_code)
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
                    raise UpstreamError(url, f"response is larger than the {max_bytes} byte limit")
                chunks.append(chunk)
        except requests.RequestException as exc:
            raise UpstreamError(url, f"download interrupted: {exc}") from exc
        return b"".join(chunks)


@dataclass(frozen=True)
class Download:
    """What a streamed download ended with: 200 (body written), 304 or 404 (nothing written)."""

    status: int
    url: str
    etag: str = ""
    last_modified: str = ""


class UpstreamClient:
    """A session plus the limits that apply to one mirror run; handed to format modules."""

    def __init__(self, *, proxy: str = "", max_bytes: int | None = None) -> None:
        self.session = new_session(proxy=proxy)
        self.max_bytes = max_bytes or settings.PSM_MAX_INDEX_BYTES

    def fetch(self, url: str, *, headers: dict[str, str] | None = None) -> bytes | None:
        """GET a document within the index size limit; None when upstream says 404."""
        return fetch_bytes(self.session, url, max_bytes=self.max_bytes, headers=headers)

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
                raise UpstreamError(url, f"response is larger than the {limit} byte limit")
            total = 0
            try:
                for chunk in response.iter_content(CHUNK_SIZE):
                    total += len(chunk)
                    if total > limit:
                        raise UpstreamError(url, f"response is larger than the {limit} byte limit")
                    dest.write(chunk)
            except requests.RequestException as exc:
                raise UpstreamError(url, f"download interrupted: {exc}", transient=True) from exc
            return result

    def close(self) -> None:
        self.session.close()
