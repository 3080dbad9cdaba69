"""SSRF: PSM fetches only from allowed upstreams, whatever URL it is handed and wherever from.

Attacks over real HTTP. PSM is served by live_server; upstreams are fixture repositories on
127.0.0.1, the allowed upstream address of the tests. An "internal service" on 127.0.0.2 (loopback
too, but on no allowlist) stands for what an attacker wants PSM to reach: it must never see a
request. A URL enters through the mirror's source (API, admin, or a row stored earlier), every
redirect hop and every file URL an index gives (PyPI files, conda records, CRAN tarballs); each
entry is attacked with URLs that URL parsers read differently (the backslash trick:
`http://127.0.0.2:P\\@127.0.0.1/` is 127.0.0.2 to urllib3 and 127.0.0.1 to urllib.parse), hosts
off the allowlist and names that resolve to internal addresses. Each attack has a positive
control: the allowed upstream still syncs.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import orjson
import pytest
import requests
from django.test import Client

from channels_app.models import Package
from mirrors_app.models import Mirror, SyncRun
from psm.tokens import token_create
from tests.factories import ChannelFactory, MirrorFactory
from tests.fixtures.conda_channel import (
    ChannelServer,
    FakePackage,
    build_channel,
    read_repodata,
    write_repodata,
)
from tests.fixtures.cran_repo import CranServer, RPackage, build_repo
from tests.fixtures.loopback import LoopbackServer
from tests.fixtures.pypi_index import FakeDist, IndexServer, build_index, read_project
from tests.mirrors_app.test_admin import EDITOR_PERMS, mirror_form
from tests.mirrors_app.test_api import ALL_MIRROR_PERMS

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 10
REFUSED = "download failed: refused by the upstream rules"
JSON = "application/vnd.pypi.simple.v1+json"


# --- servers ----------------------------------------------------------------------------------


class _Everywhere(dict):
    """A loopback server's damage map that holds `value` for every path."""

    def __init__(self, value) -> None:
        super().__init__()
        self.value = value

    def __contains__(self, path: object) -> bool:
        return True

    def __getitem__(self, path: str):
        return self.value


class _Forward(dict):
    """A `redirects` map sending the paths not named in it to the same path on `base`."""

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base

    def __contains__(self, path: object) -> bool:
        return True

    def __missing__(self, path: str) -> str:
        return self.base + path


@contextlib.contextmanager
def _redirector(tmp_path, base: str) -> Iterator[LoopbackServer]:
    """A server on 127.0.0.1 that redirects every request to `base` unless told otherwise."""
    (tmp_path / "redirector").mkdir()
    with LoopbackServer(tmp_path / "redirector") as server:
        server.redirects = _Forward(base)
        yield server


@pytest.fixture
def internal(outside):
    """The service PSM must not reach (127.0.0.2 is on no allowlist): it has a secret."""
    outside.pages = _Everywhere(b"internal secret")
    return outside


def _tricks(internal: LoopbackServer, allowed: str) -> dict[str, str]:
    """URLs that lead to the internal service, each with a different trick, for a path."""
    return {
        "off the allowlist": f"{internal.url}/x",
        "backslash": f"{internal.url}\\@{allowed.removeprefix('http://')}/x",
        "scheme-relative": f"//127.0.0.2:{internal.port}/x",
        "decimal address": f"http://2130706434:{internal.port}/x",  # 127.0.0.2
        "mapped address": f"http://[::ffff:127.0.0.2]:{internal.port}/x",
        "tab in the host": f"http://127.0.0.2:{internal.port}\t@{allowed.removeprefix('http://')}/",
    }


# --- the mirror's source: API and admin ---------------------------------------------------------


@pytest.fixture
def api(live_server, make_user):
    """A requests session on the live server as a user holding every mirror permission."""
    _, secret = token_create(
        user=make_user(*ALL_MIRROR_PERMS), name="cli", kind="scope", scopes=["*:manage"]
    )
    session = requests.Session()
    session.headers["Authorization"] = f"Token {secret}"
    session.base = live_server.url
    yield session
    session.close()


