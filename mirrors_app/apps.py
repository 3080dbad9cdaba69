from django.apps import AppConfig


class MirrorsConfig(AppConfig):
    name = "mirrors_app"
    verbose_name = "Mirrors"

    def ready(self) -> None:
        from . import permissions, schedules  # noqa: F401 - permissions registers row rules
        from .models import Mirror

        schedules.connect_signals(Mirror)
