"""REST API for policies: /api/policies/."""

from __future__ import annotations

import pytest

from policies_app.models import Policy
from psm.tokens import token_create
from tests.factories import ChannelFactory, MirrorFactory, PolicyFactory

pytestmark = pytest.mark.django_db

ALL_POLICY_PERMS = (
    "policies_app.view_policy",
    "policies_app.add_policy",
    "policies_app.change_policy",
    "policies_app.delete_policy",
)


@pytest.fixture
def admin_client(api_client, make_user):
    api_client.force_authenticate(make_user(*ALL_POLICY_PERMS))
    return api_client


# --- authentication and permissions ------------------------------------------------------------


def test_anonymous_user_is_refused(api_client):
    policy = PolicyFactory()

    assert api_client.get("/api/policies/").status_code in (401, 403)
    assert api_client.delete(f"/api/policies/{policy.pk}/").status_code in (401, 403)
    assert Policy.objects.filter(pk=policy.pk).exists()


def test_session_login_authenticates(api_client, make_user):
    user = make_user("policies_app.view_policy")
    PolicyFactory(name="strict")

    assert api_client.login(username=user.username, password="pw")
    response = api_client.get("/api/policies/")

    assert response.status_code == 200
    assert [p["name"] for p in response.json()["results"]] == ["strict"]


def test_token_header_authenticates(api_client, make_user):
    _, secret = token_create(
        user=make_user("policies_app.add_policy"), name="cli", kind="scope", scopes=["*:manage"]
    )

    api_client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    response = api_client.post("/api/policies/", {"name": "strict"}, format="json")

    assert response.status_code == 201
    assert Policy.objects.filter(name="strict").exists()


POLICY_REQUESTS = [
    # (permission, method, url ("{id}" is the policy's id), body, success status)
    ("policies_app.view_policy", "get", "/api/policies/", None, 200),
    ("policies_app.view_policy", "get", "/api/policies/{id}/", None, 200),
    ("policies_app.add_policy", "post", "/api/policies/", {"name": "new"}, 201),
    ("policies_app.change_policy", "patch", "/api/policies/{id}/", {"description": "x"}, 200),
    (
        "policies_app.change_policy",
        "put",
        "/api/policies/{id}/",
        {"name": "renamed", "description": "x"},
        200,
    ),
    ("policies_app.delete_policy", "delete", "/api/policies/{id}/", None, 204),
]


@pytest.mark.parametrize(("perm", "method", "url", "body", "ok"), POLICY_REQUESTS)
def test_request_without_its_permission_is_forbidden(
    api_client, make_user, perm, method, url, body, ok
):
    policy = PolicyFactory(name="base", description="original")
    api_client.force_authenticate(make_user(*[p for p in ALL_POLICY_PERMS if p != perm]))

    response = getattr(api_client, method)(url.format(id=policy.pk), body, format="json")

    assert response.status_code == 403
    assert list(Policy.objects.values_list("name", "description")) == [("base", "original")]


@pytest.mark.parametrize(("perm", "method", "url", "body", "ok"), POLICY_REQUESTS)
def test_request_with_its_permission_succeeds(api_client, make_user, perm, method, url, body, ok):
    policy = PolicyFactory(name="base")
    api_client.force_authenticate(make_user(perm))

    response = getattr(api_client, method)(url.format(id=policy.pk), body, format="json")

    assert response.status_code == ok


# --- CRUD --------------------------------------------------------------------------------------


def test_create_policy(admin_client):
    response = admin_client.post(
        "/api/policies/", {"name": "strict", "description": "No GPL"}, format="json"
    )

    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "strict"
    assert body["description"] == "No GPL"
    assert body["id"] == Policy.objects.get(name="strict").pk
    assert body["created_at"]


def test_create_policy_without_name_is_rejected_on_name(admin_client):
    response = admin_client.post("/api/policies/", {"description": "x"}, format="json")

    assert response.status_code == 400
    assert "name" in response.json()


def test_create_policy_with_duplicate_name_is_rejected(admin_client):
    PolicyFactory(name="strict")

    response = admin_client.post("/api/policies/", {"name": "strict"}, format="json")

    assert response.status_code == 400
    assert "name" in response.json()
    assert Policy.objects.filter(name="strict").count() == 1


def test_list_policies_sorted_by_name(admin_client):
    PolicyFactory(name="b")
    PolicyFactory(name="a")

    response = admin_client.get("/api/policies/")

    assert response.status_code == 200
    assert [p["name"] for p in response.json()["results"]] == ["a", "b"]


def test_retrieve_policy(admin_client):
    policy = PolicyFactory(name="strict", description="No GPL")

    response = admin_client.get(f"/api/policies/{policy.pk}/")

    assert response.status_code == 200
    assert response.json()["name"] == "strict"
    assert response.json()["description"] == "No GPL"


def test_retrieve_unknown_policy_is_404(admin_client):
    assert admin_client.get("/api/policies/999999/").status_code == 404


