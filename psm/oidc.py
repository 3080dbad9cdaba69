"""Keycloak single sign-on through mozilla-django-oidc: users matched on `sub`, roles → groups.

At every login (and every API request with a Keycloak bearer token) the user's profile is
updated from the claims and its PSM groups are recomputed from the roles in the token, so a
role removed in Keycloak removes the access at the next login. Local accounts (no `sub`) are
never touched: the local admin login stays available for break-glass. An account deactivated in
PSM is refused whatever the provider says: no sign-on, no bearer token, and its sessions end.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from urllib.parse import urlencode

import jwt
import requests
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest, HttpResponse
from django.shortcuts import resolve_url
from django.utils import timezone
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.contrib.drf import OIDCAuthentication, get_oidc_backend
from mozilla_django_oidc.views import OIDCLogoutView
from rest_framework import exceptions

from . import throttle
from .models import OidcIdentity
from .permissions import signed_in
from .roles import user_sync_roles

logger = logging.getLogger(__name__)
JWKS_MAX_AGE = 300  # seconds; a key missing from the cached set forces a refetch
_jwks_cache: dict[str, tuple[float, dict]] = {}
_jwks_lock = threading.Lock()


def roles_from_claims(claims: dict) -> set[str]:
    """Role and group names found at the configured claim paths (PSM_OIDC_ROLE_CLAIMS).

    Paths are dotted; `{client}` stands for OIDC_RP_CLIENT_ID, so the default
    `resource_access.{client}.roles` reads this client's roles. Group paths such as
    `/psm/admins` also count without their leading slash.
    """
    client = getattr(settings, "OIDC_RP_CLIENT_ID", "")
    found: set[str] = set()
    for path in settings.PSM_OIDC_ROLE_CLAIMS:
        value = claims
        for key in path.split("."):
            key = client if key == "{client}" else key
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            for item in value:
                if isinstance(item, str) and item:
                    found.add(item)
                    if item.startswith("/"):
                        found.add(item.lstrip("/"))
    return found


def _audiences(payload: dict) -> set[str]:
    aud = payload.get("aud") or []
    return {aud} if isinstance(aud, str) else set(aud)


class PSMOIDCBackend(OIDCAuthenticationBackend):
    """mozilla-django-oidc's backend, matching on `sub` and mapping roles to PSM groups."""

    def verify_claims(self, claims: dict) -> bool:
        return bool(claims.get("sub"))

    def filter_users_by_claims(self, claims: dict):
        return self.UserModel.objects.filter(oidc_identity__subject=claims.get("sub"))

    def describe_user_by_claims(self, claims: dict) -> str:
        return f"sub {claims.get('sub')}"

    def create_user(self, claims: dict):
        user = self.UserModel.objects.create_user(self._free_username(claims, None))
        OidcIdentity.objects.create(user=user, subject=claims["sub"])
        return self.update_user(user, claims)

    def get_user(self, user_id):
        """The session's user, None once deactivated (as Django's ModelBackend; mozilla's
        backend returns inactive users too), so a session ends at the next request."""
        user = super().get_user(user_id)
        return user if user is not None and self.user_can_authenticate(user) else None

    def update_user(self, user, claims: dict):
        """Refresh the profile from the claims and the groups from the roles. An account
        deactivated in PSM is refused here, the one step every sign-on and bearer token of
        an existing account goes through, before anything of it is changed."""
        if not self.user_can_authenticate(user):
            raise SuspiciousOperation(f"Account {user.username!r} is deactivated in PSM.")
        fields = {
            "email": claims.get("email") or user.email,
            "first_name": (claims.get("given_name") or user.first_name)[:150],
            "last_name": (claims.get("family_name") or user.last_name)[:150],
            "username": self._free_username(claims, user),
        }
        changed = [name for name, value in fields.items() if getattr(user, name) != value]
        for name in changed:
            setattr(user, name, fields[name])
        if changed:
            user.save(update_fields=changed)
        roles = sorted(roles_from_claims(claims))
        user_sync_roles(user=user, roles=roles)
        # Bearer tokens come through here on every API request: write only what changed.
        now = timezone.now()
        OidcIdentity.objects.filter(user=user).exclude(
            roles=roles, last_login_at__gt=now - timedelta(minutes=1)
        ).update(roles=roles, last_login_at=now)
        return user

    def _free_username(self, claims: dict, user) -> str:
        """preferred_username, unless another account has it (never take over a local one)."""
        wanted = (claims.get("preferred_username") or claims.get("email") or claims["sub"])[:150]
        taken = self.UserModel.objects.filter(username=wanted)
        if user is not None:
            taken = taken.exclude(pk=user.pk)
        if not taken.exists():
            return wanted
        if user is not None:
            return user.username
        return f"{wanted[:140]}-{claims['sub'][:8]}"

    # --- tokens ---------------------------------------------------------------------------

    def verify_token(self, token: str, **kwargs) -> dict:
        """Signature (JWKS), expiry and not-before of a JWT; a bad token is a refusal."""
        try:
            payload = super().verify_token(token, **kwargs)
        except (jwt.InvalidTokenError, ValueError, KeyError) as exc:
            raise SuspiciousOperation(f"Token refused: {exc}") from None
        issuer = settings.PSM_OIDC_ISSUER
        if issuer and payload.get("iss") != issuer:
            raise SuspiciousOperation(f"Token refused: issuer {payload.get('iss')!r}")
        return payload

    def retrieve_matching_jwk(self, token: str):
        """The provider's key for this token, from a JWKS cached for a few minutes."""
        header = jwt.get_unverified_header(token)
        for refresh in (False, True):
            for jwk in self._jwks(refresh)["keys"]:
                if jwk.get("kid") == header.get("kid") and jwk.get("alg", header.get("alg")) == (
                    header.get("alg")
                ):
                    return jwt.PyJWK(jwk)
        raise SuspiciousOperation("Token refused: its key is not among the provider's keys.")

    def _jwks(self, refresh: bool) -> dict:
        url = self.OIDC_OP_JWKS_ENDPOINT
        with _jwks_lock:
            cached = _jwks_cache.get(url)
            if cached and not refresh and time.monotonic() - cached[0] < JWKS_MAX_AGE:
                return cached[1]
        response = requests.get(
            url,
            verify=self.get_settings("OIDC_VERIFY_SSL", True),
            timeout=self.get_settings("OIDC_TIMEOUT", 10),
            proxies=self.get_settings("OIDC_PROXY", None),
        )
        response.raise_for_status()
        jwks = response.json()
        with _jwks_lock:
            _jwks_cache[url] = (time.monotonic(), jwks)
        return jwks

    def verify_access_token(self, access_token: str) -> dict:
        """A Keycloak access token: signed by the provider, unexpired, and issued for PSM
        (its `aud` or `azp` is one of PSM_OIDC_AUDIENCES, by default the client id)."""
        payload = self.verify_token(access_token)
        allowed = set(settings.PSM_OIDC_AUDIENCES or [self.OIDC_RP_CLIENT_ID])
        if not (_audiences(payload) & allowed or payload.get("azp") in allowed):
            raise SuspiciousOperation("Token refused: it was not issued for this application.")
        return payload

    def get_userinfo(self, access_token: str, id_token: str | None, payload: dict | None):
        """Userinfo merged with the (verified) access token's claims: Keycloak puts the roles
        in the access token, and not always in userinfo."""
        if payload is not None and self.OIDC_RP_CLIENT_ID not in _audiences(payload):
            raise SuspiciousOperation("ID token refused: it was not issued for this client.")
        if access_token.count(".") == 2:
            access = self.verify_access_token(access_token)
        elif payload is None:
            # An API bearer token must be verifiable here, not only by the provider.
            raise SuspiciousOperation("Bearer token refused: not a signed JWT.")
        else:
            access = {}
        userinfo = super().get_userinfo(access_token, id_token, payload)
        for claims in (payload, access):
            if claims and claims.get("sub") != userinfo.get("sub"):
                raise SuspiciousOperation("Token refused: userinfo is about another subject.")
        return {**(payload or {}), **access, **userinfo}


