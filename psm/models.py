"""Access and audit: API tokens, single sign-on identities and the audit log."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApiToken(models.Model):
    """A secret a user creates for the API or a package client; only its sha256 is stored.

    A *resource* token grants read, write or manage on chosen channels (what package clients
    need); a *scope* token grants `category:level` scopes on the REST API. Either acts as its
    owner and never beyond the owner's own permissions.
    """

    class Kind(models.TextChoices):
        RESOURCE = "resource", "Resources (channels)"
        SCOPE = "scope", "Scopes (API)"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.RESOURCE)
    scopes = models.JSONField(
        default=list,
        blank=True,
        help_text='Scope tokens: ["channel:read", "channel.mirror:write", ...].',
    )
    # sha256 of the whole secret: a leaked database does not leak usable tokens.
    digest = models.CharField(max_length=64, unique=True, editable=False)
    # The first characters of the secret, to recognise a token in lists ("psm_AbCd…").
    hint = models.CharField(max_length=12, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.hint}…)"

    @property
    def is_valid(self) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > timezone.now()


class TokenResource(models.Model):
    """One channel a resource token grants, at a level."""

    class Level(models.TextChoices):
        READ = "read", "Read"
        WRITE = "write", "Write"
        MANAGE = "manage", "Manage"

    token = models.ForeignKey(ApiToken, on_delete=models.CASCADE, related_name="resources")
    channel = models.ForeignKey(
        "channels_app.Channel", on_delete=models.CASCADE, related_name="token_grants"
    )
    level = models.CharField(max_length=10, choices=Level.choices, default=Level.READ)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["token", "channel"], name="token_resource_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.channel}: {self.level}"


class OidcIdentity(models.Model):
    """The single sign-on subject (`sub`) a user is matched on; never the e-mail address."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oidc_identity"
    )
    subject = models.CharField(max_length=255, unique=True)
    roles = models.JSONField(default=list, blank=True, help_text="Roles and groups at last login.")
    last_login_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "single sign-on identity"
        verbose_name_plural = "single sign-on identities"

    def __str__(self) -> str:
        return self.subject


class AuditEvent(models.Model):
    """Who did what to which object, and when."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    # Kept when the user is deleted, so the log still says who it was.
    actor_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=50, db_index=True)
    target_type = models.CharField(max_length=50, blank=True, db_index=True)
    target_id = models.CharField(max_length=50, blank=True)
    target_name = models.CharField(max_length=300, blank=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "audit event"

    def __str__(self) -> str:
        target = f" {self.target_type} {self.target_name}" if self.target_type else ""
        return (
            f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_name or 'system'} {self.action}{target}"
        )
