"""Attacks on accounts over real HTTP: privilege escalation through the user and group admins,
and deactivated users trying every way back in (session, PSM tokens, Keycloak bearer tokens,
single sign-on, package routes, token creation). Each attack has a positive control.
"""

from __future__ import annotations

import base64
import uuid
from html.parser import HTMLParser

import pytest
import requests
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import PermissionDenied

from psm.escalation import givable_groups, may_manage_user, may_set_password
from psm.models import ApiToken, OidcIdentity
from psm.tokens import token_create
from tests.factories import ChannelFactory, UserFactory, grant
from tests.fixtures.oidc_provider import sso_login
from tests.psm import conftest as _psm_fixtures

pytestmark = pytest.mark.django_db(transaction=True)
User = get_user_model()
TIMEOUT = 10
# The real OpenID Connect provider of tests/psm.
oidc_provider, oidc = _psm_fixtures.oidc_provider, _psm_fixtures.oidc


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    """Many accounts log in here: a fast hasher keeps the tests short (strength is not tested)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# --- a browser: log in through the admin's form, read and submit admin forms -----------------


class _FormFields(HTMLParser):
    """The fields a browser would submit from each form of a page, by form id."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: dict[str, list[tuple[str, str]]] = {}
        self._form: list | None = None
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self._form = self.forms.setdefault(a.get("id") or f"form{len(self.forms)}", [])
        elif self._form is None or "name" not in a and tag != "option":
            return
        elif tag == "input":
            kind = a.get("type", "text")
            if kind in ("submit", "button", "file", "image", "reset"):
                return
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    self._form.append((a["name"], a.get("value", "on")))
                return
            self._form.append((a["name"], a.get("value", "")))
        elif tag == "select":
            self._select = a["name"]
        elif tag == "option" and self._select and "selected" in a:
            self._form.append((self._select, a.get("value", "")))
        elif tag == "textarea":
            self._textarea = a["name"]
            self._form.append((a["name"], ""))

    def handle_data(self, data):
        if self._textarea and self._form is not None:
            name, value = self._form.pop()
            self._form.append((name, value + data))

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None


