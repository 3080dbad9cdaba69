"""Withdrawing newly blocked files from a (frozen) channel's published index, and the 403 that
says why a blocked file is not served."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import subprocess
from pathlib import Path

import orjson
import pytest
import rattler
import zstandard
from django.conf import settings

from channels_app import publishing, services, storage
from channels_app.formats import conda_jlap
from channels_app.formats.cran_index import render_listing
from channels_app.formats.pypi_pages import parse_page
from channels_app.models import Channel, Package, PublishedFile, VerificationProblem
from tests.factories import ChannelFactory
from tests.fixtures.cran_repo import rscript
from tests.fixtures.http import response_body

pytestmark = pytest.mark.django_db

REASON = "blocked by advisory PYSEC-2024-1 (CVE score rule)"
CONTRIB = "src/contrib"
GAMMA_ARCHIVE = "src/contrib/Archive/gamma"


def _get(client, channel: Channel, path: str, **headers):
    response = client.get(f"/api/repo/{channel.path}/{path}", headers=headers)
    body = response_body(response)
    return response, body


def _body(client, channel: Channel, path: str, **headers) -> bytes:
    response, body = _get(client, channel, path, **headers)
    assert response.status_code == 200, (path, response.status_code)
    return body


def _add(channel: Channel, unit: str, filename: str, name: str, version: str, record) -> Package:
    """A stored package file with its index entry, as a sync leaves it."""
    artifact = storage.store([f"the bytes of {filename}".encode()])
    return Package.objects.create(
        channel=channel,
        unit=unit,
        filename=filename,
        name=name,
        version=version,
        sha256=artifact.sha256,
        record=orjson.dumps(record).decode(),
        artifact=artifact,
    )


def _freeze(channel: Channel, admin_user) -> None:
    channel.refresh_from_db()
    assert services.channel_freeze(channel=channel, user=admin_user)


def _block(*blocked: Package) -> None:
    """What the policy's decision does to a package it now keeps out."""
    for package in blocked:
        package.excluded_reason = REASON
        package.save(update_fields=["excluded_reason", "updated_at"])


def _withdraw(channel: Channel, *packages: Package) -> bool:
    return publishing.channel_withdraw(
        channel=channel, paths=[(p.unit, p.filename) for p in packages]
    )


def _assert_blocked(client, channel: Channel, path: str) -> None:
    response, body = _get(client, channel, path)
    assert response.status_code == 403
    assert response["Content-Type"].startswith("text/plain")
    assert body.decode() == f"Blocked by policy: {REASON}\n"


# --- conda ------------------------------------------------------------------------------------


def _conda(channel: Channel, subdir: str, name: str, version: str, suffix: str) -> Package:
    record = {
        "name": name,
        "version": version,
        "build": "0",
        "build_number": 0,
        "depends": [],
        "license": "MIT",
        "subdir": subdir,
        "md5": hashlib.md5(name.encode()).hexdigest(),
        "sha256": hashlib.sha256(f"{name}-{version}".encode()).hexdigest(),
        "size": 100,
        "timestamp": 1_700_000_000_000,
    }
    return _add(channel, subdir, f"{name}-{version}-0{suffix}", name, version, record)


def _conda_index(client, channel: Channel, subdir: str) -> dict:
    return orjson.loads(_body(client, channel, f"{subdir}/repodata.json"))


