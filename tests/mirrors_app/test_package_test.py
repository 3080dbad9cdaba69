""" "Test a package" for a channel: the API route and the admin page, their checks and links.

The deciders' answer (`mirrors_app.sync.policy.test_package`) is replaced here by a stub of
the same shape, so these tests hold the pages to that shape and to their own checks."""

from __future__ import annotations

import pytest
from django.urls import reverse

from channels_app.models import Channel
from mirrors_app.sync import policy as sync_policy
from tests.factories import ChannelFactory, MirrorFactory, PolicyFactory

pytestmark = pytest.mark.django_db

PAGE = reverse("admin:mirrors_app_test_package")
FILE = "noarch/requests-2.31.0-pyhd8ed1ab_0.conda"


@pytest.fixture
def asked(monkeypatch) -> list[dict]:
    """The questions the deciders were asked; each answer blocks one file by an advisory."""
    questions: list[dict] = []

    def test_package(*, channel, name: str, version: str = "", platform: str = "") -> dict:
        questions.append({"channel": channel.path, "name": name, "version": version})
        questions[-1]["platform"] = platform
        rules = [
            {"rule": "platform", "outcome": "passed", "detail": ""},
            {"rule": "cve-score", "outcome": "blocked", "detail": "GHSA-9wx4-h78v-vm56 (5.6)"},
        ]
        files = [
            {
                "path": FILE,
                "known": True,
                "allowed": False,
                "reason": "CVE score 5.6 ≥ 5 (GHSA-9wx4-h78v-vm56)",
                "waived": "",
                "would_block": "",
                "rules": rules,
            },
            {
                "path": "noarch/requests-2.32.3-pyhd8ed1ab_0.conda",
                "known": False,
                "allowed": True,
                "reason": "",
                "waived": "GHSA-xxxx by wendy until 2030-01-01: not reachable",
                "would_block": "",
                "rules": [],
            },
        ]
        return {
            "channel": channel.path,
            "name": name,
            "version": version,
            "platform": platform,
            "results": [{"mirror": "forge", "policy": "strict", "mode": "enforce", "files": files}],
        }

    monkeypatch.setattr(sync_policy, "test_package", test_package, raising=False)
    return questions


@pytest.fixture
def reader(make_user):
    return make_user("channels_app.view_channel", "channels_app.view_subchannel", username="rita")


@pytest.fixture
def channel():
    return ChannelFactory(name="forge", kind="conda")


# --- API ---------------------------------------------------------------------------------------


def test_api_answers_with_every_decision_and_rule(api_client, reader, channel, asked):
    api_client.force_authenticate(reader)

    response = api_client.get(
        "/api/channels/forge/test-package/",
        {"name": "requests", "version": "2.31.0", "platform": "noarch"},
    )

    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["channel"], body["name"], body["version"], body["platform"]) == (
        "forge",
        "requests",
        "2.31.0",
        "noarch",
    )
    [decider] = body["results"]
    assert (decider["mirror"], decider["policy"], decider["mode"]) == ("forge", "strict", "enforce")
    blocked = decider["files"][0]
    assert (blocked["path"], blocked["known"], blocked["allowed"]) == (FILE, True, False)
    assert blocked["rules"][1] == {
        "rule": "cve-score",
        "outcome": "blocked",
        "detail": "GHSA-9wx4-h78v-vm56 (5.6)",
    }
    assert decider["files"][1]["waived"].startswith("GHSA-xxxx by wendy")
    assert asked == [
        {"channel": "forge", "name": "requests", "version": "2.31.0", "platform": "noarch"}
    ]


def test_api_without_a_name_is_a_400_saying_so(api_client, reader, channel, asked):
    api_client.force_authenticate(reader)

    for params in ({}, {"name": "  ", "version": "1.0"}):
        response = api_client.get("/api/channels/forge/test-package/", params)

        assert response.status_code == 400
        assert response.json() == {"name": ["Give the package name, e.g. numpy."]}
    assert asked == []


