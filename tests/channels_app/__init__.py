"""Helpers the channel tests share."""

from __future__ import annotations

import io
from contextlib import contextmanager
from typing import Any

from channels_app.formats.conda_render import render_channel


def in_memory() -> tuple[Any, dict[str, bytes]]:
    """A format's `Emit` that keeps what is written in memory, and the files it kept, by path."""
    files: dict[str, bytes] = {}

    @contextmanager
    def emit(path, content_type):
        out = io.BytesIO()
        yield out
        files[path] = out.getvalue()

    return emit, files


def conda_rendered(source) -> dict[str, bytes]:
    """The files `render_channel` writes for an index source, by path, kept in memory."""
    emit, files = in_memory()
    render_channel(source, emit)
    return files
