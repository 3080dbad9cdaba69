"""The Python simple repository format: project pages in, records out, pages rendered back."""

from __future__ import annotations

import hashlib
import io
import json
from contextlib import contextmanager
from dataclasses import dataclass

import orjson
import pytest

from channels_app.formats import FORMATS, FormatError, OptionsError, Rejected, Unchanged
from channels_app.formats.base import PackageRecord, entry_digest
from channels_app.formats.pypi import (
    HTML_TYPE,
    JSON_TYPE,
    index_file,
    locate_metadata,
    negotiate,
)
from channels_app.formats.pypi_pages import (
    file_path,
    parse_project_serials,
    render_project,
    render_root,
)
from psm.http import UpstreamClient
from tests.channels_app.formats import StoredDigests

pypi = FORMATS["pypi"]

SOURCE = "https://pypi.example/simple/"
PAGE = "https://pypi.example/simple/requests/"
FILES = "https://files.example/packages"
PSM_PAGE = "https://psm.example/api/repo/py/simple/requests/"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


# --- Real-shaped upstream pages -----------------------------------------------------------------

JSON_PAGE = {
    "meta": {"_last-serial": 24811227, "api-version": "1.3"},
    "name": "requests",
    "versions": ["0.2.0", "2.31.0", "2.32.0", "2.32.3"],
    "files": [
        {
            "core-metadata": False,
            "data-dist-info-metadata": False,
            "filename": "requests-0.2.0.tar.gz",
            "hashes": {"sha256": sha("0.2.0").upper()},
            "provenance": None,
            "requires-python": None,
            "size": 8453,
            "upload-time": "2011-02-14T19:21:42.466290Z",
            "url": f"{FILES}/ba/91/requests-0.2.0.tar.gz",
            "yanked": False,
        },
        {
            "core-metadata": {"sha256": sha("meta 2.32.0")},
            "dist-info-metadata": {"sha256": sha("meta 2.32.0")},
            "filename": "requests-2.32.0-py3-none-any.whl",
            "hashes": {"sha256": sha("2.32.0 whl")},
            "requires-python": ">=3.8",
            "size": 63_470,
            "upload-time": "2024-05-20T16:24:03.523345Z",
            "url": f"{FILES}/24/e8/requests-2.32.0-py3-none-any.whl",
            "yanked": "Yanked due to conflicts with CVE-2024-35195 mitigation",
        },
        {
            # Relative URL, another hash we keep, one we cannot check.
            "core-metadata": True,
            "filename": "requests-2.32.3-py3-none-any.whl",
            "hashes": {"sha256": sha("2.32.3 whl"), "md5": md5("x"), "blake2b_256": "ab" * 32},
            "requires-python": ">=3.8",
            "size": 64_928,
            "upload-time": "2024-05-29T15:37:47.027031Z",
            "url": "../../files/requests-2.32.3-py3-none-any.whl",
            "yanked": True,
        },
        {
            "filename": "requests-2.31.0.zip",
            "hashes": {"md5": md5("legacy zip")},
            "url": f"{FILES}/requests-2.31.0.zip",
        },
    ],
}

HTML_PAGE = f"""<!DOCTYPE html>
<html>
  <head>
    <meta name="pypi:repository-version" content="1.3">
    <title>Links for requests</title>
  </head>
  <body>
    <h1>Links for requests</h1>
    <a href="{FILES}/ba/91/requests-0.2.0.tar.gz#sha256={sha("0.2.0")}" >requests-0.2.0.tar.gz</a><br />
    <a href="{FILES}/24/e8/requests-2.32.0-py3-none-any.whl#sha256={sha("2.32.0 whl")}" data-requires-python="&gt;=3.8" data-dist-info-metadata="sha256={sha("meta 2.32.0")}" data-yanked="Yanked due to conflicts with CVE-2024-35195 mitigation">requests-2.32.0-py3-none-any.whl</a><br />
    <a href="../../files/requests-2.32.3-py3-none-any.whl#sha256={sha("2.32.3 whl")}" data-requires-python="&gt;=3.8" data-core-metadata="true" data-yanked>requests-2.32.3-py3-none-any.whl</a><br />
    <a href="{FILES}/requests-2.31.0.zip?token=a&amp;x=1#md5={md5("legacy zip")}">requests-2.31.0.zip</a><br />
    <a href="{FILES}/requests-0.3.0.egg#sha256={sha("egg")}">requests-0.3.0.egg</a><br />
  </body>
</html>
""".encode()


def parse(body: bytes, url: str = PAGE, project: str = "requests", **kw) -> list:
    return list(pypi.parse_unit(io.BytesIO(body), url, project, **kw))


def records(items: list) -> dict[str, PackageRecord]:
    return {item.filename: item for item in items if isinstance(item, PackageRecord)}


def rejected(items: list) -> dict[str, str]:
    return {item.filename: item.reason for item in items if isinstance(item, Rejected)}


def documents(items: list) -> dict[str, dict]:
    return {name: json.loads(record.document) for name, record in records(items).items()}


def json_page(*files: dict, name: str = "requests", version: str = "1.0") -> bytes:
    return orjson.dumps({"meta": {"api-version": version}, "name": name, "files": list(files)})


def entry(filename: str, **fields) -> dict:
    base = {"filename": filename, "url": f"{FILES}/{filename}", "hashes": {"sha256": sha(filename)}}
    return base | fields


# --- Parsing JSON pages (PEP 691, 700, 714) -----------------------------------------------------


