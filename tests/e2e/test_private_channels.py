"""Real clients installing from private channels with PSM tokens; anonymous clients refused.

conda (py-rattler) and R put the token in the path (`/api/repo/t/<token>/<channel>/`); pip and uv
send it with HTTP Basic auth (`<token>:x-auth-token` in the index URL). PSM is served by live_server.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import requests

from channels_app.models import Channel
from mirrors_app.models import Mirror, SyncRun
from psm.tokens import token_create
from tests.e2e.test_conda_clients import ALPHA, BETA, PACKAGES, _assert_installed_from, _install
from tests.e2e.test_r_clients import CHAIN
from tests.e2e.test_r_clients import PACKAGES as R_PACKAGES
from tests.factories import ChannelFactory, MirrorFactory, UserFactory, grant
from tests.fixtures.conda_channel import ChannelServer, build_channel
from tests.fixtures.cran_repo import CranServer, build_repo, rscript, rscript_install
from tests.fixtures.pypi_index import FakeDist, IndexServer, build_index, pip_install, uv_install

pytestmark = pytest.mark.django_db(transaction=True)
PRIVATE = Channel.Visibility.PRIVATE


def _reader(channel: Channel, username: str = "reader"):
    """A member of the group granted Read on the channel (as a Keycloak group mapped with
    PSM_OIDC_ROLE_MAP gives), with Read on channels too."""
    return _category_reader(username, member_of=channel)


def _category_reader(username: str, member_of: Channel | None = None):
    """A user with Read on channels (the Keycloak role psm:channel:read); a member of the
    channel's granted group only if `member_of` is given."""
    from django.contrib.auth.models import Group

    user = UserFactory(username=username)
    user.groups.add(Group.objects.get(name="Channels: Read"))
    if member_of is not None:
        grant(member_of, user, group="team-a")
    return user


def _synced(run_mirror, mirror: Mirror) -> Mirror:
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    return mirror


