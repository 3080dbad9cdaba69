"""The package table's rows read fast: in order, in blocks, as raw bytes, a batch ahead.

A conda-forge-sized subdir is 600,000 rows and a PyPI-sized channel 2,000,000: read through
the ORM row by row, their records would be decoded only to be encoded again. PostgreSQL gets
COPY and a server-side cursor read by a thread a batch ahead; other databases the ORM.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator

from django.db import connection, transaction
from psycopg.adapt import Loader

from .models import Package


def chunked(values: Iterable[str], size: int = 1000) -> Iterator[list[str]]:
    """The values (units, names) in order, a bounded `IN (...)` list at a time."""
    ordered = sorted(values)
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]


#: A column of the package table in raw SQL.
COLUMN = f'"{Package._meta.db_table}"."%s"'


def copied_lines(
    rows, separator: bytes, lines: Callable[[bytes], None] | None = None
) -> Iterator[bytes]:
    """The one text column of a `values_list` queryset's rows, joined by `separator`, in
    blocks read with COPY (PostgreSQL): no Python per row but a list append. `lines` is
    handed each block first as it came, each row followed by a line break.

    The rows must not hold line breaks or control characters (compact JSON never does):
    COPY would quote such a value, and the render stops rather than publish it."""
    sql, params = rows.query.sql_with_params()
    # CSV with a quote and delimiter no such text holds: each row arrives as its value and
    # a line break, nothing quoted or escaped.
    statement = f"COPY ({sql}) TO STDOUT (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"
    lead = b""
    with transaction.atomic(), connection.cursor() as cursor, connection.wrap_database_errors:
        # The rows in index order, streamed: for most of a table PostgreSQL would rather sort
        # (on disk, hundreds of MB of records) before sending the first row.
        cursor.execute("SET LOCAL enable_sort = off")
        with cursor.cursor.copy(statement, params) as copy:
            parts: list = []
            for row in copy:  # one message per row
                parts.append(row)
                if len(parts) == 10_000:
                    yield lead + _joined(parts, separator, lines)
                    parts, lead = [], separator
            if parts:
                yield lead + _joined(parts, separator, lines)


def _joined(rows: list, separator: bytes, lines: Callable[[bytes], None] | None) -> bytes:
    block = b"".join(rows)
    if b"\x01" in block:  # a quoted value
        raise ValueError("a record holds a line break or a control character")
    if lines is not None:
        lines(block)
    return block[:-1].replace(b"\n", separator)


class _RawText(Loader):
    def load(self, data) -> bytes:
        return bytes(data)


def stream_rows(rows) -> Iterator[tuple]:
    """Stream a `values_list` queryset's rows with `text` columns (records) as raw bytes: a
    conda-forge-sized subdir is hundreds of MB of records that would otherwise be decoded only
    to be encoded again (or parsed as JSON, which reads bytes as well). PostgreSQL only; on
    another database the queryset's own iterator."""
    if connection.vendor != "postgresql":
        yield from rows.iterator(10_000)
        return
    sql, params = rows.query.sql_with_params()
    with transaction.atomic(), connection.cursor() as cursor:
        # A server-side cursor (inside the transaction) keeps memory flat.
        with cursor.cursor.connection.cursor(name="psm_render") as named:
            named.adapters.register_loader("text", _RawText)
            named.execute(sql, params)
            for batch in _read_ahead(named):
                yield from batch  # filename and unit are varchar, still str


#: Rows a read-ahead fetches at a time, and batches it holds at most (bounded memory).
READ_AHEAD_ROWS, READ_AHEAD_BATCHES = 10_000, 2


def _read_ahead(named) -> Iterator[list[tuple]]:
    """The cursor's rows a batch at a time, the next batch fetched by a thread while the
    caller works on this one (PostgreSQL reads and sends rows while the caller renders: a
    PyPI-sized publish reads 2,000,000). Nothing else uses the connection meanwhile; psycopg's
    connection lock would make it wait if it did."""
    batches: queue.Queue = queue.Queue(READ_AHEAD_BATCHES)
    stop = threading.Event()

    def fetch() -> None:
        try:
            while not stop.is_set():
                batch = named.fetchmany(READ_AHEAD_ROWS)
                batches.put(batch)
                if not batch:
                    return
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            batches.put(exc)

    reader = threading.Thread(target=fetch, name="psm-read-ahead", daemon=True)
    reader.start()
    try:
        while True:
            batch = batches.get()
            if isinstance(batch, BaseException):
                raise batch
            if not batch:
                return
            yield batch
    finally:
        stop.set()
        while reader.is_alive():  # let a fetch waiting on a full queue finish
            with contextlib.suppress(queue.Empty):
                batches.get(timeout=0.05)
        reader.join()
