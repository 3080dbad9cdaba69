"""Project pages read by PSM and by pip, compared file by file on random pages.

The pages are random but seeded (the same on every run), HTML (PEP 503) and JSON (PEP 691):
valid files mixed with hostile variants (attributes escaped every way HTML allows, in upper
case, given twice or without a value; several `<base>` tags, relative ones; hashes in the
fragment and in the query, given twice, malformed, of names pip does not know; URLs quoted,
half-quoted, with spaces, users, odd hosts and schemes; links hidden in comments, scripts
and CDATA; pages cut short; JSON entries of the wrong types, keys given twice, names that are
not their URL's). Each is read by PSM (`parse_page`, `file_record`) and by pip's own reader
(`pip._internal.index.collector.HTMLLinkParser`, `Link.from_element`, `Link.from_json`: what
`parse_links` does, link by link, so that a link pip fails on costs only that link).

What they prove: every file PSM accepts is a file pip reads on that page with the same URL
(the one pip fetches, path quoted as pip quotes it, fragment dropped), the same file name,
the same digest for every hash both read, the same requires-python and yanked status, and
core metadata only where pip sees it (with the same digests); and every link pip reads as a
wheel or sdist is an entry PSM accepts or rejects with a reason, never one dropped unseen.
PSM may reject what pip accepts (unsafe URLs or names, hashes that disagree, a link pip could
not fetch). Readings PSM keeps against pip's: a `data-yanked` without a value is yanked (to
HTML it is the empty string; pip's parser gives None, which pip reads as absent), and so is a
JSON `"yanked": ""` (no reason to PEP 691; uv reads it as yanked, pip as not); a relative
`<base href>` is resolved against the page, as HTML resolves it (pip joins links to it as
written, giving URLs it cannot fetch); and a JSON entry whose URL names no package file
(".../download/1"), which pip skips, is the file its `filename` names (as uv reads it).
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import posixpath
import random
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

import pytest

from channels_app.formats import FormatError
from channels_app.formats.base import PackageRecord, Rejected
from channels_app.formats.pypi_pages import (
    SUFFIXES,
    _link_url,
    _upstream_url,
    _url_filename,
    file_record,
    parse_page,
)
from tests.fixtures.pip_reader import (
    HTMLLinkParser,
    IndexContent,
    Link,
    is_archive_file,
    parse_links,
)

PROJECT = "demo-pkg"
PAGES = (
    "https://idx.example/simple/demo-pkg/",
    "http://idx.example:8080/pypi/simple/demo-pkg/",
    "https://idx.example/simple/demo-pkg/index.html",
)
CASES = 700


def digest(name: str, text: str) -> str:
    return hashlib.new(name, text.encode()).hexdigest()


# --- pip's reading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PipFile:
    """A link as pip reads it: what it fetches, the name it reads, the hashes it knows."""

    url: str  # without the fragment: what pip downloads (`link.url.split("#", 1)[0]`)
    filename: str
    hashes: dict[str, Any]  # `Link._hashes`: `hash_name` and `hash` are its first
    requires_python: Any
    yanked: str | None
    metadata: Any  # MetadataFile or None


def _pip_file(link: Link, yanked: str | None) -> PipFile:
    return PipFile(
        url=link.url.split("#", 1)[0],
        filename=link.filename,
        hashes=dict(link._hashes),
        requires_python=link.requires_python,
        yanked=yanked,
        metadata=link.metadata_file_data,
    )


#: What pip fails on when it reads a link (a page with one of them fails as a whole).
PIP_FAILS = (AttributeError, TypeError, ValueError, AssertionError)


def pip_html(body: bytes, page: str) -> list[PipFile]:
    """pip's reading of each link of the page, as `parse_links` reads them (checked against
    it where pip reads the whole page)."""
    parser = HTMLLinkParser(page)
    parser.feed(body.decode("utf-8"))
    base = parser.base_url
    if base is not None:  # resolved against the page, as HTML does: PSM's reading
        with contextlib.suppress(ValueError):
            base = urljoin(page, base)
    base = page if base is None else base
    files = []
    for anchor in parser.anchors:
        try:
            link = Link.from_element(anchor, page_url=page, base_url=base)
            if link is None:
                continue
            read = _pip_file(link, link.yanked_reason)
        except PIP_FAILS:
            continue
        if "data-yanked" in anchor and anchor["data-yanked"] is None:
            read = replace(read, yanked="")  # PSM's reading, see the module's docstring
        files.append(read)
    if base != (parser.base_url or page):  # not pip's own reading of the page
        return files
    try:
        whole = parse_links(IndexContent(body, "text/html", None, page, cache_link_parsing=False))
    except PIP_FAILS:
        return files
    assert [link.url.split("#", 1)[0] for link in whole] == [f.url for f in files]
    return files


def pip_json(body: bytes, page: str) -> list[PipFile | None] | None:
    """pip's reading of each entry of `files` (None where pip reads none); None for a page
    pip cannot read."""
    try:
        data = json.loads(body)
        files = data.get("files", [])
        iter(files)
    except (ValueError, AttributeError, TypeError):
        return None
    read: list[PipFile | None] = []
    for file in files:
        try:
            link = Link.from_json(file, page)
            read.append(None if link is None else _pip_file(link, link.yanked_reason))
        except PIP_FAILS:
            read.append(None)
            continue
        if read[-1] is not None and isinstance(file, dict) and file.get("yanked") == "":
            read[-1] = replace(read[-1], yanked="")  # PSM's reading, see the module's docstring
    return read


# --- PSM's reading and the comparison -------------------------------------------------------


def psm_items(body: bytes, page: str) -> list[PackageRecord | Rejected] | None:
    """PSM's record or rejection of every entry of the page; None for a page it refuses."""
    try:
        entries = parse_page(body, page, PROJECT)
    except FormatError:
        return None
    return [file_record(PROJECT, page, entry) for entry in entries]


