"""A conda re-sync compares the subdir's document with the one the last run read to the end
(kept in the data folder) while the mirror's rows still match it: the same rows, and the same
published bytes, as a mirror that digests every entry."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import msgspec
import pytest

from channels_app.formats import conda_fingerprints, conda_repodata, isolation
from channels_app.models import Package, PublishedFile
from channels_app.storage import open_artifact
from mirrors_app.models import Mirror, SyncRun
from mirrors_app.sync import fetch_state
from tests.factories import MirrorFactory
from tests.fixtures.child_faults import print_banner_in_children
from tests.fixtures.conda_channel import (
    ChannelServer,
    FakePackage,
    build_channel,
    repodata_entry,
    write_repodata,
)

pytestmark = pytest.mark.django_db

ROWS = ("filename", "name", "version", "sha256", "record", "entry_digest", "removed")


def _document(count: int = 12) -> dict:
    packages = {f"p{i:02d}-1.0-0.tar.bz2": repodata_entry(f"p{i:02d}", "1.0") for i in range(count)}
    conda = {f"q{i:02d}-1.0-0.conda": repodata_entry(f"q{i:02d}", "1.0") for i in range(count)}
    return {"info": {"subdir": "linux-64"}, "packages": packages, "packages.conda": conda}


@pytest.fixture
def upstream(tmp_path, settings):
    settings.DATA_DIR = tmp_path / "data"  # this test's own kept documents
    root = build_channel(tmp_path / "upstream", [FakePackage("alpha", "1.0")])
    write_repodata(root, "linux-64", _document())
    with ChannelServer(root) as server:
        yield server


@pytest.fixture
def compared(monkeypatch):
    """The re-syncs that compared with a kept document (unit names)."""
    units: list[str] = []
    real = conda_repodata._read_changes

    def spy(base, unit, *args):
        units.append(unit)
        return real(base, unit, *args)

    monkeypatch.setattr(conda_repodata, "_read_changes", spy)
    return units


def _mirror(server) -> Mirror:
    return MirrorFactory(
        source_url=server.url, mode=Mirror.Mode.PASSIVE, options={"subdirs": ["linux-64"]}
    )


def _rows(mirror: Mirror) -> list[tuple]:
    return list(
        Package.objects.filter(mirror=mirror, unit="linux-64", removed=False)
        .order_by("filename")
        .values_list(*ROWS)
    )


def _published(mirror: Mirror, path: str = "linux-64/repodata.json") -> bytes:
    published = PublishedFile.objects.get(channel=mirror.channel, path=path)
    with open_artifact(published.artifact) as handle:
        return handle.read()


def _same_rows_as_a_fresh_read(upstream, mirror: Mirror, run_mirror) -> Mirror:
    """A new mirror of the same source, its rows checked against `mirror`'s (returned)."""
    fresh = _mirror(upstream)
    assert run_mirror(fresh).state == SyncRun.State.COMPLETED
    assert [row[1:] for row in _rows(mirror)] == [row[1:] for row in _rows(fresh)]
    return fresh


def _changed(document: dict) -> dict:
    """Entries replaced at the first and last place of each section, one removed, one added
    at the front."""
    document = json.loads(json.dumps(document))
    packages, conda = document["packages"], document["packages.conda"]
    packages["p00-1.0-0.tar.bz2"]["depends"] = ["python >=3.10"]
    packages["p11-1.0-0.tar.bz2"]["size"] = 99
    conda["q00-1.0-0.conda"]["license"] = "MIT"
    conda["q11-1.0-0.conda"]["build_number"] = 7
    del packages["p05-1.0-0.tar.bz2"]
    document["packages"] = {"a-first-1.0-0.tar.bz2": repodata_entry("a-first", "1.0"), **packages}
    return document