def test_json_page_yields_one_record_per_file_with_the_served_document():
    items = parse(orjson.dumps(JSON_PAGE))
    found = records(items)
    assert sorted(found) == [
        "requests-0.2.0.tar.gz",
        "requests-2.31.0.zip",
        "requests-2.32.0-py3-none-any.whl",
        "requests-2.32.3-py3-none-any.whl",
    ]
    sdist = found["requests-0.2.0.tar.gz"]
    assert (sdist.name, sdist.version, sdist.unit) == ("requests", "0.2.0", "requests")
    assert sdist.url == f"{FILES}/ba/91/requests-0.2.0.tar.gz"
    assert sdist.sha256 == sha("0.2.0")  # lower-cased
    assert sdist.size == 8453
    # Only what upstream gave, falsy flags dropped, no url: PSM serves its own.
    assert json.loads(sdist.document) == {
        "filename": "requests-0.2.0.tar.gz",
        "hashes": {"sha256": sha("0.2.0")},
        "size": 8453,
        "upload-time": "2011-02-14T19:21:42.466290Z",
    }
    assert sdist.extra == json.loads(sdist.document)
    assert sdist.entry_digest == entry_digest(sdist.document.encode(), sdist.url)


def test_json_page_keeps_yank_reason_requires_python_and_core_metadata():
    docs = documents(parse(orjson.dumps(JSON_PAGE)))
    assert docs["requests-2.32.0-py3-none-any.whl"] == {
        "filename": "requests-2.32.0-py3-none-any.whl",
        "hashes": {"sha256": sha("2.32.0 whl")},
        "requires-python": ">=3.8",
        "yanked": "Yanked due to conflicts with CVE-2024-35195 mitigation",
        "size": 63_470,
        "upload-time": "2024-05-20T16:24:03.523345Z",
        "core-metadata": {"sha256": sha("meta 2.32.0")},
    }
    latest = docs["requests-2.32.3-py3-none-any.whl"]
    assert latest["yanked"] is True
    assert latest["core-metadata"] is True
    assert latest["hashes"] == {"md5": md5("x"), "sha256": sha("2.32.3 whl")}  # no blake2b_256


def test_json_relative_file_url_is_made_absolute_against_the_page():
    found = records(parse(orjson.dumps(JSON_PAGE)))
    assert found["requests-2.32.3-py3-none-any.whl"].url == (
        "https://pypi.example/files/requests-2.32.3-py3-none-any.whl"
    )


def test_md5_only_legacy_file_is_kept_with_its_md5():
    record = records(parse(orjson.dumps(JSON_PAGE)))["requests-2.31.0.zip"]
    assert (record.sha256, record.md5, record.version) == (None, md5("legacy zip"), "2.31.0")


def test_old_dist_info_metadata_key_is_served_as_core_metadata():
    page = json_page(
        entry("requests-1.0-py3-none-any.whl", **{"dist-info-metadata": {"sha256": sha("m")}})
    )
    (doc,) = documents(parse(page)).values()
    assert doc["core-metadata"] == {"sha256": sha("m")}
    assert "dist-info-metadata" not in doc


def test_versions_are_normalized_from_the_file_name():
    page = json_page(
        entry("Requests-1.0.0.post1.tar.gz"),
        entry("requests-2!1.0rc1+local.1-py3-none-any.whl"),
        entry("requests-01.02-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"),
    )
    assert sorted(r.version for r in records(parse(page)).values()) == [
        "1.0.0.post1",
        "1.2",
        "2!1.0rc1+local.1",
    ]


def test_upper_case_and_dotted_project_names_match_their_normalized_unit():
    page = json_page(
        entry("Zope.Interface-6.0.tar.gz"),
        entry("zope_interface-6.0-py3-none-any.whl"),
        name="Zope.Interface",
    )
    found = records(parse(page, project="zope-interface"))
    assert {r.name for r in found.values()} == {"zope-interface"}
    assert len(found) == 2


@pytest.mark.parametrize(
    ("filename", "reason"),
    [
        ("requests-0.3.0-py2.5.egg", "unsupported file type (egg)"),
        ("requests-0.3.0.win32.exe", "unsupported file type (exe)"),
        ("requests-0.3.0.tar.bz2", "unsupported file type (bz2)"),
        ("requests-1.0-beta.tar.gz", "not a valid wheel or sdist file name"),
        ("requests.tar.gz", "not a valid wheel or sdist file name"),
        ("requests-1.0-py3.whl", "not a valid wheel or sdist file name"),
        ("urllib3-2.0.tar.gz", "file name is for project 'urllib3'"),
        ("requests_extra-1.0-py3-none-any.whl", "file name is for project 'requests-extra'"),
        ("../../etc/passwd", "unsafe file name"),
        ("..requests-1.0.tar.gz", "unsafe file name"),
        (".requests-1.0.tar.gz", "unsafe file name"),
        ("requests-1.0\\x.tar.gz", "unsafe file name"),
        ("requests-1.0\n.tar.gz", "unsafe file name"),
        ("requests 1.0.tar.gz", "unsafe file name"),
        ("requests-1.0%2F.tar.gz", "unsafe file name"),
    ],
)
def test_files_that_cannot_be_mirrored_are_rejected_with_a_reason(filename, reason):
    assert rejected(parse(json_page(entry(filename)))) == {filename: reason}


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"hashes": {}}, "no sha256 hash"),
        ({"hashes": {"sha1": "a" * 40}}, "no sha256 hash"),
        ({"hashes": {"sha256": "xyz"}}, "malformed hashes"),
        ({"hashes": {"sha256": "a" * 63}}, "malformed hashes"),
        ({"hashes": ["sha256", "a" * 64]}, "malformed hashes"),
        ({"url": "ftp://files.example/requests-1.0.tar.gz"}, "no http(s) URL"),
        ({"url": "file:///etc/passwd"}, "no http(s) URL"),
        ({"url": "javascript:alert(1)"}, "no http(s) URL"),
        ({"url": "https://files.example/a b/requests-1.0.tar.gz"}, "no http(s) URL"),
        ({"url": None}, "no http(s) URL"),
        ({"url": "https://[files.example/requests-1.0.tar.gz"}, "no http(s) URL"),
    ],
)
def test_entries_without_a_usable_hash_or_url_are_rejected(fields, reason):
    assert rejected(parse(json_page(entry("requests-1.0.tar.gz", **fields)))) == {
        "requests-1.0.tar.gz": reason
    }


