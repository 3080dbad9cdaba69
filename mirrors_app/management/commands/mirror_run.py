"""Run a mirror in the foreground, without a worker (for operators and tests)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from mirrors_app import services, sync
from mirrors_app.models import Mirror, SyncRun
from psm.redaction import scrub


class Command(BaseCommand):
    help = "Run a mirror synchronously in this process and print what the run did."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="The mirror's name.")
        parser.add_argument("--channel", help="The mirror's channel (channel or channel/sub).")
        parser.add_argument(
            "--restart", action="store_true", help="Start from the beginning (a restart)."
        )

    def handle(self, *args, name: str, channel: str | None, restart: bool, **options) -> None:
        mirrors = Mirror.objects.with_related().filter(name=name)
        if channel:
            parent, _, sub = channel.partition("/")
            mirrors = (
                mirrors.filter(channel__name=sub, channel__parent__name=parent)
                if sub
                else mirrors.filter(channel__name=parent, channel__parent__isnull=True)
            )
        found = list(mirrors[:2])
        if not found:
            raise CommandError(
                f"No mirror named {name!r}" + (f" in {channel!r}" if channel else "")
            )
        if len(found) > 1:
            raise CommandError(f"Several mirrors are named {name!r}; say which with --channel.")
        mirror = found[0]
        trigger = SyncRun.Trigger.RESTART if restart else SyncRun.Trigger.MANUAL
        try:
            run = services.sync_run_create(mirror=mirror, trigger=trigger)
        except services.MirrorBusy as exc:
            raise CommandError(str(exc)) from None
        claimed = services.sync_run_claim(run_id=run.pk)
        if claimed is None:
            raise CommandError(f"Run #{run.pk} was stopped before it started.")
        final = sync.run_sync(claimed)
        run.refresh_from_db()
        self.stdout.write(
            f"Run #{run.pk} of {mirror.name!r} ({mirror.channel.path}): {final}; "
            f"seen {run.seen}, filtered {run.filtered}, ingested {run.ingested}, "
            f"downloaded {run.downloaded}, failed {run.failed}"
        )
        for warning in scrub(run.warnings, mirror.source_url).splitlines():
            self.stderr.write(f"Warning: {warning}")
        if final == SyncRun.State.FAILED:
            # The error is scrubbed when recorded; the source's own secrets are hidden again.
            raise CommandError(scrub(run.error, mirror.source_url) or "the run failed")
