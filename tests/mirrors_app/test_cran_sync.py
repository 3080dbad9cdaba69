"""Standard R mirrors: active and passive syncs, filters, incremental re-syncs, hostile upstreams."""

from __future__ import annotations

import gzip
import hashlib
from datetime import datetime

import pytest

from channels_app.formats import cran
from channels_app.models import Package, PublishedFile
from mirrors_app.models import Mirror, SyncRun
from tests.factories import ChannelFactory, MirrorFactory
from tests.fixtures.cran_repo import CranServer, RPackage, build_repo, packages_text, rscript
from tests.fixtures.http import response_body

pytestmark = pytest.mark.django_db

PACKAGES = [
    RPackage("alpha", "1.0", imports=["beta"]),
    RPackage("beta", "2.0", depends=["gamma"]),
    RPackage("gamma", "0.1-1", license="GPL (>= 2)"),
    RPackage("delta", "3.0", r_version="4.4.0", license="Apache License (== 2.0)"),
]
ARCHIVED = [RPackage("gamma", "0.1-0"), RPackage("gamma", "0.0-9")]


@pytest.fixture
def repo(tmp_path):
    return build_repo(tmp_path / "cran", PACKAGES, archived=ARCHIVED)


@pytest.fixture
def upstream(repo):
    with CranServer(repo) as server:
        yield server


def _mirror(upstream, mode=Mirror.Mode.PASSIVE, **options) -> Mirror:
    return MirrorFactory(
        channel=ChannelFactory(kind="cran"),
        kind="cran",
        mode=mode,
        source_url=upstream.url,
        options=options,
    )


def _get(client, mirror, path, **headers):
    response = client.get(f"/api/repo/{mirror.channel.path}/{path}", headers=headers)
    body = response_body(response)
    return response, body


def _served(client, mirror) -> list[str]:
    """`name_version` of every stanza the channel's PACKAGES lists."""
    response, body = _get(client, mirror, "src/contrib/PACKAGES")
    assert response.status_code == 200
    found = []
    for stanza in body.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line)
        if fields:
            found.append(f"{fields['Package']}_{fields['Version']}")
    return sorted(found)


def _ok(run: SyncRun) -> SyncRun:
    assert run.state == SyncRun.State.COMPLETED, run.error
    return run


def test_active_mirror_stores_every_tarball_and_serves_packages(upstream, run_mirror, client):
    mirror = _mirror(upstream, mode=Mirror.Mode.ACTIVE)
    run = _ok(run_mirror(mirror))
    assert (run.seen, run.ingested, run.downloaded, run.failed) == (4, 4, 4, 0)
    assert _served(client, mirror) == ["alpha_1.0", "beta_2.0", "delta_3.0", "gamma_0.1-1"]
    before = len(upstream.requests)
    response, body = _get(client, mirror, "src/contrib/gamma_0.1-1.tar.gz")
    assert response.status_code == 200
    assert body == (upstream.root / "src/contrib/gamma_0.1-1.tar.gz").read_bytes()
    assert len(upstream.requests) == before  # served from storage
    _, packed = _get(client, mirror, "src/contrib/PACKAGES.gz")
    _, plain = _get(client, mirror, "src/contrib/PACKAGES")
    assert gzip.decompress(packed) == plain
    # Upstream's stanza is served back verbatim, MD5sum included.
    assert b"Package: beta\nVersion: 2.0\nDepends: R (>= 3.5.0), gamma\n" in plain
    assert b"MD5sum: " + hashlib.md5(body).hexdigest().encode() in plain


def test_passive_mirror_fetches_a_tarball_on_its_first_request(upstream, run_mirror, client):
    mirror = _mirror(upstream)
    run = _ok(run_mirror(mirror))
    assert (run.ingested, run.passive, run.downloaded) == (4, 4, 0)
    assert upstream.gets("/src/contrib/") == ["/src/contrib/PACKAGES.gz"]
    response, body = _get(client, mirror, "src/contrib/alpha_1.0.tar.gz")
    assert response.status_code == 200
    assert body == (upstream.root / "src/contrib/alpha_1.0.tar.gz").read_bytes()
    _get(client, mirror, "src/contrib/alpha_1.0.tar.gz")
    assert upstream.gets("/src/contrib/alpha") == ["/src/contrib/alpha_1.0.tar.gz"]  # once


