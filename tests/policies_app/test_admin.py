"""The policies admin: create, search, and where each policy is applied."""

from __future__ import annotations

import pytest
from django.urls import reverse

from policies_app.models import Policy
from tests.factories import ChannelFactory, MirrorFactory, PolicyFactory

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:policies_app_policy_changelist")
ADD = reverse("admin:policies_app_policy_add")


@pytest.fixture
def policy_admin(make_user, client):
    user = make_user(
        "policies_app.add_policy", "policies_app.change_policy", "policies_app.view_policy"
    )
    client.force_login(user)
    return user


def test_create_policy(client, policy_admin):
    response = client.post(ADD, {"name": "mit-only", "description": "Only MIT-licensed packages"})

    assert response.status_code == 302
    policy = Policy.objects.get()
    assert (policy.name, policy.description) == ("mit-only", "Only MIT-licensed packages")


def test_create_policy_rejects_a_duplicate_name(client, policy_admin):
    PolicyFactory(name="mit-only")

    response = client.post(ADD, {"name": "mit-only", "description": ""})

    assert response.status_code == 200
    assert "name" in response.context["adminform"].form.errors
    assert Policy.objects.count() == 1


def test_create_policy_needs_a_name(client, policy_admin):
    response = client.post(ADD, {"name": "", "description": "x"})

    assert response.status_code == 200
    assert "name" in response.context["adminform"].form.errors
    assert not Policy.objects.exists()


def test_create_policy_needs_add_permission(client, make_user):
    client.force_login(make_user("policies_app.view_policy"))

    assert client.post(ADD, {"name": "mit-only"}).status_code == 403
    assert not Policy.objects.exists()


def test_search_by_name_and_description(client, policy_admin):
    PolicyFactory(name="mit-only", description="licenses")
    PolicyFactory(name="no-gpl", description="Blocks copyleft licenses")
    PolicyFactory(name="pinned", description="exact versions")

    by_name = client.get(CHANGELIST, {"q": "gpl"})
    by_description = client.get(CHANGELIST, {"q": "licenses"})

    assert [p.name for p in by_name.context["cl"].result_list] == ["no-gpl"]
    assert [p.name for p in by_description.context["cl"].result_list] == ["mit-only", "no-gpl"]


def test_list_shows_channel_and_mirror_counts(client, policy_admin):
    shared = PolicyFactory(name="shared")
    unused = PolicyFactory(name="unused")
    ChannelFactory(policy=shared)
    channel = ChannelFactory(policy=shared)
    MirrorFactory(policy=PolicyFactory(name="other"), channel=channel)
    MirrorFactory(policy=shared)
    MirrorFactory(policy=shared)

    response = client.get(CHANGELIST)

    assert response.status_code == 200
    rows = {p.name: (p._channels, p._mirrors) for p in response.context["cl"].result_list}
    assert rows["shared"] == (2, 2)
    assert rows["unused"] == (0, 0)
    assert rows["other"] == (0, 1)
    html = response.content.decode()
    assert '<td class="field-channel_count">2</td>' in html
    assert '<td class="field-mirror_count">2</td>' in html
    assert unused.name in html


def test_list_sorts_by_mirror_count(client, policy_admin):
    busy = PolicyFactory(name="busy")
    PolicyFactory(name="idle")
    MirrorFactory(policy=busy)
    column = client.get(CHANGELIST).context["cl"].list_display.index("mirror_count")

    response = client.get(CHANGELIST, {"o": f"-{column}"})

    assert [p.name for p in response.context["cl"].result_list] == ["busy", "idle"]


def test_list_needs_view_permission(client, make_user):
    client.force_login(make_user())
    assert client.get(CHANGELIST).status_code == 403


# --- Rules: the change form --------------------------------------------------------------------

RULES = {
    "name": "strict",
    "description": "",
    "platforms_include": ["linux-64", "noarch"],
    "licenses_include": "MIT\n BSD \n\nApache-2.0\n",
    "licenses_exclude": "",
    "unknown_license": "block",
    "cve_score_comparator": "<",
    "cve_score": "7",
    "cve_statuses_excluded": ["active", "disputed"],
    "allow_specs": "numpy >=1.26,<2\npython 3.12.*",
    "block_specs": "",
    "include_dependencies": "on",
    "created_after": "2024-01-01",
    "min_age_days": "7",
    "exclusions": "openssl 3.0.*",
}


