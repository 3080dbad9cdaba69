"""Continuous enforcement: an advisory load, a policy change or a new policy assignment decides
a mirror's stored packages again and republishes its channel at once, without asking the
upstream; the change is recorded (PolicyEnforcement, the audit log) and announced."""

from __future__ import annotations

import hashlib
import hmac
import json

import orjson
import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from channels_app import services as channel_services
from channels_app.models import Channel, Package
from mirrors_app import reports
from mirrors_app import services as mirror_services
from mirrors_app.models import Mirror, PolicyEnforcement, SyncRun
from policies_app import enforcement, services, tasks
from psm.models import AuditEvent
from tests.factories import ChannelFactory, MirrorFactory, PolicyFactory, SyncRunFactory
from tests.fixtures.celery_worker import Worker, wait_until, worker_env
from tests.fixtures.http import response_body
from tests.fixtures.webhook import WebhookReceiver

BLOCKED = "noarch/alpha-1.0-0.tar.bz2"  # alpha <1.1 is affected by ADVISORY
CVE = "CVE-2099-0001"
ADVISORY = {
    "schema_version": "1.6.0",
    "id": "PSM-2099-0001",
    "modified": "2099-01-02T00:00:00Z",
    "published": "2099-01-01T00:00:00Z",
    "aliases": [CVE],
    "summary": "Remote code execution in alpha",
    "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
    "affected": [
        {
            "package": {"ecosystem": "conda", "name": "alpha"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.1"}]}],
        }
    ],
}


@pytest.fixture
def advisory(tmp_path):
    """An OSV advisory file (ecosystem conda) affecting alpha 1.0 with a CVSS score of 9.8."""
    path = tmp_path / "advisories" / "PSM-2099-0001.json"
    path.parent.mkdir()
    path.write_text(json.dumps(ADVISORY))
    return path


@pytest.fixture
def enforce_inline(monkeypatch):
    """Run the enforcement task in this process when it is queued (on commit), as a worker
    would; `enforce_inline.calls` holds the arguments it was queued with."""
    calls: list[dict] = []

    def delay(**kwargs):
        calls.append(kwargs)
        return tasks.enforce.apply(kwargs=kwargs)

    monkeypatch.setattr(tasks.enforce, "delay", delay)
    delay.calls = calls
    return delay


@pytest.fixture
def synced(conda_upstream, run_mirror):
    """A passive mirror of the conda upstream in a channel whose policy keeps out packages with
    an advisory scored 7 or more, run once (its channel published)."""
    policy = PolicyFactory(cve_score=7)
    mirror = MirrorFactory(channel=ChannelFactory(policy=policy), source_url=conda_upstream.url)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    return mirror


def listed(client, channel: Channel, subdir: str = "noarch") -> list[str]:
    """The files the served repodata.json of `subdir` lists."""
    response = client.get(f"/api/repo/{channel.path}/{subdir}/repodata.json")
    assert response.status_code == 200
    document = orjson.loads(response_body(response))
    return sorted(
        f"{subdir}/{name}" for key in ("packages", "packages.conda") for name in document[key]
    )


def excluded(mirror: Mirror, key: str) -> str:
    unit, filename = key.split("/")
    return Package.objects.get(mirror=mirror, unit=unit, filename=filename).excluded_reason


# --- Advisory loads --------------------------------------------------------------------------


@pytest.mark.django_db
def test_advisory_load_blocks_the_affected_file_at_once(
    synced, advisory, enforce_inline, conda_upstream, client, django_capture_on_commit_callbacks
):
    assert BLOCKED in listed(client, synced.channel)
    asked = len(conda_upstream.requests)

    with django_capture_on_commit_callbacks(execute=True):
        call_command("load_vulnerabilities", str(advisory))

    assert [call["trigger"] for call in enforce_inline.calls] == [
        "advisories loaded (1 created, 0 updated, 0 unchanged, 0 errors)"
    ]
    assert listed(client, synced.channel) == ["noarch/alpha-1.1-0.conda"]
    assert CVE in excluded(synced, BLOCKED)
    assert len(conda_upstream.requests) == asked  # decided from the database alone
    (record,) = PolicyEnforcement.objects.filter(mirror=synced)
    assert (record.left, record.entered, record.would_leave) == (1, 0, 0)
    assert record.changes == [
        {"path": BLOCKED, "change": "left", "reason": excluded(synced, BLOCKED)}
    ]
    assert record.published and not record.dry_run
    assert record.policy_name == synced.channel.policy.name
    event = AuditEvent.objects.get(action="policy.enforce")
    assert event.actor is None and event.target_id == str(synced.pk)
    assert event.details["changes"] == record.changes
    assert event.details["trigger"] == record.trigger


@pytest.mark.django_db
def test_loading_nothing_new_queues_no_enforcement(
    advisory, enforce_inline, django_capture_on_commit_callbacks
):
    services.vulnerabilities_load(path=advisory)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        result = services.vulnerabilities_load(path=advisory)
    assert (result.created, result.updated, result.unchanged) == (0, 0, 1)
    assert callbacks == []


# --- Policy changes and assignments -----------------------------------------------------------


@pytest.mark.django_db
def test_a_policy_change_decides_again_and_republishes(
    synced, enforce_inline, client, conda_upstream, make_user, django_capture_on_commit_callbacks
):
    policy = synced.channel.policy
    policy.block_specs = ["alpha >=1.1"]
    asked = len(conda_upstream.requests)

    with django_capture_on_commit_callbacks(execute=True):
        services.policy_save(policy=policy, user=make_user(username="alice"))

    assert enforce_inline.calls == [
        {
            "trigger": f"policy {policy.name!r} changed (block_specs) by alice",
            "policy_id": policy.pk,
            "mirror_ids": None,
        }
    ]
    assert listed(client, synced.channel) == ["noarch/alpha-1.0-0.tar.bz2"]
    (record,) = synced.enforcements.all()
    assert record.changes == [
        {
            "path": "noarch/alpha-1.1-0.conda",
            "change": "left",
            "reason": "blocked by package rule 'alpha >=1.1'",
        }
    ]
    assert len(conda_upstream.requests) == asked


@pytest.mark.django_db
def test_renaming_a_policy_enforces_nothing(
    synced, enforce_inline, django_capture_on_commit_callbacks
):
    policy = synced.channel.policy
    policy.name, policy.description = "renamed", "changed too"
    with django_capture_on_commit_callbacks(execute=True):
        services.policy_save(policy=policy)
    assert enforce_inline.calls == []


@pytest.mark.django_db
def test_a_policy_change_reaches_only_the_mirrors_it_governs(synced, conda_upstream, run_mirror):
    own = PolicyFactory(block_specs=["beta"])
    other = MirrorFactory(channel=ChannelFactory(), policy=own, source_url=conda_upstream.url)
    run_mirror(other)
    governed = {m.pk for m in enforcement.affected_mirrors(policy_id=synced.channel.policy_id)}
    assert governed == {synced.pk}
    assert {m.pk for m in enforcement.affected_mirrors(policy_id=own.pk)} == {other.pk}
    assert {m.pk for m in enforcement.affected_mirrors()} == {synced.pk, other.pk}


@pytest.mark.django_db
def test_a_new_channel_policy_decides_its_mirrors_again(
    synced, enforce_inline, client, make_user, django_capture_on_commit_callbacks
):
    channel = synced.channel
    channel.policy = PolicyFactory(block_specs=["beta"])

    with django_capture_on_commit_callbacks(execute=True):
        channel_services.channel_update(channel=channel, user=make_user(username="bob"))

    assert enforce_inline.calls == [
        {
            "trigger": f"policy of channel {channel.path!r} set to {channel.policy.name!r} by bob",
            "policy_id": None,
            "mirror_ids": [synced.pk],
        }
    ]
    assert listed(client, channel, "linux-64") == []
    (record,) = synced.enforcements.all()
    assert [(c["path"], c["change"]) for c in record.changes] == [
        ("linux-64/beta-2.0-0.conda", "left")
    ]


@pytest.mark.django_db
def test_a_new_mirror_policy_decides_the_mirror_again(
    synced, enforce_inline, client, django_capture_on_commit_callbacks
):
    synced.policy = PolicyFactory(allow_specs=["beta"])

    with django_capture_on_commit_callbacks(execute=True):
        mirror_services.mirror_save(mirror=synced)

    assert [call["mirror_ids"] for call in enforce_inline.calls] == [[synced.pk]]
    assert listed(client, synced.channel) == []
    assert listed(client, synced.channel, "linux-64") == ["linux-64/beta-2.0-0.conda"]
    (record,) = synced.enforcements.all()
    assert record.left == 2 and record.policy_name == synced.policy.name


@pytest.mark.django_db
def test_saving_a_mirror_without_a_policy_change_enforces_nothing(
    synced, enforce_inline, django_capture_on_commit_callbacks
):
    synced.cron = "0 3 * * *"
    with django_capture_on_commit_callbacks(execute=True):
        mirror_services.mirror_save(mirror=synced)
    assert enforce_inline.calls == []


# --- Skips ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_unchanged_mirror_is_skipped_unless_forced(synced, advisory):
    services.vulnerabilities_load(path=advisory)
    assert len(enforcement.enforce(trigger="advisories")) == 1
    # Put the blocked file back by hand: only a decision that actually runs notices.
    Package.objects.filter(mirror=synced, filename="alpha-1.0-0.tar.bz2").update(excluded_reason="")

    assert enforcement.enforce(trigger="again") == []
    assert excluded(synced, BLOCKED) == ""

    (record,) = enforcement.enforce(trigger="forced", force=True)
    assert record.trigger == "forced" and record.left == 1
    assert CVE in excluded(synced, BLOCKED)


@pytest.mark.django_db
def test_a_forced_enforcement_that_changes_nothing_records_nothing(synced):
    assert enforcement.enforce(trigger="forced", force=True) == []
    assert not PolicyEnforcement.objects.exists()
    assert not AuditEvent.objects.filter(action="policy.enforce").exists()


@pytest.mark.django_db
def test_a_mirror_with_an_active_run_is_left_to_the_run(synced, advisory, client):
    services.vulnerabilities_load(path=advisory)
    now = timezone.now()
    run = SyncRunFactory(mirror=synced, state=SyncRun.State.RUNNING, started_at=now)
    fingerprint = Mirror.objects.get(pk=synced.pk).policy_fingerprint

    assert enforcement.enforce(trigger="advisories") == []

    assert excluded(synced, BLOCKED) == ""
    assert BLOCKED in listed(client, synced.channel)
    # Unchanged, so the run decides again at its end.
    assert Mirror.objects.get(pk=synced.pk).policy_fingerprint == fingerprint
    SyncRun.objects.filter(pk=run.pk).update(state=SyncRun.State.COMPLETED)
    (record,) = enforcement.enforce(trigger="advisories")
    assert record.left == 1


@pytest.mark.django_db
def test_the_hourly_check_decides_only_what_changed(synced, advisory):
    assert tasks.enforce_due.apply().get() == "0 mirror(s) changed"
    services.vulnerabilities_load(path=advisory)
    assert tasks.enforce_due.apply().get() == "1 mirror(s) changed"
    assert synced.enforcements.get().trigger == enforcement.SCHEDULED


def test_the_hourly_check_is_scheduled(settings):
    entries = [
        e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == "policies.enforce_due"
    ]
    assert entries == [{"task": "policies.enforce_due", "schedule": 3600.0}]


# --- Frozen channels ------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_frozen_channel_keeps_its_index_without_enforce_on_frozen(
    synced, advisory, client, make_user
):
    channel_services.channel_freeze(channel=synced.channel, user=make_user())
    services.vulnerabilities_load(path=advisory)

    (record,) = enforcement.enforce(trigger="advisories")

    assert record.left == 1 and record.published is False
    assert BLOCKED in listed(client, synced.channel)  # the pinned index is kept
    assert CVE in excluded(synced, BLOCKED)  # decided all the same


