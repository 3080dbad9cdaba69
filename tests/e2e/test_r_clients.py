"""R's install.packages installing from a standard R channel of PSM, served over real HTTP.

Upstream is a CRAN-like fixture repository of real R source packages on loopback
(``CranServer``); PSM mirrors it in-process and is served by ``live_server``; R runs as a real
subprocess (``Rscript``, Debian's r-base-core, which scripts/test.sh installs).
"""

from __future__ import annotations

import subprocess

import pytest

from mirrors_app.models import Mirror, SyncRun
from tests.factories import ChannelFactory, MirrorFactory
from tests.fixtures.cran_repo import (
    CranServer,
    RPackage,
    build_repo,
    rscript,
    rscript_install,
    rscript_run,
)
from tests.fixtures.http import response_body

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        rscript() is None,
        reason="R is not installed (Rscript not on PATH; scripts/test.sh installs r-base-core "
        "with apt where it can)",
    ),
]

PACKAGES = [
    RPackage("alpha", "1.0", imports=["beta"]),
    RPackage("beta", "2.0", depends=["gamma"]),
    RPackage("gamma", "0.1-1"),
    RPackage("unrelated", "1.0"),
]
CHAIN = "alpha 1.0 > beta 2.0 > gamma 0.1-1"


@pytest.fixture
def upstream(tmp_path):
    with CranServer(build_repo(tmp_path / "cran", PACKAGES)) as server:
        yield server


def _sync(run_mirror, source_url: str, mode: str, **options) -> Mirror:
    mirror = MirrorFactory(
        channel=ChannelFactory(kind="cran"),
        kind="cran",
        mode=mode,
        source_url=source_url,
        options=options,
    )
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    return mirror


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.parametrize("mode", [Mirror.Mode.ACTIVE, Mirror.Mode.PASSIVE])
def test_install_packages_installs_a_package_and_its_dependencies(
    run_mirror, upstream, live_server, tmp_path, mode
):
    mirror = _sync(run_mirror, upstream.url, mode, packages=["alpha"])
    before = len(upstream.gets("/src/contrib/"))
    repos = f"{live_server.url}/api/repo/{mirror.channel.name}"
    assert CHAIN in _ok(rscript_install(repos, ["alpha"], tmp_path / "lib"))
    fetched = upstream.gets("/src/contrib/")[before:]
    if mode == Mirror.Mode.ACTIVE:
        assert fetched == []  # every byte came from PSM's storage
    else:
        assert sorted(fetched) == [
            "/src/contrib/alpha_1.0.tar.gz",
            "/src/contrib/beta_2.0.tar.gz",
            "/src/contrib/gamma_0.1-1.tar.gz",
        ]


def test_a_psm_r_channel_is_a_source_for_another(run_mirror, upstream, live_server, tmp_path):
    first = _sync(run_mirror, upstream.url, Mirror.Mode.PASSIVE)
    source = f"{live_server.url}/api/repo/{first.channel.name}/cran"
    second = _sync(run_mirror, source, Mirror.Mode.ACTIVE, packages=["beta"])
    assert second.packages.filter(excluded_reason="", artifact__isnull=False).count() == 2
    repos = f"{live_server.url}/api/repo/{second.channel.name}/cran"
    assert "beta 2.0 > gamma 0.1-1" in _ok(rscript_install(repos, ["beta"], tmp_path / "lib"))


def test_packages_rds_is_what_r_reads_first(run_mirror, upstream, client, tmp_path):
    mirror = _sync(run_mirror, upstream.url, Mirror.Mode.PASSIVE)
    response = client.get(f"/api/repo/{mirror.channel.name}/src/contrib/PACKAGES.rds")
    assert response.status_code == 200
    rds = tmp_path / "PACKAGES.rds"
    rds.write_bytes(response_body(response))
    script = (
        "db <- readRDS(commandArgs(TRUE)[1]); "
        'cat(rownames(db), db[, "Version"], db[, "MD5sum"] != "", sep = "\\n")'
    )
    result = subprocess.run(
        [rscript(), "--vanilla", "-e", script, str(rds)], capture_output=True, text=True
    )
    lines = _ok(result).split()
    assert lines[:4] == ["alpha", "beta", "gamma", "unrelated"]
    assert lines[4:8] == ["1.0", "2.0", "0.1-1", "1.0"] and set(lines[8:]) == {"TRUE"}


#: What `remotes::install_version` does for an archived version: read Meta/archive.rds (here
#: both ways R tools do: a downloaded file, and gzcon(url()) as older tools do), pick the row
#: of the version, and install `<repo>/src/contrib/Archive/<row name>` from its URL.
INSTALL_VERSION = r"""
options(warn = 1, timeout = 60)
repo <- "{repo}"; lib <- "{lib}"; package <- "{package}"; version <- "{version}"
.libPaths(c(lib, .libPaths()))
tf <- tempfile(fileext = ".rds")
download.file(sprintf("%s/src/contrib/Meta/archive.rds", repo), tf, quiet = TRUE, mode = "wb")
archive <- readRDS(tf)
con <- gzcon(url(sprintf("%s/src/contrib/Meta/archive.rds", repo), "rb"))
stopifnot(identical(readRDS(con), archive)); close(con)
info <- archive[[package]]
paths <- rownames(info)
path <- paths[sub("^[^_]+_(.*)[.]tar[.]gz$", "\\1", paths) == version]
stopifnot(length(path) == 1)
cat("rows:", paths, "\n")
install.packages(paste0(repo, "/src/contrib/Archive/", path), repos = NULL,
                 type = "source", lib = lib, quiet = TRUE)
library(package, lib.loc = lib, character.only = TRUE)
cat(get(paste0(package, "_hello"))(), "\n")
"""


@pytest.mark.parametrize("mode", [Mirror.Mode.ACTIVE, Mirror.Mode.PASSIVE])
def test_an_archived_version_installs_through_meta_archive_rds(
    run_mirror, live_server, tmp_path, mode
):
    archived = [RPackage("gamma", "0.1-0"), RPackage("gamma", "0.0-9")]
    with CranServer(build_repo(tmp_path / "cran", PACKAGES, archived=archived)) as upstream:
        mirror = _sync(run_mirror, upstream.url, mode, packages=["gamma"], archive=True)
        before = len(upstream.gets("/src/contrib/"))
        repo = f"{live_server.url}/api/repo/{mirror.channel.name}/cran"
        script = INSTALL_VERSION.format(
            repo=repo, lib=tmp_path / "lib", package="gamma", version="0.1-0"
        )
        out = _ok(rscript_run(script, tmp_path / "lib"))
        fetched = upstream.gets("/src/contrib/")[before:]
    assert "rows: gamma/gamma_0.0-9.tar.gz gamma/gamma_0.1-0.tar.gz" in out
    assert "gamma 0.1-0" in out
    passive = ["/src/contrib/Archive/gamma/gamma_0.1-0.tar.gz"]
    assert fetched == ([] if mode == Mirror.Mode.ACTIVE else passive)
