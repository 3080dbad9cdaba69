"""Project pages PSM renders, read back by pip: pip reads every file as PSM means it.

Random but seeded (the same on every run) stored file documents, in the shape `file_record`
stores them (file names with `+`, `!`, `~`, `_`, dots, upper case, epochs, local versions, long
ones; every hash name PSM keeps; yanked as True or a reason with markup characters, entities,
newlines, control and non-ASCII characters, very long; requires-python with `<`, `>=`, `!=`,
commas, spaces, `&` and quotes; core metadata as True, a hash dict or absent; size and upload
time or not), rendered by `render_project` and read by pip's own reader
(`pip._internal.index.collector.parse_links`, HTML and PEP 691 JSON).

What they prove, file by file, on both pages: the URL pip fetches, resolved against the page's
URL, is the path PSM serves the file at (`file_path`, found by `PypiFormat.locate` once the
server has unquoted it), and its core metadata at that path plus `.metadata`; pip reads the
stored file name, requires-python, yanked status and reason (True: the empty reason) and core
metadata; from JSON every stored hash, from HTML (room for one) one stored hash pip checks,
sha256 where there is one, whenever a stored hash is one pip reads. The JSON page holds
PEP 691/700 fields only, with the stored values; `withdraw_project` renders what
`render_project` renders without the withdrawn files; the project list leads pip to each
project's page.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

import orjson
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from channels_app.formats.base import PackageRecord
from channels_app.formats.pypi import PypiFormat, locate_metadata
from channels_app.formats.pypi_pages import (
    file_path,
    file_record,
    render_project,
    render_root,
    safe_filename,
    withdraw_project,
)
from tests.fixtures.pip_reader import HTMLLinkParser, IndexContent, Link, parse_links

CASES = 400
ORIGIN = "http://127.0.0.1:8000"
CHANNEL = "/api/repo/ch/"
HTML = "text/html"
JSON = "application/vnd.pypi.simple.v1+json"
#: The hash names pip reads (`pip._internal.models.link._SUPPORTED_HASHES`).
PIP_HASHES = {"sha512", "sha384", "sha256", "sha224", "sha1", "md5"}
#: Hash names PSM stores (`_HASH_LENGTHS`: hashlib's guaranteed ones but shake).
STORED_HASHES = sorted(
    name for name in hashlib.algorithms_guaranteed if not name.startswith("shake_")
)
#: The keys of a PEP 691 file entry (PEP 700: size, upload-time; PEP 714: core-metadata).
ENTRY_KEYS = {"filename", "url", "hashes", "requires-python", "yanked", "core-metadata"}
ENTRY_KEYS |= {"size", "upload-time"}


def page_url(project: str) -> str:
    return f"{ORIGIN}{CHANNEL}simple/{project}/"


# --- Random stored documents --------------------------------------------------------------------

PROJECTS = [
    "demo-pkg",
    "a",
    "zope-interface",
    "x1-2-3",
    "a-very-long-project-name-" + "-".join(["segment"] * 8),
]
VERSIONS = [
    "1.0",
    "0.0.1",
    "1!2.0",
    "2.0rc1",
    "1.0.post3.dev4",
    "1.0+cu118",
    "1.0+cu118.torch2.1",
    "3!1.0a1+local.7",
    "10.2.3+" + ".".join(["abc123"] * 12),
    "1.0~rc1",  # not PEP 440 (`~`): never stored, but rendered right all the same
]
WHEEL_TAGS = ["py3-none-any", "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64"]
WHEEL_TAGS += ["py2.py3-none-any", "cp312-abi3-win_amd64"]


def _spelled(rng: random.Random, project: str, wheel: bool) -> str:
    """The project's name as a file name may spell it: `_`, `.`, upper case."""
    separator = "_" if wheel else rng.choice(["-", "_", "."])
    name = project.replace("-", separator)
    return name.title() if rng.random() < 0.3 else name


