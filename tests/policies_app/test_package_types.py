"""Policies of every package type in the admin and the API: the type, mode and frozen-channel
fields; which rules apply to which type (help texts, refusals next to the field); a policy
never judges channels or mirrors of another type."""

from __future__ import annotations

import pytest
from django.urls import reverse

from channels_app.models import Channel
from mirrors_app.models import Mirror
from policies_app.models import Policy
from tests.factories import ChannelFactory, MirrorFactory, PolicyFactory

pytestmark = pytest.mark.django_db

ADD = reverse("admin:policies_app_policy_add")
POLICY_PERMS = (
    "policies_app.view_policy",
    "policies_app.add_policy",
    "policies_app.change_policy",
    "policies_app.delete_policy",
)


def change_url(policy: Policy) -> str:
    return reverse("admin:policies_app_policy_change", args=[policy.pk])


@pytest.fixture
def policy_admin(make_user, client):
    client.force_login(make_user(*POLICY_PERMS))


@pytest.fixture
def api(api_client, make_user):
    api_client.force_authenticate(make_user(*POLICY_PERMS))
    return api_client


def form_errors(response) -> dict:
    return response.context["adminform"].form.errors


# --- Admin -------------------------------------------------------------------------------------


def test_add_page_says_which_rules_apply_to_which_package_type(client, policy_admin):
    html = client.get(ADD).content.decode()

    assert 'name="package_type"' in html and 'name="mode"' in html
    assert 'name="enforce_on_frozen"' in html
    assert "For conda policies only. Not for standard Python" in html  # platforms, legacy
    assert "For conda and standard R policies only. Not for standard Python (a Python " in html


def test_admin_creates_a_python_dry_run_policy_with_pep440_rules(client, policy_admin):
    response = client.post(
        ADD,
        {
            "name": "py",
            "package_type": "pypi",
            "mode": "dry_run",
            "enforce_on_frozen": "on",
            "block_specs": "requests <2.32\nurllib3 ==1.26.0",
            "min_age_days": "3",
        },
    )

    assert response.status_code == 302, form_errors(response)
    policy = Policy.objects.get()
    assert (policy.package_type, policy.mode, policy.enforce_on_frozen) == ("pypi", "dry_run", True)
    assert policy.block_specs == ["requests <2.32", "urllib3 ==1.26.0"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("licenses_include", "MIT", "Not for standard Python packages: a Python simple index"),
        ("include_dependencies", "on", "gives no dependencies"),
        ("allow_specs", "numpy >=1.26,<2[build=*]", "Not project names with PEP 440"),
    ],
)
def test_admin_refuses_rules_a_python_policy_cannot_judge_next_to_the_field(
    client, policy_admin, field, value, message
):
    response = client.post(ADD, {"name": "py", "package_type": "pypi", field: value})

    assert response.status_code == 200
    errors = form_errors(response)
    assert list(errors) == [field]
    assert message in " ".join(errors[field])
    assert not Policy.objects.exists()


def test_admin_change_without_the_type_fields_keeps_them(client, policy_admin):
    policy = PolicyFactory(package_type="cran", mode="dry_run")

    response = client.post(change_url(policy), {"name": policy.name, "description": "new"})

    assert response.status_code == 302, form_errors(response)
    policy.refresh_from_db()
    assert (policy.package_type, policy.mode, policy.description) == ("cran", "dry_run", "new")


def test_admin_refuses_changing_the_type_of_a_policy_in_use(client, policy_admin):
    policy = PolicyFactory(name="strict")
    ChannelFactory(name="forge", kind="conda", policy=policy)

    response = client.post(
        change_url(policy), {"name": "strict", "package_type": "pypi", "waivers-TOTAL_FORMS": "0"}
    )

    assert response.status_code == 200
    errors = form_errors(response)
    assert "channel 'forge' of another package type; detach it first" in errors["package_type"][0]
    policy.refresh_from_db()
    assert policy.package_type == "conda"


def test_channel_admin_refuses_a_policy_of_another_type_on_the_policy_field(client, make_user):
    client.force_login(make_user("channels_app.add_channel", "channels_app.view_channel"))
    policy = PolicyFactory(name="py", package_type="pypi")

    response = client.post(
        reverse("admin:channels_app_channel_add"),
        {"name": "forge", "kind": "conda", "parent": "", "policy": policy.pk},
    )

    assert response.status_code == 200
    assert form_errors(response)["policy"] == [
        "Policy 'py' judges standard Python packages; this channel holds conda packages."
    ]
    assert not Channel.objects.exists()


