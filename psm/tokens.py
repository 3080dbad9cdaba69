"""PSM API tokens: created by a user, shown once, stored as a sha256, scoped, expiring, revocable.

A token acts as its owner and never beyond the owner's permissions: a scope token narrows the
API to its `category:level` scopes; a resource token opens the channels it names to package
clients and nothing on the API.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.contrib.auth import authenticate
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone
from rest_framework import authentication, exceptions

from . import throttle
from .audit import audit_record
from .models import ApiToken, TokenResource
from .permissions import signed_in
from .roles import CATEGORIES, LEVELS, SUPERUSER, parse_grant

PREFIX = "psm_"
LAST_USED_EVERY = timedelta(minutes=1)  # write last_used_at at most this often per token


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def token_create(
    *,
    user,
    name: str,
    kind: str = ApiToken.Kind.RESOURCE,
    scopes: Iterable[str] = (),
    resources: Iterable[tuple] = (),
    expires_at: datetime | None = None,
    description: str = "",
) -> tuple[ApiToken, str]:
    """Create a token for `user`; return it with its secret (the only time it is known).

    `resources` are (channel, level) pairs for a resource token; `scopes` are
    `category:level` strings for a scope token; a token is one kind or the other.
    """
    token = ApiToken(
        user=user,
        name=name,
        kind=kind,
        scopes=list(scopes),
        expires_at=expires_at,
        description=description,
    )
    return token, token_issue(token=token, resources=resources)


def token_check(*, kind: str, scopes: Iterable[str], resources: Iterable) -> None:
    """Raise ValueError unless the token is one kind, with valid scopes."""
    scopes, resources = list(scopes), list(resources)
    if kind == ApiToken.Kind.RESOURCE and scopes or kind == ApiToken.Kind.SCOPE and resources:
        raise ValueError("A token grants either channels (resource) or scopes, never both.")
    for scope in scopes:
        if parse_grant(scope) == SUPERUSER:
            raise ValueError("A token cannot grant superuser.")


def token_issue(*, token: ApiToken, resources: Iterable[tuple] = ()) -> str:
    """Save a new (unsaved) token with a fresh secret and its channels; return the secret.

    Raise PermissionDenied for a deactivated owner, whatever interface asks."""
    if not signed_in(token.user):
        raise PermissionDenied("A deactivated account cannot have tokens.")
    resources = list(resources)
    token_check(kind=token.kind, scopes=token.scopes, resources=resources)
    secret = PREFIX + secrets.token_urlsafe(32)
    token.digest, token.hint = _digest(secret), secret[:8]
    with transaction.atomic():
        token.save()
        TokenResource.objects.bulk_create(
            TokenResource(token=token, channel=channel, level=level) for channel, level in resources
        )
        audit_record(actor=token.user, action="token.create", target=token, kind=token.kind)
    return secret


def token_revoke(*, token: ApiToken, user) -> bool:
    """Revoke the token at once; False if it already was."""
    changed = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    if changed:
        token.refresh_from_db(fields=["revoked_at"])
        audit_record(actor=user, action="token.revoke", target=token)
    return bool(changed)


def token_lookup(secret: str) -> ApiToken | None:
    """The valid (unrevoked, unexpired) token with this secret, of an active user."""
    if not secret.startswith(PREFIX):
        return None
    token = ApiToken.objects.select_related("user").filter(digest=_digest(secret)).first()
    if token is None or not token.is_valid or not signed_in(token.user):
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_EVERY:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


def token_levels(token: ApiToken) -> dict[str, str]:
    """The highest level per category a scope token grants (empty for resource tokens)."""
    levels: dict[str, str] = {}
    if token.kind != ApiToken.Kind.SCOPE:
        return levels
    for scope in token.scopes:
        parsed = parse_grant(scope)
        for category, level in parsed if parsed != SUPERUSER else []:
            if category not in levels or LEVELS.index(level) > LEVELS.index(levels[category]):
                levels[category] = level
    return levels


def token_permissions(token: ApiToken) -> set[str]:
    """The Django permissions a token may use on the API (its owner must hold them too)."""
    return {
        perm
        for category, level in token_levels(token).items()
        for perm in CATEGORIES[category].perms(level)
    }


def token_allows(user, perm: str) -> bool:
    """Whether `perm` is within the scope token `user` acts through (always, without one): what
    the user holds besides Django permissions, such as channel grants, is narrowed by this."""
    token = getattr(user, "psm_token", None)
    return token is None or perm in token_permissions(token)


def user_limited_to(user, token: ApiToken):
    """The owner, with `has_perm` narrowed to what the token allows (for this request only)."""
    allowed = token_permissions(token)
    owner_has_perm = user.has_perm

    def has_perm(perm: str, obj=None) -> bool:
        return perm in allowed and owner_has_perm(perm, obj)

    user.has_perm = has_perm
    user.psm_token = token
    return user


class ApiTokenAuthentication(authentication.BaseAuthentication):
    """DRF: `Authorization: Bearer psm_…` (or `Token psm_…`)."""

    keywords = (b"bearer", b"token")

    def authenticate(self, request):
        parts = authentication.get_authorization_header(request).split()
        if not parts or parts[0].lower() not in self.keywords:
            return None
        # Before any lookup: a locked-out client's right guess must fail like the others.
        if throttle.client_locked_out(request):
            raise throttle.Throttled(request)
        if len(parts) != 2:
            self._refused(request)
            raise exceptions.AuthenticationFailed("Give one token after the keyword.")
        secret = parts[1].decode(errors="replace")
        if parts[0].lower() == b"bearer" and not secret.startswith(PREFIX):
            return None  # a single sign-on access token: psm.oidc.OIDCBearerAuthentication
        token = token_lookup(secret)
        if token is None:
            self._refused(request)
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked token.")
        return user_limited_to(token.user, token), token

    def _refused(self, request) -> None:
        if throttle.credential_refused(request):
            raise throttle.Throttled(request)

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'


class PasswordAuthentication(authentication.BasicAuthentication):
    """DRF: HTTP Basic with a local account's password, on `POST /api/tokens/` only — how a
    script or a person at a terminal gets a token (`curl -X POST -u alice …/api/tokens/`).

    The password goes through Django's backends after the lockout check (the first backend,
    `throttle.LockoutBackend`): a wrong one counts toward the lockout per user name and client
    address, as on the admin login, and a locked-out client gets 429 even with the right one.
    Deactivated accounts are refused. Single sign-on accounts have no usable password: they
    create tokens in the admin (or with a Keycloak bearer token)."""

    www_authenticate_realm = "api"

    def authenticate(self, request):
        if request.method != "POST":
            return None  # never a way to read or revoke tokens, nor to use the rest of the API
        return super().authenticate(request)

    def authenticate_credentials(self, userid, password, request=None):
        # axes marks and reads Django's request, not DRF's wrapper.
        http_request = throttle.http_request(request)
        user = authenticate(http_request, username=userid, password=password)
        if getattr(http_request, "axes_locked_out", False):
            raise throttle.Throttled(request)
        if user is None or not signed_in(user):
            raise exceptions.AuthenticationFailed("Invalid user name or password.")
        return user, None