def _write(server, document: dict, *, lines: bool = True) -> None:
    """`write_repodata`, with one entry written with other whitespace (the same record);
    without `lines`, all on one line (not followed as it downloads: see `conda_stream`)."""
    write_repodata(server.root, "linux-64", document)
    folder = server.root / "linux-64"
    raw = (folder / "repodata.json").read_bytes()
    raw = raw.replace(b'"name": "p02"', b'"name" :  "p02"')
    (folder / "repodata.json").write_bytes(raw if lines else raw.replace(b"\n", b""))
    (folder / "repodata.json.zst").unlink()


CHILD = "with a child"
CHILD_ONE_LINE = "with a child, the document on one line"


@pytest.fixture(params=["one process", CHILD, CHILD_ONE_LINE])
def split(request, monkeypatch):
    """Compared in this process, or (as a large document is) with child processes: two that
    follow the document as it downloads (a section each), or, for a document that cannot be
    followed, one that compares the second section once it is whole. Their answers are
    listed."""
    answers: list = []
    if request.param != "one process":
        monkeypatch.setattr(conda_repodata, "PARALLEL_BYTES", 0)
        real = isolation.Child.result

        def result(child):
            answers.append(real(child))
            return answers[-1]

        monkeypatch.setattr(isolation.Child, "result", result)
    return SimpleNamespace(mode=request.param, answers=answers)


def test_a_resync_compares_with_the_kept_document_and_matches_a_full_read(
    upstream, run_mirror, compared, split
):
    lines = split.mode != CHILD_ONE_LINE
    if not lines:  # the kept document on one line too: only the changed entries differ
        write_repodata(upstream.root, "linux-64", _document(), zst=False)
        path = upstream.root / "linux-64" / "repodata.json"
        path.write_bytes(path.read_bytes().replace(b"\n", b""))
    mirror = _mirror(upstream)
    assert run_mirror(mirror).state == SyncRun.State.COMPLETED
    assert fetch_state.document_kept(mirror.pk, "linux-64") is not None
    document = _changed(_document())
    _write(upstream, document, lines=lines)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert compared == ["linux-64"]
    here = f"{upstream.url}/linux-64/"
    packages = (
        here,
        ["a-first-1.0-0.tar.bz2", "p00-1.0-0.tar.bz2", "p02-1.0-0.tar.bz2", "p11-1.0-0.tar.bz2"],
        8,
        ["p05-1.0-0.tar.bz2"],
    )
    if split.mode == CHILD:  # followed: the whole document read, a section by each child
        answers = sorted(split.answers, key=lambda answer: answer.first not in answer.compared)
        assert [list(answer.compared) for answer in answers] == [["packages"], ["packages.conda"]]
        first, then = answers
        assert list(first.top) == ["info", "packages", "packages.conda"]
        # The second vouches for what it read from its own key on (the rest is the first's).
        assert list(then.top) == ["packages.conda"]
        # The first reader stopped at the second's key, where the second found it.
        assert (first.next_at, then.own_at) == (then.own_at, first.next_at) != (None, None)
        top, sections = conda_repodata._joined(split.answers)[:2]
        assert list(top) == ["info", "packages", "packages.conda"]
        assert json.loads(top["info"]) == {"subdir": "linux-64"}
        assert (top["packages"], top["packages.conda"]) == (b"{}", b"{}")
        assert _named(sections["packages"]) == packages
        assert _named(sections["packages.conda"]) == (
            here,
            ["q00-1.0-0.conda", "q11-1.0-0.conda"],
            10,
            [],
        )
        changed = dict(sections["packages"][1])
        assert json.loads(changed["p00-1.0-0.tar.bz2"]) == document["packages"]["p00-1.0-0.tar.bz2"]
    elif split.mode == CHILD_ONE_LINE:  # the second section's changes, bytes of each entry
        (answer,) = split.answers
        assert _named(answer) == packages
    assert run.seen == 24  # every entry of the subdir (noarch: unchanged, a 304)
    assert run.ingested == 5  # 4 replaced, 1 added (p02: other bytes, the same record)

    fresh = _mirror(upstream)  # the same document read by digests, from nothing
    assert run_mirror(fresh).state == SyncRun.State.COMPLETED
    assert compared == ["linux-64"]
    assert [row[1:] for row in _rows(mirror)] == [row[1:] for row in _rows(fresh)]
    assert [row[0] for row in _rows(mirror)] == sorted(
        [*document["packages"], *document["packages.conda"]]
    )
    for path in ("linux-64/repodata.json", "linux-64/repodata.json.zst", "channeldata.json"):
        assert _published(mirror, path) == _published(fresh, path)