def _create(api, **body) -> requests.Response:
    data = {"channel": "main", "name": "forge", "kind": "conda", **body}
    return api.post(f"{api.base}/api/mirrors/", json=data, timeout=TIMEOUT)


@pytest.mark.parametrize(
    ("trick", "message"),
    [
        ("off the allowlist", "not on the upstream allowlist"),
        ("backslash", "contains a backslash"),
        ("scheme-relative", "Enter a valid URL"),
        ("decimal address", "Enter a valid URL"),  # Django refuses it before we do
        ("mapped address", "not on the upstream allowlist"),
        ("tab in the host", "Enter a valid URL"),
    ],
)
def test_api_refuses_a_source_that_leads_elsewhere(api, internal, trick, message):
    ChannelFactory(name="main")
    source = _tricks(internal, "http://127.0.0.1:1")[trick]
    response = _create(api, source_url=source)
    assert response.status_code == 400, response.text
    assert message in " ".join(response.json()["source_url"])
    assert not Mirror.objects.exists()


def test_api_refuses_changing_a_source_to_the_backslash_trick(api, internal):
    mirror = MirrorFactory(channel=ChannelFactory(name="main"), source_url="http://127.0.0.1:1/")
    source = _tricks(internal, "http://127.0.0.1:1")["backslash"]
    response = api.patch(
        f"{api.base}/api/mirrors/{mirror.pk}/", json={"source_url": source}, timeout=TIMEOUT
    )
    assert response.status_code == 400
    assert "backslash" in response.json()["source_url"][0]
    mirror.refresh_from_db()
    assert mirror.source_url == "http://127.0.0.1:1/"


def test_api_accepts_an_allowed_source(api):
    ChannelFactory(name="main")
    response = _create(api, source_url="http://127.0.0.1:1/conda-forge")
    assert response.status_code == 201, response.text


def _admin_session(live_server, user) -> requests.Session:
    client = Client()
    client.force_login(user)
    session = requests.Session()
    session.cookies.set("sessionid", client.cookies["sessionid"].value)
    return session


def _admin_add(session: requests.Session, live_server, data: dict) -> requests.Response:
    add = f"{live_server.url}/admin/mirrors_app/mirror/add/"
    page = session.get(add, timeout=TIMEOUT)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
    return session.post(
        add,
        data=data | {"csrfmiddlewaretoken": token},
        headers={"Referer": add},
        allow_redirects=False,
        timeout=TIMEOUT,
    )


def test_admin_form_refuses_the_backslash_trick(live_server, make_user, internal):
    session = _admin_session(live_server, make_user(*EDITOR_PERMS))
    channel = ChannelFactory()
    source = _tricks(internal, "http://127.0.0.1:1")["backslash"]
    response = _admin_add(session, live_server, mirror_form(channel, source_url=source))
    assert response.status_code == 200  # the form again, with the error on the source
    assert "The URL contains a backslash, which URL parsers read differently" in response.text
    assert not Mirror.objects.exists()
    # Positive control: the same form with an allowed source is saved.
    response = _admin_add(session, live_server, mirror_form(channel))
    assert response.status_code == 302
    assert Mirror.objects.count() == 1


def test_a_stored_source_with_the_backslash_trick_is_never_fetched(run_mirror, internal):
    """A row saved before the check existed (or written around it) is refused at fetch time."""
    mirror = MirrorFactory(source_url="http://127.0.0.1:1/")
    source = _tricks(internal, "http://127.0.0.1:1")["backslash"]
    Mirror.objects.filter(pk=mirror.pk).update(source_url=source)
    mirror.refresh_from_db()
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.FAILED
    assert "contains a backslash" in run.error


# --- file URLs an index gives, and redirects -----------------------------------------------------


DISTS = [FakeDist("alpha", "1.0"), FakeDist("alpha", "2.0"), FakeDist("beta", "0.5")]


@pytest.fixture
def pypi(tmp_path):
    with IndexServer(build_index(tmp_path / "index", DISTS), json_only=True) as server:
        yield server


def _pypi_mirror(source: str) -> Mirror:
    return MirrorFactory(
        channel=ChannelFactory(kind="pypi"), kind="pypi", mode=Mirror.Mode.ACTIVE, source_url=source
    )


