"""A private channel one may not read cannot be told apart from a channel that does not exist.

Every attack runs over real HTTP (live_server + requests) as an insider: a user with broad
category permissions (channels and subchannels Write, both mirror categories Manage, policies
Manage, artifacts Read) and no grant on the private channel `covert`. Each route is asked once
about `covert` (and its subchannel, mirror, run, package) and once about `absent` (names and ids
that do not exist): status, body and headers (Vary included; not Date) must be the same once the
names and ids are swapped. The positive control: a member of a group granted Read on `covert`,
with the same permissions, gets real answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
import requests
from django.contrib.auth.models import Group
from django.test import Client

from channels_app.models import Channel, Package
from mirrors_app.models import Mirror, SyncRun
from psm.tokens import token_create
from tests.factories import (
    ChannelFactory,
    MirrorFactory,
    PolicyFactory,
    SyncRunFactory,
    UserFactory,
    grant,
)

pytestmark = pytest.mark.django_db(transaction=True)

PRIVATE = Channel.Visibility.PRIVATE
CSRF = "c" * 32
INSIDER_GROUPS = (
    "Channels: Write",
    "Subchannels: Write",
    "Channel mirrors: Manage",
    "Subchannel mirrors: Manage",
    "Policy engine: Manage",
    "Artifacts: Read",
)
SOURCE = "http://127.0.0.1:9/conda"
INDEX = "noarch/repodata.json"
FILE = "noarch/alpha-1.0-0.conda"
HIDDEN_ID, MISSING_ID = 7_300_001, 9_300_001
#: Between two hidden rows' ids. An explicit id moves SQLite's AUTOINCREMENT past it, so rows
#: created later (in this test or the next ones on the same database) get the ids right after
#: it: spaced out, those never reach another hidden id, nor a missing one.
ID_STEP = 10_000


def _hidden_id(n: int) -> int:
    return HIDDEN_ID + n * ID_STEP


@dataclass
class World:
    hidden: dict[str, str]  # what a route names, for the private channel's things
    missing: dict[str, str]  # the same, for things that do not exist
    insider: object
    member: object
    visible_mirror: Mirror


def _user(username: str, *groups: str):
    user = UserFactory(username=username)
    user.groups.add(*Group.objects.filter(name__in=groups))
    return user


def _package(channel: Channel, mirror: Mirror) -> Package:
    return Package.objects.create(
        pk=_hidden_id(5),
        channel=channel,
        mirror=mirror,
        unit="noarch",
        filename="alpha-1.0-0.conda",
        name="alpha",
        version="1.0",
        upstream_url=f"{SOURCE}/{FILE}",
    )


@pytest.fixture
def world() -> World:
    """`covert` (private) with a private subchannel `inner`, a mirror, a run, a package and a
    policy used only there; `opened`, a public channel with a mirror the insider may see."""
    opened = ChannelFactory(name="opened")
    visible_mirror = MirrorFactory(channel=opened, name="seen", source_url=SOURCE)
    insider = _user("insider", *INSIDER_GROUPS)
    member = _user("member", *INSIDER_GROUPS)
    hush = PolicyFactory(name="quietpolicy")
    # Distinctive ids, one per row, so swapping them in a page touches nothing else.
    covert = ChannelFactory(
        pk=_hidden_id(0), name="covert", visibility=PRIVATE, description="covert plans"
    )
    inner = ChannelFactory(pk=_hidden_id(1), name="inner", parent=covert, visibility=PRIVATE)
    grant(covert, member, group="covert-team")
    mirror = MirrorFactory(
        pk=_hidden_id(2), channel=covert, name="hushmirror", source_url=SOURCE, policy=hush
    )
    MirrorFactory(pk=_hidden_id(3), channel=inner, name="hushinner", source_url=SOURCE)
    run = SyncRunFactory(pk=_hidden_id(4), mirror=mirror, state=SyncRun.State.COMPLETED)
    package = _package(covert, mirror)
    ids = {"cid": covert.pk, "sid": inner.pk, "m": mirror.pk, "r": run.pk, "p": package.pk}
    hidden = {"c": "covert", **{key: str(pk) for key, pk in ids.items()}}
    missing = {"c": "absent", **{key: str(MISSING_ID + n) for n, key in enumerate(ids)}}
    # The swap rewrites these ids wherever they stand: a row made with an id of its own must
    # not hold one of them (it would be rewritten too, and the pages differ for no reason).
    swapped = {*hidden.values(), *missing.values()}
    assert not {str(opened.pk), str(visible_mirror.pk), str(hush.pk)} & swapped
    return World(hidden, missing, insider, member, visible_mirror)


def _browser(user=None, **headers) -> requests.Session:
    """A requests session signed in as `user` (a real session cookie), with a CSRF pair."""
    browser = requests.Session()
    if user is not None:
        client = Client()
        client.force_login(user)
        browser.cookies.set("sessionid", client.cookies["sessionid"].value)
    browser.cookies.set("csrftoken", CSRF)
    browser.headers.update({"X-CSRFToken": CSRF, **headers})
    return browser


def _swap(text: str, names: dict[str, str], into: dict[str, str]) -> str:
    """`text` about the hidden things, as it would read about the missing ones."""
    for key in sorted(names, key=lambda k: -len(names[k])):
        text = re.sub(rf"(?<![0-9A-Za-z]){re.escape(names[key])}(?![0-9A-Za-z])", into[key], text)
    return text


def _normal(response: requests.Response) -> str:
    body = response.text
    body = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "CSRF", body)
    return re.sub(r'"csrfToken": "[^"]+"', "CSRF", body)


def _headers(response: requests.Response) -> dict[str, str]:
    skip = {"date", "expires", "content-length", "set-cookie"}  # clocks; the body is compared
    found = {k.lower(): v for k, v in response.headers.items() if k.lower() not in skip}
    found["set-cookie"] = ",".join(sorted(response.cookies.keys()))
    return found


def _answer(response: requests.Response) -> tuple:
    chain = [*response.history, response]
    return (
        [r.status_code for r in chain],
        [_headers(r) for r in chain],
        _normal(response),
    )


def _differences(browser, base: str, world: World, routes) -> list[str]:
    """The routes whose answer about the hidden things differs from the one about missing
    ones (hidden answers are rewritten with the missing names and ids before comparing)."""
    found = []
    for method, template, body in routes:
        answers = []
        for names in (world.hidden, world.missing):
            url = base + template.format(**names)
            data = _fill(body, names)
            body_as = "data" if template.startswith("/admin/") else "json"  # a form, or JSON
            response = browser.request(method, url, **{body_as: data}, timeout=30)
            answers.append(_answer(response))
        (statuses, headers, body), missing = answers
        swapped = [
            {k: _swap(v, world.hidden, world.missing) for k, v in h.items()} for h in headers
        ]
        hidden = (statuses, swapped, _swap(body, world.hidden, world.missing))
        if hidden != missing:
            found.append(f"{method} {template}: {_first_difference(hidden, missing)}")
    return found


def _first_difference(hidden: tuple, missing: tuple) -> str:
    if hidden[:2] != missing[:2]:
        return f"{hidden[:2]} != {missing[:2]}"
    lines = zip(hidden[2].splitlines(), missing[2].splitlines(), strict=False)
    return next((f"{a!r} != {b!r}" for a, b in lines if a != b), "bodies differ in length")


def _fill(body, names: dict[str, str]):
    if isinstance(body, str):
        return body.format(**names)
    if isinstance(body, dict):
        return {k: _fill(v, names) for k, v in body.items()}
    if isinstance(body, list):
        return [_fill(v, names) for v in body]
    return body


MIRROR_BODY = {"name": "newmirror", "source_url": SOURCE, "kind": "conda", "cron": "@daily"}

API_ROUTES = [
    ("GET", "/api/channels/{c}/", None),
    ("OPTIONS", "/api/channels/{c}/", None),
    ("PATCH", "/api/channels/{c}/", {"description": "x"}),
    ("DELETE", "/api/channels/{c}/", None),
    ("GET", "/api/channels/{c}/grants/", None),
    ("PUT", "/api/channels/{c}/grants/", []),
    ("POST", "/api/channels/{c}/freeze/", None),
    ("POST", "/api/channels/{c}/unfreeze/", None),
    ("GET", "/api/channels/{c}/subchannels/", None),
    ("POST", "/api/channels/{c}/subchannels/", {"name": "newsub", "kind": "conda"}),
    ("GET", "/api/channels/{c}/subchannels/inner/", None),
    ("GET", "/api/channels/{c}/subchannels/inner/grants/", None),
    ("POST", "/api/channels/{c}/subchannels/inner/freeze/", None),
    ("POST", "/api/tokens/", {"name": "t", "resources": [{"channel": "{c}"}]}),
    ("POST", "/api/tokens/", {"name": "t", "resources": [{"channel": "{c}/inner"}]}),
    ("POST", "/api/mirrors/", {**MIRROR_BODY, "channel": "{c}"}),
    ("POST", "/api/mirrors/", {**MIRROR_BODY, "channel": "{c}/inner"}),
    ("GET", "/api/mirrors/?channel={c}", None),
    ("GET", "/api/mirrors/?channel={c}/inner", None),
    ("GET", "/api/mirrors/{m}/", None),
    ("GET", "/api/mirrors/{m}/?format=api", None),
    ("OPTIONS", "/api/mirrors/{m}/", None),
    ("PATCH", "/api/mirrors/{m}/", {"cron": "@daily"}),
    ("PUT", "/api/mirrors/{m}/", {**MIRROR_BODY, "channel": "opened"}),
    ("DELETE", "/api/mirrors/{m}/", None),
    ("GET", "/api/mirrors/{m}/details/", None),
    ("GET", "/api/mirrors/{m}/excluded/", None),
    ("GET", "/api/mirrors/{m}/excluded/?format=csv", None),
    ("GET", "/api/mirrors/{m}/explain/?package=alpha", None),
    ("GET", "/api/mirrors/{m}/dependency-report/", None),
    ("GET", "/api/mirrors/{m}/dependency-report/?format=csv", None),
    ("POST", "/api/mirrors/{m}/run/", None),
    ("POST", "/api/mirrors/{m}/stop/", None),
    ("POST", "/api/mirrors/{m}/restart/", None),
    ("POST", "/api/mirrors/{m}/policy-preview/", None),
    ("POST", "/api/mirrors/{m}/policy-apply/", None),
    ("GET", "/api/runs/?mirror={m}", None),
    ("GET", "/api/runs/{r}/", None),
]

ADMIN_ROUTES = [
    ("GET", "/admin/channels_app/channel/{cid}/change/", None),
    ("GET", "/admin/channels_app/channel/{sid}/change/", None),
    ("GET", "/admin/channels_app/channel/{cid}/delete/", None),
    ("GET", "/admin/channels_app/channel/{cid}/history/", None),
    ("GET", "/admin/channels_app/channel/add/?parent={cid}", None),
    ("GET", "/admin/channels_app/package/{p}/change/", None),
    ("GET", "/admin/mirrors_app/mirror/add/?channel={cid}", None),
    (
        "POST",
        "/admin/mirrors_app/mirror/add/",
        {**MIRROR_BODY, "mode": "passive", "channel": "{cid}"},
    ),
    (
        "POST",
        "/admin/mirrors_app/mirror/add/",
        {**MIRROR_BODY, "mode": "passive", "channel": "{sid}"},
    ),
    (
        "POST",
        "/admin/channels_app/channel/add/",
        {"name": "newsub", "kind": "conda", "parent": "{cid}"},
    ),
    ("POST", "/admin/psm/apitoken/add/", {"name": "t", "kind": "resource", "channels": "{cid}"}),
    ("GET", "/admin/mirrors_app/mirror/{m}/change/", None),
    ("GET", "/admin/mirrors_app/mirror/{m}/delete/", None),
    ("GET", "/admin/mirrors_app/mirror/{m}/history/", None),
    ("GET", "/admin/mirrors_app/mirror/{m}/details/", None),
    ("GET", "/admin/mirrors_app/mirror/{m}/details/?package=alpha", None),
    ("GET", "/admin/mirrors_app/mirror/{m}/excluded.csv", None),
    ("GET", "/admin/mirrors_app/mirror/{m}/dependency-report.csv", None),
    ("GET", "/admin/mirrors_app/mirror/{m}/policy-preview/", None),
    ("GET", "/admin/mirrors_app/mirror/{m}/policy-apply/", None),
    ("POST", "/admin/mirrors_app/mirror/{m}/policy-apply/", None),
    ("GET", "/admin/mirrors_app/mirror/{m}/run/", None),
    ("POST", "/admin/mirrors_app/mirror/{m}/run/", None),
    ("POST", "/admin/mirrors_app/mirror/{m}/stop/", None),
    ("POST", "/admin/mirrors_app/mirror/{m}/restart/", None),
    ("GET", "/admin/mirrors_app/syncrun/{r}/change/", None),
]


def test_api_answers_about_a_hidden_channel_as_about_a_missing_one(live_server, world):
    browser = _browser(world.insider)

    differences = _differences(browser, live_server.url, world, API_ROUTES)
    assert not differences, "\n".join(differences)
    # Nothing was changed through the routes that write.
    covert = Channel.objects.get(name="covert")
    assert not covert.frozen and covert.description == "covert plans"
    assert not Channel.objects.filter(name="newsub").exists()
    assert not Mirror.objects.filter(name="newmirror").exists()
    assert SyncRun.objects.filter(mirror__name="hushmirror").count() == 1
    assert covert.grants.count() == 1


def test_api_lists_name_nothing_of_a_hidden_channel(live_server, world):
    browser = _browser(world.insider)
    base = live_server.url

    paths = ["/api/mirrors/", "/api/runs/", "/api/channels/", "/api/tokens/"]
    # The browsable API's forms too: the `channel` choices of a new mirror or token.
    paths += [f"{path}?format=api" for path in ("/api/mirrors/", "/api/tokens/")]
    for path in paths:
        response = browser.get(base + path, timeout=30)
        assert response.status_code == 200, path
        assert "covert" not in response.text and "hush" not in response.text, path
    # Moving a mirror one may change into a hidden channel: "does not exist", as a missing one.
    mirror = world.visible_mirror.pk
    moved = browser.patch(f"{base}/api/mirrors/{mirror}/", json={"channel": "covert"}, timeout=30)
    elsewhere = browser.patch(
        f"{base}/api/mirrors/{mirror}/", json={"channel": "absent"}, timeout=30
    )
    assert moved.status_code == elsewhere.status_code == 400
    assert moved.json() == {"channel": ["Channel 'covert' does not exist."]}
    assert Mirror.objects.get(pk=mirror).channel.name == "opened"


def test_api_positive_control_a_granted_member_sees_the_channel(live_server, world):
    browser = _browser(world.member)
    base, mirror = live_server.url, world.hidden["m"]

    assert browser.get(f"{base}/api/channels/covert/", timeout=30).status_code == 200
    assert browser.get(f"{base}/api/channels/covert/subchannels/", timeout=30).status_code == 200
    assert browser.get(f"{base}/api/mirrors/{mirror}/details/", timeout=30).status_code == 200
    explain = browser.get(f"{base}/api/mirrors/{mirror}/explain/?package=alpha", timeout=30)
    assert explain.status_code == 200
    assert "hushmirror" in browser.get(f"{base}/api/mirrors/", timeout=30).text
    token = browser.post(
        f"{base}/api/tokens/",
        json={"name": "t", "resources": [{"channel": "covert"}]},
        timeout=30,
    )
    assert token.status_code == 201, token.text
    assert token.json()["resources"] == [{"channel": "covert", "level": "read"}]


def test_api_a_grant_on_a_subchannel_alone_names_only_that_subchannel(live_server, world):
    """One granted a private parent's subchannel knows the parent's name from its path: the
    parent is addressable for reading that subchannel, and lists nothing else of it; creating
    in the parent still needs seeing the parent."""
    inner = Channel.objects.get(name="inner")
    sub_only = _user("sub-only", *INSIDER_GROUPS)
    grant(inner, sub_only, group="inner-team")
    ChannelFactory(name="sibling", parent=inner.parent, visibility=PRIVATE)
    browser, base = _browser(sub_only), f"{live_server.url}/api/channels/covert"

    listed = browser.get(f"{base}/subchannels/", timeout=30)
    assert listed.status_code == 200
    assert [c["name"] for c in listed.json()["results"]] == ["inner"]
    assert browser.get(f"{base}/subchannels/inner/", timeout=30).status_code == 200
    assert browser.get(f"{base}/subchannels/sibling/", timeout=30).status_code == 404
    assert browser.get(f"{base}/", timeout=30).status_code == 404
    created = browser.post(
        f"{base}/subchannels/", json={"name": "newsub", "kind": "conda"}, timeout=30
    )
    assert created.status_code == 404
    assert not Channel.objects.filter(name="newsub").exists()


def test_admin_answers_about_a_hidden_channel_as_about_a_missing_one(live_server, world):
    browser = _browser(world.insider)

    differences = _differences(browser, live_server.url, world, ADMIN_ROUTES)
    assert not differences, "\n".join(differences)
    assert SyncRun.objects.filter(mirror__name="hushmirror").count() == 1
    assert not Mirror.objects.filter(name="newmirror").exists()
    assert not Channel.objects.filter(name="newsub").exists()


def test_admin_pages_and_forms_name_nothing_of_a_hidden_channel(live_server, world):
    insider, member = _browser(world.insider), _browser(world.member)
    base = live_server.url
    pages = [
        "/admin/channels_app/channel/",
        "/admin/channels_app/channel/add/",
        "/admin/channels_app/package/",
        "/admin/mirrors_app/mirror/",
        "/admin/mirrors_app/mirror/add/",
        "/admin/mirrors_app/syncrun/",
        "/admin/psm/apitoken/add/",
        f"/admin/mirrors_app/mirror/{world.visible_mirror.pk}/change/",
    ]

    for page in pages:
        response = insider.get(base + page, timeout=30)
        assert response.status_code == 200, page
        assert "covert" not in response.text and "hush" not in response.text, page
    # Positive control: the granted member is offered the channel.
    assert "covert" in member.get(f"{base}/admin/psm/apitoken/add/", timeout=30).text
    assert "covert" in member.get(f"{base}/admin/mirrors_app/mirror/add/", timeout=30).text


def test_admin_policy_delete_page_names_no_hidden_mirror(live_server, world):
    browser = _browser(world.insider)
    policy = Mirror.objects.get(name="hushmirror").policy

    page = browser.get(
        f"{live_server.url}/admin/policies_app/policy/{policy.pk}/delete/", timeout=30
    )

    assert page.status_code == 200
    assert "hushmirror" not in page.text and "covert" not in page.text
    assert "quietpolicy" in page.text


# --- Package routes -------------------------------------------------------------------------


def _repo_routes(prefix: str = "/api/repo") -> list[tuple[str, str, None]]:
    paths = ["{c}/" + INDEX, "{c}/", "{c}", "{c}/" + FILE, "{c}/inner/" + INDEX, "{c}/simple/"]
    return [(method, f"{prefix}/{p}", None) for p in paths for method in ("GET", "HEAD")]


@pytest.mark.parametrize("who", ["anonymous", "insider-session", "insider-token", "basic-auth"])
def test_package_routes_answer_about_a_hidden_channel_as_about_a_missing_one(
    live_server, world, who
):
    _, secret = token_create(
        user=world.insider, name="t", resources=[(Channel.objects.get(name="opened"), "read")]
    )
    browser, routes = _browser(), _repo_routes()
    if who == "insider-session":
        browser = _browser(world.insider)
    elif who == "insider-token":
        routes = _repo_routes(f"/api/repo/t/{secret}")
    elif who == "basic-auth":
        browser.auth = (secret, "x-auth-token")

    differences = _differences(browser, live_server.url, world, routes)
    assert not differences, "\n".join(differences)


def test_package_routes_vary_alike_for_a_restricted_channel_and_a_missing_one(live_server, world):
    ChannelFactory(name="signed", visibility=Channel.Visibility.AUTHENTICATED)
    base = live_server.url

    for name in ("covert", "signed"):
        hidden = requests.get(f"{base}/api/repo/{name}/{INDEX}", timeout=30)
        missing = requests.get(f"{base}/api/repo/absent/{INDEX}", timeout=30)
        assert hidden.status_code == missing.status_code == 404
        assert hidden.headers.get("Vary") == missing.headers.get("Vary")
        assert hidden.content == missing.content
    # Positive control: a public channel's files do not vary by cookie (shared caches keep them).
    public = requests.get(f"{base}/api/repo/opened/{INDEX}", timeout=30)
    assert public.status_code == 200 and "Cookie" not in public.headers.get("Vary", "")


def test_package_routes_positive_control_the_member_reads_the_channel(live_server, world):
    _, secret = token_create(
        user=world.member, name="t", resources=[(Channel.objects.get(name="covert"), "read")]
    )
    base = live_server.url

    assert _browser(world.member).get(f"{base}/api/repo/covert/{INDEX}", timeout=30).ok
    assert requests.get(f"{base}/api/repo/t/{secret}/covert/{INDEX}", timeout=30).ok
    basic = requests.get(
        f"{base}/api/repo/covert/{INDEX}", auth=(secret, "x-auth-token"), timeout=30
    )
    assert basic.ok