def test_mirror_admin_refuses_a_policy_of_another_type_on_the_policy_field(client, make_user):
    client.force_login(
        make_user("mirrors_app.add_mirror", "mirrors_app.view_mirror", "channels_app.view_channel")
    )
    channel = ChannelFactory(kind="cran")
    policy = PolicyFactory(name="conda-only")

    response = client.post(
        reverse("admin:mirrors_app_mirror_add"),
        {
            "channel": channel.pk,
            "name": "cran",
            "mode": "passive",
            "source_url": "http://127.0.0.1:9/cran",
            "kind": "cran",
            "cron": "0 0 1 * *",
            "policy": policy.pk,
            "options": "{}",
            "source_confirmed": "on",
        },
    )

    assert response.status_code == 200
    assert "judges conda packages; this channel holds standard R packages" in " ".join(
        form_errors(response)["policy"]
    )
    assert not Mirror.objects.exists()


# --- API ---------------------------------------------------------------------------------------


def test_api_creates_and_shows_an_r_policy(api):
    response = api.post(
        "/api/policies/",
        {"name": "r", "package_type": "cran", "mode": "dry_run", "block_specs": ["dplyr (< 1.1)"]},
        format="json",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["package_type"], body["mode"], body["enforce_on_frozen"]) == (
        "cran",
        "dry_run",
        False,
    )
    assert Policy.objects.get().block_specs == ["dplyr (< 1.1)"]


def test_api_new_policy_defaults_to_an_enforcing_conda_policy(api):
    body = api.post("/api/policies/", {"name": "p"}, format="json").json()

    assert (body["package_type"], body["mode"], body["enforce_on_frozen"]) == (
        "conda",
        "enforce",
        False,
    )


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"package_type": "npm"}, "package_type", '"npm" is not a valid choice.'),
        ({"mode": "sometimes"}, "mode", '"sometimes" is not a valid choice.'),
        (
            {"package_type": "cran", "platforms_include": ["linux-64"]},
            "platforms_include",
            "Not for standard R packages: platforms are conda's.",
        ),
        (
            {"package_type": "pypi", "legacy_packages": True},
            "legacy_packages",
            "Not for standard Python packages: legacy .tar.bz2 files are conda's.",
        ),
        (
            {"package_type": "cran", "block_specs": ["dplyr (~ 1)"]},
            "block_specs",
            "Not R package names with version constraints (e.g. 'dplyr (>= 1.1)')",
        ),
    ],
)
def test_api_refuses_rules_of_another_package_type_naming_the_field(api, body, field, message):
    response = api.post("/api/policies/", {"name": "p", **body}, format="json")

    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert message in " ".join(response.json()[field])
    assert not Policy.objects.exists()


def test_api_schema_help_says_which_types_a_rule_applies_to(api):
    response = api.options("/api/policies/")

    fields = response.json()["actions"]["POST"]
    assert "For conda policies only." in fields["platforms_include"]["help_text"]
    assert "For conda and standard R policies only." in fields["licenses_exclude"]["help_text"]
    assert [c["value"] for c in fields["package_type"]["choices"]] == ["conda", "pypi", "cran"]


def test_api_refuses_changing_the_type_of_a_policy_a_mirror_uses(api):
    policy = PolicyFactory()
    MirrorFactory(name="forge", policy=policy)

    response = api.patch(f"/api/policies/{policy.pk}/", {"package_type": "cran"}, format="json")

    assert response.status_code == 400
    assert "mirror 'forge' of another package type" in response.json()["package_type"][0]
    policy.refresh_from_db()
    assert policy.package_type == "conda"


def test_api_changes_the_type_of_an_unused_policy(api):
    policy = PolicyFactory()

    response = api.patch(f"/api/policies/{policy.pk}/", {"package_type": "cran"}, format="json")

    assert response.status_code == 200
    policy.refresh_from_db()
    assert policy.package_type == "cran"


def test_channel_api_refuses_a_policy_of_another_type_on_the_policy_field(api_client, make_user):
    api_client.force_authenticate(
        make_user("channels_app.change_channel", "channels_app.view_channel")
    )
    ChannelFactory(name="pypi", kind="pypi")
    policy = PolicyFactory(name="conda-only")

    response = api_client.patch("/api/channels/pypi/", {"policy": policy.pk}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "policy": [
            "Policy 'conda-only' judges conda packages; this channel holds standard Python "
            "packages."
        ]
    }
    assert Channel.objects.get().policy is None


def test_mirror_api_refuses_a_policy_of_another_type_on_the_policy_field(api_client, make_user):
    api_client.force_authenticate(make_user("mirrors_app.change_mirror", "mirrors_app.view_mirror"))
    mirror = MirrorFactory(channel=ChannelFactory(kind="pypi"))
    policy = PolicyFactory(name="r-only", package_type="cran")

    response = api_client.patch(f"/api/mirrors/{mirror.pk}/", {"policy": policy.pk}, format="json")

    assert response.status_code == 400
    assert "judges standard R packages" in " ".join(response.json()["policy"])
    mirror.refresh_from_db()
    assert mirror.policy is None
