"""Verify stored files and published indexes in the foreground (as the hourly task does)."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.template.defaultfilters import filesizeformat

from channels_app import verification
from channels_app.models import Channel

SHOWN = 100  # problems listed one per line; the rest are counted


class Command(BaseCommand):
    help = (
        "Re-hash stored files (oldest-verified first, within PSM_VERIFY_BYTES_PER_RUN and "
        "PSM_VERIFY_FILES_PER_RUN unless --all), check the published indexes, withdraw "
        "damaged files and print what was found."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--channel", help="Only this channel (channel or channel/sub).")
        parser.add_argument(
            "--repair",
            action="store_true",
            default=None,
            help="Fetch damaged active files again now (default: PSM_VERIFY_REPAIR).",
        )
        parser.add_argument(
            "--all", action="store_true", help="Check every stored file, not one run's budget."
        )

    def handle(self, *args, channel: str | None, repair: bool | None, **options) -> None:
        scope = None
        if channel:
            try:
                scope = Channel.objects.get_by_path(channel)
            except Channel.DoesNotExist:
                raise CommandError(f"No channel {channel!r}.") from None
        everything = options["all"]
        report = verification.verify_storage(
            channel=scope,
            max_bytes=None if everything else settings.PSM_VERIFY_BYTES_PER_RUN,
            max_files=None if everything else settings.PSM_VERIFY_FILES_PER_RUN,
            repair=settings.PSM_VERIFY_REPAIR if repair is None else repair,
        )
        for problem in report.found[:SHOWN]:
            self.stdout.write(
                f"{problem.channel.path}/{problem.path}: {problem.problem} ({problem.action})"
            )
        if len(report.found) > SHOWN:
            self.stdout.write(f"... and {len(report.found) - SHOWN} more.")
        self.stdout.write(
            f"Checked {report.files} files ({filesizeformat(report.bytes)}); "
            f"{len(report.found)} problems found, {report.resolved} resolved, "
            f"{report.still_open} open."
        )