def test_malformed_optional_fields_are_dropped_not_rejected():
    page = json_page(
        entry(
            "requests-1.0.tar.gz",
            size=True,
            **{
                "upload-time": "yesterday",
                "requires-python": 3,
                "yanked": 0,
                "core-metadata": {"sha256": "nope"},
            },
        )
    )
    (doc,) = documents(parse(page)).values()
    assert doc == {
        "filename": "requests-1.0.tar.gz",
        "hashes": {"sha256": sha("requests-1.0.tar.gz")},
    }


def test_a_file_listed_twice_is_rejected_the_second_time():
    page = json_page(entry("requests-1.0.tar.gz"), entry("requests-1.0.tar.gz", size=1))
    items = parse(page)
    assert len(records(items)) == 1
    assert rejected(items) == {"requests-1.0.tar.gz": "file listed twice"}


def test_non_object_entries_are_rejected():
    assert rejected(parse(json_page("requests-1.0.tar.gz"))) == {"": "file entry is not an object"}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"files": [', "not valid JSON"),
        (b'{"meta": {"api-version": "1.0"}, "name": "requests"}', "must be a list"),
        (b'{"meta": {"api-version": "1.0"}, "files": {}}', "must be a list"),
        (b'{"meta": {"api-version": "2.0"}, "files": []}', "unsupported repository API version"),
        (b'{"meta": {"api-version": "v1"}, "files": []}', "malformed repository API version"),
        (b'{"meta": {"api-version": "1.0"}, "name": "urllib3", "files": []}', "for project"),
    ],
)
def test_unreadable_json_pages_raise_format_error_naming_the_url(body, reason):
    with pytest.raises(FormatError) as caught:
        parse(body)
    assert caught.value.where.startswith(PAGE)
    assert reason in caught.value.reason


def test_an_empty_project_page_yields_nothing():
    assert parse(json_page()) == []
    assert parse(b"<!DOCTYPE html><html><body></body></html>") == []


@pytest.mark.parametrize("body", [b"", b"   ", b"Not Found", b"[]", b"null"])
def test_a_body_that_is_no_page_raises_rather_than_listing_no_files(body):
    with pytest.raises(FormatError, match="neither a JSON nor an HTML project page"):
        parse(body)


def test_a_byte_order_mark_does_not_hide_a_json_page():
    assert len(records(parse(b"\xef\xbb\xbf" + orjson.dumps(JSON_PAGE)))) == 4


def test_current_entries_come_back_unchanged():
    first = records(parse(orjson.dumps(JSON_PAGE)))
    stored = {name: record.entry_digest for name, record in first.items()}
    stored["requests-0.2.0.tar.gz"] += 1  # changed upstream since
    current = StoredDigests(stored)
    items = parse(orjson.dumps(JSON_PAGE), stored=current)
    assert sorted(i.filename for i in items if isinstance(i, Unchanged)) == [
        "requests-2.31.0.zip",
        "requests-2.32.0-py3-none-any.whl",
        "requests-2.32.3-py3-none-any.whl",
    ]
    assert list(records(items)) == ["requests-0.2.0.tar.gz"]
    assert sorted(current.asked) == sorted(stored)


def test_the_same_document_at_another_url_is_not_current():
    moved = json.loads(orjson.dumps(JSON_PAGE))
    moved["files"][0]["url"] = "https://mirror.example/requests-0.2.0.tar.gz"
    before = records(parse(orjson.dumps(JSON_PAGE)))["requests-0.2.0.tar.gz"]
    after = records(parse(orjson.dumps(moved)))["requests-0.2.0.tar.gz"]
    assert before.document == after.document
    assert before.entry_digest != after.entry_digest


# --- Parsing HTML pages (PEP 503, 592, 629, 658, 714) -------------------------------------------


def test_html_page_yields_the_same_documents_as_json_minus_json_only_fields():
    from_html = documents(parse(HTML_PAGE))
    from_json = documents(parse(orjson.dumps(JSON_PAGE)))
    assert sorted(from_html) == sorted(from_json)
    for name, doc in from_json.items():
        expected = {k: v for k, v in doc.items() if k not in ("size", "upload-time")}
        if name == "requests-2.32.3-py3-none-any.whl":
            expected["hashes"] = {"sha256": sha("2.32.3 whl")}  # HTML carries one hash
        assert from_html[name] == expected, name


def test_html_attributes_are_unescaped_and_urls_resolved():
    found = records(parse(HTML_PAGE))
    assert found["requests-2.32.0-py3-none-any.whl"].extra["requires-python"] == ">=3.8"
    assert found["requests-2.32.3-py3-none-any.whl"].url == (
        "https://pypi.example/files/requests-2.32.3-py3-none-any.whl"
    )
    # The filename is the URL's last path segment; `&amp;` is `&`, the fragment dropped.
    assert found["requests-2.31.0.zip"].url == f"{FILES}/requests-2.31.0.zip?token=a&x=1"
    assert rejected(parse(HTML_PAGE)) == {"requests-0.3.0.egg": "unsupported file type (egg)"}


def test_html_filename_comes_from_the_quoted_url_path():
    body = (
        f'<a href="https://dl.example/whl/cu118/torch-2.0.0%2Bcu118-cp311-cp311-linux_x86_64.whl'
        f'#sha256={sha("t")}">torch-2.0.0+cu118-cp311-cp311-linux_x86_64.whl</a>'
    ).encode()
    (record,) = records(parse(body, project="torch")).values()
    assert record.filename == "torch-2.0.0+cu118-cp311-cp311-linux_x86_64.whl"
    assert record.version == "2.0.0+cu118"
    assert record.url.endswith("torch-2.0.0%2Bcu118-cp311-cp311-linux_x86_64.whl")


