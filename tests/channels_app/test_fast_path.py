"""The serving fast path (channels_app.fast_path) and its per-process cache (index_cache).

The fast path must answer exactly as Django's whole stack answers, byte for byte and header
for header, and hand everything it does not own to Django. The cache must never answer from
what a committed change made stale once the change's notification has arrived, and must not
be used while it cannot hear notifications.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

import orjson
import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, connection, transaction
from django.test import RequestFactory

from channels_app import index_cache, publishing, services, storage
from channels_app.fast_path import RepoFastPath
from channels_app.models import PENDING_DECISION, Artifact, Channel, Package
from psm.tokens import token_create
from tests.factories import ChannelFactory, grant

CONDA = "noarch/repodata.json"


class CountingDjango:
    """Django's WSGI handler, counting the requests that reached it."""

    def __init__(self) -> None:
        self.handler, self.calls = WSGIHandler(), 0

    def __call__(self, environ, start_response):
        self.calls += 1
        return self.handler(environ, start_response)


@pytest.fixture
def app(settings):
    """(the fast path, the Django handler behind it); a request's end must not close the test's
    database connection (as with Django's test client)."""
    settings.PSM_SERVING_CACHE = False
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    django = CountingDjango()
    try:
        yield RepoFastPath(django), django
    finally:
        for signal in (request_started, request_finished):
            signal.connect(close_old_connections)


def call(app, path: str, method: str = "GET", **headers: str) -> tuple[str, dict, bytes]:
    request = RequestFactory().generic(method, path, headers=headers)
    answer: dict = {}

    def start_response(status, response_headers, exc_info=None):
        answer["status"], answer["headers"] = status, response_headers

    result = app(request.environ, start_response)
    try:
        body = b"".join(result)
    finally:
        if hasattr(result, "close"):  # as a WSGI server does (a list has none)
            result.close()
    return answer["status"], dict(answer["headers"]), body


def both(pair, path: str, method: str = "GET", **headers: str):
    """The fast path's answer and Django's answer to the same request."""
    fast, django = pair
    return call(fast, path, method, **headers), call(django, path, method, **headers)


def _published(name: str, kind: str = "conda", **fields) -> Channel:
    channel = ChannelFactory(name=name, kind=kind, **fields)
    publishing.channel_publish(channel=channel)
    return channel


@pytest.mark.django_db
def test_public_index_files_are_answered_exactly_as_django_answers_them(app):
    _published("c")
    pypi = _published("py", kind="pypi")
    sub = ChannelFactory(name="s", parent=pypi, kind="conda")
    publishing.channel_publish(channel=sub)
    _published("r", kind="cran")
    fast, django = app
    etag = call(django, f"/api/repo/c/{CONDA}")[1]["ETag"]
    requests = [
        ("GET", f"/api/repo/c/{CONDA}", {}),
        ("HEAD", f"/api/repo/c/{CONDA}", {}),
        ("GET", f"/api/repo/c/{CONDA}", {"If-None-Match": etag}),
        ("GET", f"/api/repo/c/{CONDA}", {"If-None-Match": '"other"'}),
        ("GET", f"/api/repo/c/{CONDA}", {"Range": "bytes=2-9"}),
        ("GET", f"/api/repo/c/{CONDA}", {"Range": "bytes=900000-"}),
        ("GET", f"/api/repo/c/{CONDA}.zst", {}),
        ("GET", "/api/repo/c/channeldata.json", {}),
        ("GET", f"/api/repo/c/{CONDA}?x=1", {}),
        ("GET", "/api/repo/py/simple/", {"Accept": "text/html"}),
        ("GET", "/api/repo/py/simple/", {"Accept": "application/vnd.pypi.simple.v1+json"}),
        ("GET", "/api/repo/py/simple/", {}),
        ("GET", f"/api/repo/py/s/{CONDA}", {}),
        ("GET", "/api/repo/r/src/contrib/PACKAGES", {}),
    ]
    for method, path, headers in requests:
        before = django.calls
        fast_answer, django_answer = both(app, path, method, **headers)
        assert fast_answer == django_answer, (method, path, headers)
        assert django.calls == before + 1, f"Django answered {method} {path} {headers}"