def differences(record: PackageRecord, pip: PipFile) -> list[str]:
    """How PSM's record of a file differs from pip's reading of it (nothing: the same file)."""
    doc = record.extra
    found = []
    if record.url != pip.url:
        found.append(f"url {record.url!r} != {pip.url!r}")
    if record.filename != pip.filename and is_archive_file(pip.filename):
        # A URL naming no package file pip skips: no reading to agree with (uv's is PSM's).
        found.append(f"filename {record.filename!r} != {pip.filename!r}")
    found += _hash_differences("hashes", doc["hashes"], pip.hashes)
    if isinstance(pip.requires_python, str) or pip.requires_python is None:
        # pip fails on a value that is not a string: there is no reading to agree with.
        expected = (pip.requires_python or "").strip() and pip.requires_python
        if doc.get("requires-python") != (expected or None):
            found.append(f"requires-python {doc.get('requires-python')!r} != {expected!r}")
    yanked = doc.get("yanked")
    if ("" if yanked is True else yanked) != pip.yanked:
        found.append(f"yanked {yanked!r} != {pip.yanked!r}")
    metadata = doc.get("core-metadata")
    if metadata is not None and pip.metadata is None:
        found.append(f"core-metadata {metadata!r} where pip sees none")
    elif isinstance(metadata, dict) and pip.metadata.hashes is not None:
        found += _hash_differences("core-metadata", metadata, pip.metadata.hashes)
    return found


def _hash_differences(what: str, psm: dict[str, str], pip: dict[str, Any]) -> list[str]:
    """Digests the two read differently, and pip's first hash (the one it checks) if PSM,
    knowing its name, does not have it."""
    found = [
        f"{what} {name}: {psm[name]!r} != {pip[name]!r}"
        for name in psm.keys() & pip.keys()
        if not isinstance(pip[name], str) or psm[name] != pip[name].lower()
    ]
    first = next(iter(pip), None)
    if first in hashlib.algorithms_guaranteed and first not in psm:
        found.append(f"{what}: pip checks {first}, PSM does not have it")
    return found


def pip_reading(name: str) -> str:
    """The file name pip reads where PSM reads `name` (the last segment of a link's path,
    unquoted once): pip unquotes the whole path, then its last segment again."""
    return unquote(posixpath.basename(name.rstrip("/")))