def test_create_policy_with_rules_one_value_per_line_and_checkboxes(client, policy_admin):
    response = client.post(ADD, RULES)

    assert response.status_code == 302, response.context["adminform"].form.errors
    policy = Policy.objects.get()
    assert policy.platforms_include == ["linux-64", "noarch"]
    assert policy.platforms_exclude == []
    assert policy.licenses_include == ["MIT", "BSD", "Apache-2.0"]
    assert policy.unknown_license == "block"
    assert str(policy.cve_score) == "7.0"
    assert policy.cve_statuses_excluded == ["active", "disputed"]
    assert policy.allow_specs == ["numpy >=1.26,<2", "python 3.12.*"]
    assert policy.block_specs == []
    assert policy.include_dependencies is True
    assert str(policy.created_after) == "2024-01-01"
    assert policy.min_age_days == 7
    assert policy.exclusions == ["openssl 3.0.*"]
    assert policy.legacy_packages is False


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "allow_specs",
            "numpy\nnumpy >=>1",
            "Not conda MatchSpecs (e.g. 'numpy >=1.26'): 'numpy >=>1'",
        ),
        ("block_specs", "[[[", "Not conda MatchSpecs (e.g. 'numpy >=1.26'): '[[['"),
        ("exclusions", "ok\n>=<", "Not conda MatchSpecs (e.g. 'numpy >=1.26'): '>=<'"),
        ("licenses_exclude", "GPL\nNot a license!", "Unknown license(s): Not a license!"),
        ("cve_score", "11", "less than or equal to 10"),
        ("cve_score", "-1", "greater than or equal to 0"),
        ("created_after", "2030-01-01", None),  # reported on created_before
    ],
)
def test_invalid_rules_are_reported_next_to_their_field(
    client, policy_admin, field, value, message
):
    response = client.post(ADD, {**RULES, field: value, "created_before": "2025-01-01"})

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    if message is None:
        assert errors["created_before"] == ["Must not be before 'created after'."]
    else:
        assert list(errors) == [field]
        assert message in " ".join(errors[field])
    assert not Policy.objects.exists()


def test_platform_both_included_and_excluded_is_reported(client, policy_admin):
    response = client.post(ADD, {**RULES, "platforms_exclude": ["noarch"]})

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["platforms_exclude"] == [
        "Both included and excluded: noarch."
    ]


def test_unknown_platform_choice_is_rejected(client, policy_admin):
    response = client.post(ADD, {**RULES, "platforms_include": ["beos-64"]})

    assert response.status_code == 200
    assert "platforms_include" in response.context["adminform"].form.errors


def test_change_page_shows_lists_one_per_line_and_a_summary(client, policy_admin):
    policy = PolicyFactory(
        allow_specs=["numpy >=1.26", "scipy"],
        include_dependencies=True,
        platforms_include=["linux-64", "noarch"],
        licenses_exclude=["GPL"],
    )

    response = client.get(reverse("admin:policies_app_policy_change", args=[policy.pk]))

    assert response.status_code == 200
    html = response.content.decode()
    assert ">\nnumpy &gt;=1.26\nscipy</textarea>" in html
    assert 'value="linux-64" id="id_platforms_include_' in html
    assert "What this policy enforces" in html
    assert "<li>Only platforms linux-64, noarch.</li>" in html
    assert "<li>Allows only: numpy &gt;=1.26, scipy (and their dependencies).</li>" in html
    fieldsets = [name for name, _ in response.context["adminform"].fieldsets]
    assert fieldsets == [
        "Details",
        "Enforcement",
        "Platforms",
        "Licenses",
        "CVEs",
        "Package rules",
        "Dates",
        "Exclusions and legacy",
    ]


def test_editing_a_policy_keeps_its_lists(client, policy_admin):
    policy = PolicyFactory(allow_specs=["numpy >=1.26,<2"], cve_statuses_excluded=["active"])
    url = reverse("admin:policies_app_policy_change", args=[policy.pk])
    form = client.get(url).context["adminform"].form
    data = {
        name: form[name].value() for name in form.fields if form[name].value() not in (None, "")
    }
    data["description"] = "changed"

    response = client.post(url, data)

    assert response.status_code == 302
    policy.refresh_from_db()
    assert policy.description == "changed"
    assert policy.allow_specs == ["numpy >=1.26,<2"]
    assert policy.cve_statuses_excluded == ["active"]