def _package(channel: Channel, filename: str, *, stored: bool = True, **fields) -> Package:
    """A package row of `channel` in noarch, its bytes stored unless `stored` is False."""
    artifact = None
    if stored:
        artifact = storage.store([f"bytes of {filename}".encode() * 100])
    fields.setdefault("upstream_url", f"http://127.0.0.1:9/{filename}")
    return Package.objects.create(
        channel=channel, unit="noarch", filename=filename, name=filename.split("-")[0],
        version="1", record="{}", artifact=artifact, on_demand=not stored, **fields,
    )  # fmt: skip


@pytest.mark.django_db
def test_stored_package_files_are_answered_as_django_answers_them(app):
    channel = _published("c")
    _package(channel, "ok-1-0.tar.bz2")
    _package(channel, "blocked-1-0.tar.bz2", excluded_reason="GHSA-xxxx score 9.8 >= 7.0")
    _package(channel, "pending-1-0.tar.bz2", excluded_reason=PENDING_DECISION)
    _package(channel, "gone-1-0.tar.bz2", removed=True)
    _package(channel, "passive-1-0.tar.bz2", stored=False)
    fast, django = app
    path = "/api/repo/c/noarch/ok-1-0.tar.bz2"
    etag = call(django, path)[1]["ETag"]
    served = [
        ("GET", path, {}),
        ("HEAD", path, {}),
        ("GET", path, {"If-None-Match": etag}),
        ("GET", path, {"Range": "bytes=5-20"}),
        ("GET", path, {"Range": "bytes=-3", "If-Range": etag}),
    ]
    for method, request_path, headers in served:
        before = django.calls
        fast_answer, django_answer = both(app, request_path, method, **headers)
        assert fast_answer == django_answer, (method, request_path, headers)
        assert django.calls == before + 1, f"Django answered {method} {request_path} {headers}"
    # Gone upstream but still in the published index: served until a publish drops it.
    fast_answer, django_answer = both(app, "/api/repo/c/noarch/gone-1-0.tar.bz2")
    assert fast_answer == django_answer and fast_answer[0].startswith("200")
    for name, status in [("blocked", "403"), ("pending", "404"), ("missing", "404")]:
        request_path = f"/api/repo/c/noarch/{name}-1-0.tar.bz2"
        before = django.calls
        fast_answer, django_answer = both(app, request_path)
        assert fast_answer == django_answer and fast_answer[0].startswith(status), name
        assert django.calls == before + 2, f"the fast path answered {name} itself"
    # A passive file's first request is the fast path's too: here its upstream refuses.
    request_path = "/api/repo/c/noarch/passive-1-0.tar.bz2"
    before = django.calls
    fast_answer, django_answer = both(app, request_path)
    assert fast_answer == django_answer and fast_answer[0].startswith("502")
    assert django.calls == before + 1, "Django answered the passive file's first request"
    # A Range or HEAD request of a passive file is Django's (it stores the file first).
    for method, headers in [("GET", {"Range": "bytes=0-3"}), ("HEAD", {})]:
        before = django.calls
        fast_answer, django_answer = both(app, request_path, method, **headers)
        assert fast_answer == django_answer, (method, headers)
        assert django.calls == before + 2, (method, headers)


@pytest.mark.django_db
def test_a_passive_files_first_request_is_streamed_as_django_streams_it(app, upstream):
    """Answered by the fast path (headers, body), fetched once, verified and stored; Django
    answers the same first request the same way."""
    data = os.urandom(3 * 1024 * 1024 + 5)
    url = upstream.write("passive-1-0.conda", data)
    channel = _published("c")
    package = _package(
        channel, "passive-1-0.conda", stored=False, upstream_url=url,
        sha256=hashlib.sha256(data).hexdigest(), size=len(data),
    )  # fmt: skip
    fast, django = app
    path = "/api/repo/c/noarch/passive-1-0.conda"
    answers = []
    for handler in (fast, django):
        Package.objects.filter(pk=package.pk).update(artifact=None)  # not fetched yet
        Artifact.objects.filter(sha256=hashlib.sha256(data).hexdigest()).delete()
        storage.delete_blob(hashlib.sha256(data).hexdigest())
        before = django.calls
        answers.append(call(handler, path))
        assert django.calls == before + (handler is django)
        package.refresh_from_db()
        assert package.artifact.sha256 == hashlib.sha256(data).hexdigest()
    assert answers[0] == answers[1]
    status, headers, body = answers[0]
    assert status.startswith("200") and body == data
    assert headers["Content-Length"] == str(len(data))
    assert [p for p in upstream.gets() if p.endswith(".conda")] == ["/passive-1-0.conda"] * 2