@pytest.mark.parametrize(
    ("kind", "platform", "message"),
    [
        ("pypi", "linux-64", "Not for standard Python channels (platforms are conda's"),
        ("cran", "noarch", "Not for standard R channels (platforms are conda's); leave it empty."),
        ("conda", "amiga-68k", "Unknown platform(s): amiga-68k."),
    ],
)
def test_api_refuses_a_platform_the_channel_has_not(
    api_client, reader, asked, kind, platform, message
):
    ChannelFactory(name="team", kind=kind)
    api_client.force_authenticate(reader)

    response = api_client.get(
        "/api/channels/team/test-package/", {"name": "pkg", "platform": platform}
    )

    assert response.status_code == 400
    assert message in response.json()["platform"][0]
    assert asked == []


def test_api_asks_a_python_channel_without_a_platform(api_client, reader, asked):
    ChannelFactory(name="pypi", kind="pypi")
    api_client.force_authenticate(reader)

    response = api_client.get("/api/channels/pypi/test-package/", {"name": "requests"})

    assert response.status_code == 200
    assert asked == [{"channel": "pypi", "name": "requests", "version": "", "platform": ""}]


def test_api_reaches_subchannels_by_path_and_by_the_subchannel_route(
    api_client, reader, channel, asked
):
    ChannelFactory(name="team", parent=channel, kind="conda")
    api_client.force_authenticate(reader)

    by_path = api_client.get("/api/channels/forge/team/test-package/", {"name": "numpy"})
    by_route = api_client.get(
        "/api/channels/forge/subchannels/team/test-package/", {"name": "numpy"}
    )

    assert (by_path.status_code, by_route.status_code) == (200, 200)
    assert [q["channel"] for q in asked] == ["forge/team", "forge/team"]


def test_api_answers_a_hidden_channel_as_a_missing_one(api_client, reader, asked):
    ChannelFactory(name="secret", kind="conda", visibility=Channel.Visibility.PRIVATE)
    api_client.force_authenticate(reader)

    hidden = api_client.get("/api/channels/secret/test-package/", {"name": "numpy"})
    missing = api_client.get("/api/channels/nothing/test-package/", {"name": "numpy"})

    assert (hidden.status_code, missing.status_code) == (404, 404)
    assert hidden.json() == missing.json()
    assert asked == []


def test_api_needs_read_on_channels(api_client, make_user, channel, asked):
    assert api_client.get("/api/channels/forge/test-package/", {"name": "x"}).status_code in (
        401,
        403,
    )
    api_client.force_authenticate(make_user("mirrors_app.view_mirror"))
    assert api_client.get("/api/channels/forge/test-package/", {"name": "x"}).status_code == 403
    assert asked == []


# --- Admin -------------------------------------------------------------------------------------


def test_channel_page_links_to_the_test(client, make_user, channel):
    client.force_login(make_user("channels_app.view_channel", "channels_app.change_channel"))

    html = client.get(reverse("admin:channels_app_channel_change", args=[channel.pk])).content

    assert f"{PAGE}?channel={channel.pk}" in html.decode()


def test_policy_page_links_to_the_test(client, make_user):
    policy = PolicyFactory()
    client.force_login(make_user("policies_app.view_policy", "policies_app.change_policy"))

    html = client.get(reverse("admin:policies_app_policy_change", args=[policy.pk])).content

    assert f"{PAGE}?policy={policy.pk}" in html.decode()


def test_page_preselects_the_channel_it_comes_from(client, reader, channel):
    client.force_login(reader)

    response = client.get(PAGE, {"channel": channel.pk})

    assert response.status_code == 200
    assert response.context["form"]["channel"].value() == str(channel.pk)
    assert response.context["result"] is None


def test_page_shows_each_decision_with_its_rules(client, reader, channel, asked):
    client.force_login(reader)

    response = client.get(
        PAGE, {"channel": channel.pk, "name": "requests", "version": "2.31.0", "platform": ""}
    )

    assert response.status_code == 200
    assert asked == [{"channel": "forge", "name": "requests", "version": "2.31.0", "platform": ""}]
    html = response.content.decode()
    assert "Mirror forge:" in html and "policy strict" in html
    assert FILE in html and "<strong>blocked</strong>" in html
    assert "<code>cve-score</code>: blocked — GHSA-9wx4-h78v-vm56 (5.6)" in html
    assert "not yet (hypothetical)" in html
    assert "Waived: GHSA-xxxx by wendy" in html


