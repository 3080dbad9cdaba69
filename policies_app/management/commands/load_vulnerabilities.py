"""Load OSV advisories from files, zip archives or directories into the database."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from policies_app import services


class Command(BaseCommand):
    help = (
        "Load vulnerability advisories in OSV format: .json files, .zip archives (such as "
        "osv.dev's per-ecosystem all.zip) or directories of them."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("paths", nargs="+", metavar="PATH", type=Path)
        parser.add_argument(
            "--force",
            action="store_true",
            help="Rewrite advisories even when their 'modified' time has not changed.",
        )

    def handle(self, *args, paths: list[Path], force: bool, **options) -> None:
        loaded = 0
        for path in paths:
            result = services.vulnerabilities_load(path=path, force=force)
            loaded += result.loaded
            for error in result.errors:
                self.stderr.write(f"  {error}")
            self.stdout.write(f"{path}: {result}")
        if not loaded:
            raise CommandError("No advisory could be read from " + ", ".join(map(str, paths)))
