from django.apps import AppConfig


class PsmConfig(AppConfig):
    """Cross-cutting models: API tokens, the audit log and single sign-on identities."""

    name = "psm"
    verbose_name = "Access and audit"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in
        from django.db.models.signals import post_migrate

        # schema registers extensions; webhooks its task (no `tasks` module to autodiscover).
        from . import audit, roles, schema, webhooks  # noqa: F401

        # After every app's permissions exist (psm is the last installed app).
        post_migrate.connect(roles.ensure_groups_after_migrate, sender=self)
        user_logged_in.connect(audit.record_login, dispatch_uid="psm-audit-login")
