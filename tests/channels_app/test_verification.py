"""Verification: stored bytes damaged on disk are found, withdrawn, reported and repaired."""

from __future__ import annotations

import bz2
import io
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from channels_app import publishing, storage, tasks, verification
from channels_app.models import Artifact, Package, PublishedFile, VerificationProblem
from mirrors_app.models import Mirror, SyncRun
from tests.factories import ChannelFactory, MirrorFactory
from tests.fixtures.conda_channel import ChannelServer, FakePackage, build_channel
from tests.fixtures.http import response_body

pytestmark = pytest.mark.django_db

BETA = FakePackage("beta", "2.0", subdir="linux-64", fmt=".conda")
PACKAGES = [FakePackage("alpha", "1.0"), BETA]


@pytest.fixture
def source(tmp_path):
    root = build_channel(tmp_path / "upstream", PACKAGES)
    with ChannelServer(root) as server:
        yield server


def _served(client, channel, path: str) -> tuple[int, bytes]:
    response = client.get(f"/api/repo/{channel.path}/{path}")
    body = response_body(response)
    return response.status_code, body


def _damage(artifact: Artifact) -> bytes:
    """Flip the first byte of the stored file on disk (same size, other bytes)."""
    blob = Path(settings.MEDIA_ROOT) / storage.blob_path(artifact.sha256)
    data = bytearray(blob.read_bytes())
    data[0] ^= 0xFF
    blob.write_bytes(bytes(data))
    return bytes(data)


def _stored(channel, path: str) -> Artifact:
    published = PublishedFile.objects.filter(channel=channel, path=path).first()
    if published is not None:
        return published.artifact
    return Package.objects.get(channel=channel, filename=path.rpartition("/")[2]).artifact


def _listed(client, channel) -> set[str]:
    _, body = _served(client, channel, "linux-64/repodata.json")
    return set(orjson.loads(body)["packages.conda"])


@pytest.mark.parametrize(
    ("mode", "path"),
    [
        (Mirror.Mode.ACTIVE, f"linux-64/{BETA.filename}"),
        (Mirror.Mode.PASSIVE, f"linux-64/{BETA.filename}"),
        (Mirror.Mode.PASSIVE, "linux-64/repodata.json"),
    ],
    ids=["active-package", "passive-cached-package", "index-file"],
)
def test_damaged_file_is_reported_and_never_served(
    mode, path, source, run_mirror, client, admin_client
):
    mirror = MirrorFactory(source_url=source.url, mode=mode, options={"subdirs": ["linux-64"]})
    assert run_mirror(mirror).state == SyncRun.State.COMPLETED
    channel = mirror.channel
    status, good = _served(client, channel, path)  # a passive file is cached by this request
    assert status == 200
    damaged = _damage(_stored(channel, path))

    report = verification.verify_storage()

    assert report.damaged == 1
    assert [(p.path, p.kind) for p in report.found] == [
        (path, "index" if path.endswith(".json") else "package")
    ]
    problem = report.found[0]
    assert problem.problem.startswith("stored file damaged: its bytes hash to sha256")
    status, body = _served(client, channel, path)
    assert body != damaged
    if mode == Mirror.Mode.ACTIVE:
        # Withdrawn until downloaded again, and no longer listed by the index.
        assert status == 404
        assert BETA.filename not in _listed(client, channel)
        assert Package.objects.get(filename=BETA.filename).error.startswith("stored file damaged")
        assert problem.is_open
    else:
        # A passive file is fetched again; an index file was re-rendered at once.
        assert (status, body) == (200, good)
        assert not problem.is_open

    # Reported on the channel and the mirror, in the admin and the API.
    page = admin_client.get(reverse("admin:channels_app_channel_change", args=[channel.pk]))
    details = admin_client.get(reverse("admin:mirrors_app_mirror_details", args=[mirror.pk]))
    for response in (page, details):
        assert response.status_code == 200
        assert path in response.content.decode()
        assert "stored file damaged" in response.content.decode()
    for url in (
        f"/api/channels/{channel.name}/verification/",
        f"/api/mirrors/{mirror.pk}/verification/",
    ):
        rows = admin_client.get(url).json()["results"]
        assert [(r["path"], r["open"], r["channel"]) for r in rows] == [
            (path, problem.is_open, channel.path)
        ]

    if mode == Mirror.Mode.ACTIVE:
        out = io.StringIO()
        call_command("verify", "--repair", stdout=out)
        assert "1 resolved, 0 open" in out.getvalue()
        assert _served(client, channel, path) == (200, good)
        assert BETA.filename in _listed(client, channel)
        problem.refresh_from_db()
        assert problem.resolved_at is not None and problem.action.startswith("fetched again")


def test_damaged_index_of_frozen_channel_is_withdrawn_until_unfrozen(source, run_mirror, client):
    mirror = MirrorFactory(source_url=source.url, options={"subdirs": ["linux-64"]})
    run_mirror(mirror)
    channel = mirror.channel
    _, good = _served(client, channel, "linux-64/repodata.json")
    channel.freeze(None)
    channel.save()
    _damage(_stored(channel, "linux-64/repodata.json"))

    (problem,) = verification.verify_storage().found

    assert _served(client, channel, "linux-64/repodata.json")[0] == 404
    assert problem.is_open and "frozen" in problem.action
    channel.unfreeze()
    channel.save()
    assert verification.verify_storage().resolved == 1
    assert _served(client, channel, "linux-64/repodata.json") == (200, good)