def _named(compared: tuple) -> tuple:
    """A section's comparison with the names of the changed entries only, sorted."""
    base, changed, same, gone = compared
    return base, sorted(name for name, _ in changed), same, gone


def test_entries_written_otherwise_but_the_same_are_not_rewritten(
    upstream, run_mirror, compared, split
):
    mirror = _mirror(upstream)
    run_mirror(mirror)
    before = _rows(mirror)
    folder = upstream.root / "linux-64"
    raw = json.dumps(_document(), indent=4).encode()  # other whitespace, same records
    (folder / "repodata.json").write_bytes(raw)
    (folder / "repodata.json.zst").unlink()
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert compared == ["linux-64"]
    assert (run.seen, run.ingested) == (24, 0)
    assert _rows(mirror) == before


def test_rows_changed_since_make_the_resync_read_every_entry(upstream, run_mirror, compared):
    mirror = _mirror(upstream)
    run_mirror(mirror)
    Package.objects.filter(mirror=mirror, filename="p03-1.0-0.tar.bz2").delete()
    Package.objects.filter(mirror=mirror, filename="q04-1.0-0.conda").update(entry_digest=1)
    document = _changed(_document())
    _write(upstream, document)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert compared == []  # the rows no longer match the kept document: digests compared
    _same_rows_as_a_fresh_read(upstream, mirror, run_mirror)
    # Kept again: the next re-sync compares with it.
    write_repodata(upstream.root, "linux-64", _document())
    assert run_mirror(mirror).state == SyncRun.State.COMPLETED
    assert compared == ["linux-64"]
    assert [row[0] for row in _rows(mirror)] == sorted(
        [*_document()["packages"], *_document()["packages.conda"]]
    )


def test_a_child_that_answers_garbage_leaves_the_comparison_to_the_run(
    upstream, run_mirror, compared, monkeypatch, tmp_path
):
    monkeypatch.setattr(conda_repodata, "PARALLEL_BYTES", 0)
    mirror = _mirror(upstream)
    assert run_mirror(mirror).state == SyncRun.State.COMPLETED
    site = print_banner_in_children(tmp_path, monkeypatch)  # every child's pipe: garbage
    document = _changed(_document())
    _write(upstream, document)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert compared == ["linux-64"]
    assert (run.seen, run.ingested, run.warnings) == (24, 5, "")
    assert (site / "started").exists()  # a child did start, and its answer was refused
    fresh = _same_rows_as_a_fresh_read(upstream, mirror, run_mirror)
    assert _published(mirror) == _published(fresh)


def test_one_of_two_children_that_answers_garbage_leaves_both_sections_to_the_run(
    upstream, run_mirror, compared, monkeypatch, tmp_path, begun
):
    """Of the two children that follow a document, the second to start answers garbage: the
    other's reading alone is not the document's, so the run reads it whole and compares both
    sections itself."""
    mirror = _mirror(upstream)
    assert run_mirror(mirror).state == SyncRun.State.COMPLETED
    site = print_banner_in_children(tmp_path, monkeypatch, only=2)
    document = _changed(_document())
    _write(upstream, document)
    read_here = _called_by(monkeypatch, conda_repodata, "_compare_here")
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert compared == ["linux-64"]
    assert (run.seen, run.ingested, run.warnings) == (24, 5, "")
    (comparison,) = begun
    assert len(comparison.children) == 2
    assert len((site / "started").read_text().split()) == 2
    assert sorted(args[2] for args, _ in read_here) == ["packages", "packages.conda"]
    fresh = _same_rows_as_a_fresh_read(upstream, mirror, run_mirror)
    assert _published(mirror) == _published(fresh)


