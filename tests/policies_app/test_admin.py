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
