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
So is the whole answer to a request for a small index file: until that notification, a request
with the same values of everything the answer can depend on (`ANSWER_KEY`) gets the same
status, headers and body without any of the above (most of a mirror's requests are the same few
index files and their 304s, asked again and again).
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
#: The request values an index file's answer can depend on: the view's (path, Accept, method,
#: If-None-Match) and those FAST_MIDDLEWARE and Django's request read (the host it validates, the
#: scheme, the query string it checks for NUL). Equal values give an equal answer until the next
#: notification, so a kept answer is replayed (`index_cache.IndexCache.answer`).
ANSWER_KEY = (
    "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "HTTP_ACCEPT",
    "HTTP_IF_NONE_MATCH", "HTTP_HOST", "SERVER_NAME", "SERVER_PORT", "wsgi.url_scheme",
    "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PORT",
)  # fmt: skip
#: Requests carrying any of these are answered afresh: a part of the file, conditions on dates,
#: a cookie or a body checked for NUL, or a script name Django takes from elsewhere.
NOT_REPLAYED = (
    "HTTP_RANGE", "HTTP_IF_RANGE", "HTTP_IF_MATCH", "HTTP_IF_MODIFIED_SINCE",
    "HTTP_IF_UNMODIFIED_SINCE", "HTTP_COOKIE", "SCRIPT_URL", "REDIRECT_URL",
)  # fmt: skip


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
        return _replayable(published_response(request, *hit))
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
        return _replayable(published_response(request, resolved.published, negotiated))
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


def _replayable(response: HttpResponseBase) -> HttpResponseBase:
    """Mark an index file's answer: it depends on nothing but the request's ANSWER_KEY values
    and what a notification announces. A package file's does not (its row changes silently)."""
    response.psm_replayable = True
    return response


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


def _answer_key(environ: dict, names: tuple[str, ...]) -> tuple | None:
    """What a kept answer to this request is found by; None: not to be replayed."""
    # An empty header is as good as none (Django reads "" as absent for each of these).
    if any(environ.get(name) for name in NOT_REPLAYED) or environ.get("CONTENT_LENGTH") not in (
        None, "", "0",
    ):  # fmt: skip
        return None
    return tuple([environ.get(name) for name in names])


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
        # A refused user agent's answer depends on the User-Agent header too.
        extra = ("HTTP_USER_AGENT",) if settings.DISALLOWED_USER_AGENTS else ()
        self._answer_names = (*ANSWER_KEY, *extra)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if not (self.enabled and _eligible(environ)):
            return self.application(environ, start_response)
        answer_key = _answer_key(environ, self._answer_names)
        if answer_key is not None:
            replayed = cache.answer(answer_key)
            if replayed is not None:
                status, headers, body = replayed
                start_response(status, list(headers))
                return [body] if body else []
        epoch = cache.epoch()
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
        status = f"{response.status_code} {response.reason_phrase}"
        kept = (status, tuple(headers))  # before a server can add to the list
        start_response(status, headers)
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
        if answer_key is not None and getattr(response, "psm_replayable", False):
            if not response.cookies:
                cache.store_answer(answer_key, (*kept, body), epoch)
        return [body] if body else []