@dataclass
class Tally:
    """What the cases exercised: the comparison means nothing if nothing was accepted."""

    refused_pages: int = 0
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)


def compare(body: bytes, page: str, pip: list[PipFile], items: list, tally: Tally) -> None:
    """Every record is a file pip reads alike; every wheel or sdist pip reads is an entry (of
    the name pip reads: an HTML entry's is its URL's)."""
    for item in items:
        if isinstance(item, Rejected):
            tally.rejected[item.reason.split(" '")[0]] += 1
            continue
        tally.accepted += 1
        candidates = [read for read in pip if read.filename == item.filename] or pip
        closest = min((differences(item, read) for read in candidates), key=len, default=["-"])
        assert closest == [], (body, page, item, closest)
    named = Counter(pip_reading(item.filename) for item in items)
    for read in pip:
        if read.filename.endswith(SUFFIXES):
            assert named[read.filename] > 0, ("dropped unseen", body, page, read)
            named[read.filename] -= 1


# --- Random HTML pages --------------------------------------------------------------------------

H = {name: digest(name, "file") for name in ("sha256", "md5", "sha512", "sha1", "blake2b")}
OTHER = digest("sha256", "another file")
FILENAMES = [
    "demo_pkg-1.0-py3-none-any.whl",
    "demo-pkg-1.0.tar.gz",
    "Demo.Pkg-2.0.zip",
    "demo_pkg-1.0+cu118-cp311-cp311-manylinux_2_17_x86_64.whl",
    "demo-pkg-1!2.0.tar.gz",
    "demo_pkg-3.0rc1-1-py2.py3-none-any.whl",
]
ODD_FILENAMES = [
    "demo_pkg-0.1~x.tar.gz",
    "other-1.0.tar.gz",
    "demo-pkg-1.0.egg",
    "demo pkg-1.0.tar.gz",
    "..demo-pkg-1.0.tar.gz",
    "demo-pkg-1.0é.tar.gz",
]
PREFIXES = [
    "https://files.example/packages/ab/cd/",
    "http://files.example:8080/p/",
    "HTTPS://Files.Example/p/",
    "/packages/",
    "../../packages/",
    "",
    "./",
    "//cdn.example/p/",
    "https://user:pw@files.example/p/",
]
ODD_PREFIXES = [
    "https://[::1]:8443/p/",
    "https://[x/p/",
    "ftp://files.example/",
    "javascript:",
    "https://files.example/p q/",
    "https://files.example/é/",
    "https://files.example/a@b/",
    "https://files.example/a;x/",
    "https://files.example/%7Ep/",
    "https://files.example/a+b!/",
    "https://files.example/%2e%2e/",
    " https://files.example/p/",
    "https://files.example/p/\t",
    "https://files.\nexample/p/",
    "\\\\server\\share\\",
    "https://files.example/a%2Fb/",
]
SUFFIX_AFTER = ["", "", "", "/", "?a=1&b=2", f"?sha256={OTHER}", f"?x=1&sha256={OTHER}", ";t=x"]
FRAGMENTS = [
    f"#sha256={H['sha256']}",
    f"#sha256={H['sha256']}",
    f"#md5={H['md5']}",
    f"#sha256={H['sha256']}&md5={H['md5']}",
    f"#md5={H['md5']}&sha256={H['sha256']}",
    f"#sha256={H['sha256']}&sha256={OTHER}",
    f"#sha256={H['sha256']}&sha256={H['sha256'].upper()}",
    f"#sha256={H['sha256'].upper()}",
    f"#SHA256={H['sha256']}",
    "#sha256=",
    "#sha256=abc",
    f"#egg=demo-pkg&sha256={H['sha256']}",
    f"#blake2b={H['blake2b']}&sha256={H['sha256']}",
    f"#sha512={H['sha512']}",
    f"#sha1={H['sha1']}&sha256={H['sha256']}",
    f"#x#sha256={H['sha256']}",
    f"#sha256={H['sha256']}#x",
    f"#subdirectory=x&sha256={H['sha256']}",
    f"#sha3_256={H['sha256']}",
    "",
]
LONG_REQUIRES = ">=3.8" + ", !=3.9.*" * 130
REQUIRES = [">=3.8", ">=3.8,<4", " ", "", "~=3.10", "&gt;=3.9", "foo", LONG_REQUIRES, '>"3"']
YANKED = ["", "bad release", "a & b", "<oops>"]
METADATA = [
    "true",
    f"sha256={H['sha256']}",
    f"sha256={H['sha256']}&md5={H['md5']}",
    "false",
    "",
    f"blake2b={H['blake2b']}",
    "sha256=short",
    f"SHA256={H['sha256']}",
]