def random_filename(rng: random.Random, project: str) -> str:
    version = rng.choice(VERSIONS)
    kind = rng.choice([".whl", ".whl", ".tar.gz", ".zip"])
    if kind != ".whl":
        return f"{_spelled(rng, project, False)}-{version}{kind}"
    build = rng.choice(["", "", "-1", "-2_x"])
    return f"{_spelled(rng, project, True)}-{version}{build}-{rng.choice(WHEEL_TAGS)}.whl"


def _hash_dict(rng: random.Random, seed: str, required: bool) -> dict[str, str]:
    """Digests of random names, sorted (as `_hashes` stores them); sha256 or md5 if
    `required` (a file without either is rejected)."""
    names = set(rng.sample(STORED_HASHES, rng.randint(0, 3)))
    if required and not names & {"sha256", "md5"}:
        names.add(rng.choice(["sha256", "sha256", "md5"]))
    return {name: hashlib.new(name, seed.encode()).hexdigest() for name in sorted(names)}


REQUIRES_PIECES = [">=3.8", "<4", "!=3.0.*", ", ", ",", " ", "~=3.10", "==3.*", "&", "&amp;"]
REQUIRES_PIECES += ["&lt;", "&not", '"', "'", ">", "<=", "&#x3c;", "é", "\t", ">=3.8, <4"]
REASON_PIECES = ["<", ">", "&", '"', "'", "\n", "\r\n", "\r", "\t", "é", "☃", "𝄞", "&amp;"]
REASON_PIECES += ["&#39;", "&notit;", "&lt", "<script>x</script>", "broken", " ", "\x0b"]
REASON_PIECES += ["\x00", "\x0c", "\x7f", "\u2028", "\u00a0", "=", "#sha256=", "-->", "]]>"]


def _joined(rng: random.Random, pieces: list[str], most: int) -> str:
    return "".join(rng.choices(pieces, k=rng.randint(1, most)))


def random_requires(rng: random.Random) -> str:
    while not (text := _joined(rng, REQUIRES_PIECES, 8)).strip():
        pass  # blank values are not stored (`file_record`)
    return text


def random_reason(rng: random.Random) -> str:
    if rng.random() < 0.05:
        return "very long " + "".join(rng.choices(string.printable + "é<&>", k=5000))
    return _joined(rng, REASON_PIECES + list(string.ascii_letters), 12)


def random_document(rng: random.Random, project: str, filename: str) -> dict[str, Any]:
    """A stored document (`file_record`'s `extra`): the keys it keeps, the values it keeps."""
    document: dict[str, Any] = {
        "filename": filename,
        "hashes": _hash_dict(rng, filename, required=True),
    }
    if rng.random() < 0.6:
        document["requires-python"] = random_requires(rng)
    if rng.random() < 0.4:
        document["yanked"] = True if rng.random() < 0.3 else random_reason(rng)
    if rng.random() < 0.8:
        document["size"] = rng.choice([0, 1, rng.randint(2, 10**10)])
    if rng.random() < 0.6:
        document["upload-time"] = rng.choice(
            ["2024-01-02T03:04:05Z", "2024-01-02T03:04:05.123456Z", "2019-12-31T23:59:59.1Z"]
        )
    if rng.random() < 0.6:
        metadata = _hash_dict(rng, filename + ".metadata", required=False)
        document["core-metadata"] = True if rng.random() < 0.3 or not metadata else metadata
    return document


def random_documents(rng: random.Random, project: str) -> dict[str, dict[str, Any]]:
    """Filename -> stored document: a project's files (none, one or many)."""
    documents = {}
    for _ in range(rng.choice([0, 1, 2, 3, 5, 8])):
        filename = random_filename(rng, project)
        documents[filename] = random_document(rng, project, filename)
    return documents


def stored(documents: dict[str, dict[str, Any]]) -> list[tuple[str, bytes]]:
    """The documents as `render_project` gets them (the stored JSON)."""
    return [(name, orjson.dumps(document)) for name, document in documents.items()]


