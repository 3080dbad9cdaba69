"""PSM under its documented production server (`python -m psm.server`: uWSGI, 2 worker
processes) answers real clients: pip installs through it, a passive file is streamed, verified
and then served from storage, conditional and range requests work, an API call with a token
writes, and a committed change (a channel made private) reaches every worker's cache at once.

The server runs in its own processes on the test database, so these tests commit
(`transaction=True`); it needs PostgreSQL (the processes share the database, and the cache
listens for PostgreSQL's notifications).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from django.db import connection

from channels_app.models import Channel, Package
from mirrors_app.models import Mirror, SyncRun
from psm.tokens import token_create
from tests.factories import ChannelFactory, MirrorFactory, UserFactory
from tests.fixtures.conda_channel import ChannelServer, FakePackage, build_channel
from tests.fixtures.pypi_index import FakeDist, IndexServer, build_index, pip_install

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="the server's processes share PostgreSQL"
    ),
]
ROOT = Path(__file__).resolve().parents[2]
BIG = FakePackage("big", "1.0", fmt=".conda", files={"data.bin": os.urandom(3 * 1024 * 1024)})


def _database_url() -> str:
    db = connection.settings_dict
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host, port = db.get("HOST") or "127.0.0.1", db.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


@pytest.fixture
def production(tmp_path, refused_url):
    """The base URL of PSM served by `python -m psm.server` on this test's data."""
    port = urlsplit(refused_url).port  # a free port
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "psm.settings",
        "DATABASE_URL": _database_url(),
        "PSM_DATA_DIR": str(tmp_path),  # its files/ is the test's storage (conftest)
        "PSM_UPSTREAM_ALLOWLIST": "127.0.0.1,localhost",
        "PSM_HTTP_RETRIES": "0",
        "PSM_BIND": f"127.0.0.1:{port}",
        "PSM_WEB_WORKERS": "2",
        "PSM_WEB_THREADS": "4",
    }
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "psm.server"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{url}/api/repo/", timeout=2)
                break
            except (requests.ConnectionError, requests.Timeout):  # not listening, or loading
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the production server did not start:\n{log.read_text()}")
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _synced(run_mirror, channel: Channel, url: str, **options) -> Channel:
    mirror = MirrorFactory(
        channel=channel,
        kind=channel.kind,
        mode=Mirror.Mode.PASSIVE,
        source_url=url,
        options=options,
    )
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    return channel


def test_pip_installs_through_the_production_server(run_mirror, production, tmp_path):
    dists = [FakeDist("alpha", "1.0"), FakeDist("beta", "0.5", requires=["alpha>=1"])]
    with IndexServer(build_index(tmp_path / "index", dists)) as upstream:
        channel = _synced(run_mirror, ChannelFactory(kind="pypi"), upstream.index_url)
        index_url = f"{production}/api/repo/{channel.path}/simple/"
        result = pip_install(index_url, ["beta"], tmp_path / "target")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "target" / "beta").is_dir() and (tmp_path / "target" / "alpha").is_dir()
    # pip had PSM's index alone; the passive mirror fetched, verified and stored both wheels.
    stored = Package.objects.filter(channel=channel, artifact__isnull=False)
    assert sorted(p.name for p in stored if p.filename.endswith(".whl")) == ["alpha", "beta"]


def test_a_passive_file_is_streamed_then_served_from_storage(run_mirror, production, tmp_path):
    with ChannelServer(build_channel(tmp_path / "channel", [BIG])) as upstream:
        channel = _synced(run_mirror, ChannelFactory(), upstream.url, subdirs=["noarch"])
        url = f"{production}/api/repo/{channel.path}/noarch/{BIG.filename}"
        expected = (upstream.root / "noarch" / BIG.filename).read_bytes()
        first = requests.get(url, timeout=30)
    assert first.status_code == 200 and first.content == expected
    # Upstream is gone: the rest comes from PSM's storage.
    cached = requests.get(url, timeout=30)
    assert cached.status_code == 200 and cached.content == expected
    assert cached.headers["ETag"] == f'"{hashlib.sha256(expected).hexdigest()}"'
    again = requests.get(url, headers={"If-None-Match": cached.headers["ETag"]}, timeout=30)
    assert again.status_code == 304 and again.content == b""
    ranged = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=30)
    assert ranged.status_code == 206 and ranged.content == expected[10:20]
    head = requests.head(url, timeout=30)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(expected))


def test_a_committed_change_reaches_every_worker(run_mirror, production, tmp_path):
    with ChannelServer(build_channel(tmp_path / "channel", [BIG])) as upstream:
        channel = _synced(run_mirror, ChannelFactory(), upstream.url, subdirs=["noarch"])
    url = f"{production}/api/repo/{channel.path}/noarch/repodata.json"
    # New connections, so both worker processes answer (and cache) the index.
    answers = [requests.get(url, headers={"Connection": "close"}, timeout=10) for _ in range(20)]
    assert {a.status_code for a in answers} == {200}
    etag = answers[0].headers["ETag"]
    assert requests.get(url, headers={"If-None-Match": etag}, timeout=10).status_code == 304

    owner = UserFactory(is_superuser=True, is_staff=True)
    _, secret = token_create(user=owner, name="ops", kind="scope", scopes=["channel:manage"])
    changed = requests.patch(
        f"{production}/api/channels/{channel.name}/",
        json={"visibility": "private"},
        headers={"Authorization": f"Token {secret}"},
        timeout=10,
    )
    assert changed.status_code == 200, changed.text
    refused = [requests.get(url, headers={"Connection": "close"}, timeout=10) for _ in range(20)]
    assert all(a.status_code in (401, 404) for a in refused), [a.status_code for a in refused]
    assert all(BIG.filename.encode() not in a.content for a in refused)
