"""Every admin add and change form: help texts shown as written, and a Cancel link that leads
back to where the user came from (never to a page they may not open)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.admin.helpers import AdminReadonlyField
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeData

from mirrors_app.models import HELP
from policies_app.models import Waiver
from psm.models import ApiToken
from psm.tokens import token_issue
from tests.factories import ChannelFactory, MirrorFactory, PolicyFactory, SyncRunFactory, grant

pytestmark = pytest.mark.django_db


@pytest.fixture
def rows(admin_user):
    """A row of each of PSM's models, for their change pages."""
    channel = ChannelFactory(name="forge")
    policy = PolicyFactory()
    SyncRunFactory(mirror=MirrorFactory(channel=channel))
    grant(channel, admin_user)
    Waiver.objects.create(
        policy=policy,
        spec="numpy",
        rule="CVE-2024-1",
        reason="ok",
        expires_at=timezone.now() + timedelta(days=1),
    )
    token_issue(token=ApiToken(user=admin_user, name="ci"))


def _form_pages(client) -> list[str]:
    """The add page and a change page of every registered admin, as far as they exist."""
    pages = []
    for model, model_admin in admin.site._registry.items():
        info = (model._meta.app_label, model._meta.model_name)
        pages.append(reverse("admin:{}_{}_add".format(*info)))
        first = model_admin.model._default_manager.order_by("pk").first()
        if first is not None:
            pages.append(reverse("admin:{}_{}_change".format(*info), args=[first.pk]))
    return pages


def _help_texts(response) -> list[str]:
    """The plain (not marked safe) help texts of the page's form and read-only fields."""
    found = []
    for fieldset in response.context["adminform"]:
        for line in fieldset:
            for field in line:
                text = (
                    field.field.get("help_text")
                    if isinstance(field, AdminReadonlyField)
                    else field.field.help_text
                )
                text = str(text or "")  # a lazy text is safe or not once evaluated
                if text and not isinstance(text, SafeData):
                    found.append(text)
    return found


def test_every_admin_form_shows_its_help_texts_as_written(admin_client, rows):
    checked = 0
    for page in _form_pages(admin_client):
        response = admin_client.get(page)
        if response.status_code != 200 or "adminform" not in (response.context or {}):
            continue  # no such form for this model (e.g. no add page for runs)
        html = response.content.decode()
        for text in _help_texts(response):
            assert escape(text) in html, f"{page}: help text {text!r} lost in rendering"
            checked += 1
    assert checked > 50  # the forms above were really read


def test_placeholders_in_the_source_url_help_are_shown(admin_client):
    html = admin_client.get(reverse("admin:mirrors_app_mirror_add")).content.decode()

    assert "https://&lt;host&gt;/api/repo/&lt;channel&gt;" in html
    assert escape(HELP["source_url"]) in html
    assert "https:///api/repo/." not in html


# --- Cancel -------------------------------------------------------------------------------


FORMS = [
    "admin:channels_app_channel_add",
    "admin:mirrors_app_mirror_add",
    "admin:policies_app_policy_add",
    "admin:policies_app_waiver_add",
    "admin:psm_apitoken_add",
]


def _cancel(html: str) -> str:
    start = html.index('class="closelink cancel-link"')
    href = html.rindex('href="', 0, start) + len('href="')
    return html[href : html.index('"', href)]


@pytest.mark.parametrize("name", FORMS)
def test_add_forms_cancel_to_their_list(admin_client, name):
    changelist = reverse(name.replace("_add", "_changelist"))

    html = admin_client.get(reverse(name)).content.decode()

    assert _cancel(html) == changelist


def test_change_forms_have_cancel(admin_client, rows):
    for page in [p for p in _form_pages(admin_client) if p.endswith("/change/")]:
        response = admin_client.get(page)
        html = response.content.decode()
        if 'name="_save"' in html:
            assert "Cancel</a>" in html, page


def test_cancel_goes_back_to_the_referring_page(admin_client):
    channel = ChannelFactory()
    came_from = reverse("admin:channels_app_channel_change", args=[channel.pk])
    page = reverse("admin:mirrors_app_mirror_add") + f"?channel={channel.pk}"

    html = admin_client.get(page, HTTP_REFERER=f"http://testserver{came_from}").content.decode()

    assert _cancel(html) == f"http://testserver{came_from}"


def test_cancel_survives_a_form_with_errors(admin_client):
    came_from = "/admin/channels_app/channel/?q=x"

    response = admin_client.post(
        reverse("admin:mirrors_app_mirror_add"),
        {"name": "", "_cancel_to": came_from},
        HTTP_REFERER="http://testserver/admin/mirrors_app/mirror/add/",
    )

    assert response.status_code == 200  # the form again, with its errors
    assert _cancel(response.content.decode()) == came_from


def test_cancel_never_leaves_the_site(admin_client):
    html = admin_client.get(
        reverse("admin:policies_app_policy_add"), HTTP_REFERER="https://evil.example/"
    ).content.decode()

    assert _cancel(html) == reverse("admin:policies_app_policy_changelist")


def test_cancel_without_the_list_permission_goes_to_the_index(client, make_user):
    # Mirrors without "view all mirrors": the All Mirrors list would be a 403.
    ChannelFactory()
    client.force_login(make_user("mirrors_app.add_mirror", "mirrors_app.view_mirror"))

    html = client.get(reverse("admin:mirrors_app_mirror_add")).content.decode()

    assert _cancel(html) == reverse("admin:index")