# --- The pages as pip reads them ----------------------------------------------------------------


def pip_links(body: bytes, content_type: str, project: str) -> list[Link]:
    page = IndexContent(body, content_type, None, page_url(project), cache_link_parsing=False)
    return list(parse_links(page))


def served_at(url: str) -> str:
    """The channel path a request for `url` reaches (the server unquotes the path)."""
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.query) == ("http", "127.0.0.1:8000", ""), url
    path = unquote(parts.path)
    assert path.startswith(CHANNEL), url
    return path.removeprefix(CHANNEL)


def readable(hashes: dict[str, str]) -> dict[str, str]:
    return {name: digest for name, digest in hashes.items() if name in PIP_HASHES}


def check_one_hash(read: dict[str, str], meant: dict[str, str], what: str) -> None:
    """An HTML anchor's one hash: a stored one, one pip checks if any stored one is, sha256
    if stored."""
    assert read.items() <= meant.items(), (what, read, meant)
    assert len(read) == (1 if readable(meant) else 0), (what, read, meant)
    assert "sha256" not in meant or "sha256" in read, (what, read, meant)


def check_link(link: Link, project: str, document: dict[str, Any], flavour: str) -> None:
    """pip's reading of one file agrees with the stored document in every field."""
    filename = document["filename"]
    what = (flavour, filename)
    fetched = link.url.split("#", 1)[0]
    assert served_at(fetched) == file_path(project, filename), what
    if safe_filename(filename):  # what PSM serves at all (`~` names are never stored)
        assert PypiFormat().locate(served_at(fetched)) == (project, filename), what
    assert link.filename == filename, what
    if flavour == "json":
        assert link._hashes == document["hashes"], what
    else:
        check_one_hash(link._hashes, document["hashes"], what)
    assert link.requires_python == document.get("requires-python"), what
    yanked = document.get("yanked")
    assert link.yanked_reason == ("" if yanked is True else yanked), what
    metadata = document.get("core-metadata")
    if metadata is None:
        assert link.metadata_file_data is None, what
        return
    assert link.metadata_file_data is not None, what
    sidecar = served_at(link.metadata_link().url.split("#", 1)[0])
    if safe_filename(filename):
        assert locate_metadata(sidecar) == (project, filename), what
    read = link.metadata_file_data.hashes or {}
    if metadata is True:
        assert read == {}, what
    elif flavour == "json":
        assert read == readable(metadata), what
    else:
        check_one_hash(read, metadata, what)


def check_json_page(body: bytes, project: str, documents: dict[str, dict[str, Any]]) -> None:
    """The JSON page by PEP 691/700 field names, read as plain JSON."""
    page = json.loads(body)
    assert set(page) == {"meta", "name", "versions", "files"}
    sized = all("size" in document for document in documents.values())
    assert page["meta"] == {"api-version": "1.1" if sized else "1.0"}
    assert page["name"] == project
    versions = page["versions"]
    assert versions == sorted(set(versions), key=Version)
    assert [entry["filename"] for entry in page["files"]] == sorted(documents)
    for entry in page["files"]:
        document = documents[entry["filename"]]
        assert set(entry) <= ENTRY_KEYS, entry
        assert {**entry, "url": None} == {**document, "url": None}, entry
        resolved = urljoin(page_url(project), entry["url"])
        assert served_at(resolved) == file_path(project, entry["filename"])
        assert isinstance(entry["hashes"], dict) and entry["hashes"]
    listed = {str(Version(v)) for v in versions}
    for filename in documents:
        version = _stored_version(filename)
        assert version is None or version in listed, (filename, versions)


def _stored_version(filename: str) -> str | None:
    """The version `packaging` reads in a wheel or sdist name, if it reads one."""
    try:
        if filename.endswith(".whl"):
            return str(parse_wheel_filename(filename)[1])
        return str(parse_sdist_filename(filename)[1])
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None


# --- The tests ----------------------------------------------------------------------------------


