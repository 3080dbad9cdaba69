"""Serve channels to package clients under `/api/repo/<channel>[/<subchannel>]/<path>`.

Index files are the published ones (rendered once at publish, never per request). Package files
come from storage; a passive mirror's file is fetched from upstream on its first request
(`passive`), and so is a file upstream serves beside a package (PEP 658 metadata). A file
the policy keeps out is answered 403 with the reason.
"""

from __future__ import annotations

import logging
from datetime import datetime

import orjson
from django.conf import settings
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseNotFound,
    HttpResponsePermanentRedirect,
)
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_safe

from psm.http import UpstreamError

from . import access, lookup, storage
from .formats import RepositoryFormat, content_type, get_format
from .formats.base import IndexRequest
from .http_files import IMMUTABLE, file_response
from .models import PENDING_DECISION, Artifact, Channel, Package, PublishedFile
from .passive import (
    FETCH_ERRORS,
    fetch_failure_reason,
    fetch_on_demand,
    fetch_sidecar,
    stream_on_demand,
)
from .publishing import channel_publish

logger = logging.getLogger(__name__)


@require_safe
def repo_file(request: HttpRequest, path: str, token: str | None = None) -> HttpResponseBase:
    """Any file of a channel: a published index file or a package file.

    `token`: from the `/api/repo/t/<token>/…` form of the URL. Who may read is decided by
    `access` before anything else (passive fetches included).
    """
    requester = access.repo_requester(request, token)
    if isinstance(requester, HttpResponse):
        return requester
    try:
        resolved = lookup.resolved_for(request, path) or lookup.resolve(
            path, request.headers.get("Accept")
        )
        channel = resolved.channel
        access.check_read(channel, requester)
        response = _channel_file(request, resolved, token)
    except Http404 as exc:
        # Every 404 varies by cookie, as a restricted channel's does (its check reads the
        # session): a missing channel and a hidden one answer alike, headers included.
        response = HttpResponseNotFound(f"{exc}\n", content_type="text/plain")
        patch_vary_headers(response, ("Cookie",))
        return response
    if channel.visibility != Channel.Visibility.PUBLIC and response.has_header("Cache-Control"):
        # Never let a shared cache hand a restricted channel's files to someone else.
        response["Cache-Control"] = response["Cache-Control"].replace("public", "private")
    return response


def _channel_file(
    request: HttpRequest, resolved: lookup.Resolved, token: str | None
) -> HttpResponseBase:
    channel, inner, negotiated = resolved.channel, resolved.inner, resolved.negotiated
    if negotiated is not None:
        if negotiated.redirect:
            base = f"/api/repo/t/{token}" if token else "/api/repo"
            return HttpResponsePermanentRedirect(f"{base}/{channel.path}/{negotiated.redirect}")
        if not negotiated.path:
            offered = ", ".join(negotiated.content_types)
            return HttpResponse(
                f"None of the accepted content types is available; offered: {offered}\n",
                status=406,
                content_type="text/plain",
            )
        inner = negotiated.path
    published = resolved.published
    if published is None and channel.published_at is None and not channel.frozen:
        # A channel nothing was mirrored into yet still answers with (empty) index files.
        channel_publish(channel=channel)
        found = (
            PublishedFile.objects.filter(channel=channel, path=inner)
            .select_related("artifact")
            .first()
        )
        if found is not None:
            published = lookup.Published(found.artifact, found.content_type, found.published_at)
    if published is not None:
        return published_response(request, published, negotiated)
    return _package_file(request, channel, inner)


def published_response(
    request: HttpRequest, published: lookup.Published, negotiated: IndexRequest | None
) -> HttpResponseBase:
    """A published index file (ETag, 304, HEAD, Range), varying by Accept when negotiated."""
    artifact = published.artifact
    response = file_response(
        request,
        lambda: storage.open_artifact(artifact),
        size=artifact.size,
        etag=artifact.sha256,
        content_type=published.content_type,
        last_modified=published.published_at,
        cache_control=f"public, max-age={settings.PSM_INDEX_MAX_AGE}",
    )
    if negotiated is not None:
        response["Vary"] = "Accept"
    return response


