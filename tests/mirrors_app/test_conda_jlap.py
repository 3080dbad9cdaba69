"""A conda re-sync reads the subdir's repodata.jlap when upstream keeps one: only the patches
since the document the rows are, never the whole document, and the same rows and published
bytes as a mirror that reads the whole new document. Whatever the log cannot say (no log, a
checksum that does not verify, no chain from there, an operation or a change it does not
take, rows changed since) is read from the whole document, as before."""

from __future__ import annotations

import json
import logging

import pytest

from channels_app.formats import conda_jlap
from channels_app.models import Package, PublishedFile
from channels_app.storage import open_artifact
from mirrors_app.models import Mirror, MirrorUnit, SyncRun
from mirrors_app.sync import fetch_state
from tests.factories import MirrorFactory
from tests.fixtures.conda_channel import (
    ChannelServer,
    FakePackage,
    build_channel,
    repodata_entry,
    write_repodata,
)
from tests.fixtures.conda_jlap import append_patch, document_hash, entry_ops, pointer, write_log

# The runs commit, as they do in production: the published files are spliced from the rows
# changed since the last render, told apart by their transactions.
pytestmark = pytest.mark.django_db(transaction=True)

ROWS = ("filename", "name", "version", "sha256", "md5", "size", "upstream_url", "record",
        "entry_digest", "excluded_reason")  # fmt: skip
SUBDIR = "linux-64"


def _document(count: int = 8) -> dict:
    packages = {f"p{i:02d}-1.0-0.tar.bz2": repodata_entry(f"p{i:02d}", "1.0") for i in range(count)}
    conda = {f"q{i:02d}-1.0-0.conda": repodata_entry(f"q{i:02d}", "1.0") for i in range(count)}
    return {"info": {"subdir": SUBDIR}, "packages": packages, "packages.conda": conda}


@pytest.fixture
def upstream(tmp_path, settings):
    settings.DATA_DIR = tmp_path / "data"  # this test's own kept state
    root = build_channel(tmp_path / "upstream", [FakePackage("alpha", "1.0")])
    _publish_whole(root, _document())
    with ChannelServer(root) as server:
        server.ranges = True
        yield server


def _folder(server):
    return server.root / SUBDIR


def _publish_whole(root, document: dict) -> None:
    """A new document with a log that starts at it (no patches)."""
    write_repodata(root, SUBDIR, document)
    raw = (root / SUBDIR / "repodata.json").read_bytes()
    write_log(root / SUBDIR, [], document_hash(raw))


def _publish_patch(server, document: dict, ops: list | None = None) -> None:
    """`document` as the subdir's new repodata.json, and the patch to it in the log (`ops`,
    else entry by entry)."""
    folder = _folder(server)
    before = (folder / "repodata.json").read_bytes()
    log = (folder / conda_jlap.NAME).read_bytes()
    write_repodata(server.root, SUBDIR, document)  # drops the log: put back, then appended
    (folder / conda_jlap.NAME).write_bytes(log)
    after = (folder / "repodata.json").read_bytes()
    append_patch(
        folder, before, after, entry_ops(json.loads(before), document) if ops is None else ops
    )


def _mirror(server) -> Mirror:
    return MirrorFactory(
        source_url=server.url, mode=Mirror.Mode.PASSIVE, options={"subdirs": [SUBDIR]}
    )


def _rows(mirror: Mirror) -> list[tuple]:
    return list(
        Package.objects.filter(mirror=mirror, unit=SUBDIR, removed=False)
        .order_by("filename")
        .values_list(*ROWS)
    )


def _published(mirror: Mirror, path: str) -> bytes:
    published = PublishedFile.objects.get(channel=mirror.channel, path=path)
    with open_artifact(published.artifact) as handle:
        return handle.read()


def _whole_reads(server) -> int:
    return sum(server.count(f"/{SUBDIR}/{name}") for name in ("repodata.json", "repodata.json.zst"))


