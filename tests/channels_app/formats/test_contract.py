"""The contract every registered format keeps, checked the same way for each.

Each format reads a small upstream of its own (tests/fixtures/) through `list_units`,
`fetch_unit` and `parse_unit`; what it read is rendered as a PSM channel, served on loopback
(requests resolved by the format's `index_request`, as PSM serves them) and read back the same
way: `parse(render(x)) == x`. A new format adds its small upstream to SOURCES.
"""

from __future__ import annotations

import io
import json
import posixpath
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
import pytest
from django.test import override_settings

from channels_app.formats import (
    FORMATS,
    Fetched,
    OptionsError,
    PackageRecord,
    Rejected,
    RepositoryFormat,
    Unchanged,
    UnitExtras,
)
from psm.http import UpstreamClient
from tests.channels_app.formats import StoredDigests
from tests.fixtures.conda_channel import ChannelServer, FakePackage, build_channel
from tests.fixtures.cran_repo import CranServer, RPackage, build_repo
from tests.fixtures.loopback import FileHandler, LoopbackServer
from tests.fixtures.pypi_index import FakeDist, IndexServer, build_index


@dataclass(frozen=True)
class Source:
    """A small upstream of one format, and what reading it must find."""

    build: Callable[[Path], LoopbackServer]
    path: str  # of the source URL on the server
    options: dict
    files: dict[str, set[str]]  # unit -> its file names
    missing_unit: str  # a unit the source does not have
    hostile: tuple[str, bytes, str]  # (unit, its index, an unsafe file name listed there)


def _conda(root: Path) -> LoopbackServer:
    beta = FakePackage("beta", "2.0", subdir="linux-64", fmt=".conda")
    return ChannelServer(build_channel(root, [FakePackage("alpha", "1.0"), beta]))


def _pypi(root: Path) -> LoopbackServer:
    dists = [FakeDist("Alpha_Pkg", "1.0"), FakeDist("Alpha_Pkg", "1.0", kind="sdist")]
    return IndexServer(build_index(root, [*dists, FakeDist("beta", "2.0")]))


def _cran(root: Path) -> LoopbackServer:
    packages = [RPackage("abc", "1.1"), RPackage("xyz", "1.0")]
    return CranServer(build_repo(root, packages, archived=[RPackage("abc", "1.0")]))


_EVIL_RECORD = {"name": "evil", "version": "1.0", "build": "0", "md5": "0" * 32}
_EVIL_FILE = {"url": "https://files.example/evil-1.0.tar.gz", "hashes": {"sha256": "0" * 64}}

SOURCES = {
    "conda": Source(
        build=_conda,
        path="",
        options={},
        files={"noarch": {"alpha-1.0-0.tar.bz2"}, "linux-64": {"beta-2.0-0.conda"}},
        missing_unit="win-64",
        hostile=(
            "noarch",
            orjson.dumps({"packages.conda": {"../evil-1.0-0.conda": _EVIL_RECORD}}),
            "../evil-1.0-0.conda",
        ),
    ),
    "pypi": Source(
        build=_pypi,
        path="/simple/",
        options={},
        files={
            "alpha-pkg": {"alpha_pkg-1.0-py3-none-any.whl", "alpha_pkg-1.0.tar.gz"},
            "beta": {"beta-2.0-py3-none-any.whl"},
        },
        missing_unit="nothere",
        hostile=(
            "evil",
            orjson.dumps(
                {
                    "meta": {"api-version": "1.1"},
                    "files": [{"filename": "../evil-1.0.tar.gz", **_EVIL_FILE}],
                }
            ),
            "../evil-1.0.tar.gz",
        ),
    ),
    "cran": Source(
        build=_cran,
        path="",
        options={"archive": True},  # Archive/abc exists, Archive/xyz does not
        files={
            "src/contrib": {"abc_1.1.tar.gz", "xyz_1.0.tar.gz"},
            "src/contrib/Archive/abc": {"abc_1.0.tar.gz"},
        },
        missing_unit="src/contrib/Archive/nothere",
        hostile=(
            "src/contrib/Archive/evil",
            b'<a href="../../evil_1.0.tar.gz">evil_1.0.tar.gz</a>',
            "../../evil_1.0.tar.gz",
        ),
    ),
}


