"""Serving channels to clients: published index files, package files, freeze, subchannels."""

from __future__ import annotations

import bz2
import gzip

import orjson
import pytest
import rattler
import requests
import zstandard
from django.utils import timezone

from channels_app import publishing, services, storage
from channels_app.formats import content_type, get_format
from channels_app.models import Channel, Package, PublishedFile
from mirrors_app.models import Mirror
from tests.factories import ChannelFactory, MirrorFactory
from tests.fixtures.conda_channel import ChannelServer, FakePackage, build_channel
from tests.fixtures.http import response_body

pytestmark = pytest.mark.django_db


@pytest.fixture
def source(tmp_path):
    root = build_channel(
        tmp_path / "upstream",
        [FakePackage("alpha", "1.0"), FakePackage("beta", "1.0", subdir="linux-64")],
    )
    with ChannelServer(root) as server:
        yield server


def _get(client, path, **headers):
    response = client.get(f"/api/repo/{path}", headers=headers)
    body = response_body(response)
    return response, body


def test_an_empty_channel_serves_an_empty_noarch_index(client):
    ChannelFactory(name="empty")
    response, body = _get(client, "empty/noarch/repodata.json")
    assert response.status_code == 200
    document = orjson.loads(body)
    assert document["info"] == {"subdir": "noarch"}
    assert document["packages"] == {} and document["packages.conda"] == {}
    response, body = _get(client, "empty/channeldata.json")
    assert orjson.loads(body)["subdirs"] == ["noarch"]


def test_unknown_channel_and_file_are_404(client):
    ChannelFactory(name="known")
    assert _get(client, "nope/noarch/repodata.json")[0].status_code == 404
    assert _get(client, "known/noarch/missing-1-0.tar.bz2")[0].status_code == 404
    assert _get(client, "known")[0].status_code == 404


def test_index_files_have_etag_cache_control_and_answer_304(client, source, run_mirror):
    mirror = MirrorFactory(source_url=source.url)
    run_mirror(mirror)
    path = f"{mirror.channel.name}/linux-64/repodata.json"
    response, body = _get(client, path)
    etag = response["ETag"]
    assert response["Cache-Control"] == "public, max-age=60"
    assert _get(client, path, if_none_match=etag)[0].status_code == 304
    head = client.head(f"/api/repo/{path}")
    assert head.status_code == 200 and int(head["Content-Length"]) == len(body)


def test_zst_and_bz2_hold_the_same_index(client, source, run_mirror):
    mirror = MirrorFactory(source_url=source.url)
    run_mirror(mirror)
    base = f"{mirror.channel.name}/linux-64/repodata.json"
    plain = _get(client, base)[1]
    packed = _get(client, base + ".zst")[1]
    assert zstandard.ZstdDecompressor().decompressobj().decompress(packed) == plain
    assert bz2.decompress(_get(client, base + ".bz2")[1]) == plain


def test_frozen_channel_keeps_its_index_until_unfrozen(client, source, run_mirror, admin_user):
    mirror = MirrorFactory(source_url=source.url, options={"subdirs": ["noarch"]})
    channel = mirror.channel
    services.channel_freeze(channel=channel, user=admin_user)
    run = run_mirror(mirror)
    assert run.ingested == 1
    # Frozen before anything was published: the empty index it had is pinned.
    pinned = orjson.loads(_get(client, f"{channel.name}/noarch/repodata.json")[1])
    assert pinned["packages"] == {} and pinned["packages.conda"] == {}
    channel.refresh_from_db()
    services.channel_unfreeze(channel=channel, user=admin_user)  # the task publishes...
    publishing.channel_publish(channel=channel)  # ...as the worker would
    served = orjson.loads(_get(client, f"{channel.name}/noarch/repodata.json")[1])
    assert list(served["packages"]) == ["alpha-1.0-0.tar.bz2"]


def test_removed_upstream_package_stays_served_until_published_away(client, source, run_mirror):
    mirror = MirrorFactory(source_url=source.url, options={"subdirs": ["noarch"]})
    run_mirror(mirror)
    channel = mirror.channel
    channel.frozen = True
    channel.save()
    (source.root / "noarch" / "repodata.json.zst").unlink()
    (source.root / "noarch" / "repodata.json").write_text(
        '{"info": {"subdir": "noarch"}, "packages": {}}'
    )
    run_mirror(mirror)
    package = Package.objects.get(filename="alpha-1.0-0.tar.bz2")
    assert package.removed
    # The frozen index still lists it, and it is still served.
    listed = orjson.loads(_get(client, f"{channel.name}/noarch/repodata.json")[1])["packages"]
    assert "alpha-1.0-0.tar.bz2" in listed
    assert _get(client, f"{channel.name}/noarch/alpha-1.0-0.tar.bz2")[0].status_code == 200
    Channel.objects.filter(pk=channel.pk).update(frozen=False)
    assert publishing.channel_publish(channel=channel)
    assert not Package.objects.filter(pk=package.pk).exists()
    listed = orjson.loads(_get(client, f"{channel.name}/noarch/repodata.json")[1])["packages"]
    assert listed == {}