# --- Details, API and admin -----------------------------------------------------------------


@pytest.fixture
def enforced(synced, advisory):
    """The synced mirror after an advisory load blocked alpha 1.0, and a dry-run verdict on
    beta (as a dry-run policy would have recorded it)."""
    services.vulnerabilities_load(path=advisory)
    enforcement.enforce(trigger="advisories loaded")
    Package.objects.filter(mirror=synced, name="beta").update(
        would_exclude_reason="blocked by package rule 'beta'"
    )
    return synced


@pytest.mark.django_db
def test_details_show_enforcements_and_the_dry_run_figure(enforced):
    details = reports.mirror_details(enforced)

    assert [r.trigger for r in details["enforcements"]] == ["advisories loaded"]
    assert details["would_block"] == 1
    assert set(reports.STATES) <= set(details["packages"])  # the partition is untouched
    assert sum(details["packages"][s] for s in reports.STATES) == details["packages"]["offered"]
    assert [f["path"] for f in reports.mirror_files(enforced, "would_block")] == [
        "linux-64/beta-2.0-0.conda"
    ]
    assert reports.mirror_files(enforced, "would_block")[0]["reason"] == (
        "blocked by package rule 'beta'"
    )


@pytest.mark.django_db
def test_api_lists_enforcements_newest_first_and_the_would_block_files(
    enforced, api_client, make_user
):
    PolicyEnforcement.objects.create(mirror=enforced, trigger="later", entered=1)
    api_client.force_authenticate(make_user("mirrors_app.view_mirror"))

    response = api_client.get(f"/api/mirrors/{enforced.pk}/enforcements/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == 2
    assert [r["trigger"] for r in body["results"]] == ["later", "advisories loaded"]
    assert body["results"][1]["changes"][0]["path"] == BLOCKED
    assert body["results"][1]["left"] == 1

    details = api_client.get(f"/api/mirrors/{enforced.pk}/details/").json()
    assert details["would_block"] == 1
    assert [r["trigger"] for r in details["enforcements"]] == ["later", "advisories loaded"]
    files = api_client.get(f"/api/mirrors/{enforced.pk}/files/?state=would_block").json()
    assert files["count"] == 1
    assert files["results"][0]["path"] == "linux-64/beta-2.0-0.conda"
    wrong = api_client.get(f"/api/mirrors/{enforced.pk}/files/?state=nonsense")
    assert wrong.status_code == 400 and "would_block" in str(wrong.json())


@pytest.mark.django_db
def test_admin_details_page_shows_enforcement_and_the_dry_run_list(enforced, client, make_user):
    client.force_login(make_user("mirrors_app.view_mirror"))

    response = client.get(reverse("admin:mirrors_app_mirror_details", args=[enforced.pk]))

    assert response.status_code == 200
    html = response.content.decode()
    assert "Policy enforcement" in html
    assert 'id="enforcements"' in html and "advisories loaded" in html
    assert BLOCKED in html and CVE in html
    assert reverse("mirror-enforcements", args=[enforced.pk]) in html
    assert 'id="would-block-files"' in html and "linux-64/beta-2.0-0.conda" in html
    assert f"{reverse('mirror-files', args=[enforced.pk])}?state=would_block" in html


# --- Through a real worker ------------------------------------------------------------------


@pytest.fixture
def worker_storage(settings):
    """Store files where a worker does (its data directory is this process's), so that what
    it publishes is served here."""
    files = settings.DATA_DIR / "files"
    settings.MEDIA_ROOT = files
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(files)},
        },
    }


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_an_advisory_load_blocks_through_the_worker_and_announces_it(
    broker, worker_storage, conda_upstream, run_mirror, advisory, client, settings, tmp_path
):
    """The load queues the enforcement; a real worker decides, republishes, records and
    announces it to the webhook (signed), and the upstream sees no request meanwhile."""
    policy = PolicyFactory(cve_score=7)
    mirror = MirrorFactory(channel=ChannelFactory(policy=policy), source_url=conda_upstream.url)
    assert run_mirror(mirror).state == SyncRun.State.COMPLETED
    assert BLOCKED in listed(client, mirror.channel)
    asked = len(conda_upstream.requests)
    with WebhookReceiver(tmp_path) as hook:
        secret = "s3cret"
        settings.PSM_WEBHOOK_URL, settings.PSM_WEBHOOK_SECRET = hook.url + "/psm", secret
        worker = Worker(
            worker_env(broker, PSM_WEBHOOK_URL=hook.url + "/psm", PSM_WEBHOOK_SECRET=secret)
        )
        try:
            worker.wait_ready()
            call_command("load_vulnerabilities", str(advisory))
            record = wait_until(
                lambda: PolicyEnforcement.objects.filter(mirror=mirror).first(),
                "the enforcement",
                worker,
            )
            ((headers, body),) = hook.wait_for(1)
        finally:
            worker.stop()

    assert listed(client, mirror.channel) == ["noarch/alpha-1.1-0.conda"]
    assert len(conda_upstream.requests) == asked, conda_upstream.requests[asked:]
    assert record.left == 1 and record.published
    assert record.trigger.startswith("advisories loaded (1 created")
    assert record.changes[0]["path"] == BLOCKED and CVE in record.changes[0]["reason"]
    assert AuditEvent.objects.filter(action="policy.enforce", target_id=str(mirror.pk)).exists()

    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["x-psm-signature"] == expected
    assert headers["content-type"] == "application/json"
    event = json.loads(body)
    assert event["event"] == "policy.enforced"
    assert event["mirror"] == {"id": mirror.pk, "name": mirror.name}
    assert event["channel"] == mirror.channel.path
    assert event["policy"] == policy.name and event["dry_run"] is False
    assert event["counts"] == {"entered": 0, "left": 1, "would_leave": 0}
    assert event["changes"] == record.changes
    assert event["enforcement"] == record.pk and event["at"]