def test_conda_withdrawal_takes_only_the_blocked_files_out_of_a_frozen_index(
    client, admin_user, tmp_path
):
    channel = ChannelFactory(name="pinned", kind="conda")
    alpha = _conda(channel, "noarch", "alpha", "1.0", ".tar.bz2")
    alpha_new = _conda(channel, "noarch", "alpha", "1.1", ".conda")
    _conda(channel, "linux-64", "beta", "2.0", ".conda")
    _conda(channel, "linux-64", "beta", "2.1", ".tar.bz2")
    gamma = _conda(channel, "linux-64", "gamma", "1.0", ".conda")
    assert publishing.channel_publish(channel=channel)
    before = {subdir: _conda_index(client, channel, subdir) for subdir in ("noarch", "linux-64")}
    before_bytes = {s: _body(client, channel, f"{s}/repodata.json") for s in before}
    channeldata = orjson.loads(_body(client, channel, "channeldata.json"))
    assert channeldata["packages"]["gamma"] == {"subdirs": ["linux-64"]}
    _freeze(channel, admin_user)
    delta = _conda(channel, "linux-64", "delta", "1.0", ".conda")  # entered while frozen
    _block(alpha_new, gamma)

    assert _withdraw(channel, alpha_new, gamma) is True

    for subdir, blocked in (("noarch", alpha_new), ("linux-64", gamma)):
        served = _conda_index(client, channel, subdir)
        expected = before[subdir]
        for section in ("packages", "packages.conda"):
            expected[section].pop(blocked.filename, None)
        assert served == expected  # every other entry as it was, in the same order
        assert list(served["packages.conda"]) == list(expected["packages.conda"])
        plain = _body(client, channel, f"{subdir}/repodata.json")
        packed = _body(client, channel, f"{subdir}/repodata.json.zst")
        assert zstandard.ZstdDecompressor().decompressobj().decompress(packed) == plain
        assert bz2.decompress(_body(client, channel, f"{subdir}/repodata.json.bz2")) == plain
        # The log says what the withdrawal removed: a reader of it removes the same.
        log = conda_jlap.read_log(_body(client, channel, f"{subdir}/repodata.jlap"))
        hashes = [conda_jlap.document_hash(d).hexdigest() for d in (before_bytes[subdir], plain)]
        assert log.latest == hashes[1]
        (steps,) = conda_jlap.chain(log.patches, *hashes)
        section = "packages.conda" if blocked.filename.endswith(".conda") else "packages"
        assert steps == [{"op": "remove", "path": f"/{section}/{blocked.filename}"}]
        # What a conda client reads: py-rattler parses it and finds the pinned records only.
        (tmp_path / f"{subdir}.json").write_bytes(plain)
        records = rattler.RepoData.from_path(tmp_path / f"{subdir}.json").into_repo_data(
            rattler.Channel("http://psm.invalid/pinned")
        )
        assert sorted(r.file_name for r in records) == sorted(
            [*expected["packages"], *expected["packages.conda"]]
        )
    assert sorted(_conda_index(client, channel, "noarch")["packages"]) == [alpha.filename]
    linux = _conda_index(client, channel, "linux-64")
    assert delta.filename not in linux["packages.conda"]
    assert sorted([*linux["packages"], *linux["packages.conda"]]) == [
        "beta-2.0-0.conda",
        "beta-2.1-0.tar.bz2",
    ]
    # gamma has no file left anywhere; alpha keeps one in noarch; delta never appears.
    served = orjson.loads(_body(client, channel, "channeldata.json"))
    del channeldata["packages"]["gamma"]
    assert served == channeldata

    _assert_blocked(client, channel, gamma.path)
    _assert_blocked(client, channel, alpha_new.path)
    assert _get(client, channel, alpha.path)[0].status_code == 200
    assert Channel.objects.get(pk=channel.pk).frozen
    # Nothing of them is listed any more: a second withdrawal changes nothing.
    files = dict(PublishedFile.objects.filter(channel=channel).values_list("path", "artifact"))
    assert _withdraw(channel, alpha_new, gamma) is False
    assert dict(PublishedFile.objects.filter(channel=channel).values_list("path", "artifact")) == (
        files
    )


def test_a_damaged_index_is_withdrawn_as_verification_would_not_rewritten(client, admin_user):
    """A withdrawal keeps every other entry's bytes: a file damaged on disk must not be
    rewritten into one whose digest vouches for the damage. It gets verification's remedy
    (a frozen channel's: withdrawn, 404, reported) and the other files are rewritten."""
    channel = ChannelFactory(name="hurt", kind="conda")
    alpha_new = _conda(channel, "noarch", "alpha", "1.1", ".conda")
    _conda(channel, "noarch", "alpha", "1.0", ".conda")
    gamma = _conda(channel, "linux-64", "gamma", "1.0", ".conda")
    _conda(channel, "linux-64", "beta", "2.0", ".conda")
    assert publishing.channel_publish(channel=channel)
    _freeze(channel, admin_user)
    linux = PublishedFile.objects.get(channel=channel, path="linux-64/repodata.json").artifact
    blob = Path(settings.MEDIA_ROOT) / storage.blob_path(linux.sha256)
    blob.write_bytes(blob.read_bytes().replace(b'"beta"', b'"bXta"'))
    _block(alpha_new, gamma)

    assert _withdraw(channel, alpha_new, gamma) is True

    assert sorted(_conda_index(client, channel, "noarch")["packages.conda"]) == [
        "alpha-1.0-0.conda"
    ]
    assert _get(client, channel, "linux-64/repodata.json")[0].status_code == 404
    problem = VerificationProblem.objects.get(channel=channel)
    assert (problem.kind, problem.path) == ("index", "linux-64/repodata.json")
    assert problem.problem.startswith("stored file damaged: its bytes hash to sha256")
    assert problem.is_open and "frozen" in problem.action


