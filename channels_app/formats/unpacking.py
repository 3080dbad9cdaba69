"""A compressed index decompressed while it downloads.

The download thread writes the compressed bytes into `Unpacking`; a thread of its own reads
them from a bounded queue and decompresses them into the document's file. On a network the
two overlap (a conda-forge subdir is ~40 MB compressed, ~400 MB plain), and no compressed
copy is kept on disk. What decompresses is the format's own `unpack(url, raw, dest)`, which
reads `raw` as a stream: its checks (a size limit against bombs, a corrupt or truncated
stream) are the same either way.
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

#: Compressed chunks waiting to be decompressed (each as the download hands it, up to a MiB):
#: the download waits beyond this, so memory stays bounded if decompression is slower.
QUEUED_CHUNKS = 16


class Unpacking:
    """A write-only file for a download: what is written is decompressed into `dest` by
    `unpack(url, raw, dest)` in a thread, started at the first write (a 304 or a 404 writes
    nothing). Context manager: leaving it waits for the thread, and raises what `unpack`
    raised unless the download itself failed."""

    def __init__(self, unpack: Callable[[str, BinaryIO, BinaryIO], None], url: str, dest: Any):
        self.unpack, self.url, self.dest = unpack, url, dest
        self.chunks: queue.Queue = queue.Queue(QUEUED_CHUNKS)
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def write(self, data: bytes) -> int:
        if self.error is not None:  # a corrupt stream or a bomb: stop the download now
            raise self.error
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="psm-unpack", daemon=True)
            self.thread.start()
        self.chunks.put(bytes(data))
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """The download rewinds its file when done: nothing to do for a stream."""
        return 0

    def _run(self) -> None:
        try:
            self.unpack(self.url, _QueueReader(self.chunks), self.dest)
        except BaseException as exc:  # noqa: BLE001 - raised in the downloading thread
            self.error = exc
        finally:
            while self.chunks.get() is not None:  # what the download still sends is dropped
                pass

    def __enter__(self) -> Unpacking:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if self.thread is None:
            return
        self.chunks.put(None)  # the end of the stream (or of a failed download)
        self.thread.join()
        if exc_type is None and self.error is not None:
            raise self.error


class _QueueReader(io.RawIOBase):
    """The compressed stream, read from the queue the download fills (None: its end)."""

    def __init__(self, chunks: queue.Queue) -> None:
        self.chunks, self.pending, self.ended = chunks, memoryview(b""), False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.pending:
            if self.ended:
                return 0
            chunk = self.chunks.get()
            if chunk is None:
                self.ended = True
                self.chunks.put(None)  # for the drain that follows
                return 0
            self.pending = memoryview(chunk)
        size = min(len(buffer), len(self.pending))
        buffer[:size] = self.pending[:size]
        self.pending = self.pending[size:]
        return size
