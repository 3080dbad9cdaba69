"""Bad input gets a 4xx, never a 500: NUL and other hostile values in every route's path, query
and body (over real HTTP), and every admin page opened with partial permissions.
"""

from __future__ import annotations

import http.client
import itertools
import re
from urllib.parse import urlsplit

import pytest
import requests
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import NoReverseMatch, get_resolver, reverse

from channels_app.models import Channel, Package
from mirrors_app.models import Mirror, SyncRun
from policies_app.models import Policy, Vulnerability
from psm.models import ApiToken, AuditEvent
from psm.tokens import token_create
from tests.factories import (
    ChannelFactory,
    MirrorFactory,
    PolicyFactory,
    SyncRunFactory,
    UserFactory,
)

SOURCE = "http://127.0.0.1:9/conda"
CSRF = "c" * 32
SENTINEL = "7777777"  # stands for a path parameter in reversed URLs, replaced by each payload
# Already percent-encoded: sent as they are, on the raw request line.
PATH_PAYLOADS = [
    "%00",
    "x%00y",
    "..",
    "%2e%2e",
    "..%2f..%2fetc%2fpasswd",
    "%2F",
    "%5C",
    # Overlong for any name or id; kept under 255 bytes, the file name limit of the test server's
    # own media handler (live_server serves MEDIA_ROOT at "/" first; PSM itself never does).
    "A" * 250,
    "%C3%A9t%C3%A9",
    "%F0%9F%98%80",
    "%FF%FE",
    "%ED%A0%80",
    "99999999999999999999999999",
    "-1",
    "0",
    "1.5",
    "%20",
    "%27%22%3C%3E",
    "%25",
]
QUERY_PAYLOADS = ["99999999999999999999999999", "-1", "%FF%ED%A0%80", "A" * 1500 + "%27%22"]
# Each parameter alone: a number past any integer column, and bad UTF-8, quotes and length in one.
ALONE_PAYLOADS = ["99999999999999999999999999", "%FF%ED%A0%80" + "A" * 1500 + "%27%22"]
ADMIN_PARAMS = [
    "q",
    "o",
    "p",
    "e",
    "all",
    "_changelist_filters",
    "_to_field",
    "_popup",
    "channel",
    "parent",
    "kind",
    "mode",
    "status",
    "visibility",
    "frozen",
    "state",
    "trigger",
    "action",
    "target_type",
    "channel__kind",
    "created_at__gte",
    "revoked_at__isnull",
    "package",
    "next",
]
API_PARAMS = [
    "channel",
    "mirror",
    "package",
    "search",
    "status",
    "action",
    "actor",
    "target_type",
    "limit",
    "offset",
    "format",
    "with_packages",
]


def _routes() -> list[tuple[str, list[str]]]:
    """Every named route (admin ones as `admin:…`) with its parameters; format-suffixed
    variants left out (their `format` is fuzzed as a query parameter)."""
    found: dict[tuple[str, tuple[str, ...]], None] = {}

    def walk(resolver, namespace: str) -> None:
        for name in resolver.reverse_dict:
            if isinstance(name, str):
                for possibilities, *_ in resolver.reverse_dict.getlist(name):
                    for _, params in possibilities:
                        if "format" not in params:
                            found[(namespace + name, tuple(params))] = None
        for inner, (_, sub) in resolver.namespace_dict.items():
            walk(sub, f"{namespace}{inner}:")

    walk(get_resolver(), "")
    return [(name, list(params)) for name, params in found]


def _url(name: str, params: list[str], values: dict[str, str] | None = None) -> str | None:
    kwargs = {p: (values or {}).get(p, SENTINEL) for p in params}
    if name == "repo-token" or name == "repo-file":
        kwargs["path"] = f"{kwargs.get('path', SENTINEL)}/noarch/repodata.json"
    try:
        return reverse(name, kwargs=kwargs)
    except NoReverseMatch:
        return None