def test_removed_and_unknown_files_stay_404(client):
    channel = ChannelFactory(name="gone", kind="conda")
    gone = _conda(channel, "noarch", "alpha", "1.0", ".conda")
    publishing.channel_publish(channel=channel)
    Package.objects.filter(pk=gone.pk).update(removed=True, excluded_reason=REASON)
    assert _get(client, channel, gone.path)[0].status_code == 404
    assert _get(client, channel, "noarch/nothing-1.0-0.conda")[0].status_code == 404


def test_a_file_awaiting_its_decision_is_not_found_yet(client):
    from channels_app.models import PENDING_DECISION

    channel = ChannelFactory(name="pending", kind="conda")
    waiting = _conda(channel, "noarch", "alpha", "1.0", ".conda")
    Package.objects.filter(pk=waiting.pk).update(excluded_reason=PENDING_DECISION)
    response, body = _get(client, channel, waiting.path)
    assert response.status_code == 404
    assert b"awaiting the policy's decision" in body


@pytest.mark.parametrize(
    ("kind", "unit", "filename"),
    [
        ("conda", "noarch", "alpha-1.0-0.conda"),
        ("pypi", "alpha", "alpha-1.0-py3-none-any.whl"),
        ("cran", CONTRIB, "alpha_1.0.tar.gz"),
    ],
)
def test_withdrawing_files_no_index_lists_changes_nothing(kind, unit, filename):
    channel = ChannelFactory(name="quiet", kind=kind)
    _add(channel, unit, filename, "alpha", "1.0", {"Package": "alpha", "Version": "1.0"})
    publishing.channel_publish(channel=channel)
    files = dict(PublishedFile.objects.filter(channel=channel).values_list("path", "artifact"))
    others = [(unit, "other-1.0-0.conda"), (unit, "other_1.0.tar.gz"), ("osx-64", filename)]
    others += [("other", "other-1.0-py3-none-any.whl"), (GAMMA_ARCHIVE, "gamma_0.1.tar.gz")]
    assert publishing.channel_withdraw(channel=channel, paths=others) is False
    assert publishing.channel_withdraw(channel=channel, paths=[]) is False
    assert dict(PublishedFile.objects.filter(channel=channel).values_list("path", "artifact")) == (
        files
    )


# --- Python -----------------------------------------------------------------------------------

JSON = "application/vnd.pypi.simple.v1+json"
HTML = "text/html"


def _wheel(channel: Channel, project: str, version: str, filename: str | None = None):
    filename = filename or f"{project}-{version}-py3-none-any.whl"
    document = {
        "filename": filename,
        "hashes": {"sha256": hashlib.sha256(filename.encode()).hexdigest()},
        "requires-python": ">=3.9",
        "size": 1234,
        "upload-time": "2024-05-06T07:08:09.000000Z",
        "core-metadata": {"sha256": hashlib.sha256(b"meta" + filename.encode()).hexdigest()},
    }
    return _add(channel, project, filename, project, version, document)


def _page(client, channel: Channel, project: str) -> tuple[dict, list[dict]]:
    """A project's JSON page and the entries its HTML page gives (read as pip reads it)."""
    page = orjson.loads(_body(client, channel, f"simple/{project}/", accept=JSON))
    html = _body(client, channel, f"simple/{project}/", accept=HTML)
    return page, parse_page(html, f"http://psm.invalid/simple/{project}/", project)


