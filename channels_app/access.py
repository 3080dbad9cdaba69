"""Who may read a channel through `/api/repo/`: the one access check of package clients.

Credentials, in order: a PSM token in the path (`/api/repo/t/<token>/<channel>/…`), in HTTP Basic
auth (`<token>:x-auth-token`, or the token as the password), in `X-Auth`, or in
`Authorization: Bearer` (a PSM token, or a Keycloak access token when single sign-on is on);
else the session's user. A credential that is given but not valid is a 401 (pip and uv send
credentials again after one) and counts toward the client's lockout (psm.throttle); a channel
the requester may not read is a 404, exactly as if it did not exist.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from django.http import Http404, HttpRequest, HttpResponse

from psm.models import ApiToken
from psm.oidc import user_from_bearer
from psm.permissions import signed_in
from psm.throttle import client_locked_out, credential_refused, lockout_response
from psm.tokens import PREFIX, token_lookup, token_permissions

from .models import Channel
from .permissions import may, perm_for

BASIC_PASSWORD = "x-auth-token"
NOT_FOUND = "No such channel."


class _BadCredentials(Exception):
    pass


def _presented_secret(request: HttpRequest, path_token: str | None) -> str | None:
    """The credential the client sent, if any (a PSM token or a bearer token)."""
    if path_token is not None:
        return path_token
    if request.headers.get("X-Auth"):
        return request.headers["X-Auth"].strip()
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme in ("bearer", "token") and value:
        return value
    if scheme == "basic":
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise _BadCredentials from None
        if password == BASIC_PASSWORD or (user.startswith(PREFIX) and not password):
            return user
        return password  # any user name, the token as the password
    return None


@dataclass(frozen=True)
class Requester:
    """Who a repository request comes from: a token's owner, a bearer's user, or else the
    session's user (read only when a channel is not public: reading the session makes the
    response vary by cookie, so public channels stay cacheable by shared caches)."""

    user: object = None
    token: ApiToken | None = None
    request: HttpRequest | None = None

    def signed_in_user(self):
        """The active user behind the request, else None (an inactive one is anonymous)."""
        user = self.user if self.user is not None else getattr(self.request, "user", None)
        return user if signed_in(user) else None


def repo_requester(request: HttpRequest, path_token: str | None = None):
    """The Requester, or a 401 response when a credential is given but is not valid.

    Checked before the channel is looked up, so a bad token learns nothing about channels.
    """
    try:
        secret = _presented_secret(request, path_token)
        if secret is None:
            return Requester(request=request)
        # Before any lookup: a locked-out client's right guess must fail like the others.
        if client_locked_out(request):
            return lockout_response(request)
        token = token_lookup(secret)
        if token is not None:
            return Requester(token.user, token)
        user = user_from_bearer(secret)
        if user is None:
            raise _BadCredentials
        return Requester(user)
    except _BadCredentials:
        if credential_refused(request):
            return lockout_response(request)
        response = HttpResponse(
            "Invalid, expired or revoked token.\n", status=401, content_type="text/plain"
        )
        response["WWW-Authenticate"] = 'Basic realm="PSM"'
        return response


def can_read(channel: Channel, requester: Requester) -> bool:
    """Public: anyone. Authenticated: any active signed-in user or valid token. Private: users who may
    see it (`may`: a grant to one of their groups, Manage on its category, superuser), and
    through a token only if it grants this channel or its parent (resource token) or that
    reading (scope token)."""
    if channel.visibility == Channel.Visibility.PUBLIC:
        return True
    user, token = requester.signed_in_user(), requester.token
    if user is None:
        return False
    if channel.visibility == Channel.Visibility.AUTHENTICATED:
        return True
    if not may(user, "view", channel):
        return False
    if token is None:
        return True
    if token.kind == ApiToken.Kind.RESOURCE:
        # A token naming a channel reads its subchannels too, as a grant on it does.
        return token.resources.filter(channel__in=channel.covering_ids).exists()
    return perm_for("view", channel) in token_permissions(token)


def check_read(channel: Channel, requester: Requester) -> None:
    """Raise Http404, as for a missing channel, unless the requester may read it."""
    if not can_read(channel, requester):
        raise Http404(NOT_FOUND)