def _filename(rng: random.Random) -> str:
    return rng.choice(ODD_FILENAMES if rng.random() < 0.15 else FILENAMES)


def _quoted_name(rng: random.Random, name: str) -> str:
    """The file name as a URL may spell it: as it is, quoted, partly or doubly quoted."""
    way = rng.random()
    if way < 0.5:
        return name
    if way < 0.7:
        return quote(name, safe=rng.choice(["", "+", "!+-._~"]))
    if way < 0.8:
        return "".join(f"%{ord(c):02{rng.choice('xX')}}" if rng.random() < 0.2 else c for c in name)
    if way < 0.93:
        return name.replace("-", rng.choice(["%2D", "%2d", "%252D", "%2F", "%zz", "%"]), 1)
    return name.replace(".", rng.choice(["%2E", "%2e", "%2F"]), 1)


def _href(rng: random.Random) -> str:
    """A file link as pages give them, and as hostile ones do."""
    prefix = rng.choice(ODD_PREFIXES if rng.random() < 0.2 else PREFIXES)
    name = _quoted_name(rng, _filename(rng))
    return prefix + name + rng.choice(SUFFIX_AFTER) + rng.choice(FRAGMENTS)


def _escaped(rng: random.Random, value: str, quote_char: str) -> str:
    """An attribute value escaped as HTML allows: `&` any way, the quote as an entity, any
    other character perhaps as a character reference."""
    out = []
    for c in value:
        if c == "&":
            out.append(rng.choice(["&amp;", "&#38;", "&#x26;", "&AMP;", "&"]))
        elif c == quote_char:
            out.append(rng.choice(["&quot;", "&#34;"] if c == '"' else ["&#39;", "&apos;"]))
        elif c in "<>" and rng.random() < 0.7:
            out.append(html.escape(c))
        elif rng.random() < 0.03:
            out.append(rng.choice([f"&#{ord(c)};", f"&#x{ord(c):x};"]))
        else:
            out.append(c)
    return "".join(out)


def _attribute(rng: random.Random, name: str, value: str | None) -> str:
    if rng.random() < 0.15:
        name = name.upper() if rng.random() < 0.5 else name.title()
    if value is None:
        return name
    if rng.random() < 0.1 and value and not any(c in value for c in " \t\n\"'=<>`&"):
        return f"{name}={value}"
    quote_char = '"' if rng.random() < 0.8 else "'"
    return f"{name}={quote_char}{_escaped(rng, value, quote_char)}{quote_char}"


def _anchor(rng: random.Random) -> str:
    attrs: list[tuple[str, str | None]] = [("href", _href(rng))]
    if rng.random() < 0.1:  # given twice: the last one counts, to both
        attrs.insert(rng.randint(0, 1), ("href", _href(rng)))
    if rng.random() < 0.5:
        attrs.append(("data-requires-python", rng.choice([*REQUIRES, None])))
    if rng.random() < 0.25:
        attrs.append(("data-yanked", rng.choice([*YANKED, None])))
        if rng.random() < 0.2:
            attrs.append(("data-yanked", rng.choice([*YANKED, None])))
    for key in ("data-core-metadata", "data-dist-info-metadata"):
        if rng.random() < 0.25:
            attrs.append((key, rng.choice([*METADATA, None])))
    rng.shuffle(attrs)
    shown = " ".join(_attribute(rng, key, value) for key, value in attrs)
    tag = "a" if rng.random() < 0.9 else "A"
    return f"<{tag} {shown}>{html.escape(_filename(rng))}</{tag}><br/>\n"


