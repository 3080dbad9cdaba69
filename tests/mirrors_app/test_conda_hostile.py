"""Conda mirrors against a hostile or broken upstream.

Every scenario starts from a real fixture channel (built once, copied per test) and damages it:
malformed or oversized indexes, path tricks in file names, bytes that do not match their
checksums, missing files, cut connections, slow or dead servers, absolute upstream URLs. Each
time the run must say what went wrong, store and serve nothing bad, and still bring in what is
good.
"""

from __future__ import annotations

import bz2
import hashlib
import io
import os
import shutil
import tempfile
import threading
import tracemalloc
from pathlib import Path

import orjson
import pytest
import zstandard
from django.db import connections
from django.test import Client

from channels_app import storage
from channels_app.formats import FormatError
from channels_app.formats import conda as conda_format
from channels_app.models import Artifact, Package, PublishedFile
from mirrors_app.models import Mirror, SyncRun
from tests.factories import MirrorFactory
from tests.fixtures.conda_channel import (
    ChannelServer,
    FakePackage,
    build_channel,
    read_repodata,
    write_repodata,
)
from tests.fixtures.http import response_body

pytestmark = pytest.mark.django_db

ALPHA = FakePackage("alpha", "1.0")
BETA = FakePackage("beta", "2.0", subdir="linux-64", fmt=".conda", depends=["alpha >=1"])
GAMMA = FakePackage("gamma", "0.1", subdir="linux-64")
PACKAGES = [ALPHA, BETA, GAMMA]
LINUX = "linux-64"
GAMMA_PATH = f"/{LINUX}/{GAMMA.filename}"
# Marks every hostile file name, so a stray file would be easy to find.
MARK = "psmhostile"


# --- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The undamaged channel, indexed once for the whole module."""
    return build_channel(tmp_path_factory.mktemp("template") / "channel", PACKAGES)


@pytest.fixture
def source(template, tmp_path):
    root = tmp_path / "upstream"
    shutil.copytree(template, root)
    with ChannelServer(root) as server:
        yield server


def _mirror(server, mode=Mirror.Mode.PASSIVE):
    return MirrorFactory(source_url=server.url, mode=mode, options={"subdirs": [LINUX]})


def _served(client, channel, path):
    response = client.get(f"/api/repo/{channel.path}/{path}")
    body = response_body(response)
    return response, body


def _served_repodata(client, channel, subdir) -> dict | None:
    response, body = _served(client, channel, f"{subdir}/repodata.json")
    return orjson.loads(body) if response.status_code == 200 else None


def _served_files(client, channel, subdir) -> set[str]:
    repodata = _served_repodata(client, channel, subdir) or {}
    return {*repodata.get("packages", {}), *repodata.get("packages.conda", {})}


def _published(channel) -> list[tuple]:
    rows = PublishedFile.objects.filter(channel=channel).order_by("path")
    return list(rows.values_list("pk", "path", "artifact__sha256"))