@dataclass
class Read:
    """What reading a source through the unit contract found, unit by unit."""

    indexes: dict[str, bytes] = field(default_factory=dict)
    fetched: dict[str, Fetched] = field(default_factory=dict)
    records: dict[str, dict[str, PackageRecord]] = field(default_factory=dict)
    extras: dict[str, dict[str, Any]] = field(default_factory=dict)

    def found(self) -> dict[str, dict[str, tuple]]:
        """unit -> filename -> what the record says about its file (not where upstream has it)."""
        return {
            unit: {
                filename: (r.name, r.version, r.sha256, r.md5, r.size, r.document)
                for filename, r in records.items()
            }
            for unit, records in self.records.items()
        }


def read_source(fmt: RepositoryFormat, client: UpstreamClient, url: str, options: dict) -> Read:
    """Every unit `list_units` gives, fetched and parsed as a sync does; the units the source
    lacks are left out."""
    read = Read()
    for unit in sorted(fmt.list_units(client, url, options)):
        dest = io.BytesIO()
        fetched = fmt.fetch_unit(client, url, unit, dest, {})
        if fetched.status != "changed":
            continue
        read.indexes[unit], read.fetched[unit] = dest.getvalue(), fetched
        read.records[unit] = {}
        for item in fmt.parse_unit(dest, fetched.url, unit):
            if isinstance(item, UnitExtras):
                read.extras[unit] = item.extras
            elif isinstance(item, PackageRecord):
                read.records[unit][item.filename] = item
    return read


class RecordsSource:
    """Records as publishing hands them to `render_index` (`PackageIndexSource`)."""

    def __init__(self, read: Read) -> None:
        self.read = read

    def units(self) -> list[str]:
        return sorted(self.read.records)

    def documents(self, unit: str, suffix: str = "") -> list[tuple[str, str]]:
        records = self.read.records.get(unit, {})
        return [(f, records[f].document) for f in sorted(records) if f.endswith(suffix)]

    def grouped_documents(self, units=None) -> Iterator[tuple[str, list[tuple[str, str]]]]:
        for unit in sorted(self.read.records if units is None else units):
            if documents := self.documents(unit):
                yield unit, documents

    def unit_extras(self, unit: str) -> dict[str, Any]:
        return self.read.extras.get(unit, {})

    def files(self, units) -> Iterator[tuple[str, str, int | None, datetime]]:
        added = datetime(2024, 1, 1, tzinfo=UTC)
        for unit in sorted(units):
            for filename, record in sorted(self.read.records.get(unit, {}).items()):
                yield unit, filename, record.size, added


def render(fmt: RepositoryFormat, read: Read, units: set[str] | None = None) -> dict[str, bytes]:
    """The index files `render_index` writes for what was read: path -> content."""
    files: dict[str, bytes] = {}

    @contextmanager
    def emit(path: str, content_type: str) -> Iterator[io.BytesIO]:
        out = io.BytesIO()
        yield out
        files[path] = out.getvalue()

    fmt.render_index(RecordsSource(read), emit, units)
    return files


class _ChannelHandler(FileHandler):
    """Serves rendered index files, resolving requests as PSM's serving does."""

    def route(self, url) -> None:
        path = unquote(url.path).lstrip("/")
        answer = self.upstream.fmt.index_request(path, self.headers.get("Accept"))
        if answer is not None and answer.redirect:
            return self.redirect("/" + answer.redirect)
        if answer is not None and not answer.path:
            return self.send_status(406)
        self.send_file("/" + (answer.path if answer is not None else path))


class RenderedChannel(LoopbackServer):
    handler = _ChannelHandler

    def __init__(self, root: Path, fmt: RepositoryFormat) -> None:
        self.fmt = fmt
        super().__init__(root)