BASES = [
    '<base href="https://cdn.example/b/">',
    '<base href="/mirror/">',
    '<base href="sub/">',
    '<base href="">',
    "<base href>",
    '<base target="_self">',
    '<base href="https://a.example/x/" href="https://b.example/y/">',
    "<base href><base href='https://c.example/'>",
    '<BASE HREF="https://cdn.example/b/">',
    '<base href="//cdn.example/x/">',
    '<base href="https://cdn.example/b/?q=1#f">',
    '<base href="https://[x/">',
    '<base href="https://cdn.example/b/"><base href="https://d.example/">',
]
NOISE = [
    '<!-- <a href="/packages/demo-pkg-6.6.tar.gz#sha256={h}">hidden</a> -->',
    "<script>document.write('<a href=\"/p/demo-pkg-6.6.tar.gz#sha256={h}\">x</a>')</script>",
    '<style>a[href="/p/demo-pkg-6.6.tar.gz"] {{ color: red }}</style>',
    '<![CDATA[<a href="/p/demo-pkg-6.6.tar.gz#sha256={h}">x</a>]]>',
    '<textarea><a href="/p/demo-pkg-6.7.tar.gz#sha256={h}">x</a></textarea>',
    '<meta name="pypi:repository-version" content="1.0">',
    '<meta name="pypi:repository-version" content="1.1">',
    '<a name="top">top</a>',
    '<a href="">empty</a>',
    "<a href>no value</a>",
    '<a href=" ">a space</a>',
    '<a href="#">here</a>',
    '<a href="../">parent</a>',
    '<a href="?page=2">next</a>',
    '<a><a href="/p/demo-pkg-7.0.tar.gz#sha256={h}">nested</a>',
    '<a href="/p/demo-pkg-7.1.tar.gz#sha256={h}"/>',
    "<?php echo 1 ?>",
    "<!DOCTYPE html>",
    "<p>a &amp; b &lt; c</p>",
    "</a></a>",
    '<a href="/p/demo-pkg-7.2.tar.gz#sha256={h}"',
]


def random_html_page(rng: random.Random) -> bytes:
    parts = ["<!DOCTYPE html>\n<html><head>"]
    if rng.random() < 0.35:
        parts += rng.sample(BASES, rng.choice([1, 1, 2]))
    parts.append("</head><body>\n")
    for _ in range(rng.randint(0, 8)):
        if rng.random() < 0.2:
            parts.append(rng.choice(NOISE).format(h=H["sha256"]))
        parts.append(_anchor(rng))
    if rng.random() < 0.15 and len(parts) > 2 and rng.random() < 0.5:
        parts.insert(rng.randrange(1, len(parts)), rng.choice(BASES))  # late: still counts
    page = "".join(parts) + "</body></html>\n"
    if rng.random() < 0.1:
        page = page[: rng.randint(1, len(page))]  # cut short
    return page.encode()


def test_every_file_psm_accepts_from_a_random_html_page_is_the_file_pip_reads_there():
    tally = Tally()
    for case in range(CASES):
        rng = random.Random(case)
        page = rng.choice(PAGES)
        body = random_html_page(rng)
        items = psm_items(body, page)
        if items is None:
            tally.refused_pages += 1
            continue
        compare(body, page, pip_html(body, page), items, tally)
    assert tally.accepted > CASES  # most pages have files PSM accepts
    assert tally.refused_pages < CASES // 10
    # Every way of rejecting was met (the hostile variants reach the checks they aim at).
    assert {
        "malformed hashes",
        "no http(s) URL",
        "unsafe file name",
        "no sha256 hash",
        "requires-python too long",
        "file name is for project",
    } <= set(tally.rejected), tally.rejected


# --- Random JSON pages --------------------------------------------------------------------------