@pytest.mark.django_db
def test_everything_else_is_left_to_django_and_answered_as_before(app, make_user):
    _published("c")
    private = _published("secret", visibility=Channel.Visibility.PRIVATE)
    reader = make_user("channels_app.view_channel", username="reader")
    grant(private, reader)
    _token, secret = token_create(user=reader, name="t", resources=[(private, "read")])
    fast, django = app
    cases = [
        ("GET", "/api/repo/nope/noarch/repodata.json", {}),  # no such channel
        ("GET", "/api/repo/c/noarch/missing-1-0.tar.bz2", {}),  # not a published file
        ("GET", "/api/repo/c", {}),
        ("GET", f"/api/repo/secret/{CONDA}", {}),  # restricted: 404 as if missing
        ("GET", f"/api/repo/t/{secret}/secret/{CONDA}", {}),  # a token in the path
        ("GET", f"/api/repo/secret/{CONDA}", {"X-Auth": secret}),
        ("GET", f"/api/repo/secret/{CONDA}", {"Authorization": "Bearer nonsense"}),  # 401
        ("POST", f"/api/repo/c/{CONDA}", {}),  # CSRF: 403
        ("GET", "/api/repo/c/noarch/repodata.json?q=%00", {}),  # NUL: 400
        ("GET", f"/api/repo/c/{CONDA}", {"Host": "evil.example"}),  # not an allowed host: 400
    ]
    for method, path, headers in cases:
        fast_answer, django_answer = both(app, path, method, **headers)
        assert fast_answer[0] == django_answer[0], (method, path, headers)
        assert fast_answer == django_answer, (method, path, headers)
    statuses = [both(app, p, m, **h)[0][0][:3] for m, p, h in cases]
    assert statuses == ["404", "404", "404", "404", "200", "200", "401", "403", "400", "400"]


@pytest.mark.django_db
def test_what_the_fast_path_resolved_is_not_resolved_again(app, monkeypatch):
    """A request handed to Django (a package file) costs one lookup, not two."""
    _published("c")
    fast, _django = app
    calls = []
    from channels_app import lookup

    real = lookup.resolve
    monkeypatch.setattr(lookup, "resolve", lambda *a: calls.append(a) or real(*a))
    assert call(fast, "/api/repo/c/noarch/missing-1-0.tar.bz2")[0].startswith("404")
    assert len(calls) == 1


# --- the per-process cache ---------------------------------------------------------------------


@pytest.fixture
def cached(settings):
    """A fresh cache listening on the test database (committed data: transactional tests)."""
    if not _postgres():
        pytest.skip("the index cache needs PostgreSQL's LISTEN/NOTIFY")
    settings.PSM_SERVING_CACHE = True
    fresh = index_cache.IndexCache()
    original = index_cache.cache
    index_cache.cache = fresh
    import channels_app.fast_path as fast_path

    fast_path.cache = fresh
    fresh.get(("warm", None))  # starts the listener
    _until(lambda: fresh._listening, "the listener to LISTEN")
    yield fresh
    fresh.stop()
    index_cache.cache = fast_path.cache = original


def _postgres() -> bool:
    return connection.vendor == "postgresql"


def _committed(cache: index_cache.IndexCache, change):
    """Run `change` in a transaction, commit it, wait for its notification; its result."""
    with transaction.atomic(), connection.cursor() as cursor:
        result = change()
        cursor.execute("SELECT pg_current_xact_id()::text")
        xid = cursor.fetchone()[0]
    _until(lambda: xid in cache.notices, f"the notification of transaction {xid}")
    return result


