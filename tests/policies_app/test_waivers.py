"""Waivers in the admin (inline on the policy, and their own list) and the API: created by the
requesting user, audited, and each change queues a re-decision of the policy's mirrors.

No broker runs: the on_commit callbacks that queue `policies.enforce` run against a recording
`enforce.delay` (the queue boundary), inside each test's `django_capture_on_commit_callbacks`.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from policies_app import tasks
from policies_app.models import Waiver
from psm.models import AuditEvent
from tests.factories import PolicyFactory

pytestmark = pytest.mark.django_db

WAIVER_PERMS = (
    "policies_app.view_waiver",
    "policies_app.add_waiver",
    "policies_app.change_waiver",
    "policies_app.delete_waiver",
)
POLICY_PERMS = ("policies_app.view_policy", "policies_app.change_policy")
LIST = "/api/waivers/"


def later(days: int = 30) -> str:
    return (timezone.now() + timedelta(days=days)).isoformat()


@pytest.fixture
def sent(monkeypatch) -> list[dict]:
    """The enforcement tasks queued, by their keyword arguments."""
    queued: list[dict] = []
    monkeypatch.setattr(tasks.enforce, "delay", lambda **kwargs: queued.append(kwargs))
    return queued


@pytest.fixture
def policy():
    return PolicyFactory(name="py", package_type="pypi")


@pytest.fixture
def api(api_client, make_user):
    api_client.force_authenticate(make_user(*WAIVER_PERMS, username="wendy"))
    return api_client


def make_waiver(policy, **fields) -> Waiver:
    values = {
        "spec": "requests <2.32",
        "rule": "GHSA-9wx4-h78v-vm56",
        "reason": "Not reachable: we never send proxies.",
        "expires_at": timezone.now() + timedelta(days=30),
    } | fields
    return Waiver.objects.create(policy=policy, **values)


def body(policy, **fields) -> dict:
    return {
        "policy": policy.pk,
        "spec": "requests <2.32",
        "rule": "GHSA-9wx4-h78v-vm56",
        "reason": "Not reachable: we never send proxies.",
        "expires_at": later(),
    } | fields


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action))


# --- API ---------------------------------------------------------------------------------------


def test_api_creates_a_waiver_by_the_requesting_user_audited_and_enforced(
    api, policy, sent, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(LIST, body(policy, created_by="mallory"), format="json")

    assert response.status_code == 201, response.json()
    answer = response.json()
    assert (answer["created_by"], answer["active"], answer["policy"]) == ("wendy", True, policy.pk)
    waiver = Waiver.objects.get()
    assert (waiver.created_by.username, waiver.created_by_name) == ("wendy", "wendy")
    [event] = events("waiver.create")
    assert (event.actor_name, event.target_type, event.target_name) == (
        "wendy",
        "waiver",
        "requests <2.32 / GHSA-9wx4-h78v-vm56",
    )
    assert event.details | {"expires_at": None} == {
        "policy": "py",
        "spec": "requests <2.32",
        "rule": "GHSA-9wx4-h78v-vm56",
        "reason": "Not reachable: we never send proxies.",
        "expires_at": None,
        "fields": [],
    }
    assert event.details["expires_at"] == waiver.expires_at.isoformat()
    assert sent == [
        {
            "trigger": "waiver created: requests <2.32 / GHSA-9wx4-h78v-vm56 (policy py)",
            "policy_id": policy.pk,
            "mirror_ids": None,
        }
    ]


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"expires_at": None}, "expires_at", "This field may not be null."),
        ({"expires_at": "2020-01-01T00:00:00Z"}, "expires_at", "Must be in the future."),
        ({"spec": "requests >=>2"}, "spec", "Not project names with PEP 440 version specifiers"),
        ({"rule": "just because"}, "rule", "is neither an advisory id"),
        ({"reason": ""}, "reason", "This field may not be blank."),
        ({"policy": 0}, "policy", "object does not exist"),
    ],
)
def test_api_refuses_a_bad_waiver_naming_the_field(api, policy, sent, change, field, message):
    response = api.post(LIST, body(policy) | change, format="json")

    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert message in " ".join(response.json()[field])
    assert not Waiver.objects.exists()
    assert not events("waiver.create")


def test_api_needs_an_expiry(api, policy):
    data = body(policy)
    del data["expires_at"]

    response = api.post(LIST, data, format="json")

    assert response.status_code == 400
    assert response.json() == {"expires_at": ["This field is required."]}


def test_api_lists_waivers_by_policy_and_by_status(api, policy):
    other = PolicyFactory(name="other", package_type="pypi")
    active = make_waiver(policy)
    expired = make_waiver(policy, spec="urllib3", expires_at=timezone.now() - timedelta(days=1))
    make_waiver(other, spec="idna")

    def ids(**params) -> list[int]:
        response = api.get(LIST, params)
        assert response.status_code == 200
        return sorted(w["id"] for w in response.json()["results"])

    assert len(ids()) == 3
    assert ids(policy=policy.pk) == sorted([active.pk, expired.pk])
    assert ids(policy=policy.pk, active="true") == [active.pk]
    assert ids(policy=policy.pk, active="false") == [expired.pk]
    assert api.get(LIST, {"policy": "py"}).json() == {"policy": ["Give a policy id."]}
    assert api.get(LIST, {"active": "yes"}).status_code == 400


def test_api_changes_a_waiver_recording_what_changed(
    api, policy, sent, django_capture_on_commit_callbacks
):
    waiver = make_waiver(policy)

    with django_capture_on_commit_callbacks(execute=True):
        response = api.patch(f"{LIST}{waiver.pk}/", {"reason": "Patched locally."}, format="json")

    assert response.status_code == 200
    waiver.refresh_from_db()
    assert waiver.reason == "Patched locally."
    [event] = events("waiver.change")
    assert event.details["fields"] == ["reason"]
    assert event.details["reason"] == "Patched locally."
    assert [s["policy_id"] for s in sent] == [policy.pk]


def test_api_may_end_a_waiver_early_but_a_change_of_nothing_records_nothing(
    api, policy, sent, django_capture_on_commit_callbacks
):
    waiver = make_waiver(policy)
    past = (timezone.now() - timedelta(minutes=1)).isoformat()

    with django_capture_on_commit_callbacks(execute=True):
        ended = api.patch(f"{LIST}{waiver.pk}/", {"expires_at": past}, format="json")
        same = api.patch(f"{LIST}{waiver.pk}/", {"reason": waiver.reason}, format="json")

    assert (ended.status_code, same.status_code) == (200, 200)
    assert ended.json()["active"] is False
    assert [e.details["fields"] for e in events("waiver.change")] == [["expires_at"]]
    assert len(sent) == 1


def test_api_deletes_a_waiver_audited_and_enforced(
    api, policy, sent, django_capture_on_commit_callbacks
):
    waiver = make_waiver(policy)

    with django_capture_on_commit_callbacks(execute=True):
        response = api.delete(f"{LIST}{waiver.pk}/")

    assert response.status_code == 204
    assert not Waiver.objects.exists()
    [event] = events("waiver.delete")
    assert (event.details["spec"], event.details["rule"]) == ("requests <2.32", waiver.rule)
    assert sent == [
        {
            "trigger": "waiver deleted: requests <2.32 / GHSA-9wx4-h78v-vm56 (policy py)",
            "policy_id": policy.pk,
            "mirror_ids": None,
        }
    ]


def test_moving_a_waiver_to_another_policy_decides_both_again(
    api, policy, sent, django_capture_on_commit_callbacks
):
    waiver = make_waiver(policy)
    other = PolicyFactory(name="other", package_type="pypi")

    with django_capture_on_commit_callbacks(execute=True):
        response = api.patch(f"{LIST}{waiver.pk}/", {"policy": other.pk}, format="json")

    assert response.status_code == 200
    assert sorted(s["policy_id"] for s in sent) == sorted([policy.pk, other.pk])


@pytest.mark.parametrize(
    ("perms", "method", "ok"),
    [
        (("policies_app.view_waiver",), "get", 200),
        (("policies_app.view_waiver",), "post", 403),
        (("policies_app.view_waiver", "policies_app.add_waiver"), "post", 201),
        (("policies_app.view_policy", "policies_app.change_policy"), "get", 403),
    ],
)
def test_api_needs_the_waiver_permissions(api_client, make_user, policy, perms, method, ok):
    api_client.force_authenticate(make_user(*perms))

    if method == "get":
        response = api_client.get(LIST)
    else:
        response = api_client.post(LIST, body(policy), format="json")

    assert response.status_code == ok


def test_policy_engine_groups_hold_the_waiver_permissions_like_the_policy_ones(
    api_client, make_user, policy
):
    reader, manager = make_user(), make_user()
    reader.groups.add(Group.objects.get(name="Policy engine: Read"))
    manager.groups.add(Group.objects.get(name="Policy engine: Manage"))

    api_client.force_authenticate(reader)
    assert api_client.get(LIST).status_code == 200
    assert api_client.post(LIST, body(policy), format="json").status_code == 403
    api_client.force_authenticate(manager)
    assert api_client.post(LIST, body(policy), format="json").status_code == 201


def test_api_refuses_anonymous_requests(api_client, policy):
    make_waiver(policy)

    assert api_client.get(LIST).status_code in (401, 403)


# --- Admin -------------------------------------------------------------------------------------


def inline_data(policy, *rows: dict, initial: int = 0) -> dict:
    """The policy's change form with waiver inline rows (each row: field values)."""
    data = {
        "name": policy.name,
        "package_type": policy.package_type,
        "waivers-TOTAL_FORMS": str(len(rows)),
        "waivers-INITIAL_FORMS": str(initial),
        "waivers-MIN_NUM_FORMS": "0",
        "waivers-MAX_NUM_FORMS": "1000",
    }
    for i, row in enumerate(rows):
        data |= {f"waivers-{i}-{k}": v for k, v in row.items()}
        data[f"waivers-{i}-policy"] = policy.pk
    return data