JSON_URLS = [
    "https://files.example/packages/ab/{name}",
    "https://files.example/packages/ab/{name}",
    "/packages/{name}",
    "../../packages/{name}",
    "{name}",
    "https://files.example/p/{name}#sha256=" + H["sha256"],
    "https://files.example/p/{name}#sha256=" + OTHER,
    "https://files.example/p/{name}#md5=" + H["md5"],
    "https://files.example/p/{name}?x=1&sha256=" + OTHER,
    "https://files.example/p/{name}?x=1&md5=" + H["md5"],
    "https://files.example/p/{name}/",
    "https://files.example/download?file={name}",
    "https://files.example/p/{other}",
    "https://files.example/dl/1234",
    "https://files.example/p/demo-pkg-9.0.TGZ",
    "https://files.example/a+b/{name}",
    "https://files.example/p q/{name}",
    " https://files.example/p/{name}",
    "https://[x/{name}",
    "ftp://files.example/{name}",
    "",
]


class Pairs(list):
    """A JSON object as its (key, value) pairs: a key may come twice."""


def _json_entry(rng: random.Random) -> Pairs:
    """A file entry as (key, value) pairs: keys may come twice, values of the wrong type."""
    name = _filename(rng)
    url = rng.choice(JSON_URLS).format(name=_quoted_name(rng, name), other=_filename(rng))
    pairs = Pairs()
    if rng.random() < 0.95:
        pairs.append(("filename", name if rng.random() < 0.95 else rng.choice([None, 3])))
    if rng.random() < 0.95:
        pairs.append(("url", url if rng.random() < 0.95 else rng.choice([None, 3, []])))
    hashes = rng.choice(
        [
            {"sha256": H["sha256"]},
            {"sha256": H["sha256"]},
            {"sha256": H["sha256"].upper()},
            {"md5": H["md5"]},
            {"blake2b_256": "ab" * 32, "sha256": H["sha256"]},
            {"sha512": H["sha512"], "sha256": H["sha256"]},
            {"sha256": "abc"},
            {"sha256": 123},
            Pairs([("sha256", OTHER), ("sha256", H["sha256"])]),
            {},
            None,
            ["sha256", H["sha256"]],
        ]
    )
    if rng.random() < 0.95:
        pairs.append(("hashes", hashes))
    optional = {
        "requires-python": [*REQUIRES, None, 3, True, [">=3"]],
        "yanked": [True, False, "", "reason", 1, 0, None, [], [1], {"a": 1}],
        "core-metadata": [True, False, None, {"sha256": H["sha256"]}, {}, "true", 1, {"md5": "x"}],
        "dist-info-metadata": [True, {"sha256": OTHER}, None, False],
        "size": [1, -1, "2", None],
        "upload-time": ["2024-01-02T03:04:05Z", "yesterday", None],
    }
    for key, values in optional.items():
        if rng.random() < 0.4:
            pairs.append((key, rng.choice(values)))
            if rng.random() < 0.1:  # the last one counts, to both
                pairs.append((key, rng.choice(values)))
    rng.shuffle(pairs)
    return pairs


def _json_text(value: Any) -> str:
    if isinstance(value, Pairs):
        return "{" + ", ".join(f"{json.dumps(k)}: {_json_text(v)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_json_text(v) for v in value) + "]"
    return json.dumps(value)


def random_json_page(rng: random.Random) -> bytes:
    entries: list[Any] = []
    for _ in range(rng.randint(0, 8)):
        entries.append(_json_entry(rng) if rng.random() < 0.95 else rng.choice(["x", None, 3]))
    page = Pairs([("files", entries)])
    if rng.random() < 0.8:
        version = rng.choice(["1.0", "1.1", "1.3"]) if rng.random() < 0.95 else "2.0"
        page.append(("meta", Pairs([("api-version", version)])))
    if rng.random() < 0.6:
        name = rng.choice([PROJECT, "Demo.Pkg", "demo_pkg"]) if rng.random() < 0.95 else "x"
        page.append(("name", name))
    rng.shuffle(page)
    return _json_text(page).encode()