def _until(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.mark.django_db(transaction=True)
def test_a_committed_change_reaches_the_cache_and_the_next_answer(cached, app, admin_user):
    channel = _committed(cached, lambda: _published("c"))
    fast, django = app
    path = f"/api/repo/c/{CONDA}"
    first = call(fast, path)
    assert first[0].startswith("200")
    calls = django.calls
    assert call(fast, path) == first and django.calls == calls
    assert cached._entries, "the answer was kept"

    _committed(cached, lambda: services.channel_freeze(channel=channel, user=admin_user))
    assert not cached._entries
    private = Channel.Visibility.PRIVATE
    _committed(cached, lambda: Channel.objects.filter(pk=channel.pk).update(visibility=private))
    assert call(fast, path)[0].startswith("404")
    assert call(fast, path, **{"If-None-Match": first[1]["ETag"]})[0].startswith("404")


@pytest.mark.django_db(transaction=True)
def test_a_republished_index_is_served_once_notified(cached, app):
    channel = _committed(cached, lambda: _published("c"))
    fast, _django = app
    path = f"/api/repo/c/{CONDA}"
    old = call(fast, path)[1]["ETag"]
    Package.objects.create(
        channel=channel, unit="noarch", filename="a-1-0.tar.bz2", name="a", version="1",
        record=orjson.dumps({"name": "a", "version": "1", "build": "0", "build_number": 0,
                             "depends": [], "subdir": "noarch"}).decode(),
        on_demand=True, upstream_url="http://127.0.0.1:9/a-1-0.tar.bz2",
    )  # fmt: skip
    Channel.objects.filter(pk=channel.pk).update(content_version=channel.content_version + 1)
    _committed(cached, lambda: publishing.channel_publish(channel=channel))
    status, headers, body = call(fast, path, **{"If-None-Match": old})
    assert status.startswith("200") and headers["ETag"] != old
    assert list(orjson.loads(body)["packages"]) == ["a-1-0.tar.bz2"]


@pytest.fixture
def listening():
    """A cache that behaves as if listening: its socket is one end of a pair, whose other end
    `notify` writes to."""
    cache = index_cache.IndexCache()
    ours, theirs = socket.socketpair()
    cache._listening, cache._pid, cache._socket = True, os.getpid(), ours.fileno()
    cache.notify = lambda: theirs.send(b"N")
    yield cache
    ours.close()
    theirs.close()


def test_a_notice_waiting_on_the_socket_is_a_miss_before_the_listener_reads_it(listening):
    listening.store(("p", None), "kept", listening.epoch())
    listening.store_answer("k", ("200 OK", (), b"kept"), listening.epoch())
    assert listening.get(("p", None)) == "kept" and listening.answer("k")[2] == b"kept"
    listening.notify()  # the listener has not run yet: what it would clear is still there
    assert listening._entries and listening._answers
    assert listening.get(("p", None)) is None and listening.answer("k") is None


def test_a_value_read_before_a_notice_is_not_kept(listening):
    cache = listening
    epoch = cache.epoch()
    cache.clear()  # a notification arrives while the request was resolving
    cache.store(("p", None), "stale", epoch)
    assert cache._entries == {}
    cache.store(("p", None), "fresh", cache.epoch())
    assert cache._entries == {("p", None): "fresh"}


def test_the_cache_is_bounded(listening):
    cache = listening
    for n in range(index_cache.MAX_ENTRIES + 10):
        cache.store((str(n), None), n, cache.epoch())
    assert len(cache._entries) == index_cache.MAX_ENTRIES
    assert ("0", None) not in cache._entries and (str(n), None) in cache._entries


@pytest.mark.django_db(transaction=True)
def test_a_commit_is_heeded_before_the_listening_thread_runs(cached, app):
    """A request that comes after the commit returned must not wait for the listening thread
    (another thread may hold the GIL): the notice on the socket is enough."""
    channel = _committed(cached, lambda: _published("c"))
    fast, _django = app
    path = f"/api/repo/c/{CONDA}"
    first = call(fast, path)
    assert call(fast, path) == first and cached._entries and cached._answers
    held, release = threading.Event(), threading.Event()
    wait = cached._wait_for_socket

    def hold(fd, timeout):
        held.set()
        release.wait()
        return wait(fd, timeout)

    cached._wait_for_socket = hold  # from its next wait (within a second)
    try:
        _until(held.is_set, "the listener to be held")
        private = Channel.Visibility.PRIVATE
        Channel.objects.filter(pk=channel.pk).update(visibility=private)
        _until(lambda: index_cache._readable(cached._socket, 0), "the notice on the socket")
        assert cached._entries and cached._answers  # not cleared: the thread is held
        assert call(fast, path)[0].startswith("404")
        assert call(fast, path, **{"If-None-Match": first[1]["ETag"]})[0].startswith("404")
    finally:
        release.set()
    _until(lambda: not cached._answers, "the listener to clear the cache")


@pytest.mark.django_db(transaction=True)
def test_nothing_is_served_from_the_cache_while_the_listener_is_disconnected(cached, app):
    _committed(cached, lambda: _published("c"))
    fast, django = app
    path = f"/api/repo/c/{CONDA}"
    call(fast, path)
    assert cached._entries
    with connection.cursor() as cursor:  # what an idle-session timeout or a restart would do
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            # This test database's listener only: not another test process's, on its own.
            "WHERE query LIKE 'LISTEN %%' AND datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
    _until(lambda: not cached._listening or not cached._entries, "the listener to notice")
    assert not cached._entries
    # It listens again by itself, from empty.
    _until(lambda: cached._listening, "the listener to LISTEN again")
    calls = django.calls
    assert call(fast, path)[0].startswith("200") and django.calls == calls


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_and_commits_never_leave_a_stale_answer(cached, app):
    """Requests in threads while the channel flips between public and private: once the last
    flip is notified, every answer is that of the final state."""
    channel = _committed(cached, lambda: _published("c"))
    fast, _django = app
    path = f"/api/repo/c/{CONDA}"
    stop = threading.Event()
    errors: list[BaseException] = []

    def hammer():
        try:
            while not stop.is_set():
                call(fast, path)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in threads:
        thread.start()
    for n in range(20):
        visibility = Channel.Visibility.PRIVATE if n % 2 == 0 else Channel.Visibility.PUBLIC
        Channel.objects.filter(pk=channel.pk).update(visibility=visibility)
    private = Channel.Visibility.PRIVATE
    _committed(cached, lambda: Channel.objects.filter(pk=channel.pk).update(visibility=private))
    stop.set()
    for thread in threads:
        thread.join()
    assert not errors
    for _ in range(5):
        assert call(fast, path)[0].startswith("404")


@pytest.mark.django_db(transaction=True)
def test_a_cached_package_path_still_asks_whether_the_file_is_let_out(cached, app):
    """Only where a package file is is kept; a file blocked since (a package row changes, which
    sends no notification) is refused at the next request."""
    channel = _committed(cached, lambda: _published("c"))
    package = _package(channel, "ok-1-0.tar.bz2")
    fast, django = app
    path = "/api/repo/c/noarch/ok-1-0.tar.bz2"
    assert call(fast, path)[0].startswith("200")
    assert any(key[0] == "c/noarch/ok-1-0.tar.bz2" for key in cached._entries)
    Package.objects.filter(pk=package.pk).update(excluded_reason="MAL-2026-1 (malicious)")
    calls = django.calls
    status, _headers, body = call(fast, path)
    assert status.startswith("403") and b"MAL-2026-1" in body and django.calls == calls + 1


# --- whole answers replayed ----------------------------------------------------------------------


class CountingHandler:
    """The fast path's own chain (middleware and view), counting the requests it answered."""

    def __init__(self, fast: RepoFastPath) -> None:
        self.handler, self.calls = fast._handler, 0
        fast._handler = self

    def __call__(self, request):
        self.calls += 1
        return self.handler(request)


@pytest.mark.django_db(transaction=True)
def test_an_index_files_answer_is_replayed_exactly_as_django_answers(cached, app):
    """A request asked again gets the answer kept from the first time, without the view or
    the middleware, and that answer is the one Django gives to the same request."""
    _committed(cached, lambda: _published("c"))
    pypi = _committed(cached, lambda: _published("py", kind="pypi"))
    _committed(cached, lambda: publishing.channel_publish(
        channel=ChannelFactory(name="s", parent=pypi, kind="conda")
    ))  # fmt: skip
    fast, django = app
    handler = CountingHandler(fast)
    etag = call(django, f"/api/repo/c/{CONDA}")[1]["ETag"]
    requests = [
        ("GET", f"/api/repo/c/{CONDA}", {}),
        ("HEAD", f"/api/repo/c/{CONDA}", {}),
        ("GET", f"/api/repo/c/{CONDA}", {"If-None-Match": etag}),
        ("HEAD", f"/api/repo/c/{CONDA}", {"If-None-Match": etag}),
        ("GET", f"/api/repo/c/{CONDA}", {"If-None-Match": '"other"'}),
        ("GET", f"/api/repo/c/{CONDA}.zst", {}),
        ("GET", f"/api/repo/c/{CONDA}?x=1", {}),
        ("GET", "/api/repo/py/simple/", {"Accept": "text/html"}),
        ("GET", "/api/repo/py/simple/", {"Accept": "application/vnd.pypi.simple.v1+json"}),
        ("GET", "/api/repo/py/simple/", {}),
        ("GET", f"/api/repo/py/s/{CONDA}", {}),
        ("GET", f"/api/repo/c/{CONDA}", {"Host": "localhost"}),
    ]
    for method, path, headers in requests:
        first = call(fast, path, method, **headers)
        answered = handler.calls
        again = call(fast, path, method, **headers)
        assert handler.calls == answered, f"{method} {path} {headers} was not replayed"
        assert again == first == call(django, path, method, **headers), (method, path, headers)
    assert len(cached._answers) == len(requests)


@pytest.mark.django_db(transaction=True)
def test_requests_an_answer_may_differ_for_are_answered_afresh(cached, app):
    """A request with anything the kept answers are not keyed by (a Range, a condition on a
    date, a cookie, a body), a disallowed host, a NUL, or for a package file, goes through the
    view every time, and is answered as Django answers it."""
    channel = _committed(cached, lambda: _published("c"))
    _package(channel, "ok-1-0.tar.bz2")
    fast, django = app
    handler = CountingHandler(fast)
    path = f"/api/repo/c/{CONDA}"
    etag, modified = (call(django, path)[1][h] for h in ("ETag", "Last-Modified"))
    call(fast, path)  # an answer kept for the plain request
    cases = [
        ("GET", path, {"Range": "bytes=2-9"}),
        ("GET", path, {"Range": "bytes=2-9", "If-Range": etag}),
        ("GET", path, {"If-Match": '"other"'}),
        ("GET", path, {"If-Modified-Since": modified}),
        ("GET", path, {"If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}),
        ("GET", path, {"Cookie": "a=b"}),
        ("GET", path, {"Host": "evil.example"}),
        ("GET", f"{path}?q=%00", {}),
        ("GET", "/api/repo/c/noarch/ok-1-0.tar.bz2", {}),
    ]
    for method, request_path, headers in cases:
        for _ in range(2):
            answered = handler.calls
            assert call(fast, request_path, method, **headers) == call(
                django, request_path, method, **headers
            ), (request_path, headers)
            assert handler.calls == answered + 1, (request_path, headers)
    statuses = [call(fast, p, m, **h)[0][:3] for m, p, h in cases]
    assert statuses == ["206", "206", "412", "304", "412", "200", "400", "400", "200"]
    assert list(cached._answers) == [fast_path_key(path)]


def fast_path_key(path: str) -> tuple:
    from channels_app.fast_path import ANSWER_KEY, _answer_key

    return _answer_key(RequestFactory().get(path).environ, ANSWER_KEY)


@pytest.mark.django_db(transaction=True)
def test_a_replayed_answer_is_dropped_by_the_next_notice(cached, app, admin_user):
    channel = _committed(cached, lambda: _published("c"))
    fast, _django = app
    path = f"/api/repo/c/{CONDA}"
    first = call(fast, path)
    assert call(fast, path) == first and cached._answers
    private = Channel.Visibility.PRIVATE
    _committed(cached, lambda: Channel.objects.filter(pk=channel.pk).update(visibility=private))
    assert not cached._answers
    assert call(fast, path)[0].startswith("404") and not cached._answers


def test_an_answer_read_before_a_notice_is_not_kept_and_answers_are_bounded(monkeypatch, listening):
    cache = listening
    epoch = cache.epoch()
    cache.clear()  # a notification arrives while the request was answered
    cache.store_answer("k", ("200 OK", (), b"stale"), epoch)
    assert cache.answer("k") is None
    monkeypatch.setattr(index_cache, "MAX_ANSWER_BYTES", 10 * index_cache.ANSWER_OVERHEAD)
    body = b"x" * index_cache.ANSWER_OVERHEAD
    for n in range(10):
        cache.store_answer(n, ("200 OK", (), body), cache.epoch())
    assert list(cache._answers) == [5, 6, 7, 8, 9]  # each counts twice the overhead
    assert cache._answer_bytes == 5 * 2 * index_cache.ANSWER_OVERHEAD
    cache.store_answer("huge", ("200 OK", (), body * 11), cache.epoch())
    assert "huge" not in cache._answers
    cache.clear()
    assert cache._answers == {} and cache._answer_bytes == 0
