"""The one HTTP client PSM uses to talk to upstream repositories.

Everything that leaves the server goes through here, so timeouts, retries, the proxy, the user
agent, the upstream host allowlist and size limits are decided in one place:
- `gate`: which upstreams may be fetched, checked on every URL and again on the address each
  connection really uses (loopback, private and other special addresses refused);
- `client`: the session, streamed GETs (redirects followed hop by hop through the gate), size
  limits, and the conditional GETs every index document is fetched with
  (`UpstreamClient.fetch_index`);
- `errors`: a failure is an UpstreamError saying what happened in one sentence
  (`upstream_error`, `status_error`); the exception behind it goes to the log.

Callers import from `psm.http`; the names below are its interface.
"""

from .client import (
    CHUNK_SIZE,
    Download,
    IndexFetch,
    Part,
    Peek,
    UpstreamClient,
    fetch_bytes,
    new_session,
    open_stream,
    shared_client,
)
from .errors import UpstreamError, UpstreamRefused, status_error, upstream_error
from .gate import address_problem, upstream_url_problem

__all__ = [
    "CHUNK_SIZE",
    "Download",
    "IndexFetch",
    "Part",
    "Peek",
    "UpstreamClient",
    "UpstreamError",
    "UpstreamRefused",
    "address_problem",
    "fetch_bytes",
    "new_session",
    "open_stream",
    "shared_client",
    "status_error",
    "upstream_error",
    "upstream_url_problem",
]
