"""The sync orchestrator: fetch → decide → ingest → download → publish for one run.

Until the format-specific engines land, a run fetches the source's index and counts it.
"""

from __future__ import annotations

import logging

from channels_app.formats import FormatError
from psm.http import UpstreamClient, UpstreamError

from ..models import SyncRun
from .progress import Progress, StopRequested

logger = logging.getLogger(__name__)
State = SyncRun.State


def run_sync(run: SyncRun) -> str:
    """Carry out a claimed (running) run to its end and return its final state."""
    from ..services import sync_run_finish

    mirror = run.mirror
    progress = Progress(run)
    client = UpstreamClient()
    try:
        progress.step("fetching the source index")
        for _record in mirror.format.iter_index(client, mirror.source_url, mirror.options):
            progress.seen += 1
            progress.tick()
        progress.step("done")
    except StopRequested:
        final, error = State.STOPPED, ""
    except (UpstreamError, FormatError) as exc:
        final, error = State.FAILED, str(exc)
    except Exception as exc:  # a bug must still end the run, not leave it running
        logger.exception("run %s of mirror %s crashed", run.pk, mirror.pk)
        final, error = State.FAILED, f"Internal error: {exc.__class__.__name__}: {exc}"
    else:
        final, error = State.COMPLETED, ""
    finally:
        client.close()
    if final != State.STOPPED:
        try:
            progress.flush()
        except StopRequested:
            final = State.STOPPED if final == State.COMPLETED else final
    sync_run_finish(run=run, state=final, error=error)
    logger.info("run %s of mirror %s ended %s %s", run.pk, mirror.pk, final, error)
    return final