def _served_files(live_server, mirror: Mirror, project: str) -> list[str]:
    response = requests.get(
        f"{live_server.url}/api/repo/{mirror.channel.path}/simple/{project}/",
        headers={"Accept": JSON},
        timeout=TIMEOUT,
    )
    if response.status_code == 404:
        return []
    return sorted(file["filename"] for file in orjson.loads(response.content)["files"])


def test_pypi_file_urls_to_forbidden_hosts_are_refused_and_the_others_arrive(
    pypi, run_mirror, live_server, internal
):
    project = read_project(pypi.root, "alpha")
    one, two = project["files"][0], project["files"][1]
    one["url"] = _tricks(internal, pypi.url)["backslash"]
    two["url"] = _tricks(internal, pypi.url)["off the allowlist"]
    (pypi.root / "simple" / "alpha" / "index.json").write_bytes(orjson.dumps(project))
    mirror = _pypi_mirror(pypi.index_url)

    run = run_mirror(mirror)

    assert run.state == SyncRun.State.COMPLETED, run.error
    assert run.filtered_reasons[REFUSED] == 2
    errors = dict(Package.objects.filter(mirror=mirror).values_list("filename", "error"))
    assert "contains a backslash" in errors[one["filename"]]
    assert "127.0.0.2 is not on the upstream allowlist" in errors[two["filename"]]
    assert _served_files(live_server, mirror, "alpha") == []
    assert _served_files(live_server, mirror, "beta") == ["beta-0.5-py3-none-any.whl"]


@pytest.mark.parametrize(
    "trick",
    [
        "off the allowlist",
        "backslash",
        "scheme-relative",
        "decimal address",
        "mapped address",
        "tab in the host",
    ],
)
def test_pypi_redirects_to_forbidden_hosts_are_refused_and_the_others_arrive(
    pypi, run_mirror, live_server, internal, trick, tmp_path
):
    with _redirector(tmp_path, pypi.url) as redirector:
        redirector.redirects["/files/alpha-2.0-py3-none-any.whl"] = _tricks(internal, pypi.url)[
            trick
        ]
        mirror = _pypi_mirror(redirector.url + "/simple/")

        run = run_mirror(mirror)

    assert run.state == SyncRun.State.COMPLETED, run.error
    assert run.filtered_reasons == {REFUSED: 1}
    assert _served_files(live_server, mirror, "alpha") == ["alpha-1.0-py3-none-any.whl"]
    assert _served_files(live_server, mirror, "beta") == ["beta-0.5-py3-none-any.whl"]


GAMMA = FakePackage("gamma", "0.1", subdir="linux-64")
DELTA = FakePackage("delta", "0.2", subdir="linux-64")


def test_conda_record_urls_to_forbidden_hosts_are_refused_on_first_request(
    tmp_path, run_mirror, live_server, internal
):
    root = build_channel(tmp_path / "channel", [GAMMA, DELTA], subdirs=("linux-64",))
    with ChannelServer(root) as upstream:
        document = read_repodata(root, "linux-64")
        document["packages"][GAMMA.filename]["url"] = (
            _tricks(internal, upstream.url)["backslash"] + "/" + GAMMA.filename
        )
        write_repodata(root, "linux-64", document)
        mirror = MirrorFactory(source_url=upstream.url, options={"subdirs": ["linux-64"]})
        assert run_mirror(mirror).state == SyncRun.State.COMPLETED

        base = f"{live_server.url}/api/repo/{mirror.channel.path}/linux-64"
        refused = requests.get(f"{base}/{GAMMA.filename}", timeout=TIMEOUT)
        served = requests.get(f"{base}/{DELTA.filename}", timeout=TIMEOUT)

    assert refused.status_code == 502
    assert b"internal secret" not in refused.content
    assert served.status_code == 200