def test_page_reports_bad_questions_next_to_the_field(client, reader, asked):
    pypi = ChannelFactory(name="pypi", kind="pypi")
    client.force_login(reader)

    no_name = client.get(PAGE, {"channel": pypi.pk, "name": ""})
    platform = client.get(PAGE, {"channel": pypi.pk, "name": "requests", "platform": "linux-64"})

    assert no_name.context["form"].errors == {"name": ["This field is required."]}
    assert "Not for standard Python channels" in platform.context["form"].errors["platform"][0]
    assert asked == []


def test_page_offers_only_the_channels_the_user_may_see(client, reader, channel, asked):
    secret = ChannelFactory(name="secret", visibility=Channel.Visibility.PRIVATE)
    client.force_login(reader)

    response = client.get(PAGE, {"channel": secret.pk, "name": "numpy"})

    form = response.context["form"]
    assert list(form.fields["channel"].queryset) == [channel]
    assert "channel" in form.errors
    assert asked == []


def test_page_from_a_policy_offers_channels_of_its_type_those_it_governs_first(client, make_user):
    policy = PolicyFactory(name="py", package_type="pypi")
    ChannelFactory(name="aaa", kind="pypi")
    ChannelFactory(name="zzz", kind="pypi", policy=policy)
    via_mirror = ChannelFactory(name="mmm", kind="pypi")
    MirrorFactory(channel=via_mirror, policy=policy)
    ChannelFactory(name="conda", kind="conda")
    client.force_login(make_user("channels_app.view_channel", "policies_app.view_policy"))

    response = client.get(PAGE, {"policy": policy.pk})

    field = response.context["form"].fields["channel"]
    labels = [label for _, label in field.choices][1:]  # after the empty choice
    assert labels == [
        "mmm (standard python) · uses this policy",
        "zzz (standard python) · uses this policy",
        "aaa (standard python)",
    ]
    assert "policy <strong>py</strong>" in response.content.decode()


def test_page_needs_read_on_some_channel(client, make_user):
    client.force_login(make_user("mirrors_app.view_mirror"))

    assert client.get(PAGE).status_code == 403


# --- Through the real deciders ------------------------------------------------------------------


@pytest.fixture
def governed(channel):
    """The channel under a policy with a cooldown and a block rule; one advisory loaded."""
    from decimal import Decimal

    from policies_app.models import Vulnerability

    policy = PolicyFactory(
        name="strict", package_type="conda", cve_score="5.0", block_specs=["leftpad"]
    )
    Channel.objects.filter(pk=channel.pk).update(policy=policy)
    channel.refresh_from_db()
    Vulnerability.objects.create(
        osv_id="GHSA-9wx4-h78v-vm56",
        cvss_score=Decimal("5.6"),
        ecosystems="|conda|",
        affected=[
            {
                "ecosystem": "conda",
                "name": "requests",
                "ranges": [
                    {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.32.0"}]}
                ],
                "versions": [],
            }
        ],
    )
    return channel


def test_api_asks_the_real_decider_about_a_package_upstream_may_not_have(
    api_client, reader, governed
):
    api_client.force_authenticate(reader)
    response = api_client.get(
        "/api/channels/forge/test-package/", {"name": "requests", "version": "2.31.0"}
    )
    assert response.status_code == 200, response.json()
    [decider] = response.json()["results"]
    assert (decider["mirror"], decider["policy"], decider["mode"]) == (None, "strict", "enforce")
    [hypothetical] = decider["files"]
    assert (hypothetical["known"], hypothetical["allowed"]) == (False, False)
    assert hypothetical["reason"] == "GHSA-9wx4-h78v-vm56 score 5.6 ≥ 5.0"
    rules = {r["rule"]: r["outcome"] for r in hypothetical["rules"]}
    assert rules["cve-score"] == "block" and rules["block"] == "pass"
    fixed = api_client.get(
        "/api/channels/forge/test-package/", {"name": "requests", "version": "2.32.0"}
    )
    assert fixed.json()["results"][0]["files"][0]["allowed"] is True


def test_page_shows_the_real_deciders_answer_for_each_mirror(client, reader, governed):
    MirrorFactory(channel=governed, name="upstream-a")
    client.force_login(reader)
    response = client.get(PAGE, {"channel": governed.pk, "name": "leftpad", "version": "1.0"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "Mirror upstream-a:" in html
    assert "blocked by package rule &#x27;leftpad&#x27;" in html