@contextmanager
def loopback_client() -> Iterator[UpstreamClient]:
    """An upstream client allowed to reach 127.0.0.1 (in a fixture shared by a module's
    tests, where the per-test settings do not apply yet)."""
    with override_settings(PSM_UPSTREAM_ALLOWLIST=["127.0.0.1"], PSM_HTTP_RETRIES=0):
        client = UpstreamClient()
        try:
            yield client
        finally:
            client.close()


@dataclass
class Channel:
    source: Read  # the upstream, read
    rendered: dict[str, bytes]  # what PSM renders of it
    back: Read  # the rendered channel, read
    base: str  # the rendered channel's URL


@pytest.fixture(scope="module", params=sorted(FORMATS))
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def upstream(kind, tmp_path_factory) -> Iterator[LoopbackServer]:
    with SOURCES[kind].build(tmp_path_factory.mktemp(kind)) as server:
        yield server


@pytest.fixture(scope="module")
def channel(kind, upstream, tmp_path_factory) -> Channel:
    """The upstream read, rendered as a PSM channel, served and read back."""
    fmt, spec = FORMATS[kind], SOURCES[kind]
    root = tmp_path_factory.mktemp(f"{kind}-rendered")
    with loopback_client() as client:
        source = read_source(fmt, client, upstream.url + spec.path, spec.options)
        rendered = render(fmt, source)
        for path, content in rendered.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(content)
        with RenderedChannel(root, fmt) as server:
            back = read_source(fmt, client, server.url + spec.path, spec.options)
    return Channel(source, rendered, back, server.url)


@pytest.fixture
def client() -> Iterator[UpstreamClient]:
    client = UpstreamClient()
    yield client
    client.close()


def test_the_example_options_are_valid_and_cleaning_them_again_changes_nothing(kind):
    fmt = FORMATS[kind]
    for options in ({}, json.loads(fmt.options_help)):
        cleaned = fmt.clean_options(options)
        assert fmt.clean_options(cleaned) == cleaned


def test_an_unknown_option_is_refused(kind):
    with pytest.raises(OptionsError):
        FORMATS[kind].clean_options({"no_such_option": True})


def test_every_file_of_the_source_is_read(kind, channel):
    assert {unit: set(records) for unit, records in channel.source.records.items()} == (
        SOURCES[kind].files
    )


def test_a_unit_fetched_again_with_its_validators_is_unchanged(kind, upstream, channel, client):
    fmt, url = FORMATS[kind], upstream.url + SOURCES[kind].path
    for unit, fetched in channel.source.fetched.items():
        again = fmt.fetch_unit(client, url, unit, io.BytesIO(), fetched.validators)
        assert again.status == "unchanged", unit


def test_entries_stored_already_come_back_unchanged(kind, channel):
    fmt = FORMATS[kind]
    for unit, records in channel.source.records.items():
        stored = StoredDigests({filename: r.entry_digest for filename, r in records.items()})
        index, url = channel.source.indexes[unit], channel.source.fetched[unit].url
        items = list(fmt.parse_unit(io.BytesIO(index), url, unit, stored))
        assert {i.filename for i in items if isinstance(i, Unchanged)} == set(records)
        assert not [i for i in items if isinstance(i, PackageRecord)]


def test_a_unit_the_source_lacks_is_missing(kind, upstream, client):
    spec = SOURCES[kind]
    fetched = FORMATS[kind].fetch_unit(
        client, upstream.url + spec.path, spec.missing_unit, io.BytesIO(), {}
    )
    assert fetched.status == "missing"


def test_an_unsafe_file_name_is_rejected(kind):
    unit, index, unsafe = SOURCES[kind].hostile
    items = list(FORMATS[kind].parse_unit(io.BytesIO(index), f"http://127.0.0.1/{unit}/", unit))
    assert unsafe in {i.filename for i in items if isinstance(i, Rejected)}
    assert not [i for i in items if isinstance(i, PackageRecord)]


def test_what_is_rendered_reads_back_the_same(channel):
    assert channel.back.found() == channel.source.found()


def test_rendered_package_paths_locate_their_records(kind, channel):
    fmt = FORMATS[kind]
    suffix = fmt.capabilities.sidecar_suffix
    for unit, records in channel.back.records.items():
        for filename, record in records.items():
            path = channel_path(record.url, channel.base)
            assert fmt.locate(path) == (unit, filename)
            if suffix and fmt.sidecar_digest(record.extra):
                assert fmt.locate_sidecar(path + suffix) == (unit, filename, suffix)