def _same_as_a_whole_read(server, mirror: Mirror, run) -> None:
    """The mirror's rows and published files are those of a new mirror reading the document."""
    fresh = _mirror(server)
    assert run(fresh).state == SyncRun.State.COMPLETED
    assert _rows(mirror) == _rows(fresh)
    for path in (f"{SUBDIR}/repodata.json", f"{SUBDIR}/repodata.json.zst", "channeldata.json"):
        assert _published(mirror, path) == _published(fresh, path)


def _changed(document: dict) -> dict:
    """Entries replaced at either end of each section, one removed, one added at the front."""
    document = json.loads(json.dumps(document))
    packages, conda = document["packages"], document["packages.conda"]
    packages["p00-1.0-0.tar.bz2"]["depends"] = ["python >=3.10"]
    packages["p07-1.0-0.tar.bz2"]["size"] = 99
    conda["q00-1.0-0.conda"]["license"] = "MIT"
    del packages["p05-1.0-0.tar.bz2"]
    document["packages"] = {"a-first-1.0-0.tar.bz2": repodata_entry("a-first", "1.0"), **packages}
    return document


@pytest.fixture
def run(run_mirror):
    return run_mirror


def test_a_resync_reads_the_patches_only_and_matches_a_whole_read(upstream, run):
    mirror = _mirror(upstream)
    assert run(mirror).state == SyncRun.State.COMPLETED
    kept = fetch_state.document_kept(mirror.pk, SUBDIR)
    raw = (_folder(upstream) / "repodata.json").read_bytes()
    assert kept.nominal == document_hash(raw)
    assert sorted(path.name for path in fetch_state._folder(mirror.pk).glob(f"{SUBDIR}.*")) == [
        f"{SUBDIR}.json",
        f"{SUBDIR}.json.packages.conda.fp",
        f"{SUBDIR}.json.packages.fp",
        f"{SUBDIR}.stamp",
    ]
    whole = _whole_reads(upstream)

    document = _changed(_document())
    _publish_patch(upstream, document)
    second = run(mirror)
    assert second.state == SyncRun.State.COMPLETED, second.error
    assert _whole_reads(upstream) == whole  # only the log was read
    assert (second.seen, second.ingested) == (16, 4)  # 3 replaced, 1 added; 1 removed
    assert [row[0] for row in _rows(mirror)] == sorted(
        [*document["packages"], *document["packages.conda"]]
    )
    kept = fetch_state.document_kept(mirror.pk, SUBDIR)
    assert kept.path is None  # the document kept is no longer what the rows are
    left = sorted(path.name for path in fetch_state._folder(mirror.pk).glob(f"{SUBDIR}.*"))
    assert left == [f"{SUBDIR}.stamp"]  # nor are its entries' fingerprints kept
    assert kept.nominal == document_hash((_folder(upstream) / "repodata.json").read_bytes())
    _same_as_a_whole_read(upstream, mirror, run)
    whole = _whole_reads(upstream)  # the new mirror's

    # Changes inside entries, with RFC 6902 paths, and a ranged read from where the last stopped.
    later = json.loads(json.dumps(document))
    later["packages"]["p01-1.0-0.tar.bz2"]["depends"].append("zlib")
    later["packages.conda"]["q03-1.0-0.conda"]["license"] = "BSD-3-Clause"
    del later["packages.conda"]["q04-1.0-0.conda"]
    ops = [
        {"op": "add", "path": pointer("packages", "p01-1.0-0.tar.bz2") + "/depends/-", "value": "zlib"},
        {"op": "add", "path": pointer("packages.conda", "q03-1.0-0.conda") + "/license",
         "value": "BSD-3-Clause"},
        {"op": "remove", "path": pointer("packages.conda", "q04-1.0-0.conda")},
    ]  # fmt: skip
    _publish_patch(upstream, later, ops)
    ranged = len(upstream.ranged)
    third = run(mirror)
    assert third.state == SyncRun.State.COMPLETED, third.error
    assert _whole_reads(upstream) == whole
    assert len(upstream.ranged) == ranged + 1 and upstream.ranged[-1][1].startswith("bytes=")
    assert third.ingested == 2
    _same_as_a_whole_read(upstream, mirror, run)
    whole = _whole_reads(upstream)

    # Nothing new in the log: nothing read, nothing written.
    fourth = run(mirror)
    assert (fourth.state, fourth.ingested) == (SyncRun.State.COMPLETED, 0)
    assert _whole_reads(upstream) == whole