def test_python_withdrawal_rewrites_both_pages_of_the_projects_only(client, admin_user):
    channel = ChannelFactory(name="pinned-py", kind="pypi")
    _wheel(channel, "demo", "1.0")
    _wheel(channel, "demo", "1.0", "demo-1.0.tar.gz")
    blocked_wheel = _wheel(channel, "demo", "2.0")
    blocked_sdist = _wheel(channel, "other", "1.0", "other-1.0.tar.gz")
    _wheel(channel, "third", "0.1")
    assert publishing.channel_publish(channel=channel)
    before = {p: _page(client, channel, p)[0] for p in ("demo", "other", "third")}
    root = {accept: _body(client, channel, "simple/", accept=accept) for accept in (JSON, HTML)}
    third_html = _body(client, channel, "simple/third/", accept=HTML)
    _freeze(channel, admin_user)
    _wheel(channel, "demo", "3.0")  # entered while frozen
    _wheel(channel, "newcomer", "1.0")
    _block(blocked_wheel, blocked_sdist)

    assert _withdraw(channel, blocked_wheel, blocked_sdist) is True

    demo, demo_html = _page(client, channel, "demo")
    kept = [f for f in before["demo"]["files"] if f["filename"] != blocked_wheel.filename]
    assert demo["files"] == kept
    assert [f["filename"] for f in kept] == ["demo-1.0-py3-none-any.whl", "demo-1.0.tar.gz"]
    assert demo["versions"] == ["1.0"]  # a version with no file left is no longer named
    # The HTML page says what the JSON page says (hashes, requires-python, metadata).
    assert [
        (e["filename"], e["hashes"], e["requires-python"], e["core-metadata"]) for e in demo_html
    ] == [(f["filename"], f["hashes"], f["requires-python"], f["core-metadata"]) for f in kept]
    # A project left with no file keeps its (empty) pages and its place in the list.
    other, other_html = _page(client, channel, "other")
    assert other["files"] == [] and other_html == [] and other["name"] == "other"
    for accept, body in root.items():
        assert _body(client, channel, "simple/", accept=accept) == body
    assert _body(client, channel, "simple/third/", accept=HTML) == third_html
    assert _get(client, channel, "simple/newcomer/", accept=JSON)[0].status_code == 404

    _assert_blocked(client, channel, f"files/{blocked_wheel.path}")
    _assert_blocked(client, channel, f"files/{blocked_wheel.path}.metadata")
    _assert_blocked(client, channel, f"files/{blocked_sdist.path}")


def test_python_withdrawal_keeps_what_entered_while_frozen_for_the_next_publish(client, admin_user):
    channel = ChannelFactory(name="thawed-py", kind="pypi")
    _wheel(channel, "demo", "1.0")
    blocked = _wheel(channel, "demo", "2.0")
    assert publishing.channel_publish(channel=channel)
    _freeze(channel, admin_user)
    new = _wheel(channel, "newcomer", "1.0")
    _block(blocked)
    Channel.objects.filter(pk=channel.pk).update(content_version=channel.content_version + 1)
    assert _withdraw(channel, blocked)

    # Unfrozen, the channel publishes only what changed since its last publish: the
    # withdrawal's rewritten pages must not hide what entered while it was frozen.
    channel.refresh_from_db()
    channel.unfreeze()
    channel.save(update_fields=["frozen", "frozen_by", "frozen_at"])
    assert publishing.channel_publish(channel=channel)
    root = orjson.loads(_body(client, channel, "simple/", accept=JSON))
    assert [p["name"] for p in root["projects"]] == ["demo", "newcomer"]
    newcomer, _ = _page(client, channel, "newcomer")
    assert [f["filename"] for f in newcomer["files"]] == [new.filename]


# --- R ----------------------------------------------------------------------------------------


def _r(channel: Channel, unit: str, name: str, version: str, **fields) -> Package:
    document = {
        "Package": name,
        "Version": version,
        "Depends": "R (>= 3.5.0)",
        **fields,
        "License": "GPL-2",
        "MD5sum": hashlib.md5(f"{name}{version}".encode()).hexdigest(),
        "NeedsCompilation": "no",
    }
    return _add(channel, unit, f"{name}_{version}.tar.gz", name, version, document)


