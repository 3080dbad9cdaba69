"""Shared fixtures: users with permissions, an API client, and upstream repositories on loopback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.db import connection
from rest_framework.test import APIClient

from tests.factories import UserFactory
from tests.fixtures.celery_worker import broker, worker  # noqa: F401 - fixtures, for every module
from tests.fixtures.loopback import LoopbackServer


@pytest.fixture(scope="session", autouse=True)
def _close_stray_sessions(django_db_setup, django_db_blocker):
    """Connections that threads or processes started by tests leave open (a live server's
    request thread, a worker killed with SIGKILL) would keep the test database from being
    dropped at the end: end them first."""
    test_database = connection.settings_dict["NAME"]
    yield
    if connection.vendor != "postgresql" or connection.settings_dict["NAME"] != test_database:
        return  # not PostgreSQL, or the test database is gone already
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture(autouse=True)
def _loopback_upstreams(settings):
    """Tests only ever talk to loopback: allow it, and nothing else, as a mirror source.

    The address entry allows 127.0.0.1 itself (loopback needs an address entry); the name
    "localhost" passes the URL check and connects to 127.0.0.1, its other answers (::1) are
    skipped as not allowed.
    """
    settings.PSM_UPSTREAM_ALLOWLIST = ["127.0.0.1", "localhost"]
    settings.PSM_HTTP_RETRIES = 0
    settings.PSM_HTTP_TIMEOUT = 10


@pytest.fixture(autouse=True)
def _no_lockout_by_default(settings):
    """Tests that send bad credentials on purpose are not locked out by the login throttle;
    tests/security/test_hardening.py tests the lockout at the real limit. Each test starts with
    no refusal remembered (failures are rows, rolled back; the cache marks addresses)."""
    settings.AXES_FAILURE_LIMIT = 1000
    cache.clear()


@pytest.fixture
def make_user(db):
    """Create a staff user holding the given permissions ("app_label.codename")."""

    def make(*perms: str, username: str | None = None):
        user = UserFactory(**({"username": username} if username else {}))
        for perm in perms:
            app_label, codename = perm.split(".")
            user.user_permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
        return user

    return make


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def upstream(tmp_path) -> Iterator[LoopbackServer]:
    """An empty upstream on 127.0.0.1: tests `write` its files and damage its paths."""
    root = tmp_path / "upstream"
    root.mkdir()
    with LoopbackServer(root) as server:
        yield server


@pytest.fixture
def outside(tmp_path) -> Iterator[LoopbackServer]:
    """A server PSM must never reach: on 127.0.0.2, loopback too but on no test allowlist."""
    root = tmp_path / "outside"
    root.mkdir()
    with LoopbackServer(root, host="127.0.0.2") as server:
        yield server
    assert server.requests == [], "PSM reached a host off the allowlist"


def conda_record(name: str, version: str, build: str = "0", subdir: str = "noarch") -> dict:
    return {
        "name": name,
        "version": version,
        "build": build,
        "build_number": 0,
        "depends": [],
        "license": "MIT",
        "subdir": subdir,
        "md5": "0" * 32,
        "sha256": "0" * 64,
        "size": 100,
    }


@pytest.fixture
def conda_upstream(upstream):
    """A small conda channel: 2 noarch records and 1 linux-64 record."""
    upstream.write("channeldata.json", {"subdirs": ["linux-64", "noarch"], "packages": {}})
    upstream.write(
        "noarch/repodata.json",
        {
            "info": {"subdir": "noarch"},
            "packages": {"alpha-1.0-0.tar.bz2": conda_record("alpha", "1.0")},
            "packages.conda": {"alpha-1.1-0.conda": conda_record("alpha", "1.1")},
        },
    )
    upstream.write(
        "linux-64/repodata.json",
        {
            "info": {"subdir": "linux-64"},
            "packages": {},
            "packages.conda": {"beta-2.0-0.conda": conda_record("beta", "2.0", subdir="linux-64")},
        },
    )
    return upstream


@pytest.fixture
def helper_connections_refused(monkeypatch) -> list[str]:
    """PostgreSQL refuses the connections of PSM's helper threads (the names, probes and
    removals asked on a connection of their own), as a server at its connection limit does;
    the list returned gets the name of each thread refused."""
    import psycopg
    from django.db.backends.postgresql.base import DatabaseWrapper

    refused, real = [], DatabaseWrapper.get_new_connection

    def get_new_connection(self, params):
        name = threading.current_thread().name
        if name in ("psm-names", "psm-probes", "psm-removals"):
            refused.append(name)
            raise psycopg.OperationalError("sorry, too many clients already")
        return real(self, params)

    monkeypatch.setattr(DatabaseWrapper, "get_new_connection", get_new_connection)
    return refused


@pytest.fixture
def refused_url() -> str:
    """A URL on 127.0.0.1 where nothing listens, so connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def resolver(monkeypatch):
    """Answers for names, in place of DNS (our own seam: `psm.http.gate.resolve_host`): set
    `resolver.answers[name]`; `resolver.asked` lists the names looked up."""
    answers: dict[str, list[str]] = {}
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[host]

    monkeypatch.setattr("psm.http.gate.resolve_host", resolve)
    resolve.answers, resolve.asked = answers, asked
    return resolve


@pytest.fixture(autouse=True)
def _isolated_storage(settings, tmp_path):
    """Each test stores package and index files in its own folder."""
    settings.MEDIA_ROOT = tmp_path / "files"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "files")},
        },
    }


@pytest.fixture
def run_mirror():
    """Run a mirror in this process, as `manage.py mirror_run` does; return the finished run."""
    from mirrors_app import services, sync
    from mirrors_app.models import SyncRun

    def run(mirror, *, restart: bool = False) -> SyncRun:
        trigger = SyncRun.Trigger.RESTART if restart else SyncRun.Trigger.MANUAL
        queued = services.sync_run_create(mirror=mirror, trigger=trigger)
        claimed = services.sync_run_claim(run_id=queued.pk)
        sync.run_sync(claimed)
        claimed.refresh_from_db()
        mirror.refresh_from_db()
        return claimed

    return run