def test_html_base_tag_is_honoured():
    body = f'<base href="https://cdn.example/p/"><a href="a/requests-1.0.tar.gz#sha256={sha("x")}">x</a>'
    (record,) = records(parse(body.encode())).values()
    assert record.url == "https://cdn.example/p/a/requests-1.0.tar.gz"


def test_html_anchor_without_hash_is_rejected_and_folder_links_are_ignored():
    body = b'<a href="../">parent</a><a href="https://f.example/requests-1.0.tar.gz">x</a>'
    assert rejected(parse(body)) == {"requests-1.0.tar.gz": "no sha256 hash"}


def test_html_extra_fragment_parameters_are_ignored():
    body = f'<a href="/requests-1.0.tar.gz#egg=requests&sha256={sha("x")}">x</a>'.encode()
    (record,) = records(parse(body)).values()
    assert record.sha256 == sha("x")


def test_html_yanked_without_value_and_with_empty_value_are_both_yanked():
    body = (
        f'<a href="/requests-1.0.tar.gz#sha256={sha("a")}" data-yanked>a</a>'
        f'<a href="/requests-1.1.tar.gz#sha256={sha("b")}" data-yanked="">b</a>'
        f'<a href="/requests-1.2.tar.gz#sha256={sha("c")}" data-yanked="bad &amp; broken">c</a>'
    ).encode()
    docs = documents(parse(body))
    assert [d["yanked"] for _, d in sorted(docs.items())] == [True, True, "bad & broken"]


def test_html_core_metadata_attribute_wins_over_dist_info_metadata():
    body = (
        f'<a href="/requests-1.0-py3-none-any.whl#sha256={sha("a")}" '
        f'data-dist-info-metadata="sha256={sha("old")}" data-core-metadata="sha256={sha("new")}">'
        "a</a>"
    ).encode()
    (doc,) = documents(parse(body)).values()
    assert doc["core-metadata"] == {"sha256": sha("new")}


def test_html_of_another_major_version_is_refused():
    body = b'<meta name="pypi:repository-version" content="2.0"><a href="/x.tar.gz">x</a>'
    with pytest.raises(FormatError, match="unsupported repository API version 2.0"):
        parse(body)


def test_non_utf8_html_page_raises_format_error():
    with pytest.raises(FormatError, match="not UTF-8"):
        parse(b"<a href='/requests-1.0.tar.gz'>caf\xe9</a>")


def test_hostile_html_names_are_rejected():
    body = (
        f'<a href="https://evil.example/%2e%2e%2Fsecrets.tar.gz#sha256={sha("1")}">x</a>'
        f'<a href="https://evil.example/requests-1.0.tar.gz%00.whl#sha256={sha("2")}">x</a>'
        f'<a href="https://evil.example/..%5Crequests-1.0.tar.gz#sha256={sha("3")}">x</a>'
    ).encode()
    assert set(rejected(parse(body)).values()) == {"unsafe file name"}
    assert len(rejected(parse(body))) == 3


# --- Fetching --------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    etag: str = ""
    last_modified: str = ""


class FakeClient:
    """Serves canned responses; remembers what was asked."""

    max_bytes = 1 << 20

    def __init__(self, pages: dict[str, tuple[int, bytes, str]]) -> None:
        self.pages = pages
        self.asked: list[tuple[str, dict]] = []

    def download(self, url, dest, headers=None, max_bytes=None):
        self.asked.append((url, dict(headers or {})))
        status, body, etag = self.pages.get(url, (404, b"", ""))
        if status == 200 and (headers or {}).get("If-None-Match") == etag:
            return Response(304)
        if status == 200:
            dest.write(body)
        return Response(status, etag=etag, last_modified="Wed, 29 May 2024 15:37:47 GMT")

    fetch_index = UpstreamClient.fetch_index  # PSM's conditional GET over these answers


def test_fetch_unit_gets_the_project_page_preferring_json():
    client = FakeClient({PAGE: (200, orjson.dumps(JSON_PAGE), '"abc"')})
    dest = io.BytesIO()
    fetched = pypi.fetch_unit(client, SOURCE.rstrip("/"), "requests", dest, {})
    assert fetched.status == "changed"
    assert fetched.url == PAGE
    assert fetched.validators == {
        "url": PAGE,
        "etag": '"abc"',
        "last_modified": "Wed, 29 May 2024 15:37:47 GMT",
    }
    ((url, headers),) = client.asked
    assert headers["Accept"].startswith("application/vnd.pypi.simple.v1+json,")
    assert "text/html" in headers["Accept"]
    assert len(records(pypi.parse_unit(dest, fetched.url, "requests"))) == 4


def test_fetch_unit_is_conditional_on_validators_of_the_same_url():
    client = FakeClient({PAGE: (200, b"{}", '"abc"')})
    validators = {"url": PAGE, "etag": '"abc"', "last_modified": "then"}
    fetched = pypi.fetch_unit(client, SOURCE, "requests", io.BytesIO(), validators)
    assert fetched.status == "unchanged"
    assert fetched.validators == validators
    assert client.asked[0][1]["If-None-Match"] == '"abc"'
    assert client.asked[0][1]["If-Modified-Since"] == "then"
    other = {"url": "https://old.example/simple/requests/", "etag": '"abc"'}
    assert pypi.fetch_unit(client, SOURCE, "requests", io.BytesIO(), other).status == "changed"
    assert "If-None-Match" not in client.asked[1][1]


def test_fetch_unit_of_a_project_upstream_does_not_have_is_missing():
    fetched = pypi.fetch_unit(FakeClient({}), SOURCE, "nothere", io.BytesIO(), {})
    assert fetched.status == "missing"


def test_fetch_unit_refuses_a_name_that_is_not_a_normalized_project():
    with pytest.raises(FormatError, match="not a normalized project name"):
        pypi.fetch_unit(FakeClient({}), SOURCE, "../admin", io.BytesIO(), {})


