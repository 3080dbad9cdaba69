"""Tests of the repository formats (`channels_app/formats/`)."""

from __future__ import annotations

from collections.abc import Mapping


class StoredDigests:
    """A unit's stored entries as `parse_unit` asks about them (in a sync: `UnitIngest`)."""

    def __init__(self, digests: Mapping[str, int]) -> None:
        self.digests = dict(digests)
        self.asked: list[str] = []

    def is_current(self, filename: str, digest: int) -> bool:
        self.asked.append(filename)
        return self.digests.get(filename) == digest

    def current_digests(self) -> dict[str, int]:
        return dict(self.digests)

    def kept_document(self) -> str | None:
        return None  # no document kept: every entry is compared by digest

    def only(self, filenames, gone=()) -> None:
        raise AssertionError("only asked with a kept document")
