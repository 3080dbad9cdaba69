"""The install lines of the package browser work: pip runs the line a package's page shows,
against PSM served over real HTTP, for a public channel and (with a token) a private one."""

from __future__ import annotations

import html
import re
import shlex
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.urls import reverse

from channels_app.models import Channel
from mirrors_app.models import Mirror, SyncRun
from psm.tokens import token_create
from tests.factories import ChannelFactory, MirrorFactory, UserFactory, grant
from tests.fixtures.pypi_index import FakeDist, IndexServer, build_index, pip_install

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def upstream(tmp_path):
    dists = [FakeDist("alpha", "1.0"), FakeDist("beta", "0.5", requires=["alpha>=1"])]
    with IndexServer(build_index(tmp_path / "index", dists)) as server:
        yield server


def _synced_channel(run_mirror, upstream, **fields) -> Channel:
    channel = ChannelFactory(kind="pypi", **fields)
    mirror = MirrorFactory(
        channel=channel, kind="pypi", mode=Mirror.Mode.PASSIVE, source_url=upstream.index_url
    )
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    return channel


def _pip_line(client: Client, live_server, channel: Channel, name: str) -> list[str]:
    """The page's pip line, as the live server's visitors get it (its host and port)."""
    url = reverse("browse:package", args=[channel.path, name])
    page = client.get(url, HTTP_HOST=urlsplit(live_server.url).netloc)
    assert page.status_code == 200
    lines = [html.unescape(x) for x in re.findall(r'data-copy="([^"]+)"', page.content.decode())]
    return shlex.split(next(line for line in lines if line.startswith("pip ")))


def test_the_pip_line_of_a_public_channel_installs(run_mirror, upstream, live_server, tmp_path):
    channel = _synced_channel(run_mirror, upstream)
    command = _pip_line(Client(), live_server, channel, "beta")
    assert command[:3] == ["pip", "install", "--index-url"] and command[4:] == ["beta"]
    result = pip_install(command[3], command[4:], tmp_path / "target")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "target" / "beta").is_dir() and (tmp_path / "target" / "alpha").is_dir()


def test_the_pip_line_of_a_private_channel_installs_with_a_token(
    run_mirror, upstream, live_server, tmp_path
):
    channel = _synced_channel(run_mirror, upstream, visibility=Channel.Visibility.PRIVATE)
    reader = UserFactory(username="reader")
    grant(channel, reader)
    client = Client()
    client.force_login(reader)
    command = _pip_line(client, live_server, channel, "beta")
    assert "<TOKEN>" in command[3]
    _, secret = token_create(user=reader, name="pip", resources=[(channel, "read")])
    result = pip_install(command[3].replace("<TOKEN>", secret), command[4:], tmp_path / "ok")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "ok" / "beta").is_dir()
