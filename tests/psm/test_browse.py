"""The package browser at `/`: who sees which channels, search, pages, counts, version order,
install lines, and "why is X not here?"."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from channels_app.models import Channel, Package
from psm.browse import queries
from psm.browse.views import PACKAGES_PER_PAGE
from tests.factories import ChannelFactory, MirrorFactory, UserFactory, grant

pytestmark = pytest.mark.django_db

HOST = "psm.example.com"


@pytest.fixture(autouse=True)
def _host(settings):
    settings.ALLOWED_HOSTS = [HOST]


def _package(channel, name, version, unit="noarch", **fields) -> Package:
    fields.setdefault("on_demand", True)
    return Package.objects.create(
        channel=channel,
        unit=unit,
        filename=fields.pop("filename", f"{name}-{version}-0.conda"),
        name=name,
        version=version,
        size=fields.pop("size", 1000),
        **fields,
    )


def _get(client, url, **params):
    return client.get(url, params, HTTP_HOST=HOST)


def _channel_url(channel) -> str:
    return reverse("browse:channel", args=[channel.path])


def _package_url(channel, name) -> str:
    return reverse("browse:package", args=[channel.path, name])


def _names(response) -> list[str]:
    return re.findall(r'class="name" href="[^"]*">([^<]+)</a>', response.content.decode())


# --- Which channels --------------------------------------------------------------------------


def test_view_site_leads_to_the_browser(admin_client):
    from django.contrib import admin

    assert admin.site.site_url == reverse("browse:channels") == "/"


def test_anonymous_visitors_see_public_channels_only(client):
    ChannelFactory(name="open", description="Everything public")
    ChannelFactory(name="members", visibility=Channel.Visibility.AUTHENTICATED)
    ChannelFactory(name="secret", visibility=Channel.Visibility.PRIVATE)
    page = _get(client, "/")
    assert page.status_code == 200
    assert _names(page) == ["open"]
    assert "members" not in page.content.decode() and "secret" not in page.content.decode()
    for name in ("members", "secret", "missing"):
        assert _get(client, f"/channels/{name}/").status_code == 404


def test_signed_in_users_see_authenticated_channels_and_private_ones_granted_to_them(client):
    ChannelFactory(name="open")
    ChannelFactory(name="members", visibility=Channel.Visibility.AUTHENTICATED)
    team = ChannelFactory(name="team", visibility=Channel.Visibility.PRIVATE)
    ChannelFactory(name="secret", visibility=Channel.Visibility.PRIVATE)
    alice = UserFactory(username="alice", is_staff=False)
    grant(team, alice)
    client.force_login(alice)
    assert _names(_get(client, "/")) == ["members", "open", "team"]
    assert _get(client, "/channels/team/").status_code == 200
    assert _get(client, "/channels/secret/").status_code == 404
    _package(Channel.objects.get(name="secret"), "hidden", "1.0")
    assert _get(client, "/channels/secret/packages/hidden/").status_code == 404


def test_subchannels_are_listed_under_their_channel_and_browsable(client):
    parent = ChannelFactory(name="main")
    sub = ChannelFactory(name="extra", parent=parent)
    ChannelFactory(name="hidden", parent=parent, visibility=Channel.Visibility.PRIVATE)
    _package(sub, "tool", "1.0")
    assert _names(_get(client, "/")) == ["main", "main/extra"]
    page = _get(client, "/channels/main/")
    assert 'href="/channels/main/extra/"' in page.content.decode()
    assert "hidden" not in page.content.decode()
    assert _get(client, "/channels/main/extra/packages/tool/").status_code == 200
    assert _get(client, "/channels/main/hidden/").status_code == 404


# --- Packages, counts, search, pages ---------------------------------------------------------


def test_only_served_packages_are_listed_and_counted(client):
    channel = ChannelFactory(name="c")
    _package(channel, "served", "1.0")
    _package(channel, "stored", "1.0", on_demand=False, artifact=_artifact())
    _package(channel, "excluded", "1.0", excluded_reason="license GPL3 is excluded")
    _package(channel, "removed", "1.0", removed=True)
    _package(channel, "not-downloaded", "1.0", on_demand=False)
    page = _get(client, "/channels/c/")
    assert _names(page) == ["served", "stored"]
    assert _count(page) == 2
    assert queries.name_counts([channel]) == {channel.pk: 2}
    assert '<td class="num">2</td>' in _get(client, "/").content.decode()
    assert _get(client, "/channels/c/packages/excluded/").status_code == 404


def _artifact():
    from channels_app.models import Artifact

    return Artifact.objects.create(sha256="a" * 64, size=1234)


def _count(response) -> int:
    found = re.search(r'id="package-count">(\d+)', response.content.decode())
    return int(found.group(1))


def test_counts_on_the_channel_list_equal_each_channel_s_list(client):
    big, small = ChannelFactory(name="big"), ChannelFactory(name="small")
    for n in range(7):
        for unit in ("linux-64", "noarch"):
            _package(big, f"pkg-{n}", "1.0", unit=unit)
    _package(small, "one", "1.0")
    _package(small, "one", "2.0")
    counts = queries.name_counts([big, small])
    assert counts == {big.pk: 7, small.pk: 1}
    for channel in (big, small):
        assert counts[channel.pk] == queries.package_names(channel).count()
        assert _count(_get(client, _channel_url(channel))) == counts[channel.pk]


def test_search_matches_part_of_a_name_in_any_case(client):
    channel = ChannelFactory(name="c", kind="cran")
    for name in ("ggplot2", "Rcpp", "RcppArmadillo", "dplyr"):
        _package(channel, name, "1.0", unit="src/contrib", filename=f"{name}_1.0.tar.gz")
    page = _get(client, "/channels/c/", q="rcpp")
    assert _names(page) == ["Rcpp", "RcppArmadillo"]
    assert _count(page) == 2
    missing = _get(client, "/channels/c/", q="numpy")
    assert _names(missing) == [] and 'id="no-match"' in missing.content.decode()


def test_the_package_list_is_paginated_and_keeps_the_search(client):
    channel = ChannelFactory(name="c")
    total = PACKAGES_PER_PAGE + 5
    for n in range(total):
        _package(channel, f"lib-{n:03d}", "1.0")
    _package(channel, "other", "1.0")
    first = _get(client, "/channels/c/", q="lib")
    assert _count(first) == total
    assert len(_names(first)) == PACKAGES_PER_PAGE
    assert "?q=lib&amp;page=2" in first.content.decode()
    second = _get(client, "/channels/c/", q="lib", page=2)
    assert _names(second) == [f"lib-{n:03d}" for n in range(PACKAGES_PER_PAGE, total)]


def test_the_list_shows_the_latest_version_and_the_platforms(client):
    channel = ChannelFactory(name="c")
    _package(channel, "numpy", "1.9.0", unit="linux-64")
    _package(channel, "numpy", "1.10.0", unit="osx-arm64")
    _package(channel, "numpy", "1.10.0rc1", unit="win-64")
    body = _get(client, "/channels/c/").content.decode()
    row = body[body.index(">numpy<") :]
    row = row[: row.index("</tr>")]
    assert "<code>1.10.0</code>" in row
    assert re.findall(r'class="chip">([^<]+)<', row) == ["linux-64", "osx-arm64", "win-64"]


@pytest.mark.parametrize(
    ("kind", "unit", "versions", "newest_first"),
    [
        (
            "conda",
            "noarch",
            ["1.9", "1.10", "1.10.0a1", "2.0.dev0"],
            ["2.0.dev0", "1.10", "1.10.0a1", "1.9"],
        ),
        (
            "pypi",
            "demo",
            ["1.9", "1.10", "1.10rc1", "1.10.post1"],
            ["1.10.post1", "1.10", "1.10rc1", "1.9"],
        ),
        ("cran", "src/contrib", ["0.9-1", "0.10-0", "0.2.1"], ["0.10-0", "0.9-1", "0.2.1"]),
    ],
)
def test_versions_are_newest_first_by_the_ecosystem_s_order(
    client, kind, unit, versions, newest_first
):
    channel = ChannelFactory(name="c", kind=kind)
    for version in versions:
        _package(channel, "demo", version, unit=unit, filename=f"demo-{version}.file")
    body = _get(client, _package_url(channel, "demo")).content.decode()
    assert re.findall(r'<code class="ver">([^<]+)</code>', body) == newest_first
    assert f'class="version-tag">{newest_first[0]}<' in body


def test_a_package_page_lists_each_version_s_files_and_sizes(client):
    channel = ChannelFactory(name="c")
    _package(channel, "tool", "1.0", unit="linux-64", filename="tool-1.0-0.conda", size=2048)
    _package(channel, "tool", "1.0", unit="osx-64", filename="tool-1.0-0.tar.bz2", size=1024)
    body = _get(client, _package_url(channel, "tool")).content.decode()
    assert "linux-64/tool-1.0-0.conda" in body and "osx-64/tool-1.0-0.tar.bz2" in body
    assert "3.0\xa0KB" in body  # the version's total


def test_an_unknown_package_is_a_404(client):
    ChannelFactory(name="c")
    assert _get(client, _package_url(Channel.objects.get(name="c"), "nope")).status_code == 404


# --- Install lines ---------------------------------------------------------------------------


def _lines(response) -> list[str]:
    import html

    return [html.unescape(x) for x in re.findall(r'data-copy="([^"]+)"', response.content.decode())]


def test_conda_install_lines_use_the_channel_s_real_url(client):
    channel = ChannelFactory(name="forge")
    _package(channel, "numpy", "2.0")
    lines = _lines(_get(client, _package_url(channel, "numpy")))
    url = f"http://{HOST}/api/repo/forge"
    assert lines == [
        f"conda install -c {url} --override-channels numpy",
        f"mamba install -c {url} --override-channels numpy",
        f"pixi workspace channel add {url}",
        "pixi add numpy",
    ]


def test_python_install_lines_point_at_the_simple_index(client):
    channel = ChannelFactory(name="py", kind="pypi")
    _package(channel, "requests", "2.32.0", unit="requests", filename="requests-2.32.0.tar.gz")
    lines = _lines(_get(client, _package_url(channel, "requests")))
    index = f"http://{HOST}/api/repo/py/simple/"
    assert lines == [
        f"pip install --index-url {index} requests",
        f"uv pip install --index-url {index} requests",
        f"uv add --default-index {index} requests",
    ]


def test_r_install_line_names_the_repository(client):
    channel = ChannelFactory(name="cran", kind="cran")
    sub = ChannelFactory(name="bio", kind="cran", parent=channel)
    _package(sub, "ggplot2", "3.5.0", unit="src/contrib", filename="ggplot2_3.5.0.tar.gz")
    lines = _lines(_get(client, _package_url(sub, "ggplot2")))
    assert lines == [f'install.packages("ggplot2", repos = "http://{HOST}/api/repo/cran/bio")']


def test_private_channels_get_a_token_placeholder_in_each_client_s_form(client):
    user = UserFactory(username="alice")
    conda = ChannelFactory(name="secret", visibility=Channel.Visibility.PRIVATE)
    python = ChannelFactory(name="pysecret", kind="pypi", visibility=Channel.Visibility.PRIVATE)
    grant(conda, user)
    grant(python, user)
    _package(conda, "numpy", "2.0")
    _package(python, "requests", "2.0", unit="requests", filename="requests-2.0.tar.gz")
    client.force_login(user)
    page = _get(client, _package_url(conda, "numpy"))
    assert _lines(page)[0] == (
        f"conda install -c http://{HOST}/api/repo/t/<TOKEN>/secret --override-channels numpy"
    )
    assert f'href="{reverse("admin:psm_apitoken_add")}"' in page.content.decode()
    index = f"http://<TOKEN>:x-auth-token@{HOST}/api/repo/pysecret/simple/"
    assert _lines(_get(client, _package_url(python, "requests")))[0] == (
        f"pip install --index-url {index} requests"
    )


def test_the_token_link_is_offered_only_to_those_who_may_open_it(client):
    channel = ChannelFactory(name="members", visibility=Channel.Visibility.AUTHENTICATED)
    _package(channel, "numpy", "2.0")
    client.force_login(UserFactory(username="reader", is_staff=False))
    body = _get(client, _package_url(channel, "numpy")).content.decode()
    assert "/t/&lt;TOKEN&gt;/members" in body
    assert "/admin/" not in body and "POST /api/tokens/" in body


def test_the_token_url_is_a_valid_client_credential_form():
    """The placeholder pip form is one the repository's access check reads as a token."""
    import base64

    from django.test import RequestFactory

    from channels_app.access import _presented_secret

    basic = base64.b64encode(b"psm_secret:x-auth-token").decode()
    request = RequestFactory().get("/", HTTP_AUTHORIZATION=f"Basic {basic}")
    assert _presented_secret(request, None) == "psm_secret"


