"""The OpenID Connect provider fixtures (a real provider process, one per test session)."""

from __future__ import annotations

import importlib

import pytest
from django.urls import clear_url_caches

from tests.fixtures.oidc_provider import OidcProvider, unavailable_reason


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory):
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"single sign-on tests skipped: {reason}")
    provider = OidcProvider(tmp_path_factory.mktemp("oidc"))
    yield provider
    provider.close()


def _reload_urls() -> None:
    """psm/urls.py mounts the single sign-on views only when PSM_OIDC_ENABLED is set."""
    import psm.urls

    importlib.reload(psm.urls)
    clear_url_caches()


@pytest.fixture
def oidc(oidc_provider, settings):
    """PSM configured for single sign-on against the provider, with an empty realm."""
    for name, value in oidc_provider.django_settings().items():
        setattr(settings, name, value)
    oidc_provider.set_users({})
    _reload_urls()
    yield oidc_provider
    settings.PSM_OIDC_ENABLED = False
    _reload_urls()
