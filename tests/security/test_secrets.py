"""Issue 12.4: a secret in a source URL is write-only, over real HTTP.

The upstream is a conda channel on loopback that exists only under `/t/SECRET123/chan/`: a run
that completes proves the token still reaches upstream (the positive control), while no page,
API answer, error, audit event, command output or log line shows it (`t/***` instead).
"""

from __future__ import annotations

import io
import logging
from io import StringIO

import pytest
import requests
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command

from mirrors_app.models import Mirror, SyncRun
from psm.redaction import RedactingFilter
from psm.tokens import token_create
from tests.factories import ChannelFactory, UserFactory
from tests.fixtures.conda_channel import ChannelServer, FakePackage, build_channel

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "SECRET123"
PACKAGES = [FakePackage("alpha", "1.0"), FakePackage("beta", "2.0", subdir="linux-64")]


@pytest.fixture
def source(tmp_path):
    root = build_channel(tmp_path / "served" / "t" / SECRET / "chan", PACKAGES)
    with ChannelServer(tmp_path / "served") as server:
        server.channel = root
        yield server


@pytest.fixture
def log_output():
    """What the handlers settings.LOGGING puts on the root logger write during the test."""
    handlers = [
        handler
        for handler in logging.getLogger().handlers
        if any(isinstance(f, RedactingFilter) for f in handler.filters)
    ]
    assert handlers, "settings.LOGGING must put RedactingFilter on the root handlers"
    stream = io.StringIO()
    previous = [handler.setStream(stream) for handler in handlers]
    yield stream
    for handler, old in zip(handlers, previous, strict=True):
        handler.setStream(old)


def _browser(live_server, username: str) -> requests.Session:
    """A session signed in through the admin login page, sending the CSRF token."""
    browser = requests.Session()
    page = browser.get(f"{live_server.url}/admin/login/", timeout=10)
    done = browser.post(
        f"{live_server.url}/admin/login/?next=/admin/",
        data={
            "username": username,
            "password": "pw",
            "csrfmiddlewaretoken": browser.cookies["csrftoken"],
        },
        headers={"Referer": page.url},
        timeout=10,
    )
    assert done.status_code == 200 and f"<strong>{username}</strong>" in done.text.lower()
    browser.headers["X-CSRFToken"] = browser.cookies["csrftoken"]
    browser.headers["Referer"] = f"{live_server.url}/admin/"
    return browser


def _user(username: str, *groups: str, **fields):
    user = UserFactory(username=username, **fields)
    for name in groups:
        user.groups.add(Group.objects.get(name=name))
    return user


def _create(live_server, admin, url: str) -> dict:
    ChannelFactory(name="main")
    created = admin.post(
        f"{live_server.url}/api/mirrors/",
        json={
            "channel": "main",
            "name": "forge",
            "mode": "passive",
            "kind": "conda",
            "source_url": url,
        },
        timeout=10,
    )
    assert created.status_code == 201, created.text
    return created.json()


def _secret_url(source) -> str:
    return f"{source.url}/t/{SECRET}/chan"


def test_nobody_reads_the_secret_back_and_it_still_reaches_upstream(
    live_server, source, run_mirror
):
    _user("root", is_superuser=True)
    _user(
        "reader",
        "Channels: Read",
        "Channel mirrors: Read",
        "Artifacts: Read",
        "Audit logs: Read",
    )
    admin = _browser(live_server, "root")
    created = _create(live_server, admin, _secret_url(source))
    shown = f"{source.url}/t/***/chan"
    assert created["source_url"] == shown
    assert SECRET not in str(created)
    mirror = Mirror.objects.get()
    assert mirror.source_url == _secret_url(source)  # written as given

    run = run_mirror(mirror)
    # Positive control: upstream only answers under the token, and it was asked there.
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert run.ingested == 2
    assert any(path.startswith(f"/t/{SECRET}/chan/") for _, path, *_ in source.requests)

    pk, run_pk, package = mirror.pk, run.pk, mirror.packages.first().pk
    pages = [
        f"/api/mirrors/{pk}/",
        "/api/mirrors/?channel=main",
        f"/api/mirrors/{pk}/details/",
        f"/api/runs/?mirror={pk}",
        f"/api/runs/{run_pk}/",
        "/api/audit/",
        "/api/schema/",
        "/admin/mirrors_app/mirror/",
        f"/admin/mirrors_app/mirror/{pk}/change/",
        f"/admin/mirrors_app/mirror/{pk}/details/",
        "/admin/mirrors_app/syncrun/",
        f"/admin/mirrors_app/syncrun/{run_pk}/change/",
        "/admin/psm/auditevent/",
        "/admin/channels_app/package/",
        f"/admin/channels_app/package/{package}/change/",
        "/api/channels/main/",
        f"/admin/channels_app/channel/{mirror.channel_id}/change/",
    ]
    reader = _browser(live_server, "reader")
    # Not 200 for the reader: All Mirrors needs Manage; the view-only change page is
    # test_a_view_only_change_page_shows_the_url_redacted.
    not_for_reader = {"/admin/mirrors_app/mirror/", f"/admin/mirrors_app/mirror/{pk}/change/"}
    for who, browser in (("reader", reader), ("admin", admin)):
        for page in pages:
            answer = browser.get(live_server.url + page, timeout=10)
            assert SECRET not in answer.text, f"{who} reads the secret at {page}"
            if who == "admin" or page not in not_for_reader:
                assert answer.status_code == 200, (who, page, answer.status_code)
    # Readers do see that there is a token, and where.
    assert reader.get(f"{live_server.url}/api/mirrors/{pk}/").json()["source_url"] == shown
    change_page = admin.get(f"{live_server.url}/admin/mirrors_app/mirror/{pk}/change/").text
    assert f'value="{shown}"' in change_page
    package_page = admin.get(f"{live_server.url}/admin/channels_app/package/{package}/change/")
    assert "/t/***/chan/" in package_page.text