# --- Why is X not here? ----------------------------------------------------------------------


def test_why_is_offered_only_to_those_who_may_see_the_mirrors_details(client, make_user):
    channel = ChannelFactory(name="c")
    mirror = MirrorFactory(channel=channel, name="forge")
    _package(channel, "gpl-tool", "1.0", mirror=mirror, excluded_reason="license GPL3 is excluded")
    assert 'id="why"' not in _get(client, "/channels/c/", why="gpl-tool").content.decode()
    client.force_login(make_user("channels_app.view_channel"))
    assert 'id="why"' not in _get(client, "/channels/c/", why="gpl-tool").content.decode()
    client.force_login(make_user("mirrors_app.view_mirror"))
    body = _get(client, "/channels/c/", why="gpl-tool").content.decode()
    assert 'id="why"' in body
    assert "Mirror forge" in body and "license GPL3 is excluded" in body
    assert reverse("admin:mirrors_app_mirror_details", args=[mirror.pk]) in body


def test_why_for_a_name_no_mirror_lists_asks_the_channel_s_policy(client, make_user):
    channel = ChannelFactory(name="c")
    MirrorFactory(channel=channel, name="forge")
    client.force_login(make_user("mirrors_app.view_mirror"))
    body = _get(client, "/channels/c/", why="nothing-like-it").content.decode()
    assert 'id="why-unlisted"' in body
    assert "Mirror forge" in body and "allowed" in body