class Browser:
    """A requests session on the live server, as a person in a browser."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = requests.Session()

    def get(self, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("allow_redirects", False)
        return self.http.get(self.base + path, timeout=TIMEOUT, **kwargs)

    def post(self, path: str, data, **kwargs) -> requests.Response:
        headers = {"X-CSRFToken": self.http.cookies.get("csrftoken", ""), "Referer": self.base}
        return self.http.post(
            self.base + path, data=data, headers=headers, allow_redirects=False, timeout=TIMEOUT
        )

    def login(self, username: str, password: str = "pw") -> Browser:
        self.get("/admin/login/")
        done = self.post(
            "/admin/login/?next=/admin/",
            {
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": self.http.cookies["csrftoken"],
            },
        )
        assert done.status_code == 302, f"{username} could not log in"
        return self

    def fields(self, path: str, form_id: str) -> list[tuple[str, str]]:
        page = self.get(path)
        assert page.status_code == 200, (path, page.status_code)
        parser = _FormFields()
        parser.feed(page.text)
        return parser.forms[form_id]

    def submit(self, path: str, form_id: str, **changes) -> requests.Response:
        """Submit the form as shown, with some fields replaced (a list for several values;
        a value of None drops the field, as an unticked checkbox)."""
        fields = [(k, v) for k, v in self.fields(path, form_id) if k not in changes]
        for name, value in changes.items():
            if value is None:
                continue
            values = value if isinstance(value, list) else [value]
            fields += [(name, str(v)) for v in values]
        return self.post(path, fields)


def _perm(label: str) -> Permission:
    app_label, codename = label.split(".")
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


def _user(username: str, *groups: str, **extra):
    user = UserFactory(username=username, **extra)
    user.groups.add(*(Group.objects.get(name=name) for name in groups))
    return user


def _change(user) -> str:
    return f"/admin/auth/user/{user.pk}/change/"


def _fresh(user):
    return User.objects.get(pk=user.pk)


# --- privilege escalation through the user and group admins ---------------------------------


@pytest.fixture
def people():
    """A roles manager, the superuser, and users it may and may not manage."""
    secret = ChannelFactory(name="secret", visibility="private")
    return {
        "mallory": _user("mallory", "Roles: Manage", "Channels: Read"),
        "root": _user("root", is_superuser=True),
        "olive": _user("olive", "Channels: Read", is_staff=False),
        "nina": _user("nina", is_staff=False),
        "peter": _user("peter", "Policy engine: Manage"),
        # Holds no permission, but its grant opens a private channel.
        "team": grant(secret, group="team-secret"),
    }


@pytest.fixture
def mallory(live_server, people) -> Browser:
    return Browser(live_server.url).login("mallory")


def test_roles_manager_cannot_make_itself_superuser(mallory, people):
    me = people["mallory"]

    attempt = mallory.post(
        _change(me),
        {
            "username": "mallory",
            "is_active": "on",
            "is_staff": "on",
            "is_superuser": "on",
            "csrfmiddlewaretoken": mallory.http.cookies["csrftoken"],
        },
    )

    assert attempt.status_code == 403
    me = _fresh(me)
    assert not me.is_superuser and me.is_active


def test_roles_manager_cannot_tick_superuser_or_staff_on_anyone(mallory, people):
    olive = people["olive"]
    page = mallory.get(_change(olive))
    assert page.status_code == 200 and 'name="is_superuser"' not in page.text

    done = mallory.submit(_change(olive), "user_form", is_superuser="on", is_staff="on")

    assert done.status_code == 302  # the rest of the form is saved; the flags are not fields
    olive = _fresh(olive)
    assert not olive.is_superuser and not olive.is_staff


def test_roles_manager_cannot_set_a_superusers_password(mallory, people):
    root = people["root"]
    path = f"/admin/auth/user/{root.pk}/password/"

    page = mallory.get(path)
    attempt = mallory.post(
        path,
        {
            "password1": "owned-by-mallory-1",
            "password2": "owned-by-mallory-1",
            "usable_password": "true",
            "csrfmiddlewaretoken": mallory.http.cookies["csrftoken"],
        },
    )

    assert page.status_code == 403 and attempt.status_code == 403
    assert _fresh(root).check_password("pw")


@pytest.mark.parametrize("victim", ["root", "peter"])
def test_roles_manager_cannot_change_deactivate_or_delete_a_more_privileged_user(
    mallory, people, victim
):
    target = people[victim]

    changed = mallory.post(
        _change(target),
        {"username": "renamed", "csrfmiddlewaretoken": mallory.http.cookies["csrftoken"]},
    )
    password = mallory.get(f"/admin/auth/user/{target.pk}/password/")
    deleted = mallory.post(
        f"/admin/auth/user/{target.pk}/delete/",
        {"post": "yes", "csrfmiddlewaretoken": mallory.http.cookies["csrftoken"]},
    )

    assert (changed.status_code, password.status_code, deleted.status_code) == (403, 403, 403)
    target = _fresh(target)
    assert target.username == victim and target.is_active


def test_roles_manager_cannot_give_permissions_it_does_not_hold(mallory, people):
    olive = people["olive"]
    change_policy = _perm("policies_app.change_policy")
    page = mallory.get(_change(olive))
    assert f'value="{change_policy.pk}"' not in page.text  # not even offered

    refused = mallory.submit(_change(olive), "user_form", user_permissions=[change_policy.pk])

    assert refused.status_code == 200 and "Select a valid choice" in refused.text
    assert not _fresh(olive).has_perm("policies_app.change_policy")


@pytest.mark.parametrize("group", ["Policy engine: Manage", "Channels: Write", "team-secret"])
def test_roles_manager_cannot_give_groups_it_does_not_hold(mallory, people, group):
    # team-secret holds no permission, but its grant opens a private channel Mallory cannot see.
    olive = people["olive"]
    wanted = Group.objects.get(name=group)

    refused = mallory.submit(_change(olive), "user_form", groups=[wanted.pk])

    assert refused.status_code == 200 and "Select a valid choice" in refused.text
    assert not _fresh(olive).groups.filter(pk=wanted.pk).exists()


def test_roles_manager_cannot_change_its_own_groups_or_permissions(mallory, people):
    me = people["mallory"]
    groups = [
        g.pk for g in Group.objects.filter(name__in=["Roles: Manage", "Policy engine: Manage"])
    ]

    attempt = mallory.post(
        _change(me),
        {
            "username": "mallory",
            "is_active": "on",
            "groups": groups,
            "user_permissions": [_perm("auth.change_group").pk],
            "csrfmiddlewaretoken": mallory.http.cookies["csrftoken"],
        },
    )
    own_password = mallory.get(f"/admin/auth/user/{me.pk}/password/")

    assert attempt.status_code == 403 and own_password.status_code == 403
    me = _fresh(me)
    assert set(me.groups.values_list("name", flat=True)) == {"Roles: Manage", "Channels: Read"}
    assert not me.user_permissions.exists()


def test_roles_manager_edits_within_its_rights(mallory, people):
    """Positive control: what Mallory holds, Mallory may give to an ordinary user."""
    nina, olive = people["nina"], people["olive"]
    channels_read = Group.objects.get(name="Channels: Read")
    view_channel = _perm("channels_app.view_channel")

    given = mallory.submit(
        _change(nina),
        "user_form",
        first_name="Nina",
        groups=[channels_read.pk],
        user_permissions=[view_channel.pk],
    )
    deactivated = mallory.submit(_change(olive), "user_form", is_active=None)
    password_page = f"/admin/auth/user/{olive.pk}/password/"
    password = mallory.submit(
        password_page, "user_form", password1="A-new-pass-123", password2="A-new-pass-123"
    )

    assert given.status_code == 302, given.text
    nina = _fresh(nina)
    assert nina.first_name == "Nina" and nina.groups.get() == channels_read
    assert list(nina.user_permissions.all()) == [view_channel]
    assert deactivated.status_code == 302 and not _fresh(olive).is_active
    assert password.status_code == 302 and _fresh(olive).check_password("A-new-pass-123")


def test_superuser_keeps_full_power(live_server, people):
    root = Browser(live_server.url).login("root")
    olive = people["olive"]
    policy_manage = Group.objects.get(name="Policy engine: Manage")

    done = root.submit(
        _change(olive), "user_form", is_superuser="on", is_staff="on", groups=[policy_manage.pk]
    )

    assert done.status_code == 302, done.text
    olive = _fresh(olive)
    assert olive.is_superuser and olive.is_staff and olive.groups.get() == policy_manage


def test_bulk_delete_refuses_users_the_deleter_may_not_manage(live_server, people):
    # A superuser gave Mallory "Delete user" by hand: still only users it may manage.
    people["mallory"].user_permissions.add(_perm("auth.delete_user"))
    mallory = Browser(live_server.url).login("mallory")
    root, peter, nina = people["root"], people["peter"], people["nina"]

    def delete(*users) -> requests.Response:
        return mallory.post(
            "/admin/auth/user/",
            {
                "action": "delete_selected",
                "_selected_action": [u.pk for u in users],
                "post": "yes",
                "csrfmiddlewaretoken": mallory.http.cookies["csrftoken"],
            },
        )

    refused = delete(root, peter, nina)
    assert refused.status_code in (200, 403)
    assert User.objects.filter(pk__in=[root.pk, peter.pk, nina.pk]).count() == 3

    assert delete(nina).status_code == 302  # positive control: an ordinary user
    assert not User.objects.filter(pk=nina.pk).exists()


def test_single_sign_on_accounts_get_no_password_from_a_non_superuser(mallory, people):
    olive = people["olive"]
    OidcIdentity.objects.create(user=olive, subject="olive-sub")

    assert mallory.get(f"/admin/auth/user/{olive.pk}/password/").status_code == 403
    assert may_set_password(people["root"], olive)


@pytest.fixture
def group_editor(live_server, people) -> Browser:
    """A non-superuser given the group permissions by hand, as a superuser might."""
    editor = _user("gina", "Roles: Manage", "Channels: Read")
    editor.user_permissions.add(_perm("auth.change_group"), _perm("auth.add_group"))
    Group.objects.create(name="team-x")
    return Browser(live_server.url).login("gina")


def test_group_admin_gives_a_group_only_permissions_the_editor_holds(group_editor):
    team = Group.objects.get(name="team-x")
    path = f"/admin/auth/group/{team.pk}/change/"
    change_policy, view_channel = (
        _perm("policies_app.change_policy"),
        _perm("channels_app.view_channel"),
    )

    refused = group_editor.submit(path, "group_form", permissions=[change_policy.pk])
    created = group_editor.submit(
        "/admin/auth/group/add/", "group_form", name="team-y", permissions=[change_policy.pk]
    )
    allowed = group_editor.submit(path, "group_form", permissions=[view_channel.pk])

    assert refused.status_code == 200 and "Select a valid choice" in refused.text
    assert created.status_code == 200 and not Group.objects.filter(name="team-y").exists()
    assert allowed.status_code == 302
    assert list(Group.objects.get(pk=team.pk).permissions.all()) == [view_channel]


@pytest.mark.parametrize("name", ["Roles: Manage", "Channels: Read", "team-secret"])
def test_group_admin_leaves_category_groups_and_ungivable_groups_alone(group_editor, name):
    group = Group.objects.get(name=name)
    before = set(group.permissions.all())

    changed = group_editor.post(
        f"/admin/auth/group/{group.pk}/change/",
        {
            "name": name,
            "permissions": [_perm("auth.change_user").pk],
            "csrfmiddlewaretoken": group_editor.http.cookies["csrftoken"],
        },
    )

    assert changed.status_code == 403
    assert set(Group.objects.get(pk=group.pk).permissions.all()) == before


def test_the_rule_by_itself(people):
    mallory, root = people["mallory"], people["root"]

    assert not may_manage_user(mallory, mallory)
    assert not may_manage_user(mallory, root) and not may_manage_user(mallory, people["peter"])
    assert may_manage_user(mallory, people["olive"]) and may_manage_user(root, mallory)
    offered = set(givable_groups(mallory).values_list("name", flat=True))
    # Its own groups, and those whose permissions it holds (Roles: Read is in Roles: Manage).
    assert offered == {"Roles: Manage", "Roles: Write", "Roles: Read", "Channels: Read"}
    # Manage on both channel categories covers any grant: then team-secret may be given.
    mallory.groups.add(*Group.objects.filter(name__in=["Channels: Manage", "Subchannels: Manage"]))
    assert "team-secret" in set(givable_groups(_fresh(mallory)).values_list("name", flat=True))


# --- deactivated users ---------------------------------------------------------------------


def _basic(secret: str) -> dict:
    return {
        "Authorization": "Basic " + base64.b64encode(f"{secret}:x-auth-token".encode()).decode()
    }


def _set_active(user, active: bool) -> None:
    user.is_active = active
    user.save(update_fields=["is_active"])


@pytest.fixture
def dora(live_server):
    """A local user reading a private channel through a grant, with a session and tokens."""
    secret = ChannelFactory(name="secret", visibility="private")
    ChannelFactory(name="internal", visibility="authenticated")
    user = _user("dora", "Channels: Read")
    grant(secret, user, group="team-d")
    _, resource = token_create(user=user, name="conda", resources=[(secret, "read")])
    _, scope = token_create(user=user, name="ci", kind="scope", scopes=["channel:read"])
    browser = Browser(live_server.url).login("dora")
    return user, browser, resource, scope


def _access(base: str, browser: Browser, resource: str, scope: str) -> dict:
    """What each of Dora's credentials gets, by route."""
    api, repo = f"{base}/api/channels/", "/api/repo/{}/noarch/repodata.json"
    get = requests.get

    def names(response):
        return response.status_code, (
            sorted(c["name"] for c in response.json()["results"])
            if response.status_code == 200
            else None
        )

    return {
        "session api": names(browser.get("/api/channels/")),
        "session admin": browser.get("/admin/").status_code,
        "session repo secret": browser.get(repo.format("secret")).status_code,
        "session repo internal": browser.get(repo.format("internal")).status_code,
        "session token create": browser.post(
            "/api/tokens/", {"name": "more", "kind": "scope", "scopes": "channel:read"}
        ).status_code,
        "scope token api": names(
            get(api, headers={"Authorization": f"Bearer {scope}"}, timeout=TIMEOUT)
        ),
        "resource token path": get(
            base + "/api/repo/t/" + resource + repo.format("secret")[len("/api/repo") :],
            timeout=TIMEOUT,
        ).status_code,
        "resource token basic": get(
            base + repo.format("secret"), headers=_basic(resource), timeout=TIMEOUT
        ).status_code,
        "resource token x-auth": get(
            base + repo.format("internal"), headers={"X-Auth": resource}, timeout=TIMEOUT
        ).status_code,
    }