def test_cran_tarball_redirects_with_the_backslash_trick_are_refused(
    tmp_path, run_mirror, live_server, internal
):
    packages = [RPackage("alpha", "1.0"), RPackage("beta", "2.0")]
    with (
        CranServer(build_repo(tmp_path / "cran", packages)) as upstream,
        _redirector(tmp_path, upstream.url) as redirector,
    ):
        redirector.redirects["/src/contrib/alpha_1.0.tar.gz"] = _tricks(internal, upstream.url)[
            "backslash"
        ]
        mirror = MirrorFactory(
            channel=ChannelFactory(kind="cran"),
            kind="cran",
            mode=Mirror.Mode.ACTIVE,
            source_url=redirector.url,
        )
        run = run_mirror(mirror)

    assert run.state == SyncRun.State.COMPLETED, run.error
    assert run.filtered_reasons == {REFUSED: 1}
    base = f"{live_server.url}/api/repo/{mirror.channel.path}/src/contrib"
    packages_file = requests.get(f"{base}/PACKAGES", timeout=TIMEOUT).text
    assert "Package: beta" in packages_file
    assert "Package: alpha" not in packages_file
    assert requests.get(f"{base}/beta_2.0.tar.gz", timeout=TIMEOUT).status_code == 200


# --- names that resolve to internal addresses -------------------------------------------------


@pytest.fixture
def conda(tmp_path):
    root = build_channel(tmp_path / "channel", [GAMMA], subdirs=("linux-64",))
    with ChannelServer(root) as server:
        yield server


def _repodata(live_server, mirror: Mirror) -> int:
    url = f"{live_server.url}/api/repo/{mirror.channel.path}/linux-64/repodata.json"
    response = requests.get(url, timeout=TIMEOUT)
    if response.status_code != 200:
        return 0
    return len(response.json()["packages"]) + len(response.json()["packages.conda"])


def test_a_name_resolving_to_loopback_is_refused_unless_its_address_is_allowed(
    settings, api, conda, run_mirror, live_server
):
    """`localhost` really resolves to loopback: naming it on the allowlist is not enough."""
    settings.PSM_UPSTREAM_ALLOWLIST = ["localhost"]
    ChannelFactory(name="main")
    source = conda.url.replace("127.0.0.1", "localhost")
    response = _create(api, source_url=source, options={"subdirs": ["linux-64"]})
    assert response.status_code == 201, response.text  # the address is known only at fetch time
    mirror = Mirror.objects.get()

    run = run_mirror(mirror)
    assert run.state == SyncRun.State.FAILED
    assert "localhost resolves to" in run.error
    assert "127.0.0.1 is not a public address (loopback)" in run.error
    assert conda.requests == []
    assert _repodata(live_server, mirror) == 0

    settings.PSM_UPSTREAM_ALLOWLIST = ["localhost", "127.0.0.1"]
    assert run_mirror(mirror).state == SyncRun.State.COMPLETED
    assert _repodata(live_server, mirror) == 1


def test_allow_private_lets_a_name_reach_a_loopback_upstream(settings, conda, run_mirror):
    settings.PSM_UPSTREAM_ALLOWLIST = ["localhost"]
    settings.PSM_UPSTREAM_ALLOW_PRIVATE = True
    source = conda.url.replace("127.0.0.1", "localhost")
    mirror = MirrorFactory(source_url=source, options={"subdirs": ["linux-64"]})
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert run.ingested == 1


def test_a_name_pointed_at_an_internal_address_is_refused_even_with_a_star(
    settings, resolver, conda, run_mirror, internal
):
    """DNS answers are attacker-controlled: the address is checked, and only it is connected to.

    The resolver is our own seam (`psm.http.gate.resolve_host`); everything else is real.
    """
    resolver.answers["mirror.example"] = ["127.0.0.2"]
    settings.PSM_UPSTREAM_ALLOWLIST = ["*", "127.0.0.1"]
    mirror = MirrorFactory(
        source_url=f"http://mirror.example:{internal.port}", options={"subdirs": ["linux-64"]}
    )
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.FAILED
    assert "mirror.example resolves to 127.0.0.2: 127.0.0.2 is not a public address" in run.error

    # Positive control: the name now resolves to the allowed upstream address.
    resolver.answers["mirror.example"] = ["127.0.0.1"]
    Mirror.objects.filter(pk=mirror.pk).update(
        source_url=conda.url.replace("127.0.0.1", "mirror.example")
    )
    mirror.refresh_from_db()
    assert run_mirror(mirror).state == SyncRun.State.COMPLETED