def test_subchannel_is_served_under_its_parent(client, source, run_mirror):
    parent = ChannelFactory(name="main")
    sub = ChannelFactory(name="dev", parent=parent)
    mirror = MirrorFactory(channel=sub, source_url=source.url, options={"subdirs": ["noarch"]})
    run_mirror(mirror)
    listed = orjson.loads(_get(client, "main/dev/noarch/repodata.json")[1])["packages"]
    assert list(listed) == ["alpha-1.0-0.tar.bz2"]
    assert orjson.loads(_get(client, "main/noarch/repodata.json")[1])["packages"] == {}
    assert _get(client, "main/dev/noarch/alpha-1.0-0.tar.bz2")[0].status_code == 200


def test_subchannel_may_not_be_named_like_a_platform_folder():
    from django.core.exceptions import ValidationError

    parent = ChannelFactory(name="main")
    with pytest.raises(ValidationError, match="folder of every conda channel"):
        Channel(name="linux-64", kind="conda", parent=parent).full_clean()


def test_package_file_supports_ranges_and_is_immutable(client, source, run_mirror):
    mirror = MirrorFactory(source_url=source.url, mode=Mirror.Mode.ACTIVE)
    run_mirror(mirror)
    path = f"{mirror.channel.name}/noarch/alpha-1.0-0.tar.bz2"
    whole = (source.root / "noarch" / "alpha-1.0-0.tar.bz2").read_bytes()
    response, body = _get(client, path, range="bytes=0-9")
    assert response.status_code == 206 and body == whole[:10]
    response, body = _get(client, path)
    assert body == whole and "immutable" in response["Cache-Control"]


def test_rerun_without_upstream_change_rewrites_nothing(source, run_mirror):
    mirror = MirrorFactory(source_url=source.url)
    run_mirror(mirror)
    before = list(PublishedFile.objects.values_list("pk", "artifact_id"))
    versions = Channel.objects.values_list("content_version", "published_version").get()
    # Even without conditional requests (upstream sends everything again), nothing changes.
    mirror.units.all().delete()
    run = run_mirror(mirror)
    assert run.ingested == 0 and run.seen == 2
    assert list(PublishedFile.objects.values_list("pk", "artifact_id")) == before
    assert Channel.objects.values_list("content_version", "published_version").get() == versions


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("kind", "path", "expected"),
    [
        ("cran", "src/contrib/demo_1.0.tar.gz", "application/gzip"),
        ("pypi", "files/demo/demo-1.0.tar.gz", "application/gzip"),
        ("pypi", "files/demo/demo-1.0-py3-none-any.whl", "application/zip"),
        ("pypi", "files/demo/demo-1.0.zip", "application/zip"),
        ("conda", "noarch/demo-1.0-0.tar.bz2", "application/x-bzip2"),
        ("conda", "noarch/demo-1.0-0.conda", "application/octet-stream"),
    ],
)
def test_package_files_are_served_with_their_registered_content_type(
    live_server, kind, path, expected
):
    # Published already (nothing to render): only the package file is asked for.
    channel = ChannelFactory(name="types", kind=kind, published_at=timezone.now())
    unit, filename = get_format(kind).locate(path)
    artifact = storage.store([b"the bytes of " + filename.encode()])
    Package.objects.create(
        channel=channel, unit=unit, filename=filename, name="demo", version="1.0",
        artifact=artifact,
    )  # fmt: skip
    response = requests.get(f"{live_server.url}/api/repo/types/{path}", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == expected
    assert "Content-Encoding" not in response.headers  # the bytes are the file itself


def test_content_types_come_from_one_table_never_from_a_guess():
    assert content_type("pkg_1.0.tgz") == content_type("PACKAGES.gz") == "application/gzip"
    assert content_type("repodata.json.bz2") == "application/x-bzip2"
    # A hostile upstream's file name never makes PSM serve a page or a script.
    assert content_type("evil.html") == content_type("noext") == "application/octet-stream"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["conda", "pypi", "cran"])
def test_a_channel_frozen_at_once_serves_a_valid_empty_index(
    live_server, admin_user, tmp_path, kind
):
    channel = services.channel_create(channel=Channel(name="fresh", kind=kind), user=admin_user)
    services.channel_freeze(channel=channel, user=admin_user)
    base = f"{live_server.url}/api/repo/fresh/"

    def get(path: str, **headers) -> requests.Response:
        response = requests.get(base + path, headers=headers, timeout=10)
        assert response.status_code == 200, (path, response.status_code)
        return response

    if kind == "conda":
        index = get("noarch/repodata.json")
        assert index.headers["Content-Type"] == "application/json"
        document = index.json()
        assert (document["packages"], document["packages.conda"]) == ({}, {})
        (tmp_path / "repodata.json").write_bytes(index.content)
        repodata = rattler.RepoData.from_path(tmp_path / "repodata.json")
        assert repodata.into_repo_data(rattler.Channel(base)) == []
        assert get("channeldata.json").json()["subdirs"] == ["noarch"]
    elif kind == "pypi":
        listing = get("simple/", Accept="application/vnd.pypi.simple.v1+json").json()
        assert listing["projects"] == [] and listing["meta"]["api-version"].startswith("1.")
        assert get("simple/", Accept="text/html").text.lstrip().lower().startswith("<!doctype")
    else:
        assert get("src/contrib/PACKAGES").content.strip() == b""
        packed = get("src/contrib/PACKAGES.gz")
        assert packed.headers["Content-Type"] == "application/gzip"
        assert gzip.decompress(packed.content).strip() == b""
