"""A database question asked in a thread, on a connection of its own, while the caller goes
on: PostgreSQL works on one core while Python works on the other."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from django.db import connection

T = TypeVar("T")


def on_own_connection(ask: Callable[[], T], name: str) -> Callable[[], T]:
    """Run `ask` now in a thread named `name`, on a database connection of its own (closed
    after); the callable returned waits for its answer (or raises what it raised). The
    thread sees only what is committed: not for a caller inside a transaction."""
    answer: Future = Future()

    def run() -> None:
        try:
            answer.set_result(ask())
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            answer.set_exception(exc)
        finally:
            connection.close()  # this thread's own

    threading.Thread(target=run, name=name, daemon=True).start()
    return answer.result