def test_every_file_psm_accepts_from_a_random_json_page_is_the_file_pip_reads_there():
    tally = Tally()
    for case in range(CASES):
        rng = random.Random(10_000 + case)
        page = rng.choice(PAGES)
        body = random_json_page(rng)
        items = psm_items(body, page)
        pip = pip_json(body, page)
        if items is None or pip is None:
            tally.refused_pages += 1
            continue
        assert len(items) == len(pip)  # one record or rejection for each entry
        for item, read in zip(items, pip, strict=True):
            if isinstance(item, Rejected):
                tally.rejected[item.reason.split(" '")[0]] += 1
                continue
            assert read is not None, (body, item)
            compare(body, page, [read], [item], tally)
    assert tally.accepted > CASES // 2
    assert tally.refused_pages < CASES // 4
    assert {
        "malformed hashes",
        "no http(s) URL",
        "the URL is of another file",
        "requires-python too long",
    } <= set(tally.rejected), tally.rejected


# --- File URLs alone ----------------------------------------------------------------------------


def test_file_urls_and_names_are_read_as_pip_reads_them():
    """`_upstream_url` (shortcuts included) gives the URL pip fetches and `_url_filename` the
    name pip reads, for any URL either accepts."""
    pieces = ["a", "Z", "0", ".", "..", "-", "_", "~", "%", "%2F", "%2f", "%7E", "%41", "%zz",
              "%25", "+", "!", "/", "//", ":", "@", ";", "=", "?", "&", "#", " ", "é", "[",
              "demo-pkg-1.0.tar.gz", "%2B"]  # fmt: skip
    starts = ["https://h.example", "http://h.example:81", "HTTPS://H.example", "//h.example",
              "/", "", "../", "https://u@h.example", "https://h.example/"]  # fmt: skip
    rng = random.Random(503)
    checked = 0
    for _ in range(5000):
        page = rng.choice(PAGES)
        url = rng.choice(starts) + "".join(rng.choices(pieces, k=rng.randint(0, 7)))
        try:
            link = Link.from_json({"url": url}, page)
        except PIP_FAILS:
            continue
        if urlsplit(link.url).netloc:  # else a local path to pip, refused by PSM
            assert _link_url(page, url) == link.url, url
        ours = _upstream_url(page, url)
        if ours is None:
            continue
        checked += 1
        assert ours == link.url.split("#", 1)[0], (page, url)
        assert _url_filename(ours) == link.filename, (page, url)
    assert checked > 2000


# --- The disagreements found, one by one --------------------------------------------------------

PAGE = PAGES[0]
SHA = H["sha256"]


def only(body: bytes, page: str = PAGE) -> PackageRecord | Rejected:
    (item,) = psm_items(body, page)
    return item


@pytest.mark.parametrize(
    ("body", "url"),
    [
        # The path is quoted as pip quotes it: `+` is `%2B` to pip (S3 reads `+` as a space).
        (f'<a href="/p/demo_pkg-1.0+cu1-py3-none-any.whl#sha256={SHA}">x</a>',
         "https://idx.example/p/demo_pkg-1.0%2Bcu1-py3-none-any.whl"),
        (f'<a href="/p/%7euser/demo-pkg-1!0.tar.gz#sha256={SHA}">x</a>',
         "https://idx.example/p/~user/demo-pkg-1%210.tar.gz"),
        # pip takes the first `<base>` with an `href`, an empty one too, the first `href` of it.
        (f'<base href=""><base href="https://cdn.example/"><a href="demo-pkg-1.0.tar.gz#sha256={SHA}">x</a>',
         "https://idx.example/simple/demo-pkg/demo-pkg-1.0.tar.gz"),
        (f'<base href="https://a.example/" href="https://b.example/"><a href="demo-pkg-1.0.tar.gz#sha256={SHA}">x</a>',
         "https://a.example/demo-pkg-1.0.tar.gz"),
        # A relative base is resolved against the page, as HTML does (pip would not fetch).
        (f'<base href="/cdn/"><a href="demo-pkg-1.0.tar.gz#sha256={SHA}">x</a>',
         "https://idx.example/cdn/demo-pkg-1.0.tar.gz"),
        # A link to a file that ends in a slash is a file to pip.
        (f'<a href="/p/demo-pkg-1.0.tar.gz/#sha256={SHA}">x</a>',
         "https://idx.example/p/demo-pkg-1.0.tar.gz/"),
    ],
)  # fmt: skip
def test_a_file_is_fetched_from_the_url_pip_fetches_it_from(body, url):
    assert only(body.encode()).url == url


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        # pip fails on the page; PSM refuses the link, it does not fail.
        (f'<a href="https://[x/demo-pkg-1.0.tar.gz#sha256={SHA}">x</a>', "no http(s) URL"),
        # Two digests for one hash: pip takes the first, PEP 503 readers often the last.
        (f'<a href="/demo-pkg-1.0.tar.gz#sha256={SHA}&sha256={OTHER}">x</a>', "malformed hashes"),
        # pip reads a hash in the query first, up to the next `&` (the fragment with it).
        (f'<a href="/demo-pkg-1.0.tar.gz?a&sha256={OTHER}#sha256={SHA}">x</a>', "malformed hashes"),
        (f'<a href="/demo-pkg-1.0.tar.gz#sha256={SHA}" data-requires-python="{LONG_REQUIRES}">x</a>',
         "requires-python too long"),
    ],
)  # fmt: skip
def test_a_link_pip_reads_otherwise_than_its_page_means_is_rejected(body, reason):
    item = only(body.encode())
    assert isinstance(item, Rejected) and item.reason == reason