def test_a_restart_reads_every_entry(upstream, run_mirror, compared):
    mirror = _mirror(upstream)
    run_mirror(mirror)
    write_repodata(upstream.root, "linux-64", _changed(_document()))
    assert run_mirror(mirror, restart=True).state == SyncRun.State.COMPLETED
    assert compared == []  # but kept, for the next re-sync
    write_repodata(upstream.root, "linux-64", _document())
    assert run_mirror(mirror).state == SyncRun.State.COMPLETED
    assert compared == ["linux-64"]


def test_a_subdir_with_a_rejected_entry_is_not_kept(upstream, run_mirror, compared):
    mirror = _mirror(upstream)
    document = _document()
    document["packages"]["p01-1.0-0.tar.bz2"]["size"] = 2**70  # PSM cannot hold it
    write_repodata(upstream.root, "linux-64", document)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert fetch_state.document_kept(mirror.pk, "linux-64") is None
    write_repodata(upstream.root, "linux-64", _document())
    assert run_mirror(mirror).state == SyncRun.State.COMPLETED
    assert compared == []
    assert len(_rows(mirror)) == 24


def test_a_kept_document_that_cannot_be_read_is_not_compared_with(upstream, run_mirror, compared):
    mirror = _mirror(upstream)
    run_mirror(mirror)
    kept = fetch_state.document_kept(mirror.pk, "linux-64")
    with open(kept.path, "r+b") as handle:
        handle.truncate(100)  # stamp and rows still match: only the document is damaged
    write_repodata(upstream.root, "linux-64", _changed(_document()))
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert compared == []
    _same_rows_as_a_fresh_read(upstream, mirror, run_mirror)


def test_a_document_kept_is_compared_only_with_one_from_the_same_place(upstream, run_mirror):
    mirror = _mirror(upstream)
    run_mirror(mirror)
    kept = fetch_state.document_kept(mirror.pk, "linux-64")
    assert kept.read_from(f"{upstream.url}/linux-64/repodata.json")
    assert kept.read_from(f"{upstream.url}/linux-64/repodata.json.zst")
    assert not kept.read_from(f"{upstream.url}/other/linux-64/repodata.json")


@pytest.mark.django_db(transaction=True)
def test_deleting_the_mirror_drops_its_kept_documents(upstream, run_mirror):
    from mirrors_app.services import mirror_delete

    mirror = _mirror(upstream)
    run_mirror(mirror)
    folder = fetch_state._folder(mirror.pk)
    assert (folder / "linux-64.json").is_file()
    mirror_delete(mirror=mirror)
    assert not folder.exists()


def _garbled_in_place(path: str) -> None:
    """The file's bytes replaced by others of the same length, its inode and times kept."""
    status = os.stat(path)
    with open(path, "r+b") as handle:
        handle.write(b"x" * status.st_size)
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))


def test_a_resync_compares_with_the_fingerprints_left_beside_the_kept_document(
    upstream, run_mirror, compared, split
):
    mirror = _mirror(upstream)
    run_mirror(mirror)
    kept = fetch_state.document_kept(mirror.pk, "linux-64")
    for section in ("packages", "packages.conda"):
        assert conda_fingerprints.load(kept.path, section) is not None
    # Unreadable now, but the same file: only its fingerprints can be compared with.
    _garbled_in_place(kept.path)
    document = _changed(_document())
    _write(upstream, document)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert compared == ["linux-64"]
    assert (run.seen, run.ingested) == (24, 5)
    _same_rows_as_a_fresh_read(upstream, mirror, run_mirror)
    # The new document's own fingerprints were kept with it.
    kept = fetch_state.document_kept(mirror.pk, "linux-64")
    _, entries = conda_fingerprints.load(kept.path, "packages")
    assert sorted(entries) == sorted(document["packages"])