def test_a_view_only_change_page_shows_the_url_redacted(live_server, source):
    _user("root", is_superuser=True)
    _user("reader", "Channels: Read", "Channel mirrors: Read")
    pk = _create(live_server, _browser(live_server, "root"), _secret_url(source))["id"]
    reader = _browser(live_server, "reader")
    page = reader.get(f"{live_server.url}/admin/mirrors_app/mirror/{pk}/change/", timeout=10)
    assert SECRET not in page.text
    assert page.status_code == 200
    assert "/t/***/chan" in page.text


def test_secrets_cannot_be_guessed_by_searching_or_filtering(live_server, source):
    _user("root", is_superuser=True)
    admin = _browser(live_server, "root")
    pk = _create(live_server, admin, _secret_url(source))["id"]
    guess = f"{source.url}/t/S"
    for page in (
        f"/admin/mirrors_app/mirror/?source_url__startswith={guess}",
        f"/admin/mirrors_app/mirror/?source_url__contains={SECRET}",
        f"/admin/mirrors_app/syncrun/?mirror__source_url__contains={SECRET}",
        f"/admin/channels_app/package/?upstream_url__contains={SECRET}",
    ):
        answer = admin.get(live_server.url + page, timeout=10)
        assert answer.status_code == 400, page  # Django's DisallowedModelAdminLookup
    # The search box looks at names only: a guess finds nothing, the name finds the mirror.
    search = f"{live_server.url}/admin/mirrors_app/mirror/?q="
    assert f"/mirror/{pk}/change/" not in admin.get(search + SECRET, timeout=10).text
    assert f"/mirror/{pk}/change/" in admin.get(search + "forge", timeout=10).text
    # The API has no such filters: a wrong guess lists the mirror all the same.
    listed = admin.get(
        f"{live_server.url}/api/mirrors/?channel=main&source_url__startswith=nope", timeout=10
    )
    assert [m["id"] for m in listed.json()["results"]] == [pk]


def test_an_edit_keeps_a_secret_left_as_stars_and_never_moves_it(live_server, source, run_mirror):
    _user("root", is_superuser=True)
    _user("writer", "Channels: Read", "Channel mirrors: Write")
    admin = _browser(live_server, "root")
    pk = _create(live_server, admin, _secret_url(source))["id"]
    writer = _browser(live_server, "writer")
    api = f"{live_server.url}/api/mirrors/{pk}/"
    shown = writer.get(api, timeout=10).json()["source_url"]

    # The URL as shown, sent back with another change, keeps the token.
    kept = writer.patch(api, json={"source_url": shown, "cron": "@weekly"}, timeout=10)
    assert kept.status_code == 200, kept.text
    assert kept.json()["source_url"] == shown and SECRET not in kept.text
    assert Mirror.objects.get().source_url == _secret_url(source)
    before = len(source.requests)
    run = run_mirror(Mirror.objects.get())
    assert run.state == SyncRun.State.COMPLETED, run.error  # upstream still accepts it
    assert all(path.startswith(f"/t/{SECRET}/") for _, path, *_ in source.requests[before:])

    # The admin form shows the same and keeps the token too.
    form = admin.get(f"{live_server.url}/admin/mirrors_app/mirror/{pk}/change/", timeout=10)
    assert f'value="{shown}"' in form.text and SECRET not in form.text
    saved = admin.post(
        f"{live_server.url}/admin/mirrors_app/mirror/{pk}/change/",
        data={
            "csrfmiddlewaretoken": admin.cookies["csrftoken"],
            "name": "forge",
            "source_url": shown,
            "kind": "conda",
            "cron": "@daily",
            "policy": "",
            "options": "{}",
            "_save": "Save",
        },
        allow_redirects=False,
        timeout=10,
    )
    assert saved.status_code == 302, saved.text
    assert Mirror.objects.get().source_url == _secret_url(source)
    assert Mirror.objects.get().cron == "0 0 * * *"

    # Stars sent to another host (or scheme, or port) are refused: the token stays home.
    elsewhere = shown.replace("127.0.0.1", "localhost")
    moved = writer.patch(api, json={"source_url": elsewhere}, timeout=10)
    assert moved.status_code == 400
    assert "enter the token again" in moved.json()["source_url"][0]
    assert SECRET not in moved.text
    moved = admin.post(
        f"{live_server.url}/admin/mirrors_app/mirror/{pk}/change/",
        data={
            "csrfmiddlewaretoken": admin.cookies["csrftoken"],
            "name": "forge",
            "source_url": elsewhere,
            "kind": "conda",
            "cron": "@daily",
            "policy": "",
            "options": "{}",
        },
        allow_redirects=False,
        timeout=10,
    )
    assert moved.status_code == 200 and "enter the token again" in moved.text
    assert SECRET not in moved.text
    assert Mirror.objects.get().source_url == _secret_url(source)

    # A new secret can be written (with a new host too) and is not read back either.
    new_url = f"{source.url.replace('127.0.0.1', 'localhost')}/t/NEWTOKEN456/chan"
    changed = writer.patch(api, json={"source_url": new_url}, timeout=10)
    assert changed.status_code == 200, changed.text
    assert "NEWTOKEN456" not in changed.text and "/t/***/chan" in changed.json()["source_url"]
    assert Mirror.objects.get().source_url == new_url


