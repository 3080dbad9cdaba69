"""The Celery application; configuration comes from Django settings (`CELERY_*`)."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger
from celery.utils.log import get_multiprocessing_logger

from psm.redaction import redact_handlers

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "psm.settings")

app = Celery("psm")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@after_setup_logger.connect
def _redact_worker_log(logger, **kwargs) -> None:
    """The worker replaces the root logger's handlers (settings.LOGGING's) with its own:
    they hide secrets too."""
    redact_handlers(logger)
    redact_handlers(get_multiprocessing_logger())


@after_setup_task_logger.connect
def _redact_task_log(logger, **kwargs) -> None:
    """Task loggers write through handlers of their own (they do not propagate)."""
    redact_handlers(logger)