def test_fingerprints_that_are_not_the_kept_files_are_not_used(
    upstream, run_mirror, compared, split
):
    mirror = _mirror(upstream)
    run_mirror(mirror)
    kept = fetch_state.document_kept(mirror.pk, "linux-64")
    document = _changed(_document())
    _write(upstream, document)
    # Left for another file (the kept one, touched since): fingerprints that call every new
    # entry of `packages` unchanged, and damaged ones for `packages.conda`. The kept document
    # is read instead.
    raw = (upstream.root / "linux-64" / "repodata.json").read_bytes()
    new = msgspec.json.decode(raw, type=dict[str, dict[str, msgspec.Raw]])["packages"]
    base, _ = conda_fingerprints.load(kept.path, "packages")
    conda_fingerprints.save(kept.path, "packages", base, conda_fingerprints.of(new))
    (Path(kept.path + conda_fingerprints.suffix("packages.conda"))).write_bytes(b"\x00")
    status = os.stat(kept.path)
    os.utime(kept.path, ns=(status.st_atime_ns, status.st_mtime_ns + 1))
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert compared == ["linux-64"]
    assert (run.seen, run.ingested) == (24, 5)
    _same_rows_as_a_fresh_read(upstream, mirror, run_mirror)


@pytest.fixture
def begun(monkeypatch) -> list:
    """The comparisons begun as a document downloaded (every document counts as large)."""
    monkeypatch.setattr(conda_repodata, "PARALLEL_BYTES", 0)
    comparisons: list = []
    real_begun = conda_repodata.SubdirFile.begun

    def spy_begun(subdir, head=b""):
        real_begun(subdir, head)
        if subdir.comparison is not None:
            comparisons.append(subdir.comparison)

    monkeypatch.setattr(conda_repodata.SubdirFile, "begun", spy_begun)
    return comparisons


@pytest.mark.parametrize("lines", [True, False], ids=["followed", "on one line"])
def test_the_comparison_starts_as_the_document_downloads(
    upstream, run_mirror, begun, monkeypatch, lines
):
    handed: list = []
    real_hand = conda_repodata.Comparison.hand

    def spy_hand(comparison, *args):
        handed.append(comparison)
        real_hand(comparison, *args)

    monkeypatch.setattr(conda_repodata.Comparison, "hand", spy_hand)
    read_kept = _called_by(monkeypatch, conda_repodata, "_kept_side")  # (kept, section)
    mirror = _mirror(upstream)
    run_mirror(mirror)
    assert begun == handed == []  # nothing kept to compare with yet
    assert run_mirror(mirror).state == SyncRun.State.COMPLETED  # a 304: nothing begins
    assert begun == []
    _write(upstream, _changed(_document()), lines=lines)
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert (run.seen, run.ingested) == (24, 5)
    assert len(begun) == 1 and begun[0] is not None
    assert handed == begun  # the children started as it downloaded compared it
    children = begun[0].children
    assert len(children) == (2 if lines else 1)  # followed: a child for each section
    assert all(child.process.returncode is not None for child in children.values())
    assert begun[0].path is not None  # given the document's file, to follow it
    if lines:  # the children read it all as it downloaded: nothing read here
        assert read_kept == []
    else:  # this process's section: its kept side worked out as it downloaded, too
        assert [(args[1], thread) for args, thread in read_kept] == [
            (conda_repodata.ORDER[0][0], "psm-kept-side")
        ]


def test_a_comparison_begun_for_rows_changed_since_is_ended(upstream, run_mirror, begun):
    mirror = _mirror(upstream)
    run_mirror(mirror)
    Package.objects.filter(mirror=mirror, filename="q04-1.0-0.conda").update(entry_digest=1)
    _write(upstream, _changed(_document()))
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    (comparison,) = begun
    assert all(child.process.returncode is not None for child in comparison.children.values())
    _same_rows_as_a_fresh_read(upstream, mirror, run_mirror)


