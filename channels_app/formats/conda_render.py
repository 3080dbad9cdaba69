"""Rendering a conda channel: `<subdir>/repodata.json` (+ `.zst`) and `channeldata.json`.

`noarch` is always present. `base_url` is never written: package URLs are relative to the
repodata, so clients always come back to PSM. The `.bz2` copies older clients ask for are made
after the publish (`FormatCapabilities.bz2_copies`).
"""

from __future__ import annotations

from typing import Any

import orjson
import zstandard

from .base import Emit, IndexSource
from .conda_document import KNOWN_KEYS, holds_packages
from .conda_records import SECTIONS

ZSTD_LEVEL = 3  # fast; publishing a conda-forge-sized subdir stays a few seconds


def render_channel(source: IndexSource, emit: Emit) -> None:
    """Write every subdir's repodata (plain and zstd, in one pass) and channeldata.json."""
    subdirs = sorted(set(source.units()) | {"noarch"})
    names: dict[str, set[str]] = {}
    for subdir in subdirs:
        with (
            emit(f"{subdir}/repodata.json", "application/json") as plain,
            emit(f"{subdir}/repodata.json.zst", "application/zstd") as packed,
        ):
            compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1)
            with compressor.stream_writer(packed, closefd=False) as zst:
                out = _Buffered((plain, zst))
                _write_repodata(out, subdir, source, names)
                out.flush()
    channeldata = {
        "channeldata_version": 1,
        "packages": {name: {"subdirs": sorted(s)} for name, s in sorted(names.items())},
        "subdirs": subdirs,
    }
    with emit("channeldata.json", "application/json") as out:
        out.write(orjson.dumps(channeldata, option=orjson.OPT_INDENT_2))


class _Buffered:
    """Collect small writes and pass them on in ~1 MiB blocks to every target."""

    def __init__(self, targets: tuple[Any, ...]) -> None:
        self.targets, self.parts, self.size = targets, [], 0

    def write(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)
        if self.size >= 1 << 20:
            self.flush()

    def flush(self) -> None:
        block = b"".join(self.parts)
        for target in self.targets:
            target.write(block)
        self.parts, self.size = [], 0


def _write_repodata(
    out: _Buffered, subdir: str, source: IndexSource, names: dict[str, set[str]]
) -> None:
    out.write(b'{"info":' + orjson.dumps({"subdir": subdir}))
    for section, suffix in SECTIONS:
        out.write(b',"' + section.encode() + b'":{')
        first = True
        for filename, document in source.documents(subdir, suffix):
            raw = document if isinstance(document, bytes) else document.encode()
            out.write((b"" if first else b",") + orjson.dumps(filename) + b":" + raw)
            first = False
            names.setdefault(filename.rsplit("-", 2)[0], set()).add(subdir)
        out.write(b"}")
    extras = source.unit_extras(subdir)
    removed = sorted(set(extras.get("removed", ())))
    out.write(b',"removed":' + orjson.dumps(removed))
    for key, text in sorted(extras.get("top_level", {}).items()):
        # Served back as read; never in place of what PSM writes, nor a package section.
        if key not in KNOWN_KEYS and not holds_packages(key):
            out.write(b"," + orjson.dumps(key) + b":" + text.encode())
    out.write(b',"repodata_version":1}')