def test_fetch_unit_over_http_then_revalidates_with_if_modified_since(upstream):
    upstream.write("simple/requests/index.html", HTML_PAGE)
    client = UpstreamClient()
    try:
        with io.BytesIO() as dest:
            fetched = pypi.fetch_unit(client, upstream.url + "/simple", "requests", dest, {})
            assert fetched.status == "changed"
            assert fetched.validators["last_modified"]
            assert len(records(pypi.parse_unit(dest, fetched.url, "requests"))) == 4
        since = {k: v for k, v in fetched.validators.items() if k != "etag"}  # the date alone
        again = pypi.fetch_unit(client, upstream.url + "/simple", "requests", io.BytesIO(), since)
        assert again.status == "unchanged"
    finally:
        client.close()


def units(client, source_url: str, options: dict) -> list[str]:
    return sorted(pypi.list_units(client, source_url, options))


def test_units_are_the_normalized_projects_of_the_root():
    root = {
        "meta": {"_last-serial": 1, "api-version": "1.1"},
        "projects": [{"name": "Requests"}, {"name": "zope.interface"}, {"name": "bad name"}],
    }
    client = FakeClient({SOURCE: (200, orjson.dumps(root), "")})
    assert units(client, SOURCE, {}) == ["requests", "zope-interface"]
    html_root = b'<a href="/simple/a/">A_B</a><a href="/simple/b/">a.b</a><a href="/c/">C</a>'
    client = FakeClient({SOURCE: (200, html_root, "")})
    assert units(client, SOURCE.rstrip("/"), {}) == ["a-b", "c"]


def test_units_of_named_projects_fetch_no_root():
    client = FakeClient({})
    assert units(client, SOURCE, {"projects": ["Django", "numpy"]}) == [
        "django",
        "numpy",
    ]
    assert client.asked == []


def test_units_without_a_root_raise_format_error():
    with pytest.raises(FormatError, match="not found"):
        pypi.list_units(FakeClient({}), SOURCE, {})


def test_projects_option_is_validated_and_normalized():
    assert pypi.clean_options(None) == {}
    assert pypi.clean_options({"projects": []}) == {}
    assert pypi.clean_options({"projects": ["Django", "django", "Zope.Interface"]}) == {
        "projects": ["django", "zope-interface"]
    }
    with pytest.raises(OptionsError, match="'-bad' is not 'name"):
        pypi.clean_options({"projects": ["ok", "-bad"]})
    with pytest.raises(OptionsError, match="must be a list of 'name"):
        pypi.clean_options({"projects": "django"})
    with pytest.raises(OptionsError, match="unknown Python mirror options: subdirs"):
        pypi.clean_options({"subdirs": []})


def test_naming_projects_of_pypi_org_is_no_full_mirror():
    assert pypi.source_warnings("https://pypi.org/simple/", {"projects": ["django"]}) == []


# --- Rendering ----------------------------------------------------------------------------------


def rendered(items: list, project: str = "requests") -> tuple[bytes, bytes]:
    return render_project(project, [(r.filename, r.document) for r in records(items).values()])


def test_rendered_json_parses_back_to_the_same_documents():
    parsed = parse(orjson.dumps(JSON_PAGE))
    _, page = rendered(parsed)
    again = parse(page, url=PSM_PAGE)
    assert documents(again) == documents(parsed)
    assert not rejected(again)


def test_rendered_html_parses_back_to_the_same_documents():
    parsed = parse(HTML_PAGE)
    page, _ = rendered(parsed)
    again = parse(page, url=PSM_PAGE)
    assert documents(again) == documents(parsed)
    assert not rejected(again)


def test_rendered_pages_link_files_inside_the_channel():
    _, page = rendered(parse(orjson.dumps(JSON_PAGE)))
    for record in records(parse(page, url=PSM_PAGE)).values():
        path = record.url.removeprefix("https://psm.example/api/repo/py/")
        assert pypi.locate(path) == ("requests", record.filename)
        assert path == file_path("requests", record.filename)


def test_rendered_json_is_pep_691_v1_1_with_sorted_versions():
    page = orjson.loads(rendered(parse(orjson.dumps(JSON_PAGE)))[1])
    assert page["meta"] == {"api-version": "1.0"}  # the md5 zip has no size
    assert page["name"] == "requests"
    assert page["versions"] == ["0.2.0", "2.31.0", "2.32.0", "2.32.3"]
    first = page["files"][0]
    assert first == {
        "filename": "requests-0.2.0.tar.gz",
        "url": "../../files/requests/requests-0.2.0.tar.gz",
        "hashes": {"sha256": sha("0.2.0")},
        "size": 8453,
        "upload-time": "2011-02-14T19:21:42.466290Z",
    }
    sized = [entry("requests-10.0.tar.gz", size=1), entry("requests-9.0.tar.gz", size=2)]
    page = orjson.loads(rendered(parse(json_page(*sized)))[1])
    assert page["meta"] == {"api-version": "1.1"}
    assert page["versions"] == ["9.0", "10.0"]  # by version, not text


def test_rendered_html_escapes_attributes_and_quotes_file_urls():
    page = json_page(
        entry(
            "requests-1.0+x-py3-none-any.whl",
            yanked='"><script>alert(1)</script>',
            **{"requires-python": ">=3.8,<4"},
        )
    )
    html_page = rendered(parse(page))[0].decode()
    assert "<script>" not in html_page
    assert 'data-yanked="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in html_page
    assert 'data-requires-python="&gt;=3.8,&lt;4"' in html_page
    assert 'href="../../files/requests/requests-1.0%2Bx-py3-none-any.whl#sha256=' in html_page
    assert '<meta name="pypi:repository-version" content="1.1">' in html_page


def test_rendering_is_deterministic_whatever_the_order_of_documents():
    found = records(parse(orjson.dumps(JSON_PAGE)))
    pairs = [(r.filename, r.document) for r in found.values()]
    as_bytes = [(name, doc.encode()) for name, doc in reversed(pairs)]
    assert render_project("requests", pairs) == render_project("requests", as_bytes)