def _synced_then(upstream, run, change) -> tuple[Mirror, SyncRun, int]:
    """A mirror synced once; `change(server)` made upstream; the re-sync; whole reads before."""
    mirror = _mirror(upstream)
    assert run(mirror).state == SyncRun.State.COMPLETED
    whole = _whole_reads(upstream)
    change(upstream)
    again = run(mirror)
    assert again.state == SyncRun.State.COMPLETED, again.error
    return mirror, again, whole


def _not_takeable(server, ops_for):
    document = _changed(_document())
    _publish_patch(server, document, ops_for(document))


@pytest.mark.parametrize(
    "ops_for",
    [
        pytest.param(lambda d: [{"op": "move", "from": pointer("packages", "p05-1.0-0.tar.bz2"),
                                 "path": pointer("packages", "a-first-1.0-0.tar.bz2")}], id="move"),
        pytest.param(lambda d: [{"op": "replace", "path": "/info/subdir", "value": "linux-64"}],
                     id="info"),
        pytest.param(lambda d: [{"op": "add", "path": "/removed/-", "value": "x-1-0.tar.bz2"}],
                     id="removed"),
        pytest.param(lambda d: [{"op": "replace", "path": pointer("packages", "zz-1-0.tar.bz2")
                                 + "/size", "value": 1}], id="inside an entry not stored"),
        pytest.param(lambda d: [{"op": "remove", "path": pointer("packages", "p01-1.0-0.tar.bz2")
                                 + "/nothing"}], id="a path the entry lacks"),
        pytest.param(lambda d: [{"op": "add", "path": "packages/x"}], id="not a pointer"),
        pytest.param(lambda d: [{"op": "add", "path": pointer("packages", "n-1-0.tar.bz2"),
                                 "value": None}], id="an entry that is not an object"),
        pytest.param(lambda d: ["add"], id="not an operation"),
    ],
)  # fmt: skip
def test_a_patch_the_log_cannot_apply_is_read_from_the_whole_document(
    upstream, run, ops_for, caplog
):
    with caplog.at_level(logging.INFO, logger="mirrors_app.sync"):
        mirror, again, whole = _synced_then(upstream, run, lambda s: _not_takeable(s, ops_for))
    assert f"{SUBDIR}: the log's patches do not apply to the stored rows" in caplog.text
    assert _whole_reads(upstream) == whole + 1
    assert again.ingested == 4
    _same_as_a_whole_read(upstream, mirror, run)


def _tampered(server) -> None:
    _publish_patch(server, _changed(_document()))
    log = _folder(server) / conda_jlap.NAME
    body = log.read_bytes()
    log.write_bytes(body.replace(b'"size":99', b'"size":98'))  # the checksum no longer verifies


def _unrelated(server) -> None:
    document = _changed(_document())
    write_repodata(server.root, SUBDIR, document)
    # A log whose patches lead elsewhere: not from the document the rows are.
    write_log(_folder(server), [json.dumps({"from": "1" * 64, "to": "2" * 64, "patch": []}).encode()],
              "2" * 64)  # fmt: skip


def _no_log(server) -> None:
    write_repodata(server.root, SUBDIR, _changed(_document()))  # and no log


def _rows_changed(server) -> None:
    Package.objects.filter(filename="q02-1.0-0.conda").delete()
    _publish_patch(server, _changed(_document()))


#: What the log line says, where the log itself is what cannot be used.
SAID = {
    _tampered: f"{SUBDIR}/repodata.jlap not used (the log's checksum does not verify)",
    _unrelated: f"{SUBDIR}/repodata.jlap does not reach back to the document the rows are",
    _no_log: f"{SUBDIR}/repodata.jlap: upstream has none",
    _rows_changed: f"{SUBDIR}: the log's patches do not apply to the stored rows",
}


