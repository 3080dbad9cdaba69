"""Helpers the channel tests share."""

from __future__ import annotations

import io
from contextlib import contextmanager

from channels_app.formats.conda_render import render_channel


def conda_rendered(source) -> dict[str, bytes]:
    """The files `render_channel` writes for an index source, by path, kept in memory."""
    files: dict[str, bytes] = {}

    @contextmanager
    def emit(path, content_type):
        out = io.BytesIO()
        yield out
        files[path] = out.getvalue()

    render_channel(source, emit)
    return files