def split(moment) -> dict:
    local = timezone.localtime(moment)
    return {"expires_at_0": local.strftime("%Y-%m-%d"), "expires_at_1": local.strftime("%H:%M:%S")}


@pytest.fixture
def policy_manager(client, make_user):
    user = make_user(*POLICY_PERMS, *WAIVER_PERMS, username="paula")
    client.force_login(user)
    return user


def test_policy_page_adds_a_waiver_inline_through_the_service(
    client, policy_manager, policy, sent, django_capture_on_commit_callbacks
):
    url = reverse("admin:policies_app_policy_change", args=[policy.pk])
    row = {"spec": "urllib3 <2", "rule": "cve-score", "reason": "Vendored."}
    row |= split(timezone.now() + timedelta(days=7))

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, inline_data(policy, row))

    assert response.status_code == 302, response.context["inline_admin_formsets"][0].formset.errors
    waiver = Waiver.objects.get()
    assert (waiver.spec, waiver.rule, waiver.created_by_name) == (
        "urllib3 <2",
        "cve-score",
        "paula",
    )
    assert [e.actor_name for e in events("waiver.create")] == ["paula"]
    assert [s["policy_id"] for s in sent] == [policy.pk]


def test_policy_page_shows_waiver_errors_in_the_inline_row(client, policy_manager, policy):
    url = reverse("admin:policies_app_policy_change", args=[policy.pk])
    row = {"spec": "urllib3 <2", "rule": "GHSA-xxxx", "reason": "Old."}
    row |= split(timezone.now() - timedelta(days=1))

    response = client.post(url, inline_data(policy, row))

    assert response.status_code == 200
    [errors] = response.context["inline_admin_formsets"][0].formset.errors
    assert errors["expires_at"] == ["Must be in the future."]
    assert not Waiver.objects.exists()