def test_the_cran_base_url_serves_the_same_files(upstream, run_mirror, client):
    mirror = _mirror(upstream)
    _ok(run_mirror(mirror))
    plain = _get(client, mirror, "src/contrib/PACKAGES")
    prefixed = _get(client, mirror, "cran/src/contrib/PACKAGES")
    assert prefixed[0].status_code == 200 and prefixed[1] == plain[1]
    response, body = _get(client, mirror, "cran/src/contrib/beta_2.0.tar.gz")
    assert response.status_code == 200
    assert body == (upstream.root / "src/contrib/beta_2.0.tar.gz").read_bytes()


def test_packages_falls_back_to_the_plain_file(tmp_path, run_mirror, client):
    root = build_repo(tmp_path / "plain", PACKAGES, gz=False)
    with CranServer(root) as upstream:
        mirror = _mirror(upstream)
        _ok(run_mirror(mirror))
        assert upstream.gets("/src/contrib/") == [
            "/src/contrib/PACKAGES.gz",
            "/src/contrib/PACKAGES",
        ]
    assert len(_served(client, mirror)) == 4


def test_a_resync_touches_only_what_changed(repo, upstream, run_mirror, client):
    mirror = _mirror(upstream, mode=Mirror.Mode.ACTIVE)
    _ok(run_mirror(mirror))
    unchanged = _ok(run_mirror(mirror))  # PACKAGES.gz answers 304
    assert (unchanged.seen, unchanged.ingested, unchanged.downloaded) == (0, 0, 0)
    packages = dict(Package.objects.values_list("filename", "updated_at"))
    build_repo(
        repo,
        [*PACKAGES[:3], RPackage("delta", "3.1", license="MIT + file LICENSE")],
        archived=ARCHIVED,
    )
    run = _ok(run_mirror(mirror))
    assert (run.seen, run.ingested, run.downloaded) == (4, 1, 1)
    after = dict(Package.objects.filter(removed=False).values_list("filename", "updated_at"))
    for filename in ("alpha_1.0.tar.gz", "beta_2.0.tar.gz", "gamma_0.1-1.tar.gz"):
        assert after[filename] == packages[filename]  # not rewritten
    assert "delta_3.1.tar.gz" in after and "delta_3.0.tar.gz" not in after
    assert _served(client, mirror) == ["alpha_1.0", "beta_2.0", "delta_3.1", "gamma_0.1-1"]


def test_a_changed_md5_is_a_changed_package(repo, upstream, run_mirror):
    mirror = _mirror(upstream, mode=Mirror.Mode.ACTIVE)
    _ok(run_mirror(mirror))
    rebuilt = RPackage("gamma", "0.1-1", license="GPL (>= 2)", extra={"Title": "Changed"})
    build_repo(repo, [*PACKAGES[:2], rebuilt, PACKAGES[3]], archived=ARCHIVED)
    run = _ok(run_mirror(mirror))
    assert (run.ingested, run.downloaded) == (1, 1)
    gamma = Package.objects.get(filename="gamma_0.1-1.tar.gz")
    data = (repo / "src/contrib/gamma_0.1-1.tar.gz").read_bytes()
    assert gamma.artifact.sha256 == hashlib.sha256(data).hexdigest()


def test_filters_decide_what_enters_with_reasons(upstream, run_mirror, client):
    mirror = _mirror(upstream, packages=["alpha"], r_version="4.3.0", exclude_licenses=["APACHE"])
    run = _ok(run_mirror(mirror))
    assert run.filtered_reasons == {"license excluded": 1}  # delta (and it needs R 4.4)
    assert _served(client, mirror) == ["alpha_1.0", "beta_2.0", "gamma_0.1-1"]
    Mirror.objects.filter(pk=mirror.pk).update(
        options={"packages": ["alpha"], "dependencies": False}
    )
    mirror.refresh_from_db()
    run = _ok(run_mirror(mirror))  # nothing changed upstream: the filters apply again
    assert run.ingested == 0
    assert run.filtered_reasons == {"not in the package list": 3}
    assert _served(client, mirror) == ["alpha_1.0"]
    response, body = _get(client, mirror, "src/contrib/beta_2.0.tar.gz")
    assert response.status_code == 403  # kept out by the filters: R's user reads why
    assert body == b"Blocked by policy: not in the package list\n"


