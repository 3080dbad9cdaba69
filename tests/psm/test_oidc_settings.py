"""OIDC (Keycloak) configuration: enabled only with every required endpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OIDC = {
    "OIDC_RP_CLIENT_ID": "psm",
    "OIDC_RP_CLIENT_SECRET": "secret",
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "http://127.0.0.1:1/auth",
    "OIDC_OP_TOKEN_ENDPOINT": "http://127.0.0.1:1/token",
    "OIDC_OP_USER_ENDPOINT": "http://127.0.0.1:1/userinfo",
    "OIDC_OP_JWKS_ENDPOINT": "http://127.0.0.1:1/certs",
}
PROBE = (
    "import django; django.setup(); from django.conf import settings; from django.urls import "
    "reverse; print(','.join(settings.AUTHENTICATION_BACKENDS[:2])); "
    "print(reverse('oidc_authentication_init'))"
)


def _run(tmp_path, **env):
    environment = {**os.environ, "PSM_DATA_DIR": str(tmp_path), **env}
    environment.pop("DATABASE_URL", None)
    environment["DJANGO_SETTINGS_MODULE"] = "psm.settings"
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, env=environment, capture_output=True, text=True
    )


def test_oidc_enabled_without_endpoints_names_what_is_missing(tmp_path):
    result = _run(tmp_path, PSM_OIDC_ENABLED="true", OIDC_RP_CLIENT_ID="psm")
    assert result.returncode != 0
    assert "OIDC_OP_TOKEN_ENDPOINT" in result.stderr
    assert "OIDC_RP_CLIENT_ID," not in result.stderr


def test_oidc_enabled_adds_the_backend_and_login_urls(tmp_path):
    result = _run(tmp_path, PSM_OIDC_ENABLED="true", **OIDC)
    assert result.returncode == 0, result.stderr
    backends, url = result.stdout.split()
    # The lockout check stays first: a locked-out client is refused before single sign-on too.
    assert backends == "psm.throttle.LockoutBackend,psm.oidc.PSMOIDCBackend"
    assert url == "/oidc/authenticate/"