class Source:
    def __init__(self, units: dict[str, list[tuple[str, str]]]) -> None:
        self._units = units

    def units(self) -> list[str]:
        return list(self._units)

    def documents(self, unit: str, suffix: str = ""):
        return self._units[unit]

    def grouped_documents(self, units=None):
        wanted = self._units if units is None else set(units)
        for unit in sorted(wanted):
            if self._units.get(unit):
                yield unit, self._units[unit]

    def unit_extras(self, unit: str) -> dict:
        return {}


def render_all(units: dict) -> dict[str, tuple[str, bytes]]:
    files: dict[str, tuple[str, bytes]] = {}

    @contextmanager
    def emit(path: str, content_type: str):
        out = io.BytesIO()
        yield out
        files[path] = (content_type, out.getvalue())

    pypi.render_index(Source(units), emit)
    return files


def test_render_index_writes_every_project_page_and_the_project_list():
    found = records(parse(orjson.dumps(JSON_PAGE)))
    pairs = [(r.filename, r.document) for r in found.values()]
    files = render_all({"requests": pairs, "empty": [], "zope-interface": [], "Bad_Unit": pairs})
    assert sorted(files) == [
        "simple/index.html",
        "simple/index.json",
        "simple/requests/index.html",
        "simple/requests/index.json",
    ]
    assert files["simple/requests/index.html"] == (HTML_TYPE, render_project("requests", pairs)[0])
    assert files["simple/requests/index.json"][0] == JSON_TYPE
    root = orjson.loads(files["simple/index.json"][1])
    assert root == {"meta": {"api-version": "1.1"}, "projects": [{"name": "requests"}]}
    assert b'<a href="requests/">requests</a>' in files["simple/index.html"][1]


def test_rendered_project_list_parses_back():
    html_root, json_root = render_root(["b", "a-b", "a-b"])
    assert units(FakeClient({SOURCE: (200, html_root, "")}), SOURCE, {}) == ["a-b", "b"]
    assert units(FakeClient({SOURCE: (200, json_root, "")}), SOURCE, {}) == ["a-b", "b"]


# --- Paths and negotiation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("files/requests/requests-1.0.tar.gz", ("requests", "requests-1.0.tar.gz")),
        (
            "files/zope-interface/zope.interface-6.0.zip",
            ("zope-interface", "zope.interface-6.0.zip"),
        ),
        (
            "files/requests/requests-1.0-py3-none-any.whl",
            ("requests", "requests-1.0-py3-none-any.whl"),
        ),
        ("files/requests/requests-1.0-py3-none-any.whl.metadata", None),
        ("files/Requests/requests-1.0.tar.gz", None),
        ("files/requests/../x.tar.gz", None),
        ("files/requests/sub/requests-1.0.tar.gz", None),
        ("simple/requests/index.html", None),
        ("files/requests/", None),
        ("requests/requests-1.0.tar.gz", None),
    ],
)
def test_locate_maps_file_paths_back_to_project_and_filename(path, expected):
    assert pypi.locate(path) == expected


def test_locate_metadata_maps_pep_658_paths():
    path = "files/requests/requests-1.0-py3-none-any.whl.metadata"
    assert locate_metadata(path) == ("requests", "requests-1.0-py3-none-any.whl")
    assert locate_metadata("files/requests/requests-1.0-py3-none-any.whl") is None
    assert locate_metadata("files/requests/.metadata") is None


@pytest.mark.parametrize(
    ("path", "flavour", "expected"),
    [
        ("simple/", "json", "simple/index.json"),
        ("simple", "html", "simple/index.html"),
        ("simple/requests/", "json", "simple/requests/index.json"),
        ("simple/Zope.Interface/", "html", "simple/zope-interface/index.html"),
        ("simple/bad name/", "html", None),
        ("simple/a/b/", "html", None),
        ("files/requests/", "html", None),
    ],
)
def test_index_file_maps_page_requests_to_published_files(path, flavour, expected):
    assert index_file(path, flavour) == expected


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "html"),
        ("", "html"),
        # pip and uv
        (
            "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1,"
            " text/html; q=0.01",
            "json",
        ),
        ("application/vnd.pypi.simple.v1+json", "json"),
        ("application/vnd.pypi.simple.latest+json", "json"),
        ("application/vnd.pypi.simple.v1+html", "html"),
        ("application/vnd.pypi.simple.latest+html", "html"),
        ("text/html", "html"),
        ("TEXT/HTML; charset=utf-8", "html"),
        ("*/*", "html"),
        # a browser
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "html"),
        ("application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html", "json"),
        ("application/vnd.pypi.simple.v1+json;q=0.5, text/html", "html"),
        ("application/*", "html"),  # a wildcard: HTML, like */*
        ("text/*;q=0.9, application/vnd.pypi.simple.v1+json;q=0.8", "html"),
        ("application/vnd.pypi.simple.v1+json;q=0, */*", "html"),
        ("application/json", None),
        ("application/vnd.pypi.simple.v2+json", None),
        ("text/html;q=0", None),
        ("text/html;q=nan", None),
        ("text/html;q=2", None),
        ("garbage", None),
    ],
)
def test_negotiate_follows_pep_691(accept, expected):
    assert negotiate(accept) == expected


# --- The project list with serials (PyPI's JSON root) -------------------------------------------


def test_project_serials_are_read_from_a_json_root_as_a_stream():
    root = {
        "meta": {"api-version": "1.1", "_last-serial": 9},
        "projects": [
            {"name": "Zope.Interface", "_last-serial": 7},
            {"name": "requests"},
            {"name": "../etc", "_last-serial": 3},
            {"name": "numpy", "_last-serial": "8"},
        ],
    }
    assert parse_project_serials(orjson.dumps(root), SOURCE) == {
        "zope-interface": 7,
        "requests": None,
        "numpy": None,  # a serial that is not an integer is no serial
    }
    assert parse_project_serials(b"<!DOCTYPE html><html></html>", SOURCE) is None


