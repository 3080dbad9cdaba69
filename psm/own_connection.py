"""Work asked in a thread while the caller goes on (`meanwhile`), and a database question asked
so on a connection of its own: PostgreSQL works on one core while Python works on the other."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from django.db import InterfaceError, OperationalError, connection

T = TypeVar("T")


def meanwhile(ask: Callable[[], T], name: str) -> Callable[[], T]:
    """Run `ask` now in a thread named `name`; the callable returned waits for its answer (or
    raises what it raised)."""
    answer: Future = Future()

    def run() -> None:
        try:
            answer.set_result(ask())
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            answer.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return answer.result


def on_own_connection(
    ask: Callable[[], T], name: str, *, else_here: Callable[[], T] | None = None
) -> Callable[[], T]:
    """`meanwhile`, on a database connection of its own (closed after). The thread sees only
    what is committed: not for a caller inside a transaction.

    The connection of its own is a help, not a need: where it cannot be had or is lost (the
    server's connection limit reached, say: OperationalError, InterfaceError), the callable
    answers with `else_here`, asked then in the caller's thread, on the caller's connection."""

    def asked() -> T:
        try:
            return ask()
        finally:
            connection.close()  # this thread's own

    answer = meanwhile(asked, name)
    if else_here is None:
        return answer

    def result() -> T:
        try:
            return answer()
        except (OperationalError, InterfaceError):
            return else_here()

    return result
