"""The hot path of serving: a public channel's published index files and stored package files,
answered before Django's full request machinery.

Most requests a mirror gets are anonymous GETs and conditional GETs of index files
(`repodata.json`, project pages, `PACKAGES`) and of stored package files. Through Django's whole
stack each paid for sessions, CSRF, authentication, messages, lockout checks and URL resolving
it does not use, more than the database statement that answers it. `RepoFastPath` wraps the
WSGI application: a request that carries no credential is resolved (`lookup.resolve`, one
prepared statement) and, when it names a published file or an allowed package file of a
public channel (stored, or a passive file's first request: streamed from upstream while it is
stored), answered through the same middleware that shapes every response's headers (security
headers, host validation, NUL rejection: see `FAST_MIDDLEWARE`) and the same response code as
the view (`serving.published_response`, `serving.stored_file_response`,
`serving.first_request_response`). Anything else (a token, a restricted channel, a blocked or
unknown file, a passive file another request is fetching or asked for with Range or HEAD, a
redirect, an error) goes to Django unchanged, with what was resolved left in the environ so it
is not resolved twice.

What was resolved for an index file is kept per process until PostgreSQL notifies a committed
change to channels or published files (`index_cache`); a package file is looked up each time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

from django.conf import settings
from django.core import signals
from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler, WSGIRequest, get_script_name
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.urls import set_script_prefix
from django.utils.module_loading import import_string

from . import lookup
from .formats import get_format
from .index_cache import cache
from .models import Channel
from .serving import first_request_response, published_response, stored_file_response

PREFIX = "/api/repo/"
TOKEN_PREFIX = "/api/repo/t/"
#: The middleware a fast answer goes through, in settings.MIDDLEWARE's order: those that check
#: the request (NUL bytes, the Host header, HTTPS redirects) or add headers to every response.
#: The others (sessions, CSRF, authentication, messages, lockout) change nothing for an
#: anonymous GET of a public file; tests/channels_app/test_fast_path.py compares both answers.
FAST_MIDDLEWARE = (
    "django.middleware.security.SecurityMiddleware",
    "psm.input.RejectNulMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
)
#: Headers that carry a credential: such requests take Django's path (access.repo_requester).
CREDENTIAL_HEADERS = ("HTTP_AUTHORIZATION", "HTTP_X_AUTH")


class _Declined(HttpResponse):
    """The fast view's "not mine": Django answers instead."""


def _fast_view(request: HttpRequest) -> HttpResponseBase:
    path = request.path_info[len(PREFIX) :]
    accept = request.META.get("HTTP_ACCEPT")  # not request.headers: it maps every header
    key = (path, accept)
    hit = cache.get(key)
    if isinstance(hit, _PackagePath):
        return _package_file(request, hit)
    if hit is not None:
        return published_response(request, *hit)
    epoch = cache.epoch()
    try:
        resolved = lookup.resolve(path, accept)
    except Http404:
        return _Declined()  # Django's 404 carries headers of its own (Vary: Cookie)
    request.META[lookup.ENVIRON_KEY] = (path, accept, resolved)
    channel, negotiated = resolved.channel, resolved.negotiated
    if channel.visibility != Channel.Visibility.PUBLIC:
        return _Declined()
    if resolved.published is not None:
        if negotiated is not None and (negotiated.redirect or not negotiated.path):
            return _Declined()
        cache.store(key, (resolved.published, negotiated), epoch)
        return published_response(request, resolved.published, negotiated)
    if negotiated is not None or channel.published_at is None:
        return _Declined()
    located = get_format(channel.kind).locate(resolved.inner)
    if located is None:
        return _Declined()
    # Where the package is depends on channels and published files only, as an index file's
    # answer does; whether it is stored and allowed is asked each time.
    package_path = _PackagePath(channel.pk, channel.kind, *located)
    cache.store(key, package_path, epoch)
    return _package_file(request, package_path)


class _PackagePath(NamedTuple):
    """A public channel's package file path, as resolved (and cached)."""

    channel_id: int
    kind: str
    unit: str
    filename: str


def _package_file(request: HttpRequest, where: _PackagePath) -> HttpResponseBase:
    """A package file whose bytes are stored and that the channel lets out, or a passive
    file's first request streamed from upstream (GET without Range); anything else (blocked,
    awaiting a decision, being fetched by another request, beside a package, unknown) is
    Django's."""
    found = lookup.package_file(where.channel_id, where.unit, where.filename)
    if found is None or found.package.excluded_reason:
        return _Declined()
    package = found.package
    if found.artifact is not None:
        return stored_file_response(request, found.artifact, where.filename, package.added_at)
    if not package.on_demand or request.method != "GET" or "HTTP_RANGE" in request.META:
        return _Declined()
    streamed = first_request_response(package, get_format(where.kind), where.filename)
    return _Declined() if streamed is None else streamed


def _chain() -> Callable[[HttpRequest], HttpResponseBase]:
    """The fast view inside FAST_MIDDLEWARE, built as Django's handler builds its chain."""
    handler = convert_exception_to_response(_fast_view)
    for path in reversed([m for m in settings.MIDDLEWARE if m in FAST_MIDDLEWARE]):
        handler = convert_exception_to_response(import_string(path)(handler))
    return handler


def _eligible(environ: dict) -> bool:
    path = environ.get("PATH_INFO", "")
    return (
        environ.get("REQUEST_METHOD") in ("GET", "HEAD")
        and path.startswith(PREFIX)
        and not path.startswith(TOKEN_PREFIX)
        and not any(header in environ for header in CREDENTIAL_HEADERS)
    )


class RepoFastPath:
    """WSGI middleware: public index files straight away, everything else to `application`."""

    def __init__(self, application: WSGIHandler) -> None:
        self.application = application
        self.enabled = settings.PSM_SERVING_FAST_PATH
        self._handler = _chain()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if not (self.enabled and _eligible(environ)):
            return self.application(environ, start_response)
        # What Django's WSGIHandler does around its middleware, in the same order.
        set_script_prefix(get_script_name(environ))
        signals.request_started.send(sender=self.__class__, environ=environ)
        request = WSGIRequest(environ)
        response = self._handler(request)
        if isinstance(response, _Declined):
            request.close()
            return self.application(environ, start_response)
        response._handler_class = self.__class__
        response._resource_closers.append(request.close)
        headers = [
            *response.items(),
            *(("Set-Cookie", c.output(header="")) for c in response.cookies.values()),
        ]
        start_response(f"{response.status_code} {response.reason_phrase}", headers)
        if getattr(response, "file_to_stream", None) is not None and environ.get(
            "wsgi.file_wrapper"
        ):
            # sendfile(2) where the server can; closing the file closes the response.
            response.file_to_stream.close = response.close
            return environ["wsgi.file_wrapper"](response.file_to_stream, response.block_size)
        if response.streaming:
            return response
        # The whole body is in hand: a list is what servers send fastest (in one write, for
        # some), and nothing is left for the response to do (close() sends request_finished).
        body = response.content
        response.close()
        return [body] if body else []