def test_archive_versions_are_mirrored_and_listed(upstream, run_mirror, client):
    mirror = _mirror(upstream, mode=Mirror.Mode.ACTIVE, archive=True, packages=["gamma"])
    run = _ok(run_mirror(mirror))
    assert (run.ingested, run.downloaded) == (6, 3)  # every stanza is kept, decided
    assert sorted(upstream.gets("/src/contrib/Archive/")) == [
        "/src/contrib/Archive/gamma/",  # only the mirrored package's folder is read
        "/src/contrib/Archive/gamma/gamma_0.0-9.tar.gz",
        "/src/contrib/Archive/gamma/gamma_0.1-0.tar.gz",
    ]
    response, listing = _get(client, mirror, "src/contrib/Archive/gamma/")
    assert response.status_code == 200
    assert b'href="gamma_0.0-9.tar.gz"' in listing and b'href="gamma_0.1-0.tar.gz"' in listing
    path = "src/contrib/Archive/gamma/gamma_0.1-0.tar.gz"
    response, body = _get(client, mirror, path)
    assert body == (upstream.root / path).read_bytes()
    moved = _get(client, mirror, "src/contrib/Archive/gamma")[0]
    assert moved.status_code == 301 and moved["Location"].endswith("/Archive/gamma/")
    assert _served(client, mirror) == ["gamma_0.1-1"]  # archive versions are in no index
    Mirror.objects.filter(pk=mirror.pk).update(options={"packages": ["gamma"]})
    mirror.refresh_from_db()
    run = _ok(run_mirror(mirror))
    assert run.filtered_reasons["archive versions not mirrored"] == 2
    assert _get(client, mirror, path)[0].status_code == 403
    assert _get(client, mirror, "src/contrib/Archive/gamma/")[0].status_code == 404


def test_archive_folders_of_the_dependency_closure_are_mirrored(upstream, run_mirror, client):
    # alpha imports beta, which depends on gamma: gamma's archived versions are mirrored too.
    mirror = _mirror(upstream, mode=Mirror.Mode.ACTIVE, archive=True, packages=["alpha"])
    _ok(run_mirror(mirror))
    folders = [path for path in upstream.gets("/src/contrib/Archive/") if path.endswith("/")]
    assert sorted(folders) == [f"/src/contrib/Archive/{n}/" for n in ("alpha", "beta", "gamma")]
    assert _served(client, mirror) == ["alpha_1.0", "beta_2.0", "gamma_0.1-1"]
    for version in ("0.1-0", "0.0-9"):
        path = f"src/contrib/Archive/gamma/gamma_{version}.tar.gz"
        response, body = _get(client, mirror, path)
        assert response.status_code == 200 and body == (upstream.root / path).read_bytes()
    # Chosen as the current versions are: a dependency the filters keep out (its license, by
    # which archived versions are judged too) has no folder read, and its files leave.
    options = {"packages": ["alpha"], "archive": True, "exclude_licenses": ["GPL"]}
    Mirror.objects.filter(pk=mirror.pk).update(options=options)
    mirror.refresh_from_db()
    before = len(upstream.requests)
    _ok(run_mirror(mirror))
    assert "/src/contrib/Archive/gamma/" not in [p for _, p, *_ in upstream.requests[before:]]
    assert _served(client, mirror) == ["alpha_1.0", "beta_2.0"]
    assert _get(client, mirror, "src/contrib/Archive/gamma/")[0].status_code == 404


META = "src/contrib/Meta/archive.rds"