def test_a_deactivated_user_gets_nothing_anywhere_and_reactivated_gets_it_back(live_server, dora):
    user, browser, resource, scope = dora
    base = live_server.url
    allowed = {
        "session api": (200, ["internal", "secret"]),
        "session admin": 200,
        "session repo secret": 200,
        "session repo internal": 200,
        "session token create": 201,
        "scope token api": (200, ["internal", "secret"]),
        "resource token path": 200,
        "resource token basic": 200,
        "resource token x-auth": 200,
    }
    assert _access(base, browser, resource, scope) == allowed

    _set_active(user, False)
    tokens_before = ApiToken.objects.count()
    refused = _access(base, browser, resource, scope)

    assert refused["session api"][0] in (401, 403) and refused["session api"][1] is None
    assert refused["session admin"] == 302  # to the login page: the session no longer counts
    # The session is no credential given: anonymous, and these channels are not for anonymous.
    assert refused["session repo secret"] == refused["session repo internal"] == 404
    assert refused["session token create"] in (401, 403)
    assert refused["scope token api"] == (401, None)
    assert (
        refused["resource token path"]
        == refused["resource token basic"]
        == refused["resource token x-auth"]
        == 401
    )
    assert ApiToken.objects.count() == tokens_before
    assert not _logs_in(base, "dora")

    _set_active(user, True)
    assert _access(base, browser, resource, scope) == allowed