def test_a_malformed_document_ends_the_comparison_begun_and_keeps_the_rows(
    upstream, run_mirror, begun
):
    mirror = _mirror(upstream)
    run_mirror(mirror)
    before = _rows(mirror)
    folder = upstream.root / "linux-64"
    write_repodata(upstream.root, "linux-64", _changed(_document()), zst=False)
    raw = (folder / "repodata.json").read_bytes()
    (folder / "repodata.json").write_bytes(raw[: len(raw) // 2])  # cut short
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error  # noarch was read
    assert "linux-64" in run.warnings and "not valid JSON" in run.warnings
    (comparison,) = begun
    assert all(child.process.returncode is not None for child in comparison.children.values())
    assert _rows(mirror) == before


def _called_by(monkeypatch, module, name: str) -> list[tuple[tuple, str]]:
    """The arguments of each call of `module.<name>` from now on, and the thread's name."""
    calls, real = [], getattr(module, name)

    def spy(*args):
        calls.append((args, threading.current_thread().name))
        return real(*args)

    monkeypatch.setattr(module, name, spy)
    return calls


def _discarded() -> None:
    """Wait for the files moved aside to be deleted (`fetch_state._discard`)."""
    for thread in threading.enumerate():
        if thread.name == "psm-discard":
            thread.join()


@pytest.mark.parametrize("document", [True, False], ids=["whole read", "patch read"])
def test_the_last_kept_document_is_deleted_beside_the_run(tmp_path, settings, document):
    settings.DATA_DIR = tmp_path
    folder = fetch_state._folder(7)
    folder.mkdir(parents=True)
    (folder / "linux-64.json").write_bytes(b"old document")
    (folder / "linux-64.json.packages.fp").write_bytes(b"old prints")
    if document:  # held (`hold_document`)
        (folder / "linux-64.pending").write_bytes(b"new document")
        (folder / "linux-64.pending.packages.fp").write_bytes(b"new prints")
    aside = tmp_path / "mirror-state" / ".discarded"
    aside.mkdir()
    (aside / "left-by-a-process-ended-meanwhile").write_bytes(b"x")

    fetch_state.keep_document(7, "linux-64", fetch_state.Held("u", 1, 2, None, None, document))
    _discarded()

    kept = {path.name: path.read_bytes() for path in folder.iterdir()}
    stamp = kept.pop("linux-64.stamp")
    assert json.loads(stamp)["document"] is document
    # Rows read from a patch: no document is what they are.
    new = {"linux-64.json": b"new document", "linux-64.json.packages.fp": b"new prints"}
    assert kept == (new if document else {})
    assert list(aside.iterdir()) == []  # the old ones, and what was left aside before


@pytest.mark.django_db(transaction=True)
def test_the_live_rows_are_asked_as_the_document_downloads(
    upstream, run_mirror, compared, monkeypatch
):
    """Outside a transaction, the check that the rows are still the kept document's is asked
    on a connection of its own as the new document downloads (a 200), not after."""
    calls = _called_by(monkeypatch, fetch_state, "_live_rows")  # (mirror, unit)
    mirror = _mirror(upstream)
    run_mirror(mirror)
    assert run_mirror(mirror).state == SyncRun.State.COMPLETED  # a 304: nothing asked
    assert not calls
    _write(upstream, _changed(_document()))
    run = run_mirror(mirror)
    assert run.state == SyncRun.State.COMPLETED, run.error
    assert compared == ["linux-64"]  # the rows matched: compared with the kept document
    assert ((mirror.pk, "linux-64"), "psm-live-rows") in calls
    assert (run.seen, run.ingested) == (24, 5)
    _same_rows_as_a_fresh_read(upstream, mirror, run_mirror)