def _with_credentials(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{user}:{password}@{parts.netloc}").geturl()


@pytest.fixture
def conda_upstream(tmp_path):
    root = build_channel(tmp_path / "upstream", PACKAGES, subdirs=("noarch", "linux-64"))
    with ChannelServer(root) as server:
        yield server


@pytest.fixture
def pypi_upstream(tmp_path):
    dists = [FakeDist("alpha", "1.0"), FakeDist("beta", "0.5", requires=["alpha>=1"])]
    with IndexServer(build_index(tmp_path / "index", dists)) as server:
        yield server


def test_conda_client_installs_from_a_private_channel_with_a_token_in_the_path(
    conda_upstream, run_mirror, live_server, tmp_path
):
    channel = ChannelFactory(name="secret", visibility=PRIVATE)
    mirror = MirrorFactory(
        channel=channel,
        source_url=conda_upstream.url,
        mode=Mirror.Mode.ACTIVE,
        options={"subdirs": ["linux-64"]},
    )
    _synced(run_mirror, mirror)
    _, secret = token_create(user=_reader(channel), name="conda", resources=[(channel, "read")])

    url = f"{live_server.url}/api/repo/t/{secret}/secret/"
    records = _install(url, ["beta"], tmp_path / "ok")

    _assert_installed_from(records, url, tmp_path / "ok", ALPHA, BETA)
    anonymous = f"{live_server.url}/api/repo/secret/"
    with pytest.raises(Exception, match="404|not found|No such|cannot|failed"):
        _install(anonymous, ["beta"], tmp_path / "anonymous")
    assert not (tmp_path / "anonymous" / "env" / "conda-meta").exists()
    assert requests.get(f"{anonymous}noarch/repodata.json", timeout=10).status_code == 404


@pytest.mark.parametrize("installer", [pip_install, uv_install], ids=["pip", "uv"])
def test_python_clients_install_from_a_private_channel_with_basic_auth(
    pypi_upstream, run_mirror, live_server, tmp_path, installer
):
    channel = ChannelFactory(name="pyprivate", kind="pypi", visibility=PRIVATE)
    mirror = MirrorFactory(
        channel=channel,
        kind="pypi",
        mode=Mirror.Mode.PASSIVE,
        source_url=pypi_upstream.index_url,
        options={},
    )
    _synced(run_mirror, mirror)
    _, secret = token_create(user=_reader(channel), name="pip", resources=[(channel, "read")])
    index = f"{live_server.url}/api/repo/pyprivate/simple/"

    installed = installer(
        _with_credentials(index, secret, "x-auth-token"), ["beta"], tmp_path / "ok"
    )
    anonymous = installer(index, ["beta"], tmp_path / "anonymous")
    wrong = installer(
        _with_credentials(index, "psm_wrong", "x-auth-token"), ["beta"], tmp_path / "wrong"
    )

    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert (tmp_path / "ok" / "beta").is_dir() and (tmp_path / "ok" / "alpha").is_dir()
    assert anonymous.returncode != 0 and not (tmp_path / "anonymous" / "beta").exists()
    assert wrong.returncode != 0 and not (tmp_path / "wrong" / "beta").exists()
    refused = requests.get(index, auth=("psm_wrong", "x-auth-token"), timeout=10)
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")


def test_pip_installs_with_a_members_token_and_not_with_a_non_members(
    pypi_upstream, run_mirror, live_server, tmp_path
):
    channel = ChannelFactory(name="team-only", kind="pypi", visibility=PRIVATE)
    mirror = MirrorFactory(
        channel=channel,
        kind="pypi",
        mode=Mirror.Mode.PASSIVE,
        source_url=pypi_upstream.index_url,
        options={},
    )
    _synced(run_mirror, mirror)
    # Both hold Read on channels and a token naming the channel; only one is in the team.
    _, member = token_create(user=_reader(channel), name="m", resources=[(channel, "read")])
    outsider_user = _category_reader("outsider")
    _, outsider = token_create(user=outsider_user, name="o", resources=[(channel, "read")])
    index = f"{live_server.url}/api/repo/team-only/simple/"

    installed = pip_install(
        _with_credentials(index, member, "x-auth-token"), ["beta"], tmp_path / "m"
    )
    refused = pip_install(
        _with_credentials(index, outsider, "x-auth-token"), ["beta"], tmp_path / "o"
    )

    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert (tmp_path / "m" / "beta").is_dir() and (tmp_path / "m" / "alpha").is_dir()
    assert refused.returncode != 0 and not (tmp_path / "o" / "beta").exists()
    assert requests.get(index, auth=(outsider, "x-auth-token"), timeout=10).status_code == 404


@pytest.mark.skipif(
    rscript() is None,
    reason="R is not installed (Rscript not on PATH; scripts/test.sh installs r-base-core)",
)
def test_r_installs_from_a_private_channel_with_a_token_in_the_url(
    run_mirror, live_server, tmp_path
):
    with CranServer(build_repo(tmp_path / "cran", R_PACKAGES)) as upstream:
        channel = ChannelFactory(name="rprivate", kind="cran", visibility=PRIVATE)
        mirror = MirrorFactory(
            channel=channel, kind="cran", mode=Mirror.Mode.PASSIVE, source_url=upstream.url
        )
        _synced(run_mirror, mirror)
        _, secret = token_create(user=_reader(channel), name="R", resources=[(channel, "read")])
        installed = rscript_install(
            f"{live_server.url}/api/repo/t/{secret}/rprivate", ["alpha"], tmp_path / "ok"
        )
        anonymous = rscript_install(
            f"{live_server.url}/api/repo/rprivate", ["alpha"], tmp_path / "anonymous"
        )
    assert installed.returncode == 0 and CHAIN in installed.stdout, installed.stderr
    assert not (tmp_path / "anonymous" / "alpha").exists(), anonymous.stdout
