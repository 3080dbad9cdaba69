from django.apps import AppConfig


class MirrorsConfig(AppConfig):
    name = "mirrors_app"
    verbose_name = "Mirrors"

    def ready(self) -> None:
        from . import schedules
        from .models import Mirror

        schedules.connect_signals(Mirror)
