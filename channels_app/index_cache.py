"""What the fast path resolved, kept per process until the database says something changed.

A request for a public channel's index file costs one database round trip to resolve; under
load, waiting for it is most of the request. Each process keeps what it resolved, keyed by the
path and the Accept header, and drops all of it whenever a transaction that wrote channels or
published files commits: PostgreSQL sends `NOTIFY psm_serving` at that commit (statement
triggers, migration channels_app 0012), and a thread per process LISTENs for it. So a publish,
a freeze or a channel made private reaches every process, on every node sharing the database,
as soon as PostgreSQL has written the notification to the listening connection's socket: it
signals the listening sessions as the writer's commit completes, and each writes the notice
tens of microseconds later, normally well before a client that saw the commit returns can ask again.

That thread may not run for a while after the notice arrives (another thread holds the GIL for
up to its switch interval, 5 ms), so the requests do not wait for it: each use of the cache
first asks the socket, without reading it, whether anything is waiting there, and a waiting
notice is a miss (`_notice_waiting`). The thread clears the cache before it reads the socket,
so a socket found empty means no notice came, or that its clear has happened. Index files are
served with `max-age` (PSM_INDEX_MAX_AGE) anyway.

Besides what was resolved, it keeps whole answers (status line, headers, body) to requests for
small index files, by the request values they depend on (`fast_path.ANSWER_KEY`), within a byte
budget: a replayed answer costs a dictionary lookup, where answering again costs Django's
request machinery. A notification drops them with everything else.

The cache is used only while the listener is connected: from the moment it stops, nothing is
read from the cache or stored into it until it listens again, from empty. Only PostgreSQL
without a transaction pooler (where LISTEN would not reach this process) has the cache.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from collections import deque
from collections.abc import Hashable
from typing import Any

from django.conf import settings
from django.db import connection, connections

logger = logging.getLogger(__name__)

CHANNEL = "psm_serving"
#: Entries a process keeps; past this the oldest go first (dicts keep insertion order).
MAX_ENTRIES = 20_000
#: A whole answer: its status line, its headers and its body.
Answer = tuple[str, tuple[tuple[str, str], ...], bytes]
#: Bytes of whole answers a process keeps (`answer`); past this the oldest go first.
MAX_ANSWER_BYTES = 32 * 1024 * 1024
#: What a kept answer is counted as besides its body (its status line and headers).
ANSWER_OVERHEAD = 1024
#: Seconds between attempts to listen again after the listener lost its connection.
RETRY_SECONDS = 1.0


class IndexCache:
    """Values of `(path, accept)` keys, valid while no notification arrived since they were read.

    `epoch()` before resolving, `store(key, value, epoch)` after: a notification in between
    makes the store a no-op, so nothing read before a commit outlives that commit's notice.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str | None], Any] = {}
        #: Whole answers (status line, headers, body) by the request values they depend on.
        self._answers: dict[Hashable, Answer] = {}
        self._answer_bytes = 0
        self._epoch = 0
        self._listening = False
        #: The listening connection's socket, while listening.
        self._socket: int | None = None
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._stopping = threading.Event()
        #: The latest notifications' payloads (the writers' transaction ids), for tests.
        self.notices: deque[str] = deque(maxlen=1000)

    # --- the request side ---

    def get(self, key: tuple[str, str | None]) -> Any:
        self._ensure_listener()
        return self._entries.get(key) if self._usable() else None

    def epoch(self) -> int:
        return self._epoch

    def store(self, key: tuple[str, str | None], value: Any, epoch: int) -> None:
        with self._lock:
            if not self._listening or epoch != self._epoch:
                return
            if len(self._entries) >= MAX_ENTRIES:
                del self._entries[next(iter(self._entries))]
            self._entries[key] = value

    def answer(self, key: Hashable) -> Answer | None:
        """A whole answer kept by `store_answer`, while listening."""
        self._ensure_listener()
        return self._answers.get(key) if self._usable() else None

    def store_answer(self, key: Hashable, answer: Answer, epoch: int) -> None:
        size = len(answer[2]) + ANSWER_OVERHEAD
        with self._lock:
            if not self._listening or epoch != self._epoch or size > MAX_ANSWER_BYTES:
                return
            if key in self._answers:
                return  # another thread answered the same request meanwhile
            while self._answer_bytes + size > MAX_ANSWER_BYTES:
                oldest = self._answers.pop(next(iter(self._answers)))
                self._answer_bytes -= len(oldest[2]) + ANSWER_OVERHEAD
            self._answers[key] = answer
            self._answer_bytes += size

    def _usable(self) -> bool:
        """Whether what is kept may be used: listening, and no notice waiting to be read."""
        return self._listening and not self._notice_waiting()

    def _notice_waiting(self) -> bool:
        fd = self._socket
        return fd is None or _readable(fd, 0)

    def clear(self) -> None:
        """Forget everything (a change was committed, or the listener stopped or started)."""
        with self._lock:
            self._epoch += 1
            self._entries.clear()
            self._answers.clear()
            self._answer_bytes = 0

    # --- the listener ---

    def _ensure_listener(self) -> None:
        # Per process: a server that forks its workers after import must not share the thread.
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid, self._listening = os.getpid(), False
            self._entries.clear()
            self._answers.clear()
            self._answer_bytes = 0
            if enabled():
                threading.Thread(
                    target=self._listen_forever, name="psm-index-cache", daemon=True
                ).start()

    def _listen_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                self._listen()  # stops caching when it ends, however it ends
            except Exception as exc:  # any failure: try again shortly
                logger.warning("index cache: listening for changes failed (%s); retrying", exc)
            self._stopping.wait(RETRY_SECONDS)

    def _listen(self) -> None:
        wrapper = connections.create_connection("default")
        try:
            wrapper.ensure_connection()
            raw = wrapper.connection
            raw.autocommit = True
            raw.execute(f"LISTEN {CHANNEL}")
            # Whatever was committed before LISTEN took effect was never notified here.
            self.clear()
            with self._lock:
                self._socket, self._listening = raw.fileno(), True
            while not self._stopping.is_set():
                # A timeout, so that stop() is noticed without closing the socket under us.
                if not self._wait_for_socket(raw.fileno(), 1.0):
                    continue
                # Before the socket is read: a request that finds it empty finds this done.
                self.clear()
                for notice in raw.notifies(timeout=0):
                    self.notices.append(notice.payload)
                self.clear()
        finally:
            with self._lock:  # before the socket closes (its number may be reused at once)
                self._socket, self._listening = None, False
            self.clear()
            wrapper.close()

    def _wait_for_socket(self, fd: int, timeout: float) -> bool:
        """Whether the listening socket has something to read, within `timeout` seconds."""
        return _readable(fd, timeout)

    def stop(self) -> None:
        """Stop listening (within a second) and caching, in this process (tests)."""
        self._stopping.set()
        self._pid = os.getpid()  # not started again by the next get()
        with self._lock:
            self._listening = False
        self.clear()


def _readable(fd: int, timeout: float) -> bool:
    poller = select.poll()  # not select(): a socket's number may exceed FD_SETSIZE
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def enabled() -> bool:
    """Whether this process may cache: PostgreSQL, reached directly, and the setting on."""
    return (
        settings.PSM_SERVING_CACHE
        and connection.vendor == "postgresql"
        and not connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS")
    )


cache = IndexCache()