def test_patch_policy(admin_client):
    policy = PolicyFactory(name="strict")

    response = admin_client.patch(
        f"/api/policies/{policy.pk}/", {"description": "updated"}, format="json"
    )

    assert response.status_code == 200
    policy.refresh_from_db()
    assert policy.description == "updated"


def test_put_policy_replaces_it(admin_client):
    policy = PolicyFactory(name="strict", description="old")

    response = admin_client.put(
        f"/api/policies/{policy.pk}/", {"name": "lenient", "description": "new"}, format="json"
    )

    assert response.status_code == 200
    policy.refresh_from_db()
    assert (policy.name, policy.description) == ("lenient", "new")


def test_rename_policy_to_existing_name_is_rejected(admin_client):
    PolicyFactory(name="strict")
    policy = PolicyFactory(name="lenient")

    response = admin_client.patch(f"/api/policies/{policy.pk}/", {"name": "strict"}, format="json")

    assert response.status_code == 400
    assert "name" in response.json()
    policy.refresh_from_db()
    assert policy.name == "lenient"


def test_patch_policy_keeping_its_own_name_is_accepted(admin_client):
    policy = PolicyFactory(name="strict")

    response = admin_client.patch(
        f"/api/policies/{policy.pk}/", {"name": "strict", "description": "same"}, format="json"
    )

    assert response.status_code == 200


def test_delete_unused_policy(admin_client):
    policy = PolicyFactory()

    response = admin_client.delete(f"/api/policies/{policy.pk}/")

    assert response.status_code == 204
    assert not Policy.objects.exists()


def test_delete_policy_used_by_a_channel_is_a_conflict(admin_client):
    policy = PolicyFactory(name="strict")
    ChannelFactory(name="main", policy=policy)

    response = admin_client.delete(f"/api/policies/{policy.pk}/")

    assert response.status_code == 409
    detail = response.json()["detail"]
    assert "'strict'" in detail
    assert "remove it" in detail
    assert Policy.objects.filter(pk=policy.pk).exists()


def test_delete_policy_used_by_a_mirror_is_a_conflict(admin_client):
    policy = PolicyFactory(name="strict")
    MirrorFactory(channel=ChannelFactory(name="main"), policy=policy)

    response = admin_client.delete(f"/api/policies/{policy.pk}/")

    assert response.status_code == 409
    assert "'strict'" in response.json()["detail"]
    assert Policy.objects.filter(pk=policy.pk).exists()


def test_delete_unknown_policy_is_404(admin_client):
    assert admin_client.delete("/api/policies/999999/").status_code == 404


# --- Rules -------------------------------------------------------------------------------------

RULES = {
    "name": "strict",
    "platforms_include": ["linux-64", "noarch"],
    "platforms_exclude": [],
    "licenses_include": ["MIT", "BSD"],
    "licenses_exclude": ["GPL"],
    "unknown_license": "block",
    "cve_score": "7.0",
    "cve_score_comparator": "<=",
    "cve_statuses_excluded": ["active"],
    "allow_specs": ["numpy >=1.26,<2", "python 3.12.*"],
    "block_specs": ["pytorch[build=*cuda*]"],
    "include_dependencies": True,
    "created_after": "2024-01-01",
    "created_before": "2025-01-01",
    "min_age_days": 7,
    "exclusions": ["openssl 3.0.*"],
    "legacy_packages": True,
}


def test_create_policy_with_every_rule(admin_client):
    response = admin_client.post("/api/policies/", RULES, format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert {key: body[key] for key in RULES} == RULES
    policy = Policy.objects.get(name="strict")
    assert policy.allow_specs == ["numpy >=1.26,<2", "python 3.12.*"]
    assert policy.has_dependency_report


def test_new_policy_has_empty_rules(admin_client):
    body = admin_client.post("/api/policies/", {"name": "open"}, format="json").json()

    assert body["allow_specs"] == [] and body["platforms_include"] == []
    assert (body["unknown_license"], body["cve_score"], body["cve_score_comparator"]) == (
        "allow",
        None,
        "<",
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "allow_specs",
            ["numpy", "numpy >=>1"],
            "Not conda MatchSpecs (e.g. 'numpy >=1.26'): 'numpy >=>1'",
        ),
        ("block_specs", ["[[["], "Not conda MatchSpecs (e.g. 'numpy >=1.26'): '[[['"),
        ("exclusions", [">=<"], "Not conda MatchSpecs (e.g. 'numpy >=1.26'): '>=<'"),
        ("platforms_include", ["linux-64", "beos-64"], "Unknown platform(s): beos-64."),
        ("platforms_exclude", ["win-128"], "Unknown platform(s): win-128."),
        ("licenses_include", ["Not a license!"], "Unknown license(s): Not a license!"),
        ("cve_score", -1, "greater than or equal to 0"),
        ("cve_score", 10.5, "less than or equal to 10"),
        ("cve_score", "high", "A valid number is required."),
        ("cve_score_comparator", "=<", '"=<" is not a valid choice.'),
        ("cve_statuses_excluded", ["fixed"], "CVE statuses are: reported, active"),
        ("unknown_license", "maybe", '"maybe" is not a valid choice.'),
        ("allow_specs", "numpy", 'Expected a list of items but got type "str".'),
        ("min_age_days", -3, "greater than or equal to 0"),
    ],
)
def test_bad_rule_is_rejected_naming_the_field_and_the_problem(admin_client, field, value, message):
    response = admin_client.post("/api/policies/", {"name": "bad", field: value}, format="json")

    assert response.status_code == 400
    body = response.json()
    assert list(body) == [field]
    assert message in " ".join(body[field])
    assert not Policy.objects.exists()