def test_summary_in_plain_language():
    from datetime import date
    from decimal import Decimal

    from policies_app.admin import policy_summary

    policy = Policy(
        platforms_include=["linux-64", "noarch"],
        platforms_exclude=["win-32"],
        licenses_include=["MIT"],
        licenses_exclude=["GPL"],
        unknown_license="block",
        cve_score=Decimal("7.0"),
        cve_score_comparator="<",
        cve_statuses_excluded=["active"],
        allow_specs=["numpy >=1.26"],
        include_dependencies=True,
        block_specs=["pytorch"],
        created_after=date(2024, 1, 1),
        created_before=date(2025, 6, 30),
        min_age_days=7,
        exclusions=["openssl 3.0.*"],
        legacy_packages=True,
    )

    assert policy_summary(policy) == [
        "Judges conda packages.",
        "Only platforms linux-64, noarch.",
        "Drops platforms win-32.",
        "Keeps only licenses MIT.",
        "Drops licenses GPL.",
        "Packages with a missing or unrecognised license are dropped.",
        "Keeps packages whose highest CVE score is < 7.",
        "Drops packages with a CVE whose status is active.",
        "Allows only: numpy >=1.26 (and their dependencies).",
        "Blocks: pytorch.",
        "Drops packages built before 2024-01-01.",
        "Drops packages built after 2025-06-30.",
        "Drops packages newer than 7 days (cooldown).",
        "Always keeps: openssl 3.0.*, whatever the other rules say.",
        "Also mirrors .tar.bz2 files when the same build exists as .conda.",
    ]
    assert policy_summary(Policy()) == [
        "Judges conda packages.",
        "No rules: every package is kept.",
        "Skips .tar.bz2 files when the same build exists as .conda.",
    ]
    python = Policy(package_type="pypi", mode="dry_run", enforce_on_frozen=True)
    assert policy_summary(python) == [
        "Judges standard Python packages.",
        "Dry run: records what the rules would block and lets it in (malicious packages are "
        "blocked all the same).",
        "Newly blocked packages also leave the pinned index of frozen channels.",
        "No rules: every package is kept.",
    ]


# --- Vulnerabilities (read-only) ---------------------------------------------------------------

VULNS = reverse("admin:policies_app_vulnerability_changelist")


@pytest.fixture
def advisories():
    from policies_app.models import Vulnerability

    return [
        Vulnerability.objects.create(
            osv_id="GHSA-aaaa",
            aliases=["CVE-2023-0286"],
            cvss_score="7.4",
            status="active",
            affected=[{"ecosystem": "conda", "name": "openssl"}],
            ecosystems="|conda|",
        ),
        Vulnerability.objects.create(
            osv_id="PYSEC-2022-1",
            aliases=["CVE-2022-42969"],
            status="disputed",
            affected=[{"ecosystem": "PyPI", "name": "py"}],
            ecosystems="|PyPI|",
            malicious=True,
        ),
    ]


@pytest.fixture
def vuln_viewer(client, make_user):
    client.force_login(make_user("policies_app.view_vulnerability"))


def _ids(response) -> list[str]:
    return [v.osv_id for v in response.context["cl"].result_list]


def test_vulnerabilities_are_listed_and_searchable(client, vuln_viewer, advisories):
    assert _ids(client.get(VULNS)) == ["GHSA-aaaa", "PYSEC-2022-1"]
    assert _ids(client.get(VULNS, {"q": "PYSEC"})) == ["PYSEC-2022-1"]
    assert _ids(client.get(VULNS, {"q": "CVE-2023-0286"})) == ["GHSA-aaaa"]
    assert _ids(client.get(VULNS, {"q": "openssl"})) == ["GHSA-aaaa"]
    assert _ids(client.get(VULNS, {"status": "disputed"})) == ["PYSEC-2022-1"]
    assert _ids(client.get(VULNS, {"ecosystem": "PyPI"})) == ["PYSEC-2022-1"]
    assert _ids(client.get(VULNS, {"malicious__exact": "1"})) == ["PYSEC-2022-1"]
    html = client.get(VULNS).content.decode()
    assert "CVE-2023-0286" in html and "conda: openssl" in html and "PyPI: py" in html


def test_vulnerabilities_are_read_only(client, make_user, advisories):
    from policies_app.models import Vulnerability

    perms = ["add", "change", "delete", "view"]
    client.force_login(make_user(*[f"policies_app.{p}_vulnerability" for p in perms]))
    vuln = advisories[0]
    change = reverse("admin:policies_app_vulnerability_change", args=[vuln.pk])

    assert client.get(reverse("admin:policies_app_vulnerability_add")).status_code == 403
    page = client.get(change)
    assert page.status_code == 200
    assert not page.context["has_change_permission"]
    client.post(change, {"osv_id": "changed", "status": "cleared"})
    delete = reverse("admin:policies_app_vulnerability_delete", args=[vuln.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert Vulnerability.objects.get(pk=vuln.pk).osv_id == "GHSA-aaaa"