class Raw:
    """Requests on the raw request line (no client-side normalisation of `..` or escapes)."""

    def __init__(self, base: str, cookies: dict[str, str]) -> None:
        parts = urlsplit(base)
        self.host, self.port = parts.hostname, parts.port
        self.cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())

    def request(self, method: str, path: str, body: bytes | None = None, **headers) -> int:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            headers = {"Cookie": self.cookie, "X-CSRFToken": CSRF, **headers}
            if body is not None:
                headers.setdefault("Content-Type", "application/json")
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()


class InProcess:
    """`Raw`'s interface on Django's test client, for the sweeps of thousands of requests: the
    same WSGI decoding of the path as a server (percent escapes, bad UTF-8), without a
    connection to the database per request that the live server's threads open. The attacks
    themselves (NUL, bodies, forms) go over real HTTP."""

    def __init__(self, cookies: dict[str, str]) -> None:
        self.client = Client(raise_request_exception=False)
        for name, value in cookies.items():
            self.client.cookies[name] = value

    def request(self, method: str, path: str, body: bytes | None = None, **headers) -> int:
        extra = {"content_type": "application/json"} if body is not None else {}
        response = self.client.generic(
            method, path, body or b"", headers={"X-CSRFToken": CSRF, **headers}, **extra
        )
        return response.status_code


def _session_cookies(user) -> dict[str, str]:
    cookies = {"csrftoken": CSRF}
    if user is not None:
        client = Client()
        client.force_login(user)
        cookies["sessionid"] = client.cookies["sessionid"].value
    return cookies


@pytest.fixture
def world(transactional_db) -> dict[str, dict[str, str]]:
    """One row of every kind, and the URL parameters that name them, per route prefix."""
    channel = ChannelFactory(name="main")
    sub = ChannelFactory(name="sub", parent=channel)
    mirror = MirrorFactory(channel=channel, name="forge", source_url=SOURCE)
    run = SyncRunFactory(mirror=mirror, state=SyncRun.State.COMPLETED)
    PolicyFactory(name="strict")
    Vulnerability.objects.create(osv_id="OSV-1", affected=[{"name": "alpha"}])
    Package.objects.create(channel=channel, mirror=mirror, unit="noarch", filename="a.conda")
    AuditEvent.objects.create(action="mirror.run", target_type="mirror", target_name="forge")
    owner = UserFactory(username="owner", is_superuser=True)
    token, _ = token_create(user=owner, name="t", resources=[(channel, "read")])
    return {
        "channel": {"name": channel.name},
        "subchannel": {"parent_name": channel.name, "name": sub.name},
        "mirror": {"pk": str(mirror.pk)},
        "syncrun": {"pk": str(run.pk)},
        "token": {"pk": str(token.pk)},
        "repo": {"path": channel.name},
    }


def _real_values(name: str, world) -> dict[str, str]:
    """Parameters naming an existing row for the route `name`."""
    if name.startswith("admin:"):
        label = name.split(":")[1]
        for model in admin.site._registry:
            prefix = f"{model._meta.app_label}_{model._meta.model_name}_"
            if label.startswith(prefix):
                row = model._default_manager.first()
                return {"object_id": str(row.pk), "pk": str(row.pk)} if row else {}
        return {}
    basename = name.rsplit("-", 1)[0]
    if name.startswith("repo-"):
        return world["repo"]
    return world.get(basename, {})


@pytest.fixture
def superuser(transactional_db):
    return UserFactory(username="root", is_superuser=True)


def _failures(raw: Raw, method: str, urls, body: bytes | None = None) -> list[str]:
    failed = []
    for url in urls:
        status = raw.request(method, url, body)
        if status >= 500:
            failed.append(f"{method} {url[:200]} -> {status}")
    return failed