def test_a_failing_run_logs_and_reports_the_url_without_its_secret(
    live_server, source, run_mirror, log_output, caplog
):
    _user("root", is_superuser=True)
    _user("reader", "Channels: Read", "Channel mirrors: Read")
    admin = _browser(live_server, "root")
    pk = _create(live_server, admin, _secret_url(source))["id"]
    for subdir in ("noarch", "linux-64"):  # every unit unreadable: the run fails
        (source.channel / subdir / "repodata.json.zst").write_bytes(b"not zstd")
    caplog.set_level(logging.INFO)

    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError) as failed:
        call_command("mirror_run", "forge", stdout=out, stderr=err)

    run = SyncRun.objects.get()
    assert run.state == SyncRun.State.FAILED
    shown = f"{source.url}/t/***/chan"
    assert f"{shown}/noarch/repodata.json" in run.error  # the error says where, redacted
    assert f"{shown}/noarch/repodata.json" in str(failed.value)
    logged = log_output.getvalue()
    assert f"{shown}/linux-64/repodata.json" in logged  # the sync loop's warning
    reader = _browser(live_server, "reader")
    answer = reader.get(f"{live_server.url}/api/runs/?mirror={pk}", timeout=10)
    assert "/t/***/chan" in answer.json()["results"][0]["error"]
    for text in (run.error, str(failed.value), out.getvalue(), err.getvalue(), logged):
        assert SECRET not in text
    assert SECRET not in caplog.text
    assert all(SECRET not in record.getMessage() for record in caplog.records)


def test_a_crash_in_the_sync_loop_is_logged_without_the_secret(
    source, run_mirror, log_output, caplog, monkeypatch
):
    from mirrors_app import sync
    from tests.factories import MirrorFactory

    mirror = MirrorFactory(source_url=_secret_url(source))

    def crash(run, mirror, client, progress):
        raise RuntimeError(f"cannot read {mirror.source_url}/noarch/repodata.json")

    monkeypatch.setattr(sync, "_sync_units", crash)  # a bug quoting the URL, in our own code
    run = run_mirror(mirror)

    assert run.state == SyncRun.State.FAILED
    assert run.error == (
        f"Internal error: RuntimeError: cannot read {source.url}/t/***/chan/noarch/repodata.json"
    )
    logged = log_output.getvalue()
    assert "crashed" in logged and "Traceback" in logged and "t/***/chan" in logged
    assert SECRET not in logged and SECRET not in caplog.text


def test_package_route_tokens_stay_out_of_the_request_log(live_server, log_output):
    owner = UserFactory(username="owner")
    _, real = token_create(user=owner, name="ci")  # valid, for a channel that does not exist
    forged = "psm_" + "x" * 43
    for token, status in ((real, 404), (forged, 401)):
        answer = requests.get(
            f"{live_server.url}/api/repo/t/{token}/nochannel/noarch/repodata.json", timeout=10
        )
        assert answer.status_code == status
    logged = log_output.getvalue()
    assert "Not Found: /api/repo/t/***/nochannel/noarch/repodata.json" in logged
    assert "/api/repo/t/***/nochannel" in logged
    assert real not in logged and forged not in logged