@pytest.mark.parametrize(
    "body",
    [
        b'{"meta": {"api-version": "1.1"}}',  # no project list: never "upstream is empty"
        b'{"projects": {"requests": 1}}',
        b'{"projects": [{"nom": "requests"}]}',
        b'{"projects": [{"name": "requests"}',
    ],
    ids=["no-projects", "not-an-array", "no-name", "truncated"],
)
def test_a_malformed_json_root_is_a_format_error(body):
    with pytest.raises(FormatError, match="malformed JSON project list"):
        parse_project_serials(body, SOURCE)


def test_the_url_and_escape_shortcuts_agree_with_the_character_tests_everywhere():
    import html

    from channels_app.formats.pypi_pages import _escape, _unsafe_url

    for point in range(0x800):  # the shortcut is for ASCII; the rest is tested as before
        c = chr(point)
        assert _unsafe_url(f"h{c}") is (c.isspace() or not c.isprintable()), point
    for point in range(0x800):
        text = f"a{chr(point)}b"
        assert _escape(text) == html.escape(text, quote=True), point


def test_a_page_fetched_in_memory_spills_to_disk_beyond_the_limit():
    from channels_app.formats.pypi import PAGE_IN_MEMORY

    fmt = FORMATS["pypi"]
    with fmt.unit_buffer() as buffer:
        buffer.write(b"x" * 1000)
        assert buffer._rolled is False  # a few KB: never a file
        buffer.write(b"x" * PAGE_IN_MEMORY)
        assert buffer._rolled is True
        buffer.seek(0)
        assert len(buffer.read()) == PAGE_IN_MEMORY + 1000


def test_the_plain_url_shortcut_gives_what_joining_and_splitting_give():
    import random

    from channels_app.formats.pypi_pages import _PLAIN_PATH, _PLAIN_URL, _joined_url, _upstream_url

    pieces = ["a", "Z", "0", ".", "..", "-", "_", "~", "%", "%2F", "+", "!", "/", "//", ":", "8",
              ":80", "#", "?", ";", "@", " ", "\t", "é", "\\", "[", "]", "&", "=", "x.whl"]  # fmt: skip
    starts = ["https://", "http://", "HTTPS://", "ftp://", "//", "/", "", "https:", "https:///"]
    chosen = random.Random(17)
    urls = [
        "https://files.example/packages/ab/cd/pkg-1.0-py3-none-any.whl#sha256=00",
        "https://files.example:8443/a/b.tar.gz",
        "https://files.example",
        "https://-/a",
        "https://./a/../b/./c",
    ]
    for _ in range(30_000):
        host = "".join(chosen.choices(pieces[:8], k=chosen.randint(0, 3)))
        path = "".join(chosen.choices(pieces, k=chosen.randint(0, 6)))
        urls.append(chosen.choice(starts) + host + path)
    assert sum(bool(_PLAIN_URL.fullmatch(u.partition("#")[0])) for u in urls) > 500
    assert sum(bool(_PLAIN_PATH.fullmatch(u.partition("#")[0])) for u in urls) > 500
    for base in (
        "https://upstream.example/simple/pkg/",
        "http://upstream.example/simple/pkg/",
        "HTTPS://User@Upstream.Example:8443/simple/pkg/?q=1",
        "https://[::1]:8080/simple/pkg/",
        "ftp://upstream.example/simple/pkg/",
        "https://bad host/simple/pkg/",
    ):
        for url in filter(None, urls):  # an empty URL is refused before either
            assert _upstream_url(base, url) == _joined_url(base, url), (base, url)


#: Tags of real wheels: compressed sets, abi3, free-threaded, PyPy, every platform family.
REAL_TAGS = (
    "py3-none-any", "py2.py3-none-any", "cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64",
    "cp39-abi3-macosx_10_9_universal2", "pp310-pypy310_pp73-win_amd64", "cp313-cp313t-win_arm64",
    "cp311-cp311-musllinux_1_2_aarch64", "cp27-cp27mu-linux_x86_64", "py3-none-win32",
    "cp36.cp37.cp38-none-manylinux1_i686", "graalpy311-graalpy242_311_native-macosx_11_0_arm64",
)  # fmt: skip


def _real_world_file_names() -> list[str]:
    """File names built the way uploaders build them from the names and versions of 9,847
    PyPI projects (tests/fixtures/pypi_releases.tsv.gz: every project whose latest version is
    not in PEP 440's normal form, and a sample of the others), spelled several ways, with and
    without build tags, and mangled at random."""
    import gzip
    import random
    import re
    from pathlib import Path

    fixture = Path(__file__).parents[2] / "fixtures" / "pypi_releases.tsv.gz"
    releases = [line.split("\t") for line in gzip.decompress(fixture.read_bytes()).decode().split("\n") if line]  # fmt: skip
    chosen = random.Random(17)
    odd = list("-_.+!~ Ééß0aZ/%")
    names = []
    for name, version in releases:
        escaped = re.sub(r"[-_.]+", "_", name)
        spelled = chosen.choice([name, escaped, escaped.title(), name.upper(), name.replace("-", ".")])  # fmt: skip
        tag = chosen.choice(REAL_TAGS)
        names += [
            f"{spelled}-{version}.tar.gz",
            f"{spelled}-{version}.zip",
            f"{escaped}-{version}-{tag}.whl",
            f"{escaped}-{version}-{chosen.choice(['1', '2_x', 'x1'])}-{tag}.whl",
            f"{name}-{version}-{tag}.whl",  # dashes in the name: not a wheel name
        ]
        mangled = list(chosen.choice(names[-5:]))
        for _ in range(chosen.randint(1, 3)):
            mangled.insert(chosen.randrange(len(mangled) + 1), chosen.choice(odd))
        names.append("".join(mangled))
    return names