def test_nul_is_a_400_on_every_kind_of_route(live_server, superuser, world):
    raw = Raw(live_server.url, _session_cookies(superuser))
    urls = [
        "/api/repo/main%00/noarch/repodata.json",
        "/api/repo/main/noarch/repodata.json%00",
        "/api/repo/t/psm_x%00/main/noarch/repodata.json",
        "/api/repo/main/noarch/repodata.json?x=%00",
        "/api/channels/main%00/",
        "/api/mirrors/1%00/",
        "/api/mirrors/?channel=main%00",
        "/api/audit/?action=%00",
        "/api/vulnerabilities/?search=%00",
        "/admin/channels_app/channel/?q=%00",
        "/admin/channels_app/channel/%00/change/",
        "/admin/mirrors_app/mirror/?kind=%00",
        "/admin/mirrors_app/mirror/add/?channel=%00",
    ]

    assert {url: raw.request("GET", url) for url in urls} == dict.fromkeys(urls, 400)
    # A NUL in a cookie too (a quoted cookie value may spell it as an octal escape).
    assert raw.request("GET", "/api/channels/", Cookie='sessionid="abcdefgh\\000"') == 400
    # Positive control: the same routes without the NUL answer.
    assert raw.request("GET", "/api/repo/main/noarch/repodata.json") == 200
    assert raw.request("GET", "/api/mirrors/?channel=main") == 200
    assert raw.request("GET", "/admin/channels_app/channel/?q=main") == 200


@pytest.mark.parametrize("who", ["superuser", "anonymous"])
def test_hostile_path_parameters_never_give_a_500(superuser, world, who):
    raw = InProcess(_session_cookies(superuser if who == "superuser" else None))
    urls = [
        url.replace(SENTINEL, payload)
        for (name, params), payload in itertools.product(_routes(), PATH_PAYLOADS)
        if params and (url := _url(name, params))
    ]
    assert len(urls) > 500  # every parameterised route, every payload

    failed = _failures(raw, "GET", urls)
    api = [u for u in urls if u.startswith("/api/")]
    failed += _failures(raw, "POST", api, b"{}") + _failures(raw, "DELETE", api)

    assert failed == []


def _params_of(name: str) -> list[str]:
    return ADMIN_PARAMS if name.startswith("admin:") else API_PARAMS


# Query parameters every admin list reads (search, ordering, page, popup, preserved filters).
ADMIN_LIST_PARAMS = ["q", "o", "p", "_to_field", "_changelist_filters", "_popup", "next"]


def _params_read_by(name: str) -> list[str]:
    """The parameters the page `name` reads: PSM's admin lists read the generic ones and those
    naming their model's fields (their filters); PSM's API lists all of theirs. Any other
    parameter is refused alike by the admin (`?e=1`) and ignored by the API: the sweep with
    every parameter at once covers that."""
    if not name.startswith("admin:"):
        return API_PARAMS
    for model in _psm_models():
        opts = model._meta
        if name.startswith(f"admin:{opts.app_label}_{opts.model_name}_"):
            fields = {field.name for field in opts.get_fields()}
            return ADMIN_LIST_PARAMS + [p for p in ADMIN_PARAMS if p.split("__")[0] in fields]
    return []


def test_hostile_query_parameters_never_give_a_500(superuser, world):
    """Every route naming real rows gets every parameter at once; the pages that read their
    query (lists, add forms, mirror pages) get each parameter they read alone too."""
    raw = InProcess(_session_cookies(superuser))
    routes = [
        (name, url)
        for name, params in _routes()
        if (url := _url(name, params, _real_values(name, world)))
        and SENTINEL not in url
        and "logout" not in url
    ]
    urls = [
        url + "?" + "&".join(f"{p}={payload}" for p in _params_of(name))
        for name, url in routes
        for payload in QUERY_PAYLOADS
    ]
    for name, url in routes:
        if re.search(
            r"(_(changelist|add|details|preview)|-(list|explain|excluded|details))$", name
        ):
            urls += [f"{url}?{p}={v}" for p in _params_read_by(name) for v in ALONE_PAYLOADS]

    assert _failures(raw, "GET", urls) == []


HOSTILE_STRINGS = ["\x00", "a\x00b", "\ud800", "\udfff", "x" * 100_000, "..", "../../etc/passwd"]


def _bodies(template: dict) -> list[dict]:
    """The body with each string field, and each value of its dicts, set to each hostile
    string in turn (and as a dict key)."""
    bodies = []
    for key, value in template.items():
        for hostile in HOSTILE_STRINGS:
            if isinstance(value, str):
                bodies.append({**template, key: hostile})
            elif isinstance(value, list):
                bodies.append({**template, key: [hostile]})
            elif isinstance(value, dict):
                bodies.append({**template, key: {"subdirs": [hostile], hostile: hostile}})
    return bodies


