"""The audit log: one helper that services call, so the admin and the API both record."""

from __future__ import annotations

from typing import Any

from django.db import models

from .redaction import scrub, scrub_data


def _actor(user) -> tuple[Any, str]:
    if user is None or not getattr(user, "is_authenticated", False):
        return None, ""
    return user, user.get_username()


def audit_record(*, actor, action: str, target: models.Model | None = None, **details: Any) -> None:
    """Record that `actor` (a user, or None for the system) did `action` to `target`."""
    from .models import AuditEvent

    user, name = _actor(actor)
    # Readers of the audit log see no secrets: URLs in the details lose theirs (psm.redaction).
    AuditEvent.objects.create(
        actor=user,
        actor_name=name,
        action=action,
        target_type=target._meta.model_name if target is not None else "",
        target_id=str(target.pk) if target is not None and target.pk is not None else "",
        target_name=scrub(str(target))[:300] if target is not None else "",
        details=scrub_data(details),
    )


def record_login(sender, request, user, **kwargs) -> None:
    """`user_logged_in` receiver: sign-ins are audited too (how: password or single sign-on)."""
    backend = getattr(user, "backend", "") or ""
    audit_record(actor=user, action="login", method="sso" if "oidc" in backend else "password")