def _logs_in(base: str, username: str) -> bool:
    browser = Browser(base)
    browser.get("/admin/login/")
    done = browser.post(
        "/admin/login/?next=/admin/",
        {
            "username": username,
            "password": "pw",
            "csrfmiddlewaretoken": browser.http.cookies["csrftoken"],
        },
    )
    return done.status_code == 302


def test_no_token_is_issued_to_a_deactivated_account(db):
    user = UserFactory(is_active=False)

    with pytest.raises(PermissionDenied):
        token_create(user=user, name="late", kind="scope", scopes=["channel:read"])

    assert not ApiToken.objects.exists()


def test_a_deactivated_single_sign_on_user_is_refused_everywhere(oidc, live_server, settings):
    settings.PSM_OIDC_ROLE_MAP = {"/team-e": ["group:team-e"]}
    erin = {
        "sub": str(uuid.uuid4()),
        "email": "erin@example.com",
        "realm_roles": ["psm:channel:read"],
        "groups": ["/team-e"],
    }
    oidc.set_users({"erin": erin})
    grant(ChannelFactory(name="secret", visibility="private"), group="team-e")
    base = live_server.url
    browser = Browser(base)
    sso_login(browser.http, base, oidc, "erin")
    bearer = {"Authorization": f"Bearer {oidc.access_token('erin')}"}
    repo = f"{base}/api/repo/secret/noarch/repodata.json"

    def access() -> tuple:
        listed = requests.get(f"{base}/api/channels/", headers=bearer, timeout=TIMEOUT)
        minted = requests.post(
            f"{base}/api/tokens/",
            json={"name": f"t-{uuid.uuid4().hex[:6]}", "kind": "scope", "scopes": ["channel:read"]},
            headers=bearer,
            timeout=TIMEOUT,
        )
        return (
            listed.status_code,
            [c["name"] for c in listed.json()["results"]] if listed.ok else None,
            minted.status_code,
            requests.get(repo, headers=bearer, timeout=TIMEOUT).status_code,
            browser.get("/admin/").status_code,
            browser.get("/api/repo/secret/noarch/repodata.json").status_code,
        )

    assert access() == (200, ["secret"], 201, 200, 200, 200)
    user = User.objects.get(oidc_identity__subject=erin["sub"])
    tokens_before = ApiToken.objects.filter(user=user).count()

    _set_active(user, False)

    assert access() == (401, None, 401, 401, 302, 404)
    assert ApiToken.objects.filter(user=user).count() == tokens_before
    # A new sign-on is refused, and the provider's roles (now admin) are not applied.
    oidc.set_users({"erin": {**erin, "realm_roles": ["psm:admin"]}})
    again = Browser(base)
    sso_login(again.http, base, oidc, "erin")
    assert again.get("/admin/").status_code == 302
    user = _fresh(user)
    assert not user.is_superuser and not user.is_active

    # Reactivated: the same credentials work again.
    oidc.set_users({"erin": erin})
    _set_active(user, True)
    assert access() == (200, ["secret"], 201, 200, 200, 200)
    assert sso_login(Browser(base).http, base, oidc, "erin").headers["Location"] == "/admin/"