def _r_read(script: str, *files) -> list[str]:
    result = subprocess.run(
        [rscript(), "--vanilla", "-e", script, *map(str, files)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.mark.skipif(rscript() is None, reason="R is not installed (Rscript not on PATH)")
def test_r_withdrawal_rewrites_every_packages_variant_and_the_archive(client, admin_user, tmp_path):
    channel = ChannelFactory(name="pinned-r", kind="cran")
    _r(channel, CONTRIB, "alpha", "1.0", Imports="stats,\n    utils")
    blocked = _r(channel, CONTRIB, "beta", "2.0")
    _r(channel, CONTRIB, "gamma", "0.1-1")
    _r(channel, GAMMA_ARCHIVE, "gamma", "0.0-9")
    archived = _r(channel, GAMMA_ARCHIVE, "gamma", "0.1-0")
    assert publishing.channel_publish(channel=channel)
    packages = _body(client, channel, f"{CONTRIB}/PACKAGES").decode()
    assert _body(client, channel, f"{CONTRIB}/PACKAGES.rds")
    assert _body(client, channel, "src/contrib/Meta/archive.rds")
    _freeze(channel, admin_user)
    _r(channel, CONTRIB, "delta", "1.0")  # entered while frozen
    _block(blocked, archived)

    assert _withdraw(channel, blocked, archived) is True

    stanzas = packages.split("\n\n")
    expected = "\n\n".join(s for s in stanzas if not s.startswith("Package: beta\n"))
    assert len(stanzas) == 3 and expected.count("Package: ") == 2
    plain = _body(client, channel, f"{CONTRIB}/PACKAGES")
    assert plain.decode() == expected  # the other stanzas byte for byte
    assert gzip.decompress(_body(client, channel, f"{CONTRIB}/PACKAGES.gz")) == plain
    assert _body(client, channel, f"cran/{CONTRIB}/PACKAGES") == plain
    (tmp_path / "PACKAGES.rds").write_bytes(_body(client, channel, f"{CONTRIB}/PACKAGES.rds"))
    assert _r_read(
        'db <- readRDS(commandArgs(TRUE)[1]); cat(rownames(db), db[, "Version"])',
        tmp_path / "PACKAGES.rds",
    ) == ["alpha", "gamma", "1.0", "0.1-1"]
    assert "delta" not in plain.decode()

    listing = _body(client, channel, f"{GAMMA_ARCHIVE}/")
    assert listing == render_listing(GAMMA_ARCHIVE, ["gamma_0.0-9.tar.gz"])
    (tmp_path / "archive.rds").write_bytes(_body(client, channel, "src/contrib/Meta/archive.rds"))
    assert _r_read(
        "db <- readRDS(commandArgs(TRUE)[1]); cat(names(db), rownames(db$gamma))",
        tmp_path / "archive.rds",
    ) == ["gamma", "gamma/gamma_0.0-9.tar.gz"]

    _assert_blocked(client, channel, blocked.path)
    _assert_blocked(client, channel, f"cran/{blocked.path}")
    _assert_blocked(client, channel, archived.path)
    assert _get(client, channel, f"{CONTRIB}/alpha_1.0.tar.gz")[0].status_code == 200


@pytest.mark.skipif(rscript() is None, reason="R is not installed (Rscript not on PATH)")
def test_r_files_that_cannot_be_remade_without_r_are_dropped(client, admin_user, monkeypatch):
    channel = ChannelFactory(name="no-r", kind="cran")
    _r(channel, CONTRIB, "alpha", "1.0")
    blocked = _r(channel, CONTRIB, "beta", "2.0")
    _r(channel, GAMMA_ARCHIVE, "gamma", "0.0-9")
    archived = _r(channel, GAMMA_ARCHIVE, "gamma", "0.1-0")
    assert publishing.channel_publish(channel=channel)  # with R: every file
    _freeze(channel, admin_user)
    _block(blocked, archived)
    monkeypatch.setenv("PATH", "/nonexistent")  # a host without R

    assert _withdraw(channel, blocked, archived) is True

    # Stale copies would still list the blocked files: R reads PACKAGES.gz instead, and its
    # archive tools find no archive rather than versions PSM no longer serves.
    for path in (f"{CONTRIB}/PACKAGES.rds", "src/contrib/Meta/archive.rds"):
        assert _get(client, channel, path)[0].status_code == 404
    plain = _body(client, channel, f"{CONTRIB}/PACKAGES")
    assert b"Package: alpha" in plain and b"beta" not in plain
    assert gzip.decompress(_body(client, channel, f"{CONTRIB}/PACKAGES.gz")) == plain
    assert b"gamma_0.1-0" not in _body(client, channel, f"{GAMMA_ARCHIVE}/")