def test_policy_page_deletes_a_waiver_inline_audited(
    client, policy_manager, policy, sent, django_capture_on_commit_callbacks
):
    waiver = make_waiver(policy)
    url = reverse("admin:policies_app_policy_change", args=[policy.pk])
    row = {"id": waiver.pk, "spec": waiver.spec, "rule": waiver.rule, "reason": waiver.reason}
    row |= split(waiver.expires_at) | {"DELETE": "on"}

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, inline_data(policy, row, initial=1))

    assert response.status_code == 302
    assert not Waiver.objects.exists()
    assert [e.actor_name for e in events("waiver.delete")] == ["paula"]
    assert len(sent) == 1


def test_policy_page_shows_its_waivers_and_who_created_them(client, policy_manager, policy):
    make_waiver(policy, created_by_name="wendy")

    html = client.get(reverse("admin:policies_app_policy_change", args=[policy.pk])).content
    html = html.decode()

    assert "GHSA-9wx4-h78v-vm56" in html and "wendy" in html


WAIVERS = reverse("admin:policies_app_waiver_changelist")


def test_waiver_list_filters_active_and_expired_and_searches(client, policy_manager, policy):
    make_waiver(policy, spec="requests <2.32")
    make_waiver(
        policy,
        spec="urllib3",
        reason="Legacy proxy",
        expires_at=timezone.now() - timedelta(hours=1),
    )

    def specs(**params) -> list[str]:
        response = client.get(WAIVERS, params)
        assert response.status_code == 200
        return sorted(w.spec for w in response.context["cl"].result_list)

    assert specs() == ["requests <2.32", "urllib3"]
    assert specs(status="active") == ["requests <2.32"]
    assert specs(status="expired") == ["urllib3"]
    assert specs(q="proxy") == ["urllib3"]
    assert specs(q="GHSA-9wx4") == ["requests <2.32", "urllib3"]


def test_waiver_add_page_creates_through_the_service(
    client, policy_manager, policy, sent, django_capture_on_commit_callbacks
):
    data = {"policy": policy.pk, "spec": "idna", "rule": "PYSEC-2024-60", "reason": "Internal."}
    data |= split(timezone.now() + timedelta(days=2))

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("admin:policies_app_waiver_add"), data)

    assert response.status_code == 302
    assert Waiver.objects.get().created_by_name == "paula"
    assert len(events("waiver.create")) == 1
    assert len(sent) == 1


def test_waiver_bulk_delete_goes_through_the_service(
    client, policy_manager, policy, sent, django_capture_on_commit_callbacks
):
    waivers = [make_waiver(policy, spec=s) for s in ("idna", "certifi")]

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            WAIVERS,
            {
                "action": "delete_selected",
                "_selected_action": [w.pk for w in waivers],
                "post": "yes",
            },
        )

    assert response.status_code == 302
    assert not Waiver.objects.exists()
    assert sorted(e.details["spec"] for e in events("waiver.delete")) == ["certifi", "idna"]
    assert len(sent) == 2