def _replace_index(root: Path, subdir: str, raw: bytes, *, zst: bool = True) -> None:
    """Serve `raw` (anything, not necessarily JSON) as the subdir's repodata."""
    folder = root / subdir
    (folder / "repodata.json").write_bytes(raw)
    if zst:
        (folder / "repodata.json.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    else:
        (folder / "repodata.json.zst").unlink(missing_ok=True)
    (folder / "repodata.json.bz2").unlink(missing_ok=True)


def _good_index(root: Path, subdir: str = LINUX) -> bytes:
    return (root / subdir / "repodata.json").read_bytes()


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _leftover_tmp() -> list[str]:
    """Files left in storage's scratch folder (half-written or unverified downloads)."""
    folder = Path(storage.default_storage.location) / "tmp"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _assert_index_unreadable(run, subdir, snippet):
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert run.warnings.startswith(f"{subdir}: "), run.warnings
    assert snippet in run.warnings, run.warnings
    assert run.filtered_reasons.get(f"index unreadable: {subdir}") == 1, run.filtered_reasons


# --- 1, 2: malformed indexes ------------------------------------------------------------------


def _set_raw(raw):
    return lambda server: _replace_index(server.root, LINUX, raw)


def _truncated(server):
    good = _good_index(server.root)
    _replace_index(server.root, LINUX, good[: len(good) // 2])


def _trailing_garbage(server):
    _replace_index(server.root, LINUX, _good_index(server.root) + b"}{")


def _corrupt_zst(server):
    (server.root / LINUX / "repodata.json.zst").write_bytes(b"\x28\xb5\x2f\xfd not zstd at all")


def _changed_then_cut(server):
    # A changed index (so no 304) whose transfer is cut halfway.
    document = read_repodata(server.root, LINUX) | {"x-psm-test": "changed"}
    write_repodata(server.root, LINUX, document)
    size = (server.root / LINUX / "repodata.json.zst").stat().st_size
    server.cut[f"/{LINUX}/repodata.json.zst"] = size // 2


def _upstream_500(server):
    server.fail[f"/{LINUX}/repodata.json.zst"] = 500


MALFORMED = [
    pytest.param(_set_raw(b"\x89PNG\r\n\x1a\n garbage \xff\xfe"), "JSON object", id="garbage"),
    pytest.param(_truncated, "not valid JSON", id="truncated"),
    pytest.param(_set_raw(b'{"packages": [1]}'), "must be an object", id="packages-array"),
    pytest.param(_trailing_garbage, "not valid JSON", id="trailing-garbage"),
    pytest.param(_set_raw(b'[{"packages": {}}]'), "JSON object", id="top-level-array"),
    pytest.param(_set_raw(b'{"info": [], "packages": {}}'), "must be an object", id="info-array"),
    pytest.param(_set_raw(b'{"removed": ["../../etc/passwd"]}'), "[removed]", id="removed-unsafe"),
    pytest.param(_corrupt_zst, "corrupt compressed data", id="corrupt-zst"),
]
BROKEN_TRANSFER = [
    pytest.param(_changed_then_cut, "the response was cut short after", id="index-cut"),
    pytest.param(_upstream_500, "HTTP 500", id="index-http-500"),
]
WRONG_SHAPE_SILENT = [
    pytest.param(
        _set_raw(b'{"packages": "oops", "packages.conda": "oops"}'),
        "must be an object",
        id="sections-strings",
    ),
    pytest.param(
        _set_raw(b'{"packages": null, "packages.conda": 7}'),
        "must be an object",
        id="sections-null-number",
    ),
    pytest.param(
        _set_raw(b'{"packages": [null], "packages.conda": [null]}'),
        "must be an object",
        id="sections-array-of-null",
    ),
]


@pytest.mark.parametrize(("damage", "snippet"), MALFORMED + BROKEN_TRANSFER)
def test_malformed_subdir_fails_alone(source, run_mirror, client, damage, snippet):
    damage(source)
    mirror = _mirror(source)
    run = run_mirror(mirror)
    _assert_index_unreadable(run, LINUX, snippet)
    assert not Package.objects.filter(unit=LINUX).exists()
    assert _served_files(client, mirror.channel, LINUX) == set()
    assert _served_files(client, mirror.channel, "noarch") == {ALPHA.filename}
    response, body = _served(client, mirror.channel, f"noarch/{ALPHA.filename}")
    assert response.status_code == 200
    assert body == (source.root / "noarch" / ALPHA.filename).read_bytes()
    assert not mirror.units.filter(name="linux-64").exists()  # the next run fetches it in full


@pytest.mark.parametrize(("damage", "snippet"), MALFORMED + BROKEN_TRANSFER + WRONG_SHAPE_SILENT)
def test_malformed_subdir_keeps_what_was_mirrored(source, run_mirror, client, damage, snippet):
    mirror = _mirror(source)
    assert run_mirror(mirror).state == SyncRun.State.COMPLETED
    _, before = _served(client, mirror.channel, f"{LINUX}/repodata.json")
    assert {BETA.filename, GAMMA.filename} <= set(orjson.loads(before)["packages.conda"]) | set(
        orjson.loads(before)["packages"]
    )

    damage(source)
    run = run_mirror(mirror)
    # First what matters most: nothing mirrored earlier was dropped.
    assert Package.objects.filter(unit=LINUX, removed=False).count() == 2
    response, after = _served(client, mirror.channel, f"{LINUX}/repodata.json")
    assert response.status_code == 200 and after == before
    response, _ = _served(client, mirror.channel, f"{LINUX}/{GAMMA.filename}")
    assert response.status_code == 200
    _assert_index_unreadable(run, LINUX, snippet)


def test_every_subdir_malformed_fails_the_run_and_publishes_nothing(source, run_mirror, client):
    mirror = _mirror(source)
    assert run_mirror(mirror).state == SyncRun.State.COMPLETED
    published = _published(mirror.channel)
    assert published
    _, served_before = _served(client, mirror.channel, f"{LINUX}/repodata.json")

    _replace_index(source.root, "noarch", b'{"packages": {"alpha-1.0-0.tar.bz2": ')
    _replace_index(source.root, LINUX, b"<html>502 Bad Gateway</html>")
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.FAILED
    assert "noarch" in run.error and LINUX in run.error
    assert run.filtered_reasons == {"index unreadable: noarch": 1, f"index unreadable: {LINUX}": 1}
    assert _published(mirror.channel) == published
    assert _served(client, mirror.channel, f"{LINUX}/repodata.json")[1] == served_before
    assert Package.objects.filter(removed=False).count() == 3


def test_every_subdir_malformed_on_the_first_run(source, run_mirror):
    _replace_index(source.root, "noarch", b"nope")
    _replace_index(source.root, LINUX, b"nope")
    mirror = _mirror(source)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.FAILED
    assert not PublishedFile.objects.filter(channel=mirror.channel).exists()
    assert not Package.objects.exists()


# --- 3: hostile records -----------------------------------------------------------------------

UNSAFE_NAMES = [
    f"../{MARK}-1-0.tar.bz2",
    f"sub/{MARK}-1-0.tar.bz2",
    f"..\\{MARK}-1-0.tar.bz2",
    f".{MARK}-1-0.tar.bz2",
    f"{MARK}\x00-1-0.tar.bz2",
    f"/tmp/{MARK}-1-0.tar.bz2",
    f"C:{MARK}-1-0.tar.bz2",
]


def _stray_files(*roots: Path) -> list[str]:
    found = []
    for root in roots:
        if root.exists():
            found += [str(p) for p in root.rglob(f"*{MARK}*")]
    found += [name for name in os.listdir(tempfile.gettempdir()) if MARK in name]
    return found


def test_path_tricks_in_file_names_are_rejected(source, run_mirror, client, tmp_path, settings):
    document = read_repodata(source.root, LINUX)
    template = document["packages"][GAMMA.filename]
    for filename in UNSAFE_NAMES:
        name = filename.rsplit("-", 2)[0]
        document["packages"][filename] = {**template, "name": name}
    # A .conda file listed under "packages" (the .tar.bz2 section).
    document["packages"][f"{MARK}-1-0.conda"] = {**template, "name": MARK}
    write_repodata(source.root, LINUX, document)

    mirror = _mirror(source, Mirror.Mode.ACTIVE)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert run.filtered_reasons == {
        "unsafe file name": len(UNSAFE_NAMES),
        "file name does not end in .tar.bz2 (section packages)": 1,
    }
    assert run.filtered == len(UNSAFE_NAMES) + 1
    assert run.downloaded == 3 and run.failed == 0
    assert _served_files(client, mirror.channel, LINUX) == {BETA.filename, GAMMA.filename}
    assert not Package.objects.filter(filename__contains=MARK).exists()
    assert not [path for _, path in source.requests if MARK in path]
    assert _stray_files(tmp_path, Path(settings.MEDIA_ROOT)) == []
    for trick in ("../", "..%2F", "sub/", ".."):
        response, _ = _served(client, mirror.channel, f"{LINUX}/{trick}{MARK}-1-0.tar.bz2")
        assert response.status_code == 404


def test_malformed_records_are_rejected_with_reasons(source, run_mirror, client):
    document = read_repodata(source.root, LINUX)
    good = document["packages"][GAMMA.filename]
    no_checksums = {k: v for k, v in good.items() if k not in ("sha256", "md5")}
    hostile = {
        "other-1-0.tar.bz2": (
            {**good, "name": "gamma"},
            "file name does not match the package name",
        ),
        "g1-1-0.tar.bz2": ({**good, "name": "g1", "subdir": "osx-64"}, "record is for subdir"),
        "g2-1-0.tar.bz2": ({**good, "name": "g2", "sha256": "zz" * 32}, "malformed sha256"),
        "g3-1-0.tar.bz2": ({**good, "name": "g3", "md5": "abc"}, "malformed md5"),
        "g4-1-0.tar.bz2": ({**no_checksums, "name": "g4"}, "no sha256 or md5"),
        "g5-1-0.tar.bz2": ({**good, "name": "g5", "size": -1}, "malformed size"),
        "g6-1-0.tar.bz2": ({**good, "name": "g6", "size": "12"}, "malformed size"),
        "g7-1-0.tar.bz2": ({**good, "name": "g7", "size": True}, "malformed size"),
        "g8-1-0.tar.bz2": ({**good, "name": "g8", "depends": "alpha"}, "malformed depends"),
        "g9-1-0.tar.bz2": ({**good, "name": "g9", "depends": [1]}, "malformed depends"),
        "g10-1-0.tar.bz2": ([good], "record is not an object"),
        "g11-1-0.tar.bz2": ({**good, "name": None}, "record lacks a valid name or version"),
        "g12-1-0.tar.bz2": ({**good, "name": "g12", "version": 1}, "record lacks a valid name"),
        # A copy of another entry inside this one (which a splice could take for the entry).
        "g13-1-0.tar.bz2": (
            {**good, "name": "g13", "x": {"pad": 0, BETA.filename: {"name": "beta"}}},
            "record holds an object under a package file's name",
        ),
        "g14-1-0.tar.bz2": (
            {**good, "name": "g14", "alpha-1-0.conda": {}},
            "record holds an object under a package file's name",
        ),
    }
    for filename, (record, _) in hostile.items():
        document["packages"][filename] = record
    write_repodata(source.root, LINUX, document)

    mirror = _mirror(source)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert run.filtered == len(hostile)
    reasons = run.filtered_reasons
    for filename, (_, reason) in hostile.items():
        assert any(reason in counted for counted in reasons), (filename, reason, reasons)
    assert _served_files(client, mirror.channel, LINUX) == {BETA.filename, GAMMA.filename}
    assert Package.objects.filter(unit=LINUX).count() == 2


def _nul_in_version(server, document):
    document["packages"][GAMMA.filename]["version"] = "0.1\x00"


def _nul_in_url(server, document):
    document["packages"][GAMMA.filename]["url"] = f"{server.url}{GAMMA_PATH}\x00x"


@pytest.mark.parametrize("poison", [_nul_in_version, _nul_in_url], ids=["version", "url"])
def test_one_poisoned_record_does_not_sink_the_run(source, run_mirror, client, poison):
    document = read_repodata(source.root, LINUX)
    poison(source, document)
    write_repodata(source.root, LINUX, document)
    mirror = _mirror(source)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert "Internal error" not in run.error
    assert _served_files(client, mirror.channel, "noarch") == {ALPHA.filename}
    assert BETA.filename in _served_files(client, mirror.channel, LINUX)


# --- 4, 5, 6: active downloads that go wrong --------------------------------------------------


def _index_lies(server) -> bytes:
    document = read_repodata(server.root, LINUX)
    document["packages"][GAMMA.filename]["sha256"] = _sha256(b"something else")
    write_repodata(server.root, LINUX, document)
    return (server.root / LINUX / GAMMA.filename).read_bytes()


def _file_tampered(server) -> bytes:
    _flip_last_byte(server.root / LINUX / GAMMA.filename)
    return (server.root / LINUX / GAMMA.filename).read_bytes()


def _assert_gamma_failed(run, mirror, client, reason):
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert run.failed == 1, run.filtered_reasons
    assert run.filtered_reasons == {f"download failed: {reason}": 1}
    assert run.downloaded == 2
    gamma = Package.objects.get(filename=GAMMA.filename)
    assert gamma.artifact is None and gamma.error
    assert _served_files(client, mirror.channel, LINUX) == {BETA.filename}
    assert _served_files(client, mirror.channel, "noarch") == {ALPHA.filename}
    response, _ = _served(client, mirror.channel, f"{LINUX}/{GAMMA.filename}")
    assert response.status_code == 404
    response, _ = _served(client, mirror.channel, f"{LINUX}/{BETA.filename}")
    assert response.status_code == 200
    assert _leftover_tmp() == []
    return gamma


@pytest.mark.parametrize(
    "tamper", [_index_lies, _file_tampered], ids=["index-lies", "file-swapped"]
)
def test_active_checksum_mismatch_is_not_stored(source, run_mirror, client, tamper):
    bad_bytes = tamper(source)
    mirror = _mirror(source, Mirror.Mode.ACTIVE)
    run = run_mirror(mirror)
    gamma = _assert_gamma_failed(run, mirror, client, "sha256 mismatch")
    assert "sha256" in gamma.error
    assert not Artifact.objects.filter(sha256=_sha256(bad_bytes)).exists()
    assert not storage.default_storage.exists(storage.blob_path(_sha256(bad_bytes)))


def test_active_file_larger_than_listed_is_a_size_mismatch(source, run_mirror, client):
    path = source.root / LINUX / GAMMA.filename
    path.write_bytes(path.read_bytes() + b"\0" * 4096)
    mirror = _mirror(source, Mirror.Mode.ACTIVE)
    run = run_mirror(mirror)
    _assert_gamma_failed(run, mirror, client, "size mismatch")


def test_active_missing_file_fails_then_arrives_when_it_reappears(source, run_mirror, client):
    path = source.root / LINUX / GAMMA.filename
    original = path.read_bytes()
    path.unlink()
    mirror = _mirror(source, Mirror.Mode.ACTIVE)
    run = run_mirror(mirror)
    gamma = _assert_gamma_failed(run, mirror, client, "HTTP 404")
    assert "404" in gamma.error

    path.write_bytes(original)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert run.downloaded == 1 and run.failed == 0
    assert Package.objects.get(filename=GAMMA.filename).error == ""
    assert GAMMA.filename in _served_files(client, mirror.channel, LINUX)
    response, body = _served(client, mirror.channel, f"{LINUX}/{GAMMA.filename}")
    assert response.status_code == 200 and body == original


def test_active_cut_download_fails_without_retries(source, run_mirror, client):
    source.cut[GAMMA_PATH] = 100
    mirror = _mirror(source, Mirror.Mode.ACTIVE)
    run = run_mirror(mirror)
    gamma = _assert_gamma_failed(run, mirror, client, "connection cut")
    size = (source.root / LINUX / GAMMA.filename).stat().st_size
    assert gamma.error.endswith(f"the response was cut short after 100 of {size} bytes")
    assert source.count(GAMMA_PATH) == 1


class _CutOnce(dict):
    """A `ChannelServer.cut` that applies once per path, then serves in full."""

    def __getitem__(self, path):
        return self.pop(path)


def test_active_cut_download_is_retried(source, run_mirror, client, settings):
    settings.PSM_HTTP_RETRIES = 2
    source.cut = _CutOnce({GAMMA_PATH: 100})
    mirror = _mirror(source, Mirror.Mode.ACTIVE)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert run.downloaded == 3 and run.failed == 0
    assert source.count(GAMMA_PATH) == 2
    response, body = _served(client, mirror.channel, f"{LINUX}/{GAMMA.filename}")
    assert response.status_code == 200
    assert body == (source.root / LINUX / GAMMA.filename).read_bytes()


def test_active_cut_download_gives_up_after_retries(source, run_mirror, client, settings):
    settings.PSM_HTTP_RETRIES = 2
    source.cut[GAMMA_PATH] = 100
    mirror = _mirror(source, Mirror.Mode.ACTIVE)
    run = run_mirror(mirror)
    _assert_gamma_failed(run, mirror, client, "connection cut")
    assert source.count(GAMMA_PATH) == 3


# --- 7: decompression bombs -------------------------------------------------------------------

BOMB_LIMIT = 100_000


def _bomb(compressor, megabytes: int) -> bytes:
    """Valid-looking JSON that opens an object, then megabytes of whitespace."""
    parts = [compressor.compress(b'{"info": {"subdir": "linux-64"}, "packages": {')]
    block = b" " * (1 << 20)
    parts += [compressor.compress(block) for _ in range(megabytes)]
    return b"".join(parts) + compressor.flush()


def _zst_bomb(root: Path) -> None:
    (root / LINUX / "repodata.json.zst").write_bytes(
        _bomb(zstandard.ZstdCompressor().compressobj(), 64)
    )


def _bz2_bomb(root: Path) -> None:
    for name in ("repodata.json.zst", "repodata.json"):
        (root / LINUX / name).unlink()
    (root / LINUX / "repodata.json.bz2").write_bytes(_bomb(bz2.BZ2Compressor(), 12))


@pytest.mark.parametrize("plant", [_zst_bomb, _bz2_bomb], ids=["zst", "bz2"])
def test_decompression_bomb_fails_its_subdir(source, run_mirror, client, settings, plant):
    settings.PSM_MAX_INDEX_BYTES = BOMB_LIMIT
    plant(source.root)
    mirror = _mirror(source)
    run = run_mirror(mirror)
    _assert_index_unreadable(run, LINUX, f"more than the {BOMB_LIMIT} byte limit")
    assert not Package.objects.filter(unit=LINUX).exists()
    assert _served_files(client, mirror.channel, "noarch") == {ALPHA.filename}
    assert all(a.size < BOMB_LIMIT for a in Artifact.objects.all())


def test_decompression_bomb_is_stopped_early_in_bounded_memory():
    raw = io.BytesIO(_bomb(zstandard.ZstdCompressor().compressobj(), 256))
    with tempfile.TemporaryFile() as dest:
        tracemalloc.start()
        try:
            with pytest.raises(FormatError, match=f"more than the {BOMB_LIMIT} byte limit"):
                conda_format._decompress("repodata.json.zst", raw, dest, "u", BOMB_LIMIT)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert dest.tell() <= BOMB_LIMIT
    assert peak < 16 * (1 << 20)


# --- 8, 9: passive fetches on first request ---------------------------------------------------


def test_passive_mismatch_is_502_then_served_when_upstream_is_fixed(source, run_mirror, client):
    """A file that does not match its index entry is never stored nor handed out: one of a
    single chunk is verified before anything is sent (502 with the reason, noted on the
    package); a larger one is cut short (tests/e2e/test_passive_streaming.py)."""
    mirror = _mirror(source)
    run_mirror(mirror)
    path = source.root / LINUX / GAMMA.filename
    original = path.read_bytes()
    _flip_last_byte(path)  # same size: only the digest can tell
    artifacts = Artifact.objects.count()

    response, body = _served(client, mirror.channel, f"{LINUX}/{GAMMA.filename}")
    assert response.status_code == 502
    assert b"does not match its index entry" in body and b"sha256" in body
    assert Artifact.objects.count() == artifacts
    package = Package.objects.get(filename=GAMMA.filename)
    assert package.artifact is None and "sha256" in package.error
    assert _leftover_tmp() == []

    path.write_bytes(original)
    response, body = _served(client, mirror.channel, f"{LINUX}/{GAMMA.filename}")
    assert response.status_code == 200 and body == original
    assert Artifact.objects.count() == artifacts + 1
    assert Package.objects.get(filename=GAMMA.filename).error == ""


def test_passive_file_of_another_size_is_502_before_anything_is_sent(source, run_mirror, client):
    mirror = _mirror(source)
    run_mirror(mirror)
    path = source.root / LINUX / GAMMA.filename
    path.write_bytes(path.read_bytes() + b"more")
    response, body = _served(client, mirror.channel, f"{LINUX}/{GAMMA.filename}")
    assert response.status_code == 502
    assert b"does not match its index entry" in body and b"announces" in body
    assert Package.objects.get(filename=GAMMA.filename).artifact is None


def test_passive_missing_upstream_file_is_502(source, run_mirror, client):
    mirror = _mirror(source)
    run_mirror(mirror)
    (source.root / LINUX / GAMMA.filename).unlink()
    response, body = _served(client, mirror.channel, f"{LINUX}/{GAMMA.filename}")
    assert response.status_code == 502
    assert b"could not fetch" in body and b"404" in body


def test_passive_upstream_down_is_502(source, run_mirror, client):
    mirror = _mirror(source)
    run_mirror(mirror)
    artifacts = Artifact.objects.count()
    source.close()
    response, body = _served(client, mirror.channel, f"{LINUX}/{GAMMA.filename}")
    assert response.status_code == 502
    assert b"could not fetch" in body
    assert Artifact.objects.count() == artifacts


def test_passive_slow_upstream_is_504(source, run_mirror, client, settings):
    mirror = _mirror(source)
    run_mirror(mirror)
    settings.PSM_HTTP_TIMEOUT = 1
    source.delay[GAMMA_PATH] = 3
    response, body = _served(client, mirror.channel, f"{LINUX}/{GAMMA.filename}")
    assert response.status_code == 504
    assert b"could not fetch" in body
    assert Package.objects.get(filename=GAMMA.filename).artifact is None


@pytest.mark.django_db(transaction=True)
def test_passive_concurrent_first_requests_download_once(source, run_mirror):
    mirror = _mirror(source)
    run_mirror(mirror)
    source.delay[GAMMA_PATH] = 0.5
    url = f"/api/repo/{mirror.channel.path}/{LINUX}/{GAMMA.filename}"
    clients = 5
    barrier = threading.Barrier(clients)
    results: list[tuple[int, bytes]] = []
    lock = threading.Lock()

    def fetch():
        try:
            barrier.wait(timeout=10)
            response = Client().get(url)
            body = response_body(response)
            with lock:
                results.append((response.status_code, body))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=fetch) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    expected = (source.root / LINUX / GAMMA.filename).read_bytes()
    assert results == [(200, expected)] * clients
    assert source.count(GAMMA_PATH) == 1
    assert Artifact.objects.filter(sha256=_sha256(expected)).count() == 1


# --- 10: absolute upstream URLs ---------------------------------------------------------------


def _relocate(server) -> dict[str, str]:
    """Move noarch files under a repodata v2 base_url and gamma to an absolute per-record url;
    give beta a relative url that must be ignored. Returns where each file now lives."""
    root = server.root
    (root / "files" / "noarch").mkdir(parents=True)
    shutil.move(root / "noarch" / ALPHA.filename, root / "files" / "noarch" / ALPHA.filename)
    noarch = read_repodata(root, "noarch")
    noarch["info"] = {"subdir": "noarch", "base_url": f"{server.url}/files/noarch/"}
    noarch["repodata_version"] = 2
    write_repodata(root, "noarch", noarch)

    (root / "pool").mkdir()
    shutil.move(root / LINUX / GAMMA.filename, root / "pool" / GAMMA.filename)
    linux = read_repodata(root, LINUX)
    linux["packages"][GAMMA.filename]["url"] = f"{server.url}/pool/{GAMMA.filename}"
    linux["packages.conda"][BETA.filename]["url"] = "../../../etc/passwd"
    write_repodata(root, LINUX, linux)
    return {
        f"noarch/{ALPHA.filename}": f"/files/noarch/{ALPHA.filename}",
        f"{LINUX}/{GAMMA.filename}": f"/pool/{GAMMA.filename}",
        f"{LINUX}/{BETA.filename}": f"/{LINUX}/{BETA.filename}",
    }


def _assert_no_upstream_urls(client, channel):
    for subdir in ("noarch", LINUX):
        repodata = _served_repodata(client, channel, subdir)
        assert "base_url" not in repodata["info"]
        assert repodata.get("repodata_version", 1) == 1
        records = {**repodata["packages"], **repodata["packages.conda"]}
        assert records and all("url" not in record for record in records.values())


@pytest.mark.parametrize("mode", [Mirror.Mode.ACTIVE, Mirror.Mode.PASSIVE])
def test_absolute_upstream_urls_are_followed_but_not_served(source, run_mirror, client, mode):
    locations = _relocate(source)
    mirror = _mirror(source, mode)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert run.failed == 0 and run.filtered == 0
    _assert_no_upstream_urls(client, mirror.channel)
    for path, upstream in locations.items():
        response, body = _served(client, mirror.channel, path)
        assert response.status_code == 200, path
        assert body == (source.root / upstream.lstrip("/")).read_bytes()
        assert source.count(upstream) == 1
    assert not [p for _, p in source.requests if "passwd" in p]


def test_moved_upstream_location_is_picked_up(source, run_mirror, client):
    _relocate(source)
    mirror = _mirror(source)
    assert run_mirror(mirror).state == SyncRun.State.COMPLETED
    # Upstream moves its files to a new CDN path; the records themselves are unchanged.
    root = source.root
    shutil.move(root / "files", root / "cdn")
    noarch = read_repodata(root, "noarch")
    noarch["info"]["base_url"] = f"{source.url}/cdn/noarch/"
    write_repodata(root, "noarch", noarch)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    response, _ = _served(client, mirror.channel, f"noarch/{ALPHA.filename}")
    assert response.status_code == 200


# --- redirects off the allowlist --------------------------------------------------------------


def test_redirect_off_the_allowlist_is_refused(source, run_mirror, client, outside):
    # The file is there, on a host off the allowlist; upstream redirects to it.
    outside.write(GAMMA.filename, (source.root / LINUX / GAMMA.filename).read_bytes())
    source.redirects[f"/moved/{GAMMA.filename}"] = f"{outside.url}/{GAMMA.filename}"
    document = read_repodata(source.root, LINUX)
    document["packages"][GAMMA.filename]["url"] = f"{source.url}/moved/{GAMMA.filename}"
    write_repodata(source.root, LINUX, document)
    mirror = _mirror(source)
    assert run_mirror(mirror).state == SyncRun.State.COMPLETED
    response, _ = _served(client, mirror.channel, f"{LINUX}/{GAMMA.filename}")
    assert source.count(f"/moved/{GAMMA.filename}") == 1  # the redirect was given
    assert outside.requests == []
    assert response.status_code == 502