class OIDCBearerAuthentication(OIDCAuthentication):
    """DRF: `Authorization: Bearer <Keycloak access token>`, when single sign-on is enabled.

    PSM API tokens (`psm_…`) are left to `psm.tokens.ApiTokenAuthentication`.
    """

    def __init__(self, backend=None) -> None:
        self._backend = backend

    @property
    def backend(self):
        if self._backend is None:
            self._backend = get_oidc_backend()
        return self._backend

    def authenticate(self, request):
        if not settings.PSM_OIDC_ENABLED:
            return None
        token = self.get_access_token(request)
        if not token or token.startswith("psm_"):
            return None
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed:
            throttle.credential_refused(request)  # a refused token counts toward a lockout
            raise
        except requests.RequestException as exc:
            logger.warning("single sign-on provider unreachable: %s", exc)
            raise exceptions.AuthenticationFailed(
                "The single sign-on provider could not verify this token."
            ) from None


def user_from_bearer(token: str):
    """The active user a Keycloak access token belongs to (roles re-synced), else None."""
    if not settings.PSM_OIDC_ENABLED or token.count(".") != 2:
        return None
    try:
        user = get_oidc_backend().get_or_create_user(token, None, None)
    except (SuspiciousOperation, requests.RequestException) as exc:
        logger.info("bearer token refused: %s", exc)
        return None
    return user if signed_in(user) else None


def provider_logout_url(request: HttpRequest) -> str:
    """OIDC_OP_LOGOUT_URL_METHOD: end the session at the provider too (RP-initiated logout,
    with id_token_hint), then come back to PSM."""
    back = request.build_absolute_uri(resolve_url(settings.LOGOUT_REDIRECT_URL))
    endpoint = settings.OIDC_OP_LOGOUT_ENDPOINT
    if not endpoint:
        return back
    params = {"post_logout_redirect_uri": back, "client_id": settings.OIDC_RP_CLIENT_ID}
    id_token = request.session.get("oidc_id_token")
    if id_token:
        params["id_token_hint"] = id_token
    return f"{endpoint}?{urlencode(params)}"


def admin_logout(request: HttpRequest) -> HttpResponse:
    """The admin's "Log out": a single sign-on session also ends at the provider."""
    if request.method == "POST" and request.session.get("oidc_id_token"):
        return OIDCLogoutView.as_view()(request)
    return admin.site.logout(request)