def test_platform_both_included_and_excluded_is_rejected(admin_client):
    body = {"name": "bad", "platforms_include": ["noarch"], "platforms_exclude": ["noarch"]}

    response = admin_client.post("/api/policies/", body, format="json")

    assert response.status_code == 400
    assert response.json() == {"platforms_exclude": ["Both included and excluded: noarch."]}


def test_dates_in_the_wrong_order_are_rejected(admin_client):
    policy = PolicyFactory(created_after="2024-06-01")

    response = admin_client.patch(
        f"/api/policies/{policy.pk}/", {"created_before": "2024-01-01"}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"created_before": ["Must not be before 'created after'."]}


def test_patch_one_rule_keeps_the_others(admin_client):
    policy = PolicyFactory(allow_specs=["numpy"], licenses_exclude=["GPL"])

    response = admin_client.patch(
        f"/api/policies/{policy.pk}/", {"allow_specs": ["scipy >=1.11"]}, format="json"
    )

    assert response.status_code == 200
    policy.refresh_from_db()
    assert policy.allow_specs == ["scipy >=1.11"]
    assert policy.licenses_exclude == ["GPL"]


# --- Vulnerabilities (read-only) ---------------------------------------------------------------


@pytest.fixture
def advisories():
    from policies_app.models import Vulnerability

    return [
        Vulnerability.objects.create(
            osv_id="GHSA-aaaa",
            aliases=["CVE-2023-0286"],
            cvss_score="7.4",
            status="active",
            affected=[{"ecosystem": "conda", "name": "openssl", "versions": ["3.0.7"]}],
        ),
        Vulnerability.objects.create(
            osv_id="PYSEC-2022-1",
            aliases=["CVE-2022-42969"],
            status="disputed",
            affected=[{"ecosystem": "PyPI", "name": "py"}],
        ),
    ]


@pytest.fixture
def vuln_client(api_client, make_user):
    api_client.force_authenticate(make_user("policies_app.view_vulnerability"))
    return api_client


def _vuln_ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [v["osv_id"] for v in response.json()["results"]]


def test_vulnerabilities_list_and_filters(vuln_client, advisories):
    assert _vuln_ids(vuln_client.get("/api/vulnerabilities/")) == ["GHSA-aaaa", "PYSEC-2022-1"]
    assert _vuln_ids(vuln_client.get("/api/vulnerabilities/", {"status": "disputed"})) == [
        "PYSEC-2022-1"
    ]
    assert _vuln_ids(vuln_client.get("/api/vulnerabilities/", {"package": "openssl"})) == [
        "GHSA-aaaa"
    ]
    assert _vuln_ids(vuln_client.get("/api/vulnerabilities/", {"search": "cve-2022"})) == [
        "PYSEC-2022-1"
    ]


def test_vulnerability_detail(vuln_client, advisories):
    response = vuln_client.get(f"/api/vulnerabilities/{advisories[0].pk}/")

    assert response.status_code == 200
    body = response.json()
    assert body["osv_id"] == "GHSA-aaaa"
    assert body["aliases"] == ["CVE-2023-0286"]
    assert body["cvss_score"] == "7.4"
    assert body["affected"][0]["name"] == "openssl"


def test_vulnerabilities_filter_by_unknown_status_is_rejected(vuln_client):
    response = vuln_client.get("/api/vulnerabilities/", {"status": "fixed"})

    assert response.status_code == 400
    assert "status" in response.json()


def test_vulnerabilities_are_read_only(api_client, make_user, advisories):
    perms = ["add", "change", "delete", "view"]
    api_client.force_authenticate(make_user(*[f"policies_app.{p}_vulnerability" for p in perms]))
    url = f"/api/vulnerabilities/{advisories[0].pk}/"

    assert (
        api_client.post("/api/vulnerabilities/", {"osv_id": "x"}, format="json").status_code == 405
    )
    assert api_client.patch(url, {"status": "cleared"}, format="json").status_code == 405
    assert api_client.delete(url).status_code == 405


def test_vulnerabilities_need_view_permission(api_client, make_user, advisories):
    api_client.force_authenticate(make_user("policies_app.view_policy"))

    assert api_client.get("/api/vulnerabilities/").status_code == 403
    assert api_client.get(f"/api/vulnerabilities/{advisories[0].pk}/").status_code == 403