def _package_file(request: HttpRequest, channel: Channel, inner: str) -> HttpResponseBase:
    fmt = get_format(channel.kind)
    located = fmt.locate(inner)
    if located is None:
        sidecar = fmt.locate_sidecar(inner)
        if sidecar is not None:
            return _sidecar_file(request, channel, fmt, *sidecar)
        raise Http404("No such file.")
    unit, filename = located
    package = (
        Package.objects.filter(channel=channel, unit=unit, filename=filename)
        .select_related("artifact")
        .first()
    )
    if package is not None and (blocked := _blocked(package)):
        return blocked
    if package is None or not package.is_servable:
        raise Http404("No such file in this channel.")
    if package.artifact is None:
        if request.method == "HEAD":
            # Promise nothing we have not verified; clients only HEAD index files.
            response = HttpResponse(status=200, content_type=content_type(filename))
            if package.size is not None:
                response["Content-Length"] = str(package.size)
            return response
        if "Range" not in request.headers:
            streamed = first_request_response(package, fmt, filename)
            if streamed is not None:
                return streamed
        try:
            fetch_on_demand(package, every_digest=fmt.capabilities.checks_every_digest)
        except FETCH_ERRORS as exc:
            return _fetch_failure(package, exc)
    return stored_file_response(request, package.artifact, filename, package.added_at)


def first_request_response(
    package: Package, fmt: RepositoryFormat, filename: str
) -> HttpResponseBase | None:
    """A passive package file streamed from upstream while it is stored (`stream_on_demand`),
    or the 502/504 saying why fetching it failed before its first byte; None when it is
    stored already, or another request is fetching it and none of it is on disk yet."""
    try:
        return stream_on_demand(package, fmt, filename)
    except FETCH_ERRORS as exc:
        return _fetch_failure(package, exc)


def stored_file_response(
    request: HttpRequest, artifact: Artifact, filename: str, added_at: datetime
) -> HttpResponseBase:
    """A package file stored here: immutable under its URL (ETag, 304, HEAD, Range)."""
    return file_response(
        request,
        lambda: storage.open_artifact(artifact),
        size=artifact.size,
        etag=artifact.sha256,
        content_type=content_type(filename),
        last_modified=added_at,
        cache_control=IMMUTABLE,
    )


def _sidecar_file(request, channel, fmt, unit: str, filename: str, suffix: str):
    """A file upstream serves beside a package (PEP 658 metadata): fetched once, verified
    against the digest in the package's record, then served from storage."""
    package = (
        Package.objects.filter(channel=channel, unit=unit, filename=filename)
        .select_related("sidecar")
        .first()
    )
    if package is not None and (blocked := _blocked(package)):
        return blocked
    if package is None or not package.is_servable:
        raise Http404("No such file in this channel.")
    if package.sidecar_id is not None:
        artifact = package.sidecar
        return file_response(
            request,
            lambda: storage.open_artifact(artifact),
            size=artifact.size,
            etag=artifact.sha256,
            content_type="application/octet-stream",
            cache_control=IMMUTABLE,
        )
    sha256 = fmt.sidecar_digest(orjson.loads(package.record or "{}"))
    if not sha256:
        raise Http404("Upstream offers no such file for this package.")
    try:
        artifact = fetch_sidecar(package.upstream_url + suffix, sha256)
    except FETCH_ERRORS as exc:
        # Not noted on the package: its `error` is about the package file itself.
        logger.warning("fetch of the file beside %s failed: %s", package, exc)
        return _fetch_failure(package, exc)
    return file_response(
        request,
        lambda: storage.open_artifact(artifact),
        size=artifact.size,
        etag=artifact.sha256,
        content_type="application/octet-stream",
        cache_control=IMMUTABLE,
    )


def _blocked(package: Package) -> HttpResponse | None:
    """403 with the reason for a file the policy keeps out, so that pip, conda and R show
    the user why; 404 saying so for one a run has not decided yet; None for any other file. A
    file gone from the channel (`removed`) is no longer known here: it stays a 404."""
    if not package.excluded_reason or package.removed:
        return None
    if package.excluded_reason == PENDING_DECISION:
        return HttpResponseNotFound(
            f"Not in this channel yet: {PENDING_DECISION}\n", content_type="text/plain"
        )
    return HttpResponse(
        f"Blocked by policy: {package.excluded_reason}\n",
        status=403,
        content_type="text/plain; charset=utf-8",
    )


def _fetch_failure(package: Package, exc: Exception) -> HttpResponse:
    """The answer when a package file could not be fetched: 502 (504 when upstream timed out)
    with the reason."""
    reason = fetch_failure_reason(package, exc)
    timed_out = isinstance(exc, UpstreamError) and exc.timed_out
    return HttpResponse(
        f"PSM could not fetch this package from its source: {reason}\n",
        status=504 if timed_out else 502,
        content_type="text/plain",
    )