def json_page(**fields: Any) -> bytes:
    entry = {"filename": "demo-pkg-1.0.tar.gz", "url": "/p/demo-pkg-1.0.tar.gz"}
    entry |= {"hashes": {"sha256": SHA}} | fields
    return json.dumps({"meta": {"api-version": "1.1"}, "files": [entry]}).encode()


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        # pip reads the file name (so the version) from the URL, not from `filename`.
        ({"url": "/p/demo-pkg-2.0.tar.gz"}, "the URL is of another file"),
        ({"url": "/p/demo-pkg-1.0.tgz"}, "the URL is of another file"),
        # pip checks the URL's hash over the entry's.
        ({"url": f"/p/demo-pkg-1.0.tar.gz#sha256={OTHER}"}, "malformed hashes"),
        ({"requires-python": LONG_REQUIRES}, "requires-python too long"),
    ],
)
def test_a_json_entry_pip_reads_otherwise_is_rejected(fields, reason):
    item = only(json_page(**fields))
    assert isinstance(item, Rejected) and item.reason == reason


@pytest.mark.parametrize(
    ("fields", "key", "expected"),
    [
        ({"yanked": 1}, "yanked", True),  # any true value is a yank to pip
        ({"yanked": ["x"]}, "yanked", True),
        ({"yanked": ""}, "yanked", True),  # no reason to PEP 691: yanked, as uv reads it
        ({"url": "/download/1"}, "filename", "demo-pkg-1.0.tar.gz"),  # pip skips it
        ({"url": f"/p/demo-pkg-1.0.tar.gz#md5={H['md5']}"}, "hashes",
         {"md5": H["md5"], "sha256": SHA}),
        ({"core-metadata": None, "dist-info-metadata": {"sha256": OTHER}}, "core-metadata",
         {"sha256": OTHER}),
    ],
)  # fmt: skip
def test_json_fields_are_read_as_pip_reads_them(fields, key, expected):
    assert only(json_page(**fields)).extra.get(key) == expected


def test_html_metadata_is_read_as_pip_reads_it():
    meta = f"sha256={SHA}&md5={H['md5']}"  # one pair to pip: the digest is malformed
    body = (
        f'<a href="/demo_pkg-1.0-py3-none-any.whl#sha256={SHA}" data-core-metadata '
        f'data-dist-info-metadata="true">a</a>'
        f'<a href="/demo_pkg-1.1-py3-none-any.whl#sha256={SHA}" data-core-metadata="{meta}">b'
    ).encode()
    first, second = psm_items(body, PAGE)
    assert first.extra["core-metadata"] is True  # a core-metadata without value is absent
    assert "core-metadata" not in second.extra
