import gc

from django.apps import AppConfig


class PsmConfig(AppConfig):
    """Cross-cutting models: API tokens, the audit log and single sign-on identities."""

    name = "psm"
    verbose_name = "Access and audit"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in
        from django.db.models.signals import post_migrate

        # webhooks registers its task (no `tasks` module to autodiscover); the OpenAPI
        # extensions (`schema`) are registered with the schema's URL, not by every process.
        from . import audit, roles, webhooks  # noqa: F401

        # After every app's permissions exist (psm is the last installed app).
        post_migrate.connect(roles.ensure_groups_after_migrate, sender=self)
        user_logged_in.connect(audit.record_login, dispatch_uid="psm-audit-login")

        # What start-up made (modules, settings, the app registry; psm is the last app ready)
        # lives as long as the process: out of the cyclic collector's sight, neither its
        # collections during the work nor the interpreter's exit walk it again (a command's
        # exit took 0.25 s of collections over these objects). Forked pool processes also
        # keep sharing these pages.
        gc.freeze()