@pytest.mark.skipif(rscript() is None, reason="R is not installed (Rscript not on PATH)")
def test_meta_archive_rds_follows_the_archive_and_needs_r(
    repo, upstream, run_mirror, client, monkeypatch
):
    mirror = _mirror(upstream, archive=True, packages=["gamma"])
    _ok(run_mirror(mirror))
    response, body = _get(client, mirror, META)
    assert response.status_code == 200 and body[:2] == b"\x1f\x8b"
    assert _get(client, mirror, f"cran/{META}")[1] == body
    # Without R, a changed archive drops the stale file rather than serve a wrong one.
    build_repo(repo, PACKAGES, archived=[*ARCHIVED, RPackage("gamma", "0.0-8")])
    monkeypatch.setenv("PATH", "/nonexistent")
    _ok(run_mirror(mirror))
    assert _get(client, mirror, META)[0].status_code == 404
    assert b"gamma_0.0-8.tar.gz" in _get(client, mirror, "src/contrib/Archive/gamma/")[1]
    monkeypatch.undo()  # R is back: the next change of an archive folder writes it again
    build_repo(repo, PACKAGES, archived=ARCHIVED)
    _ok(run_mirror(mirror))
    response, body = _get(client, mirror, META)
    assert response.status_code == 200
    Mirror.objects.filter(pk=mirror.pk).update(options={"packages": ["gamma"]})
    mirror.refresh_from_db()
    _ok(run_mirror(mirror))  # no archive any more: no archive.rds
    assert _get(client, mirror, META)[0].status_code == 404


