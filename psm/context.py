"""Template context shared by every page."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def single_sign_on(request: HttpRequest) -> dict:
    """Whether to offer "Log in with single sign-on" on the admin login page."""
    return {"psm_oidc_enabled": settings.PSM_OIDC_ENABLED}