def test_a_damaged_index_gets_no_bz2_copy_but_is_rendered_anew(source, run_mirror, client):
    """The `.bz2` copy is made from the published file: a copy of damaged bytes would carry
    a digest of its own. The damage is found as the copy is made, and remedied as
    verification does (a channel not frozen is rendered anew, with its copy)."""
    mirror = MirrorFactory(source_url=source.url, options={"subdirs": ["linux-64"]})
    run_mirror(mirror)
    channel = mirror.channel
    _, good = _served(client, channel, "linux-64/repodata.json")
    PublishedFile.objects.filter(channel=channel, path="linux-64/repodata.json.bz2").delete()
    _damage(_stored(channel, "linux-64/repodata.json"))

    publishing.channel_compress(channel=channel)

    assert _served(client, channel, "linux-64/repodata.json") == (200, good)
    status, packed = _served(client, channel, "linux-64/repodata.json.bz2")
    assert (status, bz2.decompress(packed)) == (200, good)
    (problem,) = VerificationProblem.objects.filter(channel=channel)
    assert problem.path == "linux-64/repodata.json" and not problem.is_open


def test_storage_that_damages_every_file_ends_the_remedy(source, run_mirror, monkeypatch):
    """Each copy finds its source damaged, and the remedy publishes again, whose copy does too:
    the remedy runs once per file, the copy it makes raises, and that publish's failure is
    logged."""
    mirror = MirrorFactory(source_url=source.url, options={"subdirs": ["linux-64"]})
    run_mirror(mirror)
    channel = mirror.channel
    PublishedFile.objects.filter(channel=channel, path="linux-64/repodata.json.bz2").delete()
    found = []

    def damaged(artifact, sha256, size):
        found.append(artifact.sha256)
        return "damaged by the disk"

    monkeypatch.setattr(storage, "damage", damaged)

    assert publishing.channel_compress(channel=channel) == 0
    # linux-64's and noarch's: each copy, then the one its remedy's publish made, no more.
    assert len(found) == 4
    assert not PublishedFile.objects.filter(path__endswith=".bz2").exists()


def test_file_unlike_its_index_entry_and_damaged_sidecar_are_withdrawn():
    channel = ChannelFactory(kind="pypi")
    wheel = storage.store([b"wheel bytes"])
    metadata = storage.store([b"Metadata-Version: 2.1\n"])
    fields = {"channel": channel, "unit": "gamma", "name": "gamma", "version": "1.0"}
    passive = Package.objects.create(
        **fields,
        filename="gamma-1.0-py3-none-any.whl",
        sha256=wheel.sha256,
        size=wheel.size,
        artifact=wheel,
        sidecar=metadata,
        on_demand=True,
    )
    active = Package.objects.create(
        **fields, filename="gamma-1.0.tar.gz", sha256="ab" * 32, artifact=wheel
    )
    _damage(metadata)
    out = io.StringIO()
    call_command("verify", "--channel", channel.name, "--all", stdout=out)

    passive.refresh_from_db()
    active.refresh_from_db()
    assert (passive.artifact, passive.sidecar) == (wheel, None)  # metadata fetched on request
    assert active.artifact is None
    assert active.error.startswith("stored file does not match its index entry")
    problems = {p.path: p.is_open for p in VerificationProblem.objects.filter(channel=channel)}
    assert problems == {
        "gamma/gamma-1.0-py3-none-any.whl.metadata": False,
        "gamma/gamma-1.0.tar.gz": True,
    }
    assert "gamma/gamma-1.0.tar.gz: stored file does not match" in out.getvalue()
    assert "2 problems found, 1 resolved, 1 open" in out.getvalue()
    with pytest.raises(CommandError, match="No channel 'nope'"):
        call_command("verify", "--channel", "nope")


def test_budget_checks_oldest_verified_first_and_the_next_run_continues(settings):
    stored = [storage.store([bytes([n]) * 10]) for n in range(3)]
    long_ago = timezone.now() - timedelta(days=30)
    for age, artifact in zip((3, 2, 1), stored, strict=True):
        Artifact.objects.filter(pk=artifact.pk).update(verified_at=long_ago - timedelta(days=age))

    settings.PSM_VERIFY_FILES_PER_RUN = 2
    assert tasks.verify_storage()["files"] == 2  # the scheduled task, with its budget

    def verified_now() -> list[int]:
        rows = Artifact.objects.filter(verified_at__gt=long_ago).order_by("verified_at")
        return list(rows.values_list("pk", flat=True))

    assert verified_now() == [stored[0].pk, stored[1].pk]
    # A byte budget smaller than one file still checks one: the oldest left.
    assert verification.verify_storage(max_bytes=1).files == 1
    assert verified_now() == [stored[0].pk, stored[1].pk, stored[2].pk]
    assert verification.verify_storage(max_files=1).files == 1
    assert verified_now() == [stored[1].pk, stored[2].pk, stored[0].pk]