def test_an_archive_folder_that_answered_404_is_asked_again_only_when_its_package_changed(
    repo, upstream, run_mirror, monkeypatch
):
    mirror = _mirror(upstream, archive=True, packages=["alpha", "beta", "gamma"])
    folders = ["/src/contrib/Archive/alpha/", "/src/contrib/Archive/beta/"]
    gamma = "/src/contrib/Archive/gamma/"

    def asked() -> list[str]:
        before = len(upstream.requests)
        _ok(run_mirror(mirror))
        return sorted(p for _, p in upstream.requests[before:] if p.endswith("/"))

    assert asked() == [*folders, gamma]  # alpha and beta have no archive: 404
    assert asked() == [gamma]  # nothing changed: only the folder that exists (a 304)
    # alpha 1.1 is released: its 1.0 may have moved to the archive, so alpha's is asked again.
    alpha = [RPackage("alpha", "1.1", imports=["beta"]), *PACKAGES[1:]]
    build_repo(repo, alpha, archived=[*ARCHIVED, PACKAGES[0]])
    assert asked() == [folders[0], gamma]
    assert mirror.packages.get(filename="alpha_1.0.tar.gz").unit == "src/contrib/Archive/alpha"
    assert asked() == [folders[0], gamma]  # found now: asked (conditionally) like gamma's

    # A 404 is trusted for a week at most (a mirror may sync PACKAGES before the folder): a
    # new period is a new serial.
    class NextPeriod(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.now(tz) + cran.MISSING_RECHECK

    monkeypatch.setattr(cran, "datetime", NextPeriod)
    assert asked() == [*folders, gamma]
    assert asked() == [folders[0], gamma]
    # A restart asks for everything.
    before = len(upstream.requests)
    _ok(run_mirror(mirror, restart=True))
    assert folders[1] in [p for _, p in upstream.requests[before:]]


def test_latest_counts_archive_versions(upstream, run_mirror, client):
    mirror = _mirror(upstream, archive=True, packages=["gamma"], latest=2)
    run = _ok(run_mirror(mirror))
    assert run.filtered_reasons == {
        "not among the latest 2 versions": 1,
        "not in the package list": 3,
    }
    kept = Package.objects.filter(excluded_reason="").values_list("filename", flat=True)
    assert sorted(kept) == ["gamma_0.1-0.tar.gz", "gamma_0.1-1.tar.gz"]


# --- Hostile upstreams ------------------------------------------------------------------------


def _write_index(repo, text: bytes) -> None:
    contrib = repo / "src" / "contrib"
    (contrib / "PACKAGES").write_bytes(text)
    (contrib / "PACKAGES.gz").write_bytes(gzip.compress(text))


def test_bad_stanzas_are_rejected_one_by_one(repo, upstream, run_mirror, client):
    good = (repo / "src/contrib/PACKAGES").read_bytes()
    bad = packages_text(
        [
            {"Package": "../../etc", "Version": "1.0", "MD5sum": "0" * 32},
            {"Package": "evil", "Version": "1.0/../../x", "MD5sum": "0" * 32},
            {"Package": "nomd5", "Version": "1.0"},
            {"Package": "badmd5", "Version": "1.0", "MD5sum": "xyz"},
            {"Package": "sneaky", "Version": "1.0", "MD5sum": "0" * 32, "Path": "../.."},
            {"Version": "1.0", "MD5sum": "0" * 32},
        ]
    )
    _write_index(repo, good + b"\n" + bad + b"\nPackage: broken\nthis line is no field\n")
    mirror = _mirror(upstream)
    run = _ok(run_mirror(mirror))
    assert run.filtered_reasons == {
        "invalid package name": 1,
        "invalid version": 1,
        "no MD5sum to verify the file with": 1,
        "malformed MD5sum": 1,
        "unsafe Path or File": 1,
        "stanza lacks Package or Version": 1,
        "malformed line (expected 'Field: value')": 1,
    }
    assert _served(client, mirror) == ["alpha_1.0", "beta_2.0", "delta_3.0", "gamma_0.1-1"]


@pytest.mark.parametrize(
    "body",
    [b"<html><body>Service unavailable</body></html>\n", b"garbage without fields\n"],
    ids=["html", "garbage"],
)
def test_a_page_that_is_no_packages_file_fails_and_keeps_the_channel(
    repo, upstream, run_mirror, client, body
):
    mirror = _mirror(upstream)
    _ok(run_mirror(mirror))
    _write_index(repo, body)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.FAILED
    assert "PACKAGES" in run.error
    assert len(_served(client, mirror)) == 4


def test_a_corrupt_gzip_index_fails_the_run(repo, upstream, run_mirror):
    (repo / "src/contrib/PACKAGES.gz").write_bytes(b"\x1f\x8b not really gzip")
    run = run_mirror(_mirror(upstream))
    assert run.state == SyncRun.State.FAILED
    assert "gzip" in run.error


def test_an_md5_mismatch_is_refused_active(repo, upstream, run_mirror):
    tarball = repo / "src/contrib/beta_2.0.tar.gz"
    tarball.write_bytes(tarball.read_bytes() + b"tampered")
    mirror = _mirror(upstream, mode=Mirror.Mode.ACTIVE)
    run = _ok(run_mirror(mirror))
    assert (run.downloaded, run.failed) == (3, 1)
    assert run.filtered_reasons == {"download failed: md5 mismatch": 1}
    bad = Package.objects.get(filename="beta_2.0.tar.gz")
    assert bad.artifact is None and "md5" in bad.error


def test_an_md5_mismatch_is_refused_passive(repo, upstream, run_mirror, client):
    mirror = _mirror(upstream)
    _ok(run_mirror(mirror))
    tarball = repo / "src/contrib/beta_2.0.tar.gz"
    tarball.write_bytes(tarball.read_bytes() + b"tampered")
    # A file of one chunk is verified before any byte goes out: 502 with the reason.
    response = client.get(f"/api/repo/{mirror.channel.path}/src/contrib/beta_2.0.tar.gz")
    assert response.status_code == 502 and b"md5" in response.content
    bad = Package.objects.get(filename="beta_2.0.tar.gz")
    assert bad.artifact is None and "md5" in bad.error


def test_a_missing_tarball_is_reported_and_the_others_arrive(repo, upstream, run_mirror, client):
    (repo / "src/contrib/alpha_1.0.tar.gz").unlink()
    mirror = _mirror(upstream, mode=Mirror.Mode.ACTIVE)
    run = _ok(run_mirror(mirror))
    assert run.filtered_reasons == {"download failed: HTTP 404": 1}
    assert run.downloaded == 3
    # Only stored files are published: a client never sees a file PSM cannot serve.
    assert _served(client, mirror) == ["beta_2.0", "delta_3.0", "gamma_0.1-1"]


def test_a_sha256_beside_the_md5_is_checked_too(repo, upstream, run_mirror):
    text = (repo / "src/contrib/PACKAGES").read_bytes()
    _write_index(
        repo, text.replace(b"Package: gamma\n", b"Package: gamma\nSHA256sum: " + b"a" * 64 + b"\n")
    )
    mirror = _mirror(upstream, mode=Mirror.Mode.ACTIVE)
    run = _ok(run_mirror(mirror))
    assert run.filtered_reasons == {"download failed: sha256 mismatch": 1}


def test_a_truncated_tarball_is_refused(repo, upstream, run_mirror):
    upstream.cut["/src/contrib/gamma_0.1-1.tar.gz"] = 10
    mirror = _mirror(upstream, mode=Mirror.Mode.ACTIVE)
    run = _ok(run_mirror(mirror))
    assert run.failed == 1
    assert Package.objects.get(filename="gamma_0.1-1.tar.gz").artifact is None


def test_hostile_archive_links_are_rejected(upstream, run_mirror):
    upstream.pages["/src/contrib/Archive/gamma/"] = (
        b'<a href="?C=N;O=D">Name</a> <a href="/src/contrib/Archive/">Parent Directory</a>'
        b' <a href="gamma_0.1-0.tar.gz">ok</a> <a href="../beta/beta_1.0.tar.gz">x</a>'
        b' <a href="http://evil.example/gamma_6.6.tar.gz">y</a> <a href="beta_2.0.tar.gz">z</a>'
    )
    mirror = _mirror(upstream, archive=True, packages=["gamma"])
    run = _ok(run_mirror(mirror))
    reason = "unsafe or foreign archive link in gamma's folder"
    assert run.filtered_reasons == {reason: 3, "not in the package list": 3}
    archived = Package.objects.filter(unit="src/contrib/Archive/gamma")
    assert list(archived.values_list("filename", "upstream_url")) == [
        ("gamma_0.1-0.tar.gz", f"{upstream.url}/src/contrib/Archive/gamma/gamma_0.1-0.tar.gz")
    ]


def test_index_files_have_etags_and_answer_304(upstream, run_mirror, client):
    mirror = _mirror(upstream)
    _ok(run_mirror(mirror))
    for path in ("src/contrib/PACKAGES", "src/contrib/PACKAGES.gz", "cran/src/contrib/PACKAGES"):
        response, _ = _get(client, mirror, path)
        assert response.status_code == 200 and response["ETag"]
        again, _ = _get(client, mirror, path, **{"If-None-Match": response["ETag"]})
        assert again.status_code == 304
    assert PublishedFile.objects.filter(path="src/contrib/PACKAGES").count() == 1
    rds = PublishedFile.objects.filter(path="src/contrib/PACKAGES.rds").exists()
    assert rds == (rscript() is not None)  # written by R where R is installed


def test_an_empty_r_channel_serves_an_empty_index(client):
    channel = ChannelFactory(kind="cran", name="empty-r")
    response = client.get(f"/api/repo/{channel.name}/src/contrib/PACKAGES")
    assert response.status_code == 200
    assert response_body(response) == b""


def test_a_file_of_no_known_size_is_held_to_the_global_cap(
    repo, upstream, run_mirror, client, settings
):
    """PACKAGES gives no size: PSM_MAX_FILE_BYTES keeps an endless upstream off the disk."""
    beta = (repo / "src/contrib/beta_2.0.tar.gz").stat().st_size
    settings.PSM_MAX_FILE_BYTES = beta - 1
    active = _mirror(upstream, mode=Mirror.Mode.ACTIVE, packages=["beta"], dependencies=False)
    run = _ok(run_mirror(active))
    assert run.filtered_reasons["download failed: size mismatch"] == 1
    assert (
        "more than the expected"
        in Package.objects.get(mirror=active, filename="beta_2.0.tar.gz").error
    )

    passive = _mirror(upstream)
    _ok(run_mirror(passive))
    response, body = _get(client, passive, "src/contrib/beta_2.0.tar.gz")
    assert response.status_code == 502 and b"more than PSM_MAX_FILE_BYTES" in body
    assert Package.objects.get(mirror=passive, filename="beta_2.0.tar.gz").artifact is None