def test_every_rendered_file_is_read_by_pip_as_stored_on_the_html_and_the_json_page():
    files = stored_files = 0
    for case in range(CASES):
        rng = random.Random(case)
        project = rng.choice(PROJECTS)
        documents = random_documents(rng, project)
        page_html, page_json = render_project(project, stored(documents))
        for body, content_type, flavour in ((page_html, HTML, "html"), (page_json, JSON, "json")):
            links = pip_links(body, content_type, project)
            assert [link.filename for link in links] == sorted(documents), flavour
            for link in links:
                check_link(link, project, documents[link.filename], flavour)
        check_json_page(page_json, project, documents)
        files += len(documents)
        stored_files += sum(safe_filename(name) for name in documents)
    assert files > CASES * 2  # the pages were not empty
    assert stored_files > files // 2  # most of the names are ones PSM stores


def test_the_generated_documents_are_those_psm_stores_from_an_upstream_entry():
    """`file_record` keeps each random document as it is: the pages above are those PSM
    renders from what it mirrors, not from documents it would never store."""
    kept = 0
    for case in range(CASES):
        rng = random.Random(case)
        project = rng.choice(PROJECTS)
        for filename, document in random_documents(rng, project).items():
            upstream = {**document, "url": "https://files.example/p/" + quote(filename)}
            record = file_record(project, "https://pypi.example/simple/x/", upstream)
            if isinstance(record, PackageRecord):
                kept += 1
                assert record.extra == document, (record.extra, document)
    assert kept > CASES


def test_the_html_page_gives_pip_a_hash_it_reads_where_a_stored_one_is():
    """The disagreement found: `#blake2b=` (first by name) where an md5 was stored, which pip
    does not read, so it checked nothing; the same for core metadata."""
    md5, blake2b = hashlib.md5(b"x").hexdigest(), hashlib.blake2b(b"x").hexdigest()
    hashes = {"blake2b": blake2b, "md5": md5}
    filename = "demo_pkg-1.0+cu1-py3-none-any.whl"
    document = {"filename": filename, "hashes": hashes, "core-metadata": hashes}
    page_html, _ = render_project("demo-pkg", stored({filename: document}))
    (link,) = pip_links(page_html, HTML, "demo-pkg")
    assert link._hashes == {"md5": md5}
    assert link.metadata_file_data.hashes == {"md5": md5}


def test_withdrawing_files_renders_the_pages_of_the_files_kept():
    for case in range(CASES // 4):
        rng = random.Random(50_000 + case)
        project = rng.choice(PROJECTS)
        documents = random_documents(rng, project)
        _, page_json = render_project(project, stored(documents))
        gone = set(rng.sample(sorted(documents), rng.randint(0, len(documents))))
        gone |= {"not-listed-1.0.tar.gz"} if rng.random() < 0.3 else set()
        pages = withdraw_project(project, page_json, gone, "page")
        kept = {name: document for name, document in documents.items() if name not in gone}
        if len(kept) == len(documents):
            assert pages is None
        else:
            assert pages == render_project(project, stored(kept))


def test_the_project_list_leads_pip_to_each_projects_page():
    for case in range(CASES // 4):
        rng = random.Random(90_000 + case)
        names = {
            canonicalize_name(_joined(rng, ["a", "Z", "0", "-", "_", ".", "x9"], 10).strip("-_."))
            for _ in range(rng.randint(0, 6))
        }
        names.discard("")
        page_html, page_json = render_root(names)
        root = f"{ORIGIN}{CHANNEL}simple/"
        parser = HTMLLinkParser(root)
        parser.feed(page_html.decode())
        hrefs = [urljoin(root, anchor["href"]) for anchor in parser.anchors]
        assert hrefs == [page_url(name) for name in sorted(names)]
        listing = json.loads(page_json)
        assert listing["meta"] == {"api-version": "1.1"}
        assert [project["name"] for project in listing["projects"]] == sorted(names)
