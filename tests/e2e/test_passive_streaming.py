"""A passive mirror's first request streams the upstream bytes on while storing them.

Over real HTTP (a live server, with and without the fast path, and a loopback upstream that pauses in the middle of a file): the
client holds the first megabytes before upstream has sent the rest, and a file that turns out
not to match its index entry is cut short, so the client cannot take it for a whole one. A
second client asking meanwhile follows that one download, with the same guarantees. A fetch
that fails before any byte went out answers 502 with the reason (never the server's bare 500),
and every failure is noted on the package until a later fetch succeeds.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from django.test.testcases import LiveServerThread, _StaticFilesHandler
from django.utils import timezone

from channels_app.fast_path import RepoFastPath
from channels_app.models import Package
from channels_app.passive import partial_path
from mirrors_app.models import Mirror, SyncRun
from tests.factories import ChannelFactory, MirrorFactory
from tests.fixtures.conda_channel import ChannelServer, FakePackage, build_channel
from tests.fixtures.loopback import FileHandler, LoopbackServer

pytestmark = pytest.mark.django_db(transaction=True)
MIB = 1024 * 1024
BIG = FakePackage("big", "1.0", fmt=".conda", files={"data.bin": os.urandom(4 * MIB)})
# Smaller than one chunk (psm.http.CHUNK_SIZE), and several chunks.
SMALL = FakePackage("small", "1.0", fmt=".conda", files={"data.bin": os.urandom(256 * 1024)})
LARGE = FakePackage("large", "1.0", fmt=".conda", files={"data.bin": os.urandom(3 * MIB)})


def _is_package(path: str) -> bool:
    return path.endswith((".bz2", ".conda")) and "repodata" not in path


class _PausingHandler(FileHandler):
    upstream: PausingUpstream

    def write_body(self, body: bytes) -> None:
        if not _is_package(self.url_path):
            return super().write_body(body)
        pause_at = self.upstream.pause_at
        self.wfile.write(body[:pause_at])
        self.wfile.flush()
        self.upstream.resume.wait(timeout=30)
        self.wfile.write(body[pause_at:])


class PausingUpstream(LoopbackServer):
    """Serves a folder; after the first `pause_at` bytes of a package file, waits for `resume`."""

    handler = _PausingHandler

    def __init__(self, root: Path) -> None:
        self.resume = threading.Event()
        self.pause_at = 2 * MIB
        super().__init__(root)

    @property
    def package_gets(self) -> int:
        """Requests for package files."""
        return sum(1 for path in self.gets() if _is_package(path))


@pytest.fixture(params=["fast path", "django"])
def psm_server(request, settings):
    """PSM over real HTTP: as production serves it (`psm.wsgi`: the fast path answers a public
    channel's first request), and through Django's whole stack (as for a restricted channel)."""
    settings.PSM_SERVING_CACHE = False  # no listening thread left behind by the test
    handler = _StaticFilesHandler
    if request.param == "fast path":

        def handler(application):
            return RepoFastPath(_StaticFilesHandler(application))

    server = LiveServerThread("127.0.0.1", handler, port=0)
    server.daemon = True
    server.start()
    server.is_ready.wait()
    if server.error:
        raise server.error
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{server.port}")
    finally:
        server.terminate()


@pytest.fixture
def upstream(tmp_path):
    with PausingUpstream(build_channel(tmp_path / "channel", [BIG, SMALL])) as server:
        yield server
        server.resume.set()


def _passive(run_mirror, upstream) -> Mirror:
    mirror = MirrorFactory(
        channel=ChannelFactory(kind="conda"),
        kind="conda",
        mode=Mirror.Mode.PASSIVE,
        source_url=upstream.url,
        options={"subdirs": ["noarch"]},
    )
    assert run_mirror(mirror).state == SyncRun.State.COMPLETED
    return mirror


def test_the_client_gets_bytes_before_upstream_has_sent_the_whole_file(
    run_mirror, upstream, psm_server
):
    mirror = _passive(run_mirror, upstream)
    expected = (upstream.root / "noarch" / BIG.filename).read_bytes()
    url = f"{psm_server.url}/api/repo/{mirror.channel.path}/noarch/{BIG.filename}"
    with requests.get(url, stream=True, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["Content-Length"] == str(len(expected))
        first = response.raw.read(MIB)  # upstream is paused after 2 MiB
        assert not upstream.resume.is_set() and first == expected[:MIB]
        upstream.resume.set()
        rest = response.raw.read()
    assert first + rest == expected
    package = Package.objects.get(filename=BIG.filename)
    assert package.artifact.sha256 == hashlib.sha256(expected).hexdigest()


def test_a_file_that_does_not_match_is_cut_short_and_not_stored(run_mirror, upstream, psm_server):
    mirror = _passive(run_mirror, upstream)
    path = upstream.root / "noarch" / BIG.filename
    good = path.read_bytes()
    path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # same size, another sha256
    upstream.resume.set()
    url = f"{psm_server.url}/api/repo/{mirror.channel.path}/noarch/{BIG.filename}"
    received = bytearray()
    with requests.get(url, stream=True, timeout=5) as response:
        assert response.headers["Content-Length"] == str(len(good))
        # gunicorn closes the connection at once; the development server lets it time out.
        with pytest.raises(
            (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)
        ):
            for chunk in response.iter_content(64 * 1024):
                received += chunk
    assert 0 < len(received) < len(good)
    assert Package.objects.get(filename=BIG.filename).artifact is None
    path.write_bytes(good)
    assert requests.get(url, timeout=30).content == good  # fixed upstream: served and stored
    assert Package.objects.get(filename=BIG.filename).artifact is not None


def _cut_short(response: requests.Response) -> bytes:
    """Read a response that must end before its Content-Length; return what arrived."""
    received = bytearray()
    # gunicorn closes the connection at once; the development server lets it time out.
    with pytest.raises(
        (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)
    ):
        for chunk in response.iter_content(64 * 1024):
            received += chunk
    return bytes(received)


def test_a_second_client_follows_the_download_in_progress(run_mirror, upstream, psm_server):
    mirror = _passive(run_mirror, upstream)
    expected = (upstream.root / "noarch" / BIG.filename).read_bytes()
    url = f"{psm_server.url}/api/repo/{mirror.channel.path}/noarch/{BIG.filename}"
    with (
        requests.get(url, stream=True, timeout=30) as first,
        requests.get(url, stream=True, timeout=30) as second,
    ):
        assert first.status_code == second.status_code == 200
        assert second.headers["Content-Length"] == str(len(expected))
        head = first.raw.read(MIB), second.raw.read(MIB)  # upstream is paused after 2 MiB
        assert not upstream.resume.is_set() and head == (expected[:MIB], expected[:MIB])
        upstream.resume.set()
        assert head[0] + first.raw.read() == expected
        assert head[1] + second.raw.read() == expected
    assert upstream.package_gets == 1
    package = Package.objects.get(filename=BIG.filename)
    assert package.artifact.sha256 == hashlib.sha256(expected).hexdigest()


def test_a_file_that_does_not_match_cuts_its_followers_short_too(run_mirror, upstream, psm_server):
    mirror = _passive(run_mirror, upstream)
    path = upstream.root / "noarch" / BIG.filename
    good = path.read_bytes()
    path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # same size, another sha256
    url = f"{psm_server.url}/api/repo/{mirror.channel.path}/noarch/{BIG.filename}"
    with (
        requests.get(url, stream=True, timeout=5) as first,
        requests.get(url, stream=True, timeout=5) as second,
    ):
        assert second.raw.read(MIB) == good[:MIB]  # following while upstream is paused
        upstream.resume.set()
        assert 0 < len(_cut_short(first)) < len(good)
        assert 0 < MIB + len(_cut_short(second)) < len(good)
    assert upstream.package_gets == 1
    assert Package.objects.get(filename=BIG.filename).artifact is None


def test_a_follower_of_an_abandoned_download_is_cut_not_left_waiting(
    run_mirror, upstream, psm_server
):
    mirror = _passive(run_mirror, upstream)
    good = (upstream.root / "noarch" / BIG.filename).read_bytes()
    url = f"{psm_server.url}/api/repo/{mirror.channel.path}/noarch/{BIG.filename}"
    first = requests.get(url, stream=True, timeout=5)
    with requests.get(url, stream=True, timeout=5) as second:
        assert second.raw.read(MIB) == good[:MIB]
        first.close()  # the first client goes away; its download stops at its next write
        upstream.resume.set()
        assert MIB + len(_cut_short(second)) < len(good)
    assert Package.objects.get(filename=BIG.filename).artifact is None
    assert requests.get(url, timeout=30).content == good  # a retry fetches the file anew


@pytest.fixture
def source(tmp_path):
    """An upstream that can cut a file short (`cut`), holding a one-chunk and a larger file."""
    with ChannelServer(build_channel(tmp_path / "channel", [SMALL, LARGE])) as server:
        yield server


@pytest.mark.parametrize(
    ("package", "fault", "sent"),
    [
        (SMALL, "digest", False),  # verified before its only chunk goes out
        (SMALL, "cut", False),
        (LARGE, "digest", True),  # found at the end, after chunks went out
        (LARGE, "cut", False),  # within the first chunk
        (LARGE, "cut later", True),
    ],
    ids=lambda value: getattr(value, "name", value),
)
def test_a_failed_first_fetch_answers_502_or_is_cut_short_and_is_noted_on_the_package(
    run_mirror, source, psm_server, package, fault, sent
):
    mirror = _passive(run_mirror, source)
    path = f"/noarch/{package.filename}"
    good = (source.root / path.lstrip("/")).read_bytes()
    if fault == "digest":
        (source.root / path.lstrip("/")).write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    else:
        source.cut[path] = 64 * 1024 if fault == "cut" else 2 * MIB + MIB // 2
    url = f"{psm_server.url}/api/repo/{mirror.channel.path}{path}"
    before = timezone.now()
    with requests.get(url, stream=True, timeout=3) as response:
        if sent:
            assert response.status_code == 200
            received = _cut_short(response)
            assert 0 < len(received) < len(good) and good.startswith(received)
        else:
            assert response.status_code == 502
            assert response.headers["Content-Type"] == "text/plain"
            reason = response.text
    row = Package.objects.get(filename=package.filename)
    assert row.artifact is None and row.updated_at >= before
    assert ("sha256" if fault == "digest" else "cut short") in row.error
    if not sent:
        assert row.error in reason
    # Upstream mended: the next request serves and stores the file, and clears the failure.
    (source.root / path.lstrip("/")).write_bytes(good)
    source.cut.clear()
    assert requests.get(url, timeout=30).content == good
    row.refresh_from_db()
    assert row.artifact is not None and row.error == ""


def test_a_range_request_for_a_file_that_does_not_match_answers_502_and_is_noted(
    run_mirror, source, psm_server
):
    mirror = _passive(run_mirror, source)
    target = source.root / "noarch" / SMALL.filename
    good = target.read_bytes()
    target.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    url = f"{psm_server.url}/api/repo/{mirror.channel.path}/noarch/{SMALL.filename}"
    response = requests.get(url, headers={"Range": "bytes=0-99"}, timeout=30)
    assert response.status_code == 502
    error = Package.objects.get(filename=SMALL.filename).error
    assert "does not match its index entry" in error and error in response.text


def _open_count(path: str) -> int:
    """How many open files of this process (the live server's threads) read `path`."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == path
        except OSError:
            pass  # closed meanwhile
    return count


def _until(condition) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.02)


def test_a_follower_of_a_one_chunk_file_that_does_not_match_answers_502_with_the_reason(
    run_mirror, upstream, psm_server
):
    mirror = _passive(run_mirror, upstream)
    upstream.pause_at = 64 * 1024
    target = upstream.root / "noarch" / SMALL.filename
    good = target.read_bytes()
    target.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    url = f"{psm_server.url}/api/repo/{mirror.channel.path}/noarch/{SMALL.filename}"
    package = Package.objects.get(filename=SMALL.filename)
    partial = partial_path(package)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(requests.get, url, timeout=30)
        _until(lambda: _open_count(partial) == 1)  # the first request is writing it
        second = pool.submit(requests.get, url, timeout=30)
        _until(lambda: _open_count(partial) == 2)  # and the second one follows it
        upstream.resume.set()
        first, second = first.result(), second.result()
    assert first.status_code == second.status_code == 502
    assert "does not match its index entry" in first.text
    assert "the download it followed failed" in second.text
    assert "does not match its index entry" in second.text
    assert upstream.package_gets == 1


@pytest.mark.parametrize("ranged", [False, True], ids=["streamed", "range"])
def test_a_hanging_upstream_answers_504_after_one_timeout_not_one_per_retry(
    run_mirror, source, psm_server, settings, ranged
):
    """A client waits on a passive first request: a read timeout is not retried (that is for
    runs), so the client hears 504 within one timeout, before its own timeout gives up."""
    mirror = _passive(run_mirror, source)
    settings.PSM_HTTP_TIMEOUT, settings.PSM_HTTP_RETRIES = 1, 3
    path = f"/noarch/{SMALL.filename}"
    source.delay[path] = 4  # longer than the timeout, shorter than the test's patience
    url = f"{psm_server.url}/api/repo/{mirror.channel.path}{path}"
    headers = {"Range": "bytes=0-9"} if ranged else {}
    response = requests.get(url, headers=headers, timeout=30)
    assert response.status_code == 504, response.text
    assert "timed out" in response.text
    assert source.count(path) == 1  # asked once: no retry while the client waits
    assert "timed out" in Package.objects.get(filename=SMALL.filename).error