def test_why_never_answers_for_a_channel_the_user_may_not_read(client, make_user):
    ChannelFactory(name="secret", visibility=Channel.Visibility.PRIVATE)
    client.force_login(make_user("mirrors_app.view_mirror"))
    assert _get(client, "/channels/secret/", why="x").status_code == 404


def test_a_public_subchannel_of_a_private_channel_does_not_link_to_its_parent(client):
    parent = ChannelFactory(name="closed", visibility=Channel.Visibility.PRIVATE)
    ChannelFactory(name="open", parent=parent)
    body = _get(client, "/channels/closed/open/").content.decode()
    assert 'href="/channels/closed/"' not in body
    assert _get(client, "/channels/closed/").status_code == 404


def test_python_searches_find_names_however_they_are_spelled(client):
    channel = ChannelFactory(name="py", kind="pypi")
    _package(channel, "alpha-pkg", "1.0", unit="alpha-pkg", filename="alpha_pkg-1.0.tar.gz")
    assert _names(_get(client, "/channels/py/", q="Alpha_Pkg")) == ["alpha-pkg"]


def test_a_page_past_the_end_shows_the_last_page(client):
    channel = ChannelFactory(name="c")
    for n in range(PACKAGES_PER_PAGE + 1):
        _package(channel, f"lib-{n:03d}", "1.0")
    page = _get(client, "/channels/c/", page=99)
    assert _names(page) == [f"lib-{PACKAGES_PER_PAGE:03d}"]
    assert _count(page) == PACKAGES_PER_PAGE + 1
    assert _names(_get(client, "/channels/c/", page="x"))[0] == "lib-000"


def test_search_wildcards_are_plain_characters(client):
    channel = ChannelFactory(name="c", kind="cran")
    for name in ("a_b", "axb", "a%b"):
        _package(channel, name, "1.0", unit="src/contrib", filename=f"{name}_1.0.tar.gz")
    assert _names(_get(client, "/channels/c/", q="a_b")) == ["a_b"]
    assert _names(_get(client, "/channels/c/", q="%")) == ["a%b"]
    assert _count(_get(client, "/channels/c/", q="A")) == 3
    assert queries.package_names(channel, "a_b").count() == 1