WRITE_ROUTES = [
    ("POST", "/api/channels/", {"name": "n", "kind": "conda", "description": "d"}),
    ("PATCH", "/api/channels/main/", {"description": "d", "visibility": "public"}),
    ("POST", "/api/channels/main/subchannels/", {"name": "n", "kind": "conda"}),
    ("PUT", "/api/channels/main/grants/", {"group": "g", "level": "read"}),
    (
        "POST",
        "/api/mirrors/",
        {
            "channel": "main",
            "name": "n",
            "source_url": SOURCE,
            "kind": "conda",
            "cron": "@daily",
            "options": {"subdirs": ["noarch"]},
        },
    ),
    ("PATCH", "/api/mirrors/{mirror}/", {"name": "n", "cron": "@daily", "options": {}}),
    (
        "POST",
        "/api/policies/",
        {"name": "n", "description": "d", "allow_specs": ["numpy"], "licenses_include": ["MIT"]},
    ),
    ("POST", "/api/tokens/", {"name": "n", "kind": "scope", "scopes": ["channel:read"]}),
    ("POST", "/api/tokens/", {"name": "n", "resources": [{"channel": "main"}]}),
]


def test_hostile_json_bodies_never_give_a_500(live_server, superuser, world):
    browser = requests.Session()
    for name, value in _session_cookies(superuser).items():
        browser.cookies.set(name, value)
    browser.headers["X-CSRFToken"] = CSRF
    mirror = world["mirror"]["pk"]
    failed = []

    for method, path, template in WRITE_ROUTES:
        url = live_server.url + path.format(mirror=mirror)
        bodies = _bodies(template)
        if path.endswith("/grants/"):
            bodies = [[body] for body in bodies]
        for body in bodies:
            response = browser.request(method, url, json=body, timeout=60)
            if response.status_code >= 500:
                failed.append(f"{method} {path} {str(body)[:100]} -> {response.status_code}")

    assert failed == []
    # Positive control: a plain body is accepted, and nothing hostile was stored.
    created = browser.post(
        f"{live_server.url}/api/channels/", json={"name": "fine", "kind": "conda"}, timeout=60
    )
    assert created.status_code == 201, created.text
    assert Channel.objects.filter(name="fine").exists()
    stored = [
        *Channel.objects.values_list("name", "description"),
        *Mirror.objects.values_list("name", "source_url", "options"),
        *Policy.objects.values_list("name", "description", "allow_specs"),
        *ApiToken.objects.values_list("name", "scopes"),
    ]
    assert "\\x00" not in repr(stored) and "\\ud8" not in repr(stored)


FORM_HOSTILE = ["a\x00b", "x" * 100_000, '{"k": "\\u0000"}', '{"\\ud800": 1}', '["\\udfff"]']


def test_hostile_admin_form_bodies_never_give_a_500(live_server, superuser, world):
    browser = requests.Session()
    for name, value in _session_cookies(superuser).items():
        browser.cookies.set(name, value)
    browser.headers["X-CSRFToken"] = CSRF
    channel = Channel.objects.get(name="main")
    forms = [
        ("channels_app/channel", {"name": "n", "description": "d", "kind": "conda"}),
        (
            "mirrors_app/mirror",
            {
                "channel": str(channel.pk),
                "name": "n",
                "mode": "passive",
                "source_url": SOURCE,
                "kind": "conda",
                "cron": "@daily",
                "options": "{}",
            },
        ),
        ("policies_app/policy", {"name": "n", "allow_specs": "numpy", "exclusions": "x"}),
        ("psm/apitoken", {"name": "n", "kind": "scope", "scopes": "channel:read"}),
    ]
    failed = []

    for model, form in forms:
        url = f"{live_server.url}/admin/{model}/add/"
        for field, hostile in itertools.product(form, FORM_HOSTILE):
            response = browser.post(url, data={**form, field: hostile}, timeout=60)
            if response.status_code >= 500:
                failed.append(f"{model} {field}={hostile[:20]!r} -> {response.status_code}")

    assert failed == []
    # Positive control: the plain form is saved.
    saved = browser.post(
        f"{live_server.url}/admin/channels_app/channel/add/",
        data={"name": "fine", "kind": "conda", "visibility": "public"},
        timeout=60,
    )
    assert saved.status_code == 200 and Channel.objects.filter(name="fine").exists()


