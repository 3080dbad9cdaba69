"""Login and token throttling over django-axes: a client whose credentials are refused too often
is locked out for a cool-off (PSM_LOGIN_FAILURE_LIMIT, PSM_LOGIN_COOLOFF_MINUTES).

The admin login form counts failures per (user name, client address), through axes' backend and
middleware. Refused tokens on the API and the package routes count per client address, under one
pseudo user name; while an address is locked out it may present no credential at all, valid or
not, else the right guess among many would still get through.
"""

from __future__ import annotations

import ipaddress
import math
from datetime import timedelta

from axes.backends import AxesStandaloneBackend
from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_cool_off, get_credentials
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.signals import user_login_failed
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from rest_framework import exceptions

from .redaction import scrub

# Token failures share this user name: not a valid Django user name, so never a real account's.
TOKEN_USERNAME = "(token)"
LOCKOUT_TEMPLATE = "admin/psm/lockout.html"


class LockoutBackend(AxesStandaloneBackend):
    """axes' lockout check, first among the authentication backends. A call without a request
    (the test client's `login()`, a script) has no client to lock: the next backends decide."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def client_ip(request: HttpRequest) -> str | None:
    """AXES_CLIENT_IP_CALLABLE: the connecting address or, behind PSM_TRUSTED_PROXY_COUNT proxies,
    the address the outermost one saw: X-Forwarded-For read from the right, the end the proxies
    wrote, so whatever a client writes on the left is never taken."""
    remote = request.META.get("REMOTE_ADDR") or None
    count = settings.PSM_TRUSTED_PROXY_COUNT
    if not count:
        return remote
    hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    hops = [h for h in hops if h]
    if len(hops) < count:
        return remote  # not through the proxies (or misconfigured): the connecting address
    try:
        return str(ipaddress.ip_address(hops[-count]))
    except ValueError:
        return remote


def _cool_off_seconds(request: HttpRequest) -> int:
    return int((get_cool_off(request) or timedelta(0)).total_seconds())


def lockout_message(request: HttpRequest) -> str:
    minutes = math.ceil(_cool_off_seconds(request) / 60)
    return (
        "Too many failed sign-ins or refused tokens from this address: "
        f"try again in {minutes} minutes."
    )


def lockout_response(request: HttpRequest, original_response=None, credentials=None):
    """AXES_LOCKOUT_CALLABLE: 429 with Retry-After; package clients get plain text, the API
    JSON, the admin a page."""
    path, message = request.path_info, lockout_message(request)
    if path.startswith("/api/repo/"):
        response = HttpResponse(message + "\n", status=429, content_type="text/plain")
    elif path.startswith("/api/"):
        response = JsonResponse({"detail": message}, status=429)
    else:
        context = {**admin.site.each_context(request), "title": "Locked out", "message": message}
        response = render(request, LOCKOUT_TEMPLATE, context, status=429)
    response["Retry-After"] = str(_cool_off_seconds(request))
    return response


class Throttled(exceptions.Throttled):
    """The API's answer to a locked-out client: 429 with Retry-After."""

    def __init__(self, request) -> None:
        super().__init__(detail=lockout_message(request))
        self.wait = _cool_off_seconds(request)  # Retry-After, without DRF's second sentence


def http_request(request) -> HttpRequest:
    """The Django request under DRF's: axes marks it, and the middleware reads the marks."""
    return getattr(request, "_request", request)


def _seen_key(address: str | None) -> str:
    return f"psm-refused:{address}"


def client_locked_out(request) -> bool:
    """Whether this client may present no token now. Costs no query unless this process saw a
    credential refused from the address within the cool-off."""
    if not settings.AXES_ENABLED:
        return False
    request = http_request(request)
    if cache.get(_seen_key(client_ip(request))) is None:
        return False
    return not AxesProxyHandler.is_allowed(request, get_credentials(TOKEN_USERNAME))


def credential_refused(request) -> bool:
    """Count a refused token from this client (Django's `user_login_failed`, which axes records);
    return whether the client is now locked out."""
    if not settings.AXES_ENABLED:
        return False
    request = http_request(request)
    AxesProxyHandler.update_request(request)
    # axes keeps and logs the path: never a token given in it.
    request.axes_path_info = scrub(request.axes_path_info)
    user_login_failed.send(
        sender=__name__, credentials=get_credentials(TOKEN_USERNAME), request=request
    )
    cache.set(_seen_key(request.axes_ip_address), True, _cool_off_seconds(request) or None)
    return bool(request.axes_locked_out)