def test_the_usual_file_names_are_read_as_packaging_reads_them():
    """The regex shortcut for wheel and sdist names gives what `packaging` gives, on real
    projects' names and versions, odd ones and mangled ones included (or leaves the name to
    `packaging`)."""
    from channels_app.formats.pypi_pages import (
        _PLAIN_WHEEL,
        _name_and_version,
        _parsed_name_and_version,
    )

    names = _real_world_file_names()
    assert sum(_PLAIN_WHEEL.fullmatch(name) is not None for name in names) > len(names) // 8
    differ = [name for name in names if _name_and_version(name) != _parsed_name_and_version(name)]
    assert differ == []
    rejected = sum(isinstance(_name_and_version(name), str) for name in names)
    assert len(names) // 10 < rejected < len(names) // 2  # both answers were exercised


def test_versions_of_release_numbers_sort_as_packaging_sorts_them():
    import random

    from packaging.version import Version

    from channels_app.formats.pypi_pages import _sorted_versions

    chosen = random.Random(17)
    parts = ["0", "1", "2", "10", "00", "9"]
    for _ in range(2000):
        versions = [
            ".".join(chosen.choices(parts[:4], k=chosen.randint(1, 4)))
            for _ in range(chosen.randint(0, 12))
        ]
        assert _sorted_versions(versions) == sorted(versions, key=Version), versions
        versions.append(chosen.choice(["1.0rc1", "2.0.post1", "1!0.1", "1.0+local", "0.0.dev0"]))
        assert _sorted_versions(versions) == sorted(versions, key=Version), versions


def _straightforward_render(project: str, documents) -> tuple[bytes, bytes]:
    """`render_project` written plainly (every value escaped, every name quoted, versions
    read and ordered by `packaging`): what the page must be, byte for byte."""
    import html
    from urllib.parse import quote

    from packaging.version import Version

    from channels_app.formats.pypi_pages import _parsed_name_and_version

    files = sorted(((name, orjson.loads(doc)) for name, doc in documents), key=lambda f: f[0])
    entries, anchors, versions = [], [], set()
    for filename, document in files:
        url = f"../../{file_path(project, quote(filename))}"
        others = {key: value for key, value in document.items() if key != "filename"}
        entries.append({"filename": filename, "url": url, **others})
        hashes = document.get("hashes") or {}
        readable = [
            name for name in hashes if name in ("sha512", "sha384", "sha224", "sha1", "md5")
        ]
        chosen = "sha256" if "sha256" in hashes else min(readable or hashes, default=None)
        attrs = [("href", f"{url}#{chosen}={hashes[chosen]}" if chosen else url)]
        if document.get("requires-python"):
            attrs.append(("data-requires-python", document["requires-python"]))
        if document.get("yanked"):
            yanked = document["yanked"]
            attrs.append(("data-yanked", "" if yanked is True else str(yanked)))
        metadata = document.get("core-metadata")
        if metadata is True:
            attrs.append(("data-core-metadata", "true"))
        elif isinstance(metadata, dict) and metadata:
            name = "sha256" if "sha256" in metadata else min(metadata)
            attrs.append(("data-core-metadata", f"{name}={metadata[name]}"))
        shown = " ".join(f'{key}="{html.escape(value, quote=True)}"' for key, value in attrs)
        anchors.append(f"    <a {shown}>{html.escape(filename, quote=True)}</a><br />\n")
        parsed = _parsed_name_and_version(filename)
        if not isinstance(parsed, str):
            versions.add(parsed[1])
    page = {
        "meta": {"api-version": "1.1" if all("size" in d for _, d in files) else "1.0"},
        "name": project,
        "versions": sorted(versions, key=Version),
        "files": entries,
    }
    title = html.escape(f"Links for {project}")
    body = (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.1">\n'
        f"    <title>{title}</title>\n  </head>\n  <body>\n    <h1>{title}</h1>\n"
        + "".join(anchors)
        + "  </body>\n</html>\n"
    )
    return body.encode(), orjson.dumps(page)


def test_project_pages_are_rendered_byte_for_byte_as_the_straightforward_way_renders_them():
    """The shortcuts of `render_project` (names quoted and values escaped only when needed,
    versions read by regex, repeated values escaped once) change no byte, on real projects'
    file names (odd and mangled ones included) with every kind of document field."""
    import random

    chosen = random.Random(691)
    names = _real_world_file_names()
    requires = [">=3.8", ">=3.8,<4", "!=3.0.*", "<'4'", '>="3"&x', "", "~=3.10"]
    yanked = [True, False, "", "broken", '"><script>x</script>', "a & b's"]
    for page in range(1500):
        documents = []
        for filename in chosen.sample(names, chosen.randint(0, 12)):
            hashes = chosen.choice(
                [
                    {"sha256": sha(filename)},
                    {"md5": "a" * 32},
                    {},
                    {"md5": "b" * 32, "sha256": "c" * 64},
                ]
            )
            document: dict = {"filename": filename, "hashes": hashes}
            if chosen.random() < 0.8:
                document["requires-python"] = chosen.choice(requires)
            if chosen.random() < 0.3:
                document["yanked"] = chosen.choice(yanked)
            if chosen.random() < 0.9:
                document["size"] = chosen.randint(0, 10**9)
            if chosen.random() < 0.5:
                document["upload-time"] = "2024-01-02T03:04:05.123456Z"
            if chosen.random() < 0.5:
                document["core-metadata"] = chosen.choice([True, {"sha256": "d" * 64}, {}])
            if chosen.random() < 0.05:  # keys a stored document should not have
                document["url"] = "https://elsewhere.example/x"
                document["filename"] = "another-name-1.0.tar.gz"
            documents.append((filename, orjson.dumps(document)))
        project = f"proj-{page}" if page % 3 else "a.b_c"
        expected = _straightforward_render(project, documents)
        assert render_project(project, documents) == expected, documents