# --- Admin pages with partial permissions ------------------------------------------------------


def _admin_pages(model) -> list[str]:
    opts = model._meta
    row = model._default_manager.order_by("pk").first()
    pages = [
        reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"),
        reverse(f"admin:{opts.app_label}_{opts.model_name}_add"),
    ]
    if row is not None:
        for view in ("change", "delete", "history"):
            pages.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=[row.pk]))
    return pages


# Admin pages PSM writes (the user and group admins are PSM's own, psm/user_admin.py); those
# registered by libraries (django-celery-beat, django-axes) are their authors' to test.
PSM_APPS = {"auth", "channels_app", "mirrors_app", "policies_app", "psm"}


def _psm_models() -> list:
    return [model for model in admin.site._registry if model._meta.app_label in PSM_APPS]


def _partial_users():
    """For every PSM admin model and every permission it has: a staff user holding only it."""
    for model in _psm_models():
        perms = Permission.objects.filter(
            content_type__app_label=model._meta.app_label,
            content_type__model=model._meta.model_name,
        )
        for perm in perms:
            user = UserFactory(username=f"{model._meta.model_name}-{perm.codename}"[:150])
            user.user_permissions.add(perm)
            yield model, perm.codename, user


@pytest.mark.django_db
def test_every_admin_page_answers_users_with_partial_permissions():
    """Every admin page (list, add, change, delete, history, and each mirror page) of every
    registered model, opened by staff users who hold one permission of it (view only, change
    only, add only, delete only, a custom one), gives a page, a redirect, a 403 or a 404 (a
    mirror they may not see): never a 500 (view-only mirror and policy pages used to raise one,
    their forms being built for fields a read-only page does not have)."""
    channel = ChannelFactory(name="main")
    sub = ChannelFactory(name="sub", parent=channel)
    mirror = MirrorFactory(channel=channel, name="forge", source_url=SOURCE)
    MirrorFactory(channel=sub, name="inner", source_url=SOURCE)
    SyncRunFactory(mirror=mirror, state=SyncRun.State.COMPLETED)
    PolicyFactory(name="strict")
    Vulnerability.objects.create(osv_id="OSV-1", affected=[{"name": "alpha"}])
    Package.objects.create(channel=channel, mirror=mirror, unit="noarch", filename="a.conda")
    AuditEvent.objects.create(action="mirror.run", target_type="mirror", target_name="forge")
    owner = UserFactory(username="owner", is_superuser=True)
    token_create(user=owner, name="t", resources=[(channel, "read")])
    mirror_pages = [
        reverse(f"admin:mirrors_app_mirror_{name}", args=[mirror.pk])
        for name in (
            "details",
            "excluded_csv",
            "dependency_report",
            "policy_preview",
            "policy_apply",
            "run",
        )
    ]
    client, failed = Client(raise_request_exception=False), []

    for model, codename, user in list(_partial_users()):
        client.force_login(user)
        pages = _admin_pages(model) + (mirror_pages if model is Mirror else [])
        for page in pages:
            status = client.get(page).status_code
            if status not in (200, 302, 403, 404):
                failed.append(f"{codename}: GET {page} -> {status}")

    assert not failed, "\n".join(failed)


@pytest.mark.django_db
def test_a_view_only_mirror_user_sees_the_mirror_page(client, make_user):
    mirror = MirrorFactory(name="forge", source_url=SOURCE)
    client.force_login(make_user("mirrors_app.view_mirror"))

    page = client.get(reverse("admin:mirrors_app_mirror_change", args=[mirror.pk]))

    assert page.status_code == 200
    assert "forge" in page.content.decode() and 'name="run_now"' not in page.content.decode()
    # Positive control: an editor gets the form with its "Run now" box.
    client.force_login(make_user("mirrors_app.view_mirror", "mirrors_app.change_mirror"))
    page = client.get(reverse("admin:mirrors_app_mirror_change", args=[mirror.pk]))
    assert 'name="run_now"' in page.content.decode()