def test_a_unit_rendered_alone_writes_only_its_unit_paths(kind, channel):
    """Formats that render units alone render only that unit's paths (and the channel-wide
    ones); the others render every unit whatever they are asked."""
    fmt = FORMATS[kind]
    if not fmt.capabilities.renders_units_alone:
        assert set(render(fmt, channel.source, set())) == set(channel.rendered)
        return
    channel_wide = set(render(fmt, channel.source, set()))
    for unit in channel.source.records:
        alone = set(render(fmt, channel.source, {unit}))
        assert alone <= set(channel.rendered)
        assert alone - channel_wide <= set(fmt.unit_paths(unit))
        assert set(fmt.unit_paths(unit)) & set(channel.rendered) <= alone


def test_the_capabilities_hold_for_what_is_rendered(kind, channel):
    capabilities = FORMATS[kind].capabilities
    for suffix in capabilities.bz2_copies:
        assert any(path.endswith(suffix) for path in channel.rendered)
    if capabilities.fixed_units:
        assert set(channel.back.records) <= capabilities.fixed_units
    # No subchannel may take the name of a folder the channel serves.
    package_paths = (
        channel_path(r.url, channel.base)
        for rs in channel.back.records.values()
        for r in rs.values()
    )
    folders = {path.split("/")[0] for path in [*channel.rendered, *package_paths] if "/" in path}
    assert folders <= capabilities.reserved_subchannel_names


def test_a_file_name_is_told_from_a_package_name(kind, channel):
    fmt = FORMATS[kind]
    for records in channel.source.records.values():
        for filename, record in records.items():
            assert fmt.names_a_file(filename) and not fmt.names_a_file(record.name)


def channel_path(url: str, base: str) -> str:
    """The path inside the channel that a package URL of its index points to."""
    assert url.startswith(base + "/"), url
    return posixpath.normpath(unquote(urlsplit(url).path)).lstrip("/")


class RenderedIndex:
    """Rendered index files as a withdrawal reads them (`PublishedIndex`)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def open(self, path: str) -> io.BytesIO | None:
        return io.BytesIO(self.files[path]) if path in self.files else None


def withdraw(
    fmt: RepositoryFormat, rendered: dict[str, bytes], files: dict[str, set[str]]
) -> tuple[dict[str, bytes], set[str]]:
    """The index files after `withdraw` (replaced ones swapped, dropped ones gone), and the
    paths it replaced."""
    emitted: dict[str, bytes] = {}

    @contextmanager
    def emit(path: str, content_type: str) -> Iterator[io.BytesIO]:
        out = io.BytesIO()
        yield out
        emitted[path] = out.getvalue()

    replaced = fmt.withdraw(RenderedIndex(rendered), files, emit)
    assert set(emitted) <= replaced
    kept = {path: content for path, content in rendered.items() if path not in replaced}
    return {**kept, **emitted}, replaced


def test_withdrawn_files_read_back_as_gone_and_every_other_record_as_it_was(
    kind, channel, client, tmp_path
):
    fmt, spec = FORMATS[kind], SOURCES[kind]
    gone = {unit: {min(records)} for unit, records in channel.source.records.items()}
    withdrawn, replaced = withdraw(fmt, channel.rendered, gone)
    assert replaced
    for path, content in withdrawn.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(content)
    with RenderedChannel(tmp_path, fmt) as server:
        back = read_source(fmt, client, server.url + spec.path, spec.options)
    expected = {
        unit: {filename: entry for filename, entry in files.items() if filename not in gone[unit]}
        for unit, files in channel.source.found().items()
    }
    # A unit left with no file may keep an empty index (a project page, a listing).
    assert {u: f for u, f in back.found().items() if f} == {u: f for u, f in expected.items() if f}
    # Once withdrawn, they are listed nowhere: a second withdrawal replaces nothing.
    assert withdraw(fmt, withdrawn, gone)[1] == set()