@pytest.mark.parametrize("change", [_tampered, _unrelated, _no_log, _rows_changed])
def test_what_the_log_cannot_say_is_read_from_the_whole_document(upstream, run, change, caplog):
    """...and the worker's log says why."""
    with caplog.at_level(logging.INFO):
        mirror, again, whole = _synced_then(upstream, run, change)
    assert SAID[change] in caplog.text
    assert _whole_reads(upstream) == whole + 1
    _same_as_a_whole_read(upstream, mirror, run)


def test_a_subdir_without_a_log_is_not_asked_for_one_again(upstream, run):
    mirror, _again, _whole = _synced_then(upstream, run, _no_log)
    asked = upstream.count(f"/{SUBDIR}/{conda_jlap.NAME}")
    _publish_whole(upstream.root, _document())
    assert run(mirror).state == SyncRun.State.COMPLETED
    assert upstream.count(f"/{SUBDIR}/{conda_jlap.NAME}") == asked
    _same_as_a_whole_read(upstream, mirror, run)


def test_hostile_entries_in_a_patch_are_refused_as_in_a_document(upstream, run):
    hostile = {
        "../../evil-1.0-0.tar.bz2": repodata_entry("evil", "1.0"),
        "bad-1.0-0.tar.bz2": repodata_entry("bad", "1.0", sha256="not-a-digest"),
        "huge-1.0-0.tar.bz2": repodata_entry("huge", "1.0", size=-1),
    }

    def change(server):
        document = _document()
        document["packages"].update(hostile)
        _publish_patch(server, document)

    mirror, again, whole = _synced_then(upstream, run, change)
    assert _whole_reads(upstream) == whole
    assert again.ingested == 0
    assert {row[0] for row in _rows(mirror)} == {
        *_document()["packages"], *_document()["packages.conda"]
    }  # fmt: skip
    # Not stamped (entries refused): the next read is of the whole document, as after a
    # document with refused entries.
    assert fetch_state.document_kept(mirror.pk, SUBDIR) is None
    assert "have" not in MirrorUnit.objects.get(mirror=mirror, name=SUBDIR).validators.get(
        "jlap", {}
    )
    assert run(mirror).state == SyncRun.State.COMPLETED
    assert _whole_reads(upstream) == whole + 1


def test_an_entry_with_its_own_url_changed_inside_keeps_it(upstream, run):
    document = _document()
    document["packages"]["p01-1.0-0.tar.bz2"]["url"] = "https://files.example.org/p01-1.0-0.tar.bz2"

    def change(server):
        later = json.loads(json.dumps(document))
        later["packages"]["p01-1.0-0.tar.bz2"]["size"] = 4321
        _publish_patch(server, later, [{"op": "replace", "path": pointer("packages", "p01-1.0-0.tar.bz2") + "/size",
                                       "value": 4321}])  # fmt: skip

    _publish_whole(upstream.root, document)
    mirror, again, whole = _synced_then(upstream, run, change)
    assert _whole_reads(upstream) == whole and again.ingested == 1
    row = Package.objects.get(mirror=mirror, filename="p01-1.0-0.tar.bz2")
    assert (row.size, row.upstream_url) == (4321, "https://files.example.org/p01-1.0-0.tar.bz2")
    _same_as_a_whole_read(upstream, mirror, run)


def test_a_log_larger_than_its_limit_is_not_read(upstream, run, monkeypatch):
    monkeypatch.setattr(conda_jlap, "MAX_LOG_BYTES", 64)
    mirror, _again, whole = _synced_then(
        upstream, run, lambda s: _publish_patch(s, _changed(_document()))
    )
    assert _whole_reads(upstream) == whole + 1
    _same_as_a_whole_read(upstream, mirror, run)


def test_a_server_that_ignores_ranges_sends_the_whole_log(upstream, run):
    upstream.ranges = False
    mirror, again, whole = _synced_then(
        upstream, run, lambda s: _publish_patch(s, _changed(_document()))
    )
    assert _whole_reads(upstream) == whole and again.ingested == 4
    _same_as_a_whole_read(upstream, mirror, run)
