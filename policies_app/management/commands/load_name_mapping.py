"""Load the conda → PyPI name mapping from a file in a format conda-forge's tooling publishes."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from policies_app import services
from policies_app.mapping import MappingError

ERRORS_SHOWN = 50


class Command(BaseCommand):
    help = (
        "Replace the conda → PyPI name mapping loaded from FILE with what FILE holds now: "
        "cf-graph-countyfair's name_mapping.yaml (or .json, or grayskull_pypi_mapping.json) "
        "or parselmouth's compressed_mapping.json."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", metavar="FILE", type=Path)

    def handle(self, *args, file: Path, **options) -> None:
        try:
            result = services.name_mapping_load(path=file)
        except MappingError as exc:
            raise CommandError(str(exc)) from None
        for error in result.errors[:ERRORS_SHOWN]:
            self.stderr.write(f"  {error}")
        if len(result.errors) > ERRORS_SHOWN:
            self.stderr.write(f"  … and {len(result.errors) - ERRORS_SHOWN} more")
        self.stdout.write(f"{file}: {result}")
