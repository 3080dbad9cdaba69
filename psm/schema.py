"""OpenAPI descriptions of PSM's authentication classes (drf-spectacular extensions)."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "psm.tokens.ApiTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A PSM API token (psm_…), from /api/tokens/ or the admin; "
            "`Authorization: Token psm_…` works too.",
        }


class KeycloakBearerScheme(OpenApiAuthenticationExtension):
    target_class = "psm.oidc.OIDCBearerAuthentication"
    name = "keycloakAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A Keycloak access token issued for PSM (single sign-on enabled).",
        }


class PasswordScheme(OpenApiAuthenticationExtension):
    target_class = "psm.tokens.PasswordAuthentication"
    name = "passwordAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "basic",
            "description": "A local account's user name and password, accepted by "
            "POST /api/tokens/ only (to create a token); failures count toward the lockout.",
        }
