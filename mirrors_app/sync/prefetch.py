"""The next units' indexes, fetched by a few threads while the run ingests the current one."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from psm.http import UpstreamClient

from ..models import Mirror
from .progress import Progress


def fetch_ahead(
    mirror: Mirror,
    client: UpstreamClient,
    todo: list,
    progress: Progress,
    kept: Callable[[str], str | None] | None = None,
    begun: Callable[[str], None] | None = None,
) -> Iterator[tuple[tuple, Callable]]:
    """(unit, state, serial) with a callable returning (Fetched, index file) for each unit.

    The next units' indexes are fetched by a few threads while this one ingests (a fetch
    touches no database): Python projects' pages, or a conda platform's repodata while the
    previous one is read. `kept(unit)`: the unit's last document kept, for the format to
    compare the new one with (see `RepositoryFormat.unit_buffer`); `begun(unit)` is called
    as a unit that has one begins to download anew.
    """
    fmt = mirror.format
    threads = fmt.unit_fetchers

    def fetch(unit: str, validators: dict):
        last = kept(unit) if kept is not None else None
        on_begun = partial(begun, unit) if begun is not None and last is not None else None
        index = fmt.unit_buffer(last, on_begun)
        try:
            return fmt.fetch_unit(client, mirror.source_url, unit, index, validators), index
        except BaseException:
            index.close()
            raise

    window: deque = deque()
    with ThreadPoolExecutor(threads, thread_name_prefix=f"pages-{mirror.pk}") as pool:
        try:
            pending = iter(todo)
            for item in pending:
                window.append(
                    (item, pool.submit(fetch, item[0], item[1].validators if item[1] else {}))
                )
                if len(window) >= 2 * threads:
                    break
            while window:
                item, future = window.popleft()
                following = next(pending, None)
                if following is not None:
                    state = following[1]
                    window.append(
                        (
                            following,
                            pool.submit(fetch, following[0], state.validators if state else {}),
                        )
                    )
                progress.step(f"{item[0]}: reading the index", now=False)
                yield item, future.result
        finally:
            for _, future in window:  # a stopped run: drop what was fetched ahead
                if not future.cancel() and not future.exception():
                    future.result()[1].close()
