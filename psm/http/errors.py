"""What an upstream request ended with when it failed, in one sentence.

`UpstreamError` says which URL and why; `upstream_error` finds the root cause in what requests
or urllib3 raised (refused, timed out, TLS, cut short...), `status_error` words an HTTP status.
The exception behind it, with its technical detail, goes to the log only.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
from django.conf import settings
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from ..redaction import _secrets, redact

logger = logging.getLogger(__name__)


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
