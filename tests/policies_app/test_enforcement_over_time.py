"""What changes with time alone, and frozen channels under enforcement: the hourly check lets a
package in once its cooldown ends and blocks it again once its waiver expires, without a sync;
a dry-run policy records what it would block; "enforce on frozen channels" withdraws only the
newly blocked files from the pinned index."""

from __future__ import annotations

import datetime as dt
import types
from decimal import Decimal

import orjson
import pytest
from django.utils import timezone

from channels_app import services as channel_services
from channels_app.models import Channel, Package
from mirrors_app.models import SyncRun
from policies_app import compiling, enforcement, tasks
from policies_app.models import Vulnerability, Waiver
from tests.factories import ChannelFactory, MirrorFactory, PolicyFactory
from tests.fixtures.http import response_body

pytestmark = pytest.mark.django_db

ALPHA_OLD = "noarch/alpha-1.0-0.tar.bz2"
ALPHA_NEW = "noarch/alpha-1.1-0.conda"
BETA = "linux-64/beta-2.0-0.conda"


def listed(client, channel: Channel) -> list[str]:
    found = []
    for subdir in ("noarch", "linux-64"):
        response = client.get(f"/api/repo/{channel.path}/{subdir}/repodata.json")
        assert response.status_code == 200
        document = orjson.loads(response_body(response))
        found += [f"{subdir}/{n}" for key in ("packages", "packages.conda") for n in document[key]]
    return sorted(found)


@pytest.fixture
def later(monkeypatch):
    """Move the clock the decisions read forward by some days."""

    def move(days: int) -> None:
        shifted = timezone.now() + dt.timedelta(days=days)
        fake = types.SimpleNamespace(now=lambda: shifted, localdate=timezone.localdate)
        monkeypatch.setattr(compiling, "timezone", fake)

    return move


@pytest.fixture
def mirror_of(conda_upstream, run_mirror):
    def make(**rules):
        policy = PolicyFactory(**rules)
        mirror = MirrorFactory(channel=ChannelFactory(policy=policy), source_url=conda_upstream.url)
        run = run_mirror(mirror)
        assert run.state == SyncRun.State.COMPLETED, run.error
        return mirror

    return make


def test_a_cooldown_ends_at_a_day_boundary_and_the_hourly_check_lets_the_files_in(
    mirror_of, later, client, conda_upstream
):
    # The fixture's records carry no timestamp: they count from the day PSM first saw them.
    mirror = mirror_of(min_age_days=2)
    assert listed(client, mirror.channel) == []
    reasons = set(Package.objects.filter(mirror=mirror).values_list("excluded_reason", flat=True))
    assert reasons == {f"first seen {timezone.localdate()}, newer than the 2-day cooldown"}
    seen = len(conda_upstream.requests)

    later(1)
    assert tasks.enforce_due.apply().get() == "0 mirror(s) changed"  # still too new
    later(2)
    assert tasks.enforce_due.apply().get() == "1 mirror(s) changed"
    assert listed(client, mirror.channel) == [BETA, ALPHA_OLD, ALPHA_NEW]
    record = mirror.enforcements.get()
    assert (record.trigger, record.entered, record.left) == (enforcement.SCHEDULED, 3, 0)
    assert len(conda_upstream.requests) == seen  # no sync, no request


def test_an_expired_waiver_stops_applying_at_the_next_hourly_check(mirror_of, later, client):
    Vulnerability.objects.create(
        osv_id="GHSA-alph-aaaa-0001",
        cvss_score=Decimal("9.8"),
        ecosystems="|conda|",
        affected=[
            {
                "ecosystem": "conda",
                "name": "alpha",
                "ranges": [
                    {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.1"}]}
                ],
                "versions": [],
            }
        ],
    )
    mirror = mirror_of(cve_score=7)
    assert ALPHA_OLD not in listed(client, mirror.channel)
    Waiver.objects.create(
        policy=mirror.channel.policy,
        spec="alpha 1.0",
        rule="GHSA-alph-aaaa-0001",
        reason="patched downstream",
        expires_at=timezone.now() + dt.timedelta(days=1),
        created_by_name="alice",
    )
    assert tasks.enforce_due.apply().get() == "1 mirror(s) changed"
    assert ALPHA_OLD in listed(client, mirror.channel)

    later(2)  # nobody touches the waiver: it expires
    assert tasks.enforce_due.apply().get() == "1 mirror(s) changed"
    assert ALPHA_OLD not in listed(client, mirror.channel)
    latest = mirror.enforcements.first()
    assert latest.changes == [
        {"path": ALPHA_OLD, "change": "left", "reason": "GHSA-alph-aaaa-0001 score 9.8 ≥ 7.0"}
    ]


def test_a_dry_run_policy_records_what_it_would_block_and_publishes_everything(mirror_of, client):
    mirror = mirror_of(mode="dry_run")
    assert len(listed(client, mirror.channel)) == 3
    policy = mirror.channel.policy
    policy.block_specs = ["beta"]
    policy.save()

    (record,) = enforcement.enforce(trigger="policy changed")

    assert (record.dry_run, record.left, record.would_leave) == (True, 0, 1)
    assert record.changes == [
        {"path": BETA, "change": "would leave", "reason": "blocked by package rule 'beta'"}
    ]
    assert BETA in listed(client, mirror.channel)
    row = Package.objects.get(mirror=mirror, filename="beta-2.0-0.conda")
    assert (row.excluded_reason, row.would_exclude_reason) == ("", "blocked by package rule 'beta'")


def test_enforce_on_frozen_withdraws_only_the_newly_blocked_files(mirror_of, client, make_user):
    mirror = mirror_of(enforce_on_frozen=True)
    channel = mirror.channel
    channel_services.channel_freeze(channel=channel, user=make_user())
    # Arrived while frozen: allowed, but not in the pinned index; it must not appear.
    Package.objects.create(
        channel=channel,
        mirror=mirror,
        unit="noarch",
        filename="gamma-1.0-0.conda",
        name="gamma",
        version="1.0",
        record=orjson.dumps({"name": "gamma", "version": "1.0", "build": "0"}).decode(),
        on_demand=True,
    )
    policy = channel.policy
    policy.block_specs = ["alpha <1.1"]
    policy.save()

    (record,) = enforcement.enforce(trigger="policy changed")

    assert (record.left, record.published) == (1, True)
    assert listed(client, channel) == [BETA, ALPHA_NEW]
    response = client.get(f"/api/repo/{channel.path}/{ALPHA_OLD}")
    assert response.status_code == 403
    assert b"blocked by package rule 'alpha <1.1'" in response.content
