"""A conda publish splices the rows changed since the last publish into the published
repodata.json instead of rendering every row: the bytes must be those a full render of the same
rows gives, whatever changed, and no row committed meanwhile may be lost.

The publishes commit (the changed rows are told apart by the transactions that wrote them), so
these tests run outside a test transaction."""

from __future__ import annotations

import hashlib
import importlib
import logging
import threading
import time
from datetime import timedelta
from pathlib import Path

import jsonpatch
import msgspec
import orjson
import pytest
from django.apps import apps as django_apps
from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import F
from msgspec import Raw

from channels_app import publishing, splice_changes, storage
from channels_app.formats import conda_jlap, conda_members
from channels_app.formats.base import Gap, Previous, SectionChanges
from channels_app.formats.conda_render import splice_sections
from channels_app.models import Channel, Package, PublishedFile, VerificationProblem
from channels_app.publishing import PackageIndexSource, channel_publish, collect_garbage
from tests.channels_app import conda_rendered
from tests.factories import ChannelFactory

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif("connection.vendor != 'postgresql'", reason="splicing is PostgreSQL's"),
]


def _record(filename: str, **extra) -> str:
    name, version, _ = filename.rsplit("-", 2)
    return orjson.dumps({"name": name, "version": version, **extra}).decode()


def _add(channel: Channel, *filenames: str, unit: str = "linux-64", **extra) -> None:
    Package.objects.bulk_create(
        Package(
            channel=channel,
            unit=unit,
            filename=filename,
            name=filename.rsplit("-", 2)[0],
            version=filename.rsplit("-", 2)[1],
            record=_record(filename, **extra),
            on_demand=True,
        )
        for filename in filenames
    )


def _publish(channel: Channel, caplog) -> int:
    """Publish the channel (as a run does after changing it); return how many files were
    spliced."""
    Channel.objects.filter(pk=channel.pk).update(content_version=F("content_version") + 1)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="channels_app.publishing"):
        assert channel_publish(channel=channel)
    (message,) = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith(f"published {channel}:")
    ]
    return int(message.split("(")[1].split(" spliced")[0])


def _published(channel: Channel) -> dict[str, bytes]:
    files = {}
    for published in PublishedFile.objects.filter(channel=channel).select_related("artifact"):
        with storage.open_artifact(published.artifact) as fileobj:
            files[published.path] = fileobj.read()
    return files


def _full_render(channel: Channel) -> dict[str, bytes]:
    channel.refresh_from_db()
    return conda_rendered(PackageIndexSource(channel))


def _same_as_a_full_render(channel: Channel) -> dict:
    """The published files are those a full render gives, but for the logs, which end at the
    published documents (a full render starts them anew); and the note kept on a repodata.json,
    if any, gives the lengths of its members."""
    published, full = _published(channel), _full_render(channel)
    for path, data in full.items():
        if path.endswith("repodata.json"):
            _noted_right(channel, path, published[path])
        if path.endswith(".zst"):
            continue
        if path.endswith(".jlap"):
            document = published[path.removesuffix(".jlap") + ".json"]
            assert conda_jlap.read_log(published[path]).latest == _hash(document), path
            continue
        assert published[path] == data, path
    return orjson.loads(published["linux-64/repodata.json"])


def _note(channel: Channel, path: str) -> tuple[bytes | None, list]:
    """The note kept on the file published at `path`, and the file's sections."""
    channel.refresh_from_db()
    mark = channel.render_marks[path]
    return publishing.read_note_of(mark["sha256"]), mark["sections"]


def _noted_right(channel: Channel, path: str, document: bytes) -> None:
    note, sections = _note(channel, path)
    if note is None:
        return
    lengths = conda_members.read(note, sections)
    for (start, end), noted in zip(sections, lengths, strict=True):
        members = msgspec.json.decode(b"{" + document[start:end] + b"}", type=dict[str, Raw])
        assert list(noted) == [len(orjson.dumps(k)) + 1 + len(v) for k, v in members.items()]


def _hash(document: bytes) -> str:
    return conda_jlap.document_hash(document).hexdigest()


def _logged_publish(channel: Channel, caplog) -> int:
    """`_publish`, then check that each subdir's log takes its document before the publish to
    the one after (conda's and PSM's readers apply its patches), and that it grew by one patch
    if the document changed; return how many files were spliced."""
    before = _published(channel)
    spliced = _publish(channel, caplog)
    after = _published(channel)
    for path in after:
        if not path.endswith(".jlap"):
            continue
        old, new = (files.get(path.removesuffix(".jlap") + ".json") for files in (before, after))
        log = conda_jlap.read_log(after[path])
        assert log.latest == _hash(new)
        if old is None or old == new:
            assert after[path] == before.get(path, after[path])  # no patch to add
            continue
        grown = conda_jlap.read_log(before[path])
        assert len(log.patches) == len(grown.patches) + 1
        steps = conda_jlap.chain(log.patches, _hash(old), log.latest)
        assert steps is not None
        document = orjson.loads(old)
        for operations in steps:
            document = jsonpatch.apply_patch(document, operations)
        assert document == orjson.loads(new), path
    return spliced


NAMES = [f"pkg{i:02d}-1.0-0" for i in range(0, 40, 2)]


def _probing(monkeypatch) -> None:
    """Make every splice ask the database for its changed rows' neighbours, as where the
    database does not sort file names by bytes (the old file's members are then not known,
    `conda_members`)."""
    monkeypatch.setattr(publishing, "orders_by_bytes", lambda: False)


def _probes_on_two_connections(monkeypatch) -> list[int]:
    """Make every splice probe half its changed rows' neighbours on a second connection; the
    list returned gets how many rows each second connection probed."""
    _probing(monkeypatch)
    monkeypatch.setattr(splice_changes, "PROBE_SPLIT", 1)
    return _rows_counted(monkeypatch, "_probed_in")


def _rows_counted(monkeypatch, name: str) -> list[int]:
    """How many rows each call of `splice_changes.<name>` was given (its last argument)."""
    counts, real = [], getattr(splice_changes, name)

    def counted(*args):
        counts.append(len(args[-1]))
        return real(*args)

    monkeypatch.setattr(splice_changes, name, counted)
    return counts


def _every_splice(monkeypatch, way: str) -> None:
    """Make every splice after a whole render one that trusts what the table told ("told"),
    or one that checks every row ("checked")."""
    monkeypatch.setattr(splice_changes, "CHECK_EVERY", 1000 if way == "told" else 1)


@pytest.mark.parametrize("way", ["told", "checked"])
@pytest.mark.parametrize("two", [False, True], ids=["one connection", "two connections"])
def test_a_splice_gives_the_bytes_of_a_full_render_whatever_changed(caplog, monkeypatch, two, way):
    """On one connection the splices know the old file's members (`conda_members`): the told
    ones merge, and probe nothing; the checked ones probe, and keep the members' lengths."""
    _every_splice(monkeypatch, way)
    probed = _probes_on_two_connections(monkeypatch) if two else []
    asked = _neighbours_asked(monkeypatch)
    channel = ChannelFactory(kind="conda")
    _add(channel, *(f"{name}.tar.bz2" for name in NAMES), *(f"{name}.conda" for name in NAMES))
    _add(channel, "noarchy-1-0.conda", unit="noarch")
    assert _publish(channel, caplog) == 0  # the first publish renders everything
    _same_as_a_full_render(channel)

    # Nothing changed: both subdirs spliced, same bytes.
    before = _published(channel)
    assert _logged_publish(channel, caplog) == 2
    assert _published(channel)["linux-64/repodata.json"] == before["linux-64/repodata.json"]

    # Adds at the start, in the middle, at the end of both sections; removals, including the
    # first and last; a changed record; a row kept out; a row no longer kept out.
    _add(channel, "aaa-1-0.tar.bz2", "pkg05-1.0-0.tar.bz2", "zzz-1-0.tar.bz2")
    _add(channel, "aaa-1-0.conda", "pkg05-1.0-0.conda", "pkg07-1.0-0.conda", "zzz-9-0.conda")
    rows = Package.objects.filter(channel=channel, unit="linux-64")
    rows.filter(filename__in=["pkg00-1.0-0.conda", "pkg38-1.0-0.conda"]).update(removed=True)
    rows.filter(filename="pkg10-1.0-0.tar.bz2").update(record=_record("pkg10-1.0-0", x=1))
    rows.filter(filename="pkg12-1.0-0.conda").update(excluded_reason="blocked")
    rows.filter(filename="pkg12-1.0-0.tar.bz2").delete()
    assert _logged_publish(channel, caplog) == 2
    document = _same_as_a_full_render(channel)
    assert "pkg05-1.0-0.conda" in document["packages.conda"]
    assert "pkg00-1.0-0.conda" not in document["packages.conda"]
    assert document["packages"]["pkg10-1.0-0.tar.bz2"]["x"] == 1

    rows.filter(filename="pkg12-1.0-0.conda").update(excluded_reason="")
    rows.filter(filename__startswith="pkg2").update(record=_record("pkg2x-1-0", y=2))
    assert _logged_publish(channel, caplog) == 2
    _same_as_a_full_render(channel)

    # A whole section emptied, then filled again.
    rows.filter(filename__endswith=".tar.bz2").update(removed=True)
    assert _logged_publish(channel, caplog) == 2
    assert _same_as_a_full_render(channel)["packages"] == {}
    _add(channel, "back-1-0.tar.bz2", "again-2-0.tar.bz2")
    assert _logged_publish(channel, caplog) == 2
    assert list(_same_as_a_full_render(channel)["packages"]) == [
        "again-2-0.tar.bz2",
        "back-1-0.tar.bz2",
    ]
    # Every publish that changed rows had a second connection probe some (more may have: a
    # transaction running elsewhere holds a mark back, and more rows read as changed).
    assert (len(probed) >= 4 and all(probed)) if two else not probed
    assert bool(asked) == (two or way == "checked")
    assert two or _note(channel, "linux-64/repodata.json")[0] is not None


def _neighbours_asked(monkeypatch) -> list[int]:
    """How many changed rows each splice asked the neighbours of."""
    return _rows_counted(monkeypatch, "_neighbours")


@pytest.mark.parametrize("note", ["missing", "damaged", "another file's"])
def test_a_splice_without_a_note_it_can_use_probes(caplog, monkeypatch, note):
    """The note on the published file gone, damaged, or another file's: the changed rows'
    neighbours are asked for, and the bytes are still a full render's."""
    _every_splice(monkeypatch, "told")
    asked = _neighbours_asked(monkeypatch)
    channel = ChannelFactory(kind="conda")
    _add(channel, *(f"{name}.conda" for name in NAMES))
    _publish(channel, caplog)
    path = "linux-64/repodata.json"
    first = _published(channel)[path]
    _add(channel, "aaa-1-0.conda", "pkg05-1.0-0.conda")
    assert _publish(channel, caplog) == 2
    assert not asked  # merged by the note
    channel.refresh_from_db()
    kept = publishing._notes_folder() / channel.render_marks[path]["sha256"]
    if note == "missing":
        kept.unlink()
    elif note == "damaged":
        kept.write_bytes(kept.read_bytes()[:-9] + b"123456789")
    else:  # the first file's, which had other sections
        first_note = publishing._notes_folder() / hashlib.sha256(first).hexdigest()
        kept.write_bytes(first_note.read_bytes())
    _add(channel, "zzz-1-0.conda", "pkg07-1.0-0.conda")
    Package.objects.filter(filename="pkg10-1.0-0.conda").update(removed=True)
    assert _publish(channel, caplog) == 2
    assert asked
    document = _same_as_a_full_render(channel)
    assert {"aaa-1-0.conda", "zzz-1-0.conda"} <= document["packages.conda"].keys()
    assert "pkg10-1.0-0.conda" not in document["packages.conda"]


def test_notes_on_files_no_longer_published_are_collected():
    channel = ChannelFactory(kind="conda")
    _add(channel, *(f"{name}.conda" for name in NAMES))
    assert channel_publish(channel=channel)
    channel.refresh_from_db()
    named = channel.render_marks["linux-64/repodata.json"]["sha256"]
    folder = publishing._notes_folder()
    publishing.keep_note("0" * 64, b"a note on a file no channel publishes")
    collect_garbage()  # too recent to be taken
    assert {named, "0" * 64} <= {path.name for path in folder.iterdir()}
    collect_garbage(older_than=timedelta(0))
    assert named in {path.name for path in folder.iterdir()}
    assert "0" * 64 not in {path.name for path in folder.iterdir()}


def test_the_log_also_says_what_changed_after_the_sections(caplog):
    """`removed` and the top-level keys kept from upstream are in the patch when they change
    (conda applies them; a PSM mirror then reads the document whole)."""
    channel = ChannelFactory(kind="conda")
    _add(channel, *(f"{name}.conda" for name in NAMES[:4]))
    _publish(channel, caplog)
    extras = {"removed": ["gone-1-0.conda"], "top_level": {"signatures": '{"a":{"b":1}}'}}
    Channel.objects.filter(pk=channel.pk).update(index_extras={"1": {"linux-64": extras}})
    _add(channel, "aaa-1-0.conda")
    assert _logged_publish(channel, caplog) == 2
    document = _same_as_a_full_render(channel)
    assert (document["removed"], document["signatures"]) == (["gone-1-0.conda"], {"a": {"b": 1}})
    Channel.objects.filter(pk=channel.pk).update(index_extras={})
    assert _logged_publish(channel, caplog) == 2
    assert "signatures" not in _same_as_a_full_render(channel)


def test_probes_a_second_connection_cannot_make_are_made_on_the_first(caplog, monkeypatch):
    """No connection to be had for the second half of the probes (the server's limit, say):
    the first connection, which holds the snapshot, probes them too."""
    _probing(monkeypatch)
    monkeypatch.setattr(splice_changes, "PROBE_SPLIT", 1)

    def refused(*args):
        raise OperationalError("sorry, too many clients already")

    monkeypatch.setattr(splice_changes, "_probed_in", refused)
    channel = ChannelFactory(kind="conda")
    _add(channel, *(f"{name}.conda" for name in NAMES))
    _publish(channel, caplog)
    _add(channel, "aaa-1-0.conda", "pkg05-1.0-0.conda", "zzz-1-0.conda")
    Package.objects.filter(filename="pkg10-1.0-0.conda").update(removed=True)
    assert _publish(channel, caplog) == 2
    document = _same_as_a_full_render(channel)
    assert {"aaa-1-0.conda", "pkg05-1.0-0.conda"} <= document["packages.conda"].keys()


def test_a_publish_whose_helper_connections_are_refused_is_made_on_its_own(
    caplog, monkeypatch, helper_connections_refused
):
    """The names asked meanwhile and half the probes go on connections of their own: where
    the server refuses them (at its connection limit), they are asked on the publish's."""
    _probing(monkeypatch)
    monkeypatch.setattr(splice_changes, "PROBE_SPLIT", 1)
    channel = ChannelFactory(kind="conda")
    _add(channel, *(f"{name}.conda" for name in NAMES))
    assert _publish(channel, caplog) == 0  # the names asked meanwhile
    _add(channel, "aaa-1-0.conda", "pkg05-1.0-0.conda", "zzz-1-0.conda")
    Package.objects.filter(filename="pkg10-1.0-0.conda").update(removed=True)
    assert _publish(channel, caplog) == 2  # half the probes
    assert {"psm-names", "psm-probes"} <= set(helper_connections_refused)
    document = _same_as_a_full_render(channel)
    assert "aaa-1-0.conda" in document["packages.conda"]
    assert "pkg10-1.0-0.conda" not in document["packages.conda"]


def test_a_publish_inside_a_transaction_renders_whole(caplog):
    """The changes are read in one snapshot of their own, which a transaction already begun
    cannot give: such a publish renders every row."""
    channel = ChannelFactory(kind="conda")
    _add(channel, *(f"{name}.conda" for name in NAMES))
    _publish(channel, caplog)
    _add(channel, "aaa-1-0.conda")
    with transaction.atomic():
        assert _publish(channel, caplog) == 0
    assert "aaa-1-0.conda" in _same_as_a_full_render(channel)["packages.conda"]


def test_a_change_that_keeps_every_length_is_spliced_in(caplog):
    """The section's length cannot tell this change: only the row's transaction does."""
    channel = ChannelFactory(kind="conda")
    _add(channel, *(f"{name}.tar.bz2" for name in NAMES), size=1234)
    assert _publish(channel, caplog) == 0
    for _ in range(3):  # transactions since: the mark is older than the change, not the same
        Channel.objects.filter(pk=channel.pk).update(content_version=F("content_version") + 1)
    rows = Package.objects.filter(channel=channel, filename="pkg10-1.0-0.tar.bz2")
    rows.update(record=_record("pkg10-1.0-0", size=4321))
    assert _publish(channel, caplog) == 2
    assert _same_as_a_full_render(channel)["packages"]["pkg10-1.0-0.tar.bz2"]["size"] == 4321
    assert _publish(channel, caplog) == 2  # and not again as changed: the same bytes
    assert _same_as_a_full_render(channel)["packages"]["pkg10-1.0-0.tar.bz2"]["size"] == 4321


def test_names_sort_as_the_database_collates_them(caplog):
    """Case, punctuation and digits: the new names go where the database's order puts them,
    whatever Python's byte order would say."""
    channel = ChannelFactory(kind="conda")
    _add(channel, "b-1-0.conda", "B_2-1-0.conda", "c.d-1-0.conda", "Z-1-0.conda", "_x-1-0.conda")
    _publish(channel, caplog)
    _add(channel, "a-1-0.conda", "A-1-0.conda", "b.c-1-0.conda", "b_1-1-0.conda", "z-1-0.conda")
    _add(channel, "1-1-0.conda", "é-1-0.conda", "-x-1-0.conda")
    assert _publish(channel, caplog) == 2
    _same_as_a_full_render(channel)


def _delete_untold(filename: str) -> None:
    """Delete a row with the table's triggers off: nothing tells of it (only a pass sees it)."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE channels_app_package DISABLE TRIGGER USER")
        try:
            Package.objects.filter(filename=filename).delete()
        finally:
            cursor.execute("ALTER TABLE channels_app_package ENABLE TRIGGER USER")


def test_a_row_physically_gone_unannounced_makes_a_full_render(caplog, monkeypatch):
    """A row deleted without a trace (nothing told of it) is caught by a checked splice: it
    would not come to the length the rows give, and the file is rendered whole."""
    _every_splice(monkeypatch, "checked")
    channel = ChannelFactory(kind="conda")
    _add(channel, *(f"{name}.conda" for name in NAMES))
    _publish(channel, caplog)
    _delete_untold("pkg20-1.0-0.conda")
    _publish(channel, caplog)
    assert "pkg20-1.0-0.conda" not in _same_as_a_full_render(channel)["packages.conda"]


def test_a_row_gone_untold_leaves_the_file_by_the_next_checked_splice(caplog):
    """Spliced from what the table told, a file may keep a row deleted untold (unless a gap
    around a changed row drops it); every CHECK_EVERY-th splice checks the unit's rows, and it
    goes then at the latest."""
    channel = ChannelFactory(kind="conda")
    _add(channel, *(f"{name}.conda" for name in NAMES))
    _publish(channel, caplog)  # whole
    _delete_untold("pkg20-1.0-0.conda")
    for _ in range(splice_changes.CHECK_EVERY - 1):
        assert _publish(channel, caplog) == 2  # told
    _publish(channel, caplog)  # checked: rendered whole if the file still lists it
    assert "pkg20-1.0-0.conda" not in _same_as_a_full_render(channel)["packages.conda"]
    assert _publish(channel, caplog) == 2  # told again
    _same_as_a_full_render(channel)


def test_rows_deleted_or_moved_away_are_told_and_spliced_out(caplog, monkeypatch):
    """A row deleted, or moved to another unit, channel or file name, leaves its old place in
    the file by a splice that trusts what the table told."""
    _every_splice(monkeypatch, "told")
    channel, other = ChannelFactory(kind="conda"), ChannelFactory(kind="conda")
    _add(channel, *(f"{name}.conda" for name in NAMES))
    _publish(channel, caplog)
    rows = Package.objects.filter(channel=channel)
    rows.filter(filename="pkg04-1.0-0.conda").delete()
    rows.filter(filename="pkg06-1.0-0.conda").update(unit="noarch")
    rows.filter(filename="pkg08-1.0-0.conda").update(channel=other)
    rows.filter(filename="pkg10-1.0-0.conda").update(filename="pkg11-1.0-0.conda")
    # Removed, then deleted (as a publish drops it): the file still lists it.
    rows.filter(filename="pkg12-1.0-0.conda").update(removed=True)
    rows.filter(filename="pkg12-1.0-0.conda").delete()
    # Deleted and added again, changed.
    rows.filter(filename="pkg14-1.0-0.conda").delete()
    _add(channel, "pkg14-1.0-0.conda", x=1)
    assert _publish(channel, caplog) == 2
    listed = _same_as_a_full_render(channel)["packages.conda"]
    assert not {f"pkg{i:02d}-1.0-0.conda" for i in (4, 6, 8, 10, 12)} & set(listed)
    assert "pkg11-1.0-0.conda" in listed and listed["pkg14-1.0-0.conda"]["x"] == 1
    # What the publish was told is forgotten once the unit's file was rendered after it (a
    # transaction running elsewhere may hold the mark back).
    mark = Channel.objects.get(pk=channel.pk).render_marks["linux-64/repodata.json"]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE gone_xid < %s), count(*) FROM psm_package_gone "
            "WHERE channel_id = %s",
            [mark["xmin"], channel.pk],
        )
        assert cursor.fetchone()[0] == 0


def _gone_of(channel: Channel) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM psm_package_gone WHERE channel_id = %s", [channel.pk])
        return cursor.fetchone()[0]


def test_rows_gone_from_a_channel_not_published_since_are_forgotten_once_every_file_is_newer(
    caplog,
):
    published, idle = ChannelFactory(kind="conda"), ChannelFactory(kind="conda")
    _add(published, "a-1-0.conda")
    _add(idle, "b-1-0.conda", "c-1-0.conda")
    _publish(published, caplog)
    Package.objects.filter(filename="b-1-0.conda").delete()
    assert _gone_of(idle) == 1
    collect_garbage()
    assert _gone_of(idle) == 1  # a file rendered before it may still be spliced
    with connection.cursor() as cursor:
        cursor.execute("SELECT gone_xid FROM psm_package_gone WHERE channel_id = %s", [idle.pk])
        (gone,) = cursor.fetchone()
    # Every marked file rendered after it (as a publish would mark them once no transaction
    # running elsewhere holds the marks back).
    marks = Channel.objects.get(pk=published.pk).render_marks
    newer = {path: {**mark, "xmin": gone + 1} for path, mark in marks.items()}
    Channel.objects.filter(pk=published.pk).update(render_marks=newer)
    collect_garbage()
    assert _gone_of(idle) == 0


def test_stored_records_that_nest_an_entry_are_deleted_by_the_migration():
    migration = importlib.import_module("channels_app.migrations.0021_package_changes_told")
    channel, pypi = ChannelFactory(kind="conda"), ChannelFactory(kind="pypi")
    _add(channel, "fine-1-0.conda", "nests-1-0.conda", "deep-1-0.tar.bz2")
    rows = Package.objects.filter(channel=channel)
    rows.filter(filename="nests-1-0.conda").update(record='{"x":{"a-1-0.conda":{}}}')
    rows.filter(filename="deep-1-0.tar.bz2").update(record='{"x":[{"a-1-0.tar.bz2":{}}]}')
    _add(pypi, "other-1-0.conda")
    Package.objects.filter(channel=pypi).update(record='{"x":{"a-1-0.conda":{}}}')
    migration.delete_nesting_records(django_apps, None)
    assert list(rows.values_list("filename", flat=True)) == ["fine-1-0.conda"]
    assert Package.objects.filter(channel=pypi).count() == 1  # not a conda record


def test_a_truncated_table_renders_every_file_whole(caplog, monkeypatch):
    _every_splice(monkeypatch, "told")
    channel = ChannelFactory(kind="conda")
    _add(channel, *(f"{name}.conda" for name in NAMES))
    _publish(channel, caplog)
    with connection.cursor() as cursor:  # its rows, and those of nobody else here
        cursor.execute("TRUNCATE channels_app_package CASCADE")
    _add(channel, "new-1-0.conda")
    assert _publish(channel, caplog) == 0
    assert list(_same_as_a_full_render(channel)["packages.conda"]) == ["new-1-0.conda"]


def test_what_a_render_saw_is_not_a_change_whatever_runs_beside_it(caplog, monkeypatch):
    """A transaction running elsewhere holds every snapshot's `xmin` back: what committed
    after it began, but before a render did (a TRUNCATE here), the render saw, and the next
    splice is not told of it again."""
    _every_splice(monkeypatch, "told")
    channel = ChannelFactory(kind="conda")
    elsewhere = connection.copy()  # a connection of its own, its transaction left open
    try:
        with elsewhere.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute("SELECT txid_current()")
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE channels_app_package CASCADE")
        _add(channel, *(f"{name}.conda" for name in NAMES))
        _publish(channel, caplog)
        Package.objects.filter(filename="pkg10-1.0-0.conda").update(removed=True)
        assert _publish(channel, caplog) == 2
        assert "pkg10-1.0-0.conda" not in _same_as_a_full_render(channel)["packages.conda"]
    finally:
        elsewhere.close()


@pytest.mark.parametrize(
    ("mark", "told"),
    [
        ({"told": 0, "snapshot": "100:105:101,103"}, 1),
        ({"told": 3, "snapshot": "100:100:"}, 4),
        ({"told": 7, "snapshot": "100:100:"}, 0),  # the eighth is checked
        ({"snapshot": "100:100:"}, 0),  # a mark from before counts nothing: checked
        ({"told": 2}, 0),  # no snapshot to ask against
        ({"told": 2, "snapshot": "100:100:1; DROP"}, 0),  # not PostgreSQL's
        ({"told": -1, "snapshot": "100:100:"}, 0),
    ],
)
def test_a_splice_trusts_what_the_table_told_seven_times_then_checks(mark, told):
    assert splice_changes.told_in_a_row(mark) == told


def test_a_file_that_does_not_hold_what_the_changes_say_is_not_spliced():
    data = b'{"a":{"packages":{"x":{},"y":{"v":1},"z":{}}}'
    start, end = data.index(b'"x"'), data.rindex(b"}}")
    gap = Gap(b'"x":{}', b'"z":{}', [b'"y":{"v":2}'])
    spliced, _ = splice_sections(Previous(data, [(start, end)], [SectionChanges([gap], 25)]))
    assert spliced == [[(start, start + 6), b'"y":{"v":2}', (end - 6, end)]]
    # A member the old file lacks, or a length the rows do not give (a row gone untold).
    missing = gap._replace(before=b'"w":{}')
    assert splice_sections(Previous(data, [(start, end)], [SectionChanges([missing], 25)])) is None
    assert splice_sections(Previous(data, [(start, end)], [SectionChanges([], 18)])) is None
    # A member's bytes inside another record are not where a member begins: skipped, or, where
    # they could be one, the splice comes to another length.
    nested = b'{"packages":{"a":{},"b":{"z":{}},"c":{"q":0,"z":{}},"z":{}}}'
    start, end = nested.index(b'"a"'), nested.rindex(b"}}")
    gap = Gap(b'"a":{}', b'"z":{}', [])
    spliced, _ = splice_sections(Previous(nested, [(start, end)], [SectionChanges([gap], 13)]))
    assert spliced == [[(start, start + 6), (end - 6, end)]]
    nested = nested.replace(b'"q":0,"z":{}}', b'"q":0,"z":{},"r":1}')
    start, end = nested.index(b'"a"'), nested.rindex(b"}}")
    assert splice_sections(Previous(nested, [(start, end)], [SectionChanges([gap], 13)])) is None


def test_a_replaced_or_forced_file_is_rendered_whole(caplog):
    channel = ChannelFactory(kind="conda")
    _add(channel, *(f"{name}.conda" for name in NAMES))
    _publish(channel, caplog)
    # A file published otherwise (e.g. a withdrawal) is not the one the mark describes.
    Channel.objects.filter(pk=channel.pk).update(
        render_marks={
            path: {**mark, "sha256": "0" * 64}
            for path, mark in Channel.objects.get(pk=channel.pk).render_marks.items()
        }
    )
    _add(channel, "new-1-0.conda")
    assert _publish(channel, caplog) == 0
    _same_as_a_full_render(channel)
    _add(channel, "newer-1-0.conda")
    Channel.objects.filter(pk=channel.pk).update(content_version=F("content_version") + 1)
    with caplog.at_level(logging.INFO, logger="channels_app.publishing"):
        caplog.clear()
        assert channel_publish(channel=channel, force=True)
    assert "(0 spliced)" in caplog.text
    _same_as_a_full_render(channel)


def test_a_row_committed_while_a_publish_renders_is_in_the_next_one(caplog):
    """A transaction that began before a publish and commits after it rendered: its rows are
    in no published file yet, and the next publish (spliced) must list them. (The publish
    waits for the writer to commit before it swaps its files in: the writer's inserts hold a
    key-share lock on the channel.)"""
    channel = ChannelFactory(kind="conda")
    _add(channel, *(f"{name}.conda" for name in NAMES))
    _publish(channel, caplog)
    written, done = threading.Event(), threading.Event()

    def writer() -> None:
        try:
            with transaction.atomic():
                _add(channel, "late-1-0.conda")
                with transaction.atomic():  # a subtransaction's rows as well
                    _add(channel, "pkg11-1.0-0.conda")
                written.set()
                time.sleep(2)  # the publish below renders meanwhile
        finally:
            connection.close()
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    assert written.wait(30)
    assert _publish(channel, caplog) == 2
    thread.join(30)
    assert done.is_set()
    assert b"late-1-0" not in _published(channel)["linux-64/repodata.json"]
    assert _publish(channel, caplog) == 2
    document = _same_as_a_full_render(channel)
    assert {"late-1-0.conda", "pkg11-1.0-0.conda"} <= document["packages.conda"].keys()


def _listed(channel: Channel) -> dict[str, list[str]]:
    document = orjson.loads(_published(channel)["channeldata.json"])
    return {name: entry["subdirs"] for name, entry in document["packages"].items()}


def test_a_splice_lists_the_names_its_changes_touch_without_reading_every_name(caplog, monkeypatch):
    """channeldata.json after a splice: the names the last one listed, with those the changed
    rows bring or take away. Only the names whose last files may have gone are asked for; the
    subdir's names are not read whole."""
    channel = ChannelFactory(kind="conda")
    _add(channel, *(f"{name}.tar.bz2" for name in NAMES), *(f"{name}.conda" for name in NAMES))
    _add(channel, "solo-1-0.conda", "pair-1-0.conda", "pair-2-0.conda", "shared-1-0.conda")
    _add(channel, "shared-1-0.conda", "noarchy-1-0.conda", unit="noarch")
    assert _publish(channel, caplog) == 0
    asked: list[set[str]] = []
    served_names = PackageIndexSource.served_names

    def spied(self, unit, names, suffixes):
        asked.append(set(names))
        return served_names(self, unit, names, suffixes)

    def whole(*args, **kwargs):
        raise AssertionError("a spliced subdir's names were read whole")

    monkeypatch.setattr(PackageIndexSource, "served_names", spied)
    monkeypatch.setattr(PackageIndexSource, "names", whole)
    _add(channel, "fresh-1-0.conda", "pkg02-2.0-0.conda")  # a new name, a known one
    rows = Package.objects.filter(channel=channel, unit="linux-64")
    rows.filter(filename="solo-1-0.conda").update(removed=True)  # its only file
    rows.filter(filename="pair-1-0.conda").update(removed=True)  # one of two
    rows.filter(filename="shared-1-0.conda").update(excluded_reason="blocked")  # noarch keeps it
    rows.filter(filename__startswith="pkg04-").update(removed=True)  # both sections
    rows.filter(filename="pkg06-1.0-0.conda").update(removed=True)  # the .tar.bz2 stays
    assert _publish(channel, caplog) == 2
    # The names with no file served among the changed rows; with an older mark (a concurrent
    # transaction holds it back) more rows count as changed, and fewer names are in doubt.
    (doubtful,) = asked
    assert {"solo", "shared", "pkg04"} <= doubtful <= {"solo", "pair", "shared", "pkg04", "pkg06"}

    listed = _listed(channel)
    assert listed["fresh"] == ["linux-64"] and listed["pkg02"] == ["linux-64"]
    assert "solo" not in listed and "pkg04" not in listed
    assert listed["pair"] == ["linux-64"] and listed["pkg06"] == ["linux-64"]
    assert listed["shared"] == ["noarch"]
    monkeypatch.undo()
    _same_as_a_full_render(channel)

    # A name back, and its last file gone again, as further splices.
    _add(channel, "solo-2-0.conda")
    assert _publish(channel, caplog) == 2
    assert _listed(channel)["solo"] == ["linux-64"]
    rows.filter(filename="solo-2-0.conda").update(excluded_reason="blocked")
    assert _publish(channel, caplog) == 2
    assert "solo" not in _listed(channel)
    _same_as_a_full_render(channel)


def test_names_are_read_whole_where_the_listed_ones_are_not_those_published(caplog):
    """A channeldata.json published since (not the one the splice's mark names) says nothing
    of the subdir's names: they are read from the rows."""
    channel = ChannelFactory(kind="conda")
    _add(channel, *(f"{name}.conda" for name in NAMES))
    _publish(channel, caplog)
    wrong, size = storage.put_bytes(b'{"packages": {"ghost": {"subdirs": ["linux-64"]}}}')
    PublishedFile.objects.filter(channel=channel, path="channeldata.json").update(
        artifact=storage.artifacts_for({wrong: size})[wrong]
    )
    _add(channel, "new-1-0.conda")
    assert _publish(channel, caplog) == 2
    listed = _listed(channel)
    assert "ghost" not in listed and listed["new"] == ["linux-64"]
    _same_as_a_full_render(channel)


@pytest.mark.parametrize(
    ("mark", "xmin", "changed"),
    [
        (1000, 1000, True),  # written by the oldest transaction the mark may not have seen
        (1000, 999, False),
        (1000, 1000 + 2**30, True),  # as far as MARK_SPAN lets a mark be trusted
        (2**32 + 4294967000, 100, True),  # after the mark, across the 32-bit wraparound
        (2**32 + 4294967000, 4294966000, False),  # before it
        (5 * 2**32 + 7, 7, True),  # the epoch is not part of a row's xmin
    ],
)
def test_a_row_is_changed_since_a_mark_modulo_two_to_the_thirty_two(mark, xmin, changed):
    sql = (
        f"SELECT {splice_changes._CHANGED.format(row='v')} FROM (SELECT %(x)s::text::xid AS xmin) v"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, {"x": str(xmin), "mark32": mark % 2**32})
        assert cursor.fetchone()[0] is changed


def test_a_name_whose_row_went_untold_leaves_with_the_gap_that_drops_it(caplog, monkeypatch):
    """A row deleted without a trace, whose member a checked splice drops with a changed
    neighbour's gap (the length then agrees): its name is asked for like a changed row's."""
    _every_splice(monkeypatch, "checked")
    channel = ChannelFactory(kind="conda")
    _add(channel, *(f"{name}.conda" for name in NAMES))
    _publish(channel, caplog)
    _delete_untold("pkg20-1.0-0.conda")
    rows = Package.objects.filter(filename="pkg18-1.0-0.conda")
    rows.update(record=_record("pkg18-1.0-0", x=1))
    assert _publish(channel, caplog) == 2
    assert "pkg20" not in _listed(channel)
    _same_as_a_full_render(channel)


def _damage_in_place(channel: Channel, path: str, old: bytes, new: bytes) -> None:
    """Change bytes of the published file at `path` on disk, keeping its length (what a
    failing disk does; nothing but its digest tells)."""
    artifact = PublishedFile.objects.get(channel=channel, path=path).artifact
    blob = Path(settings.MEDIA_ROOT) / storage.blob_path(artifact.sha256)
    data = blob.read_bytes()
    assert len(old) == len(new) and data.count(old) == 1
    blob.write_bytes(data.replace(old, new))


def test_a_published_file_damaged_on_disk_is_rendered_whole_not_spliced_into(caplog):
    """A splice keeps the published file's bytes: damage on disk must not pass into the new
    file, whose own digest would then vouch for it. The old file is checked against its
    digest first, and a damaged one is rendered whole (the damage gone)."""
    channel = ChannelFactory(kind="conda")
    _add(channel, *(f"{name}.conda" for name in NAMES))
    assert _publish(channel, caplog) == 0
    _damage_in_place(channel, "linux-64/repodata.json", b'"name":"pkg10"', b'"name":"pkgXX"')
    _add(channel, "new-1-0.conda")

    assert _publish(channel, caplog) == 1  # noarch only
    assert "linux-64/repodata.json of" in caplog.text and "is damaged" in caplog.text
    document = _same_as_a_full_render(channel)
    assert document["packages.conda"]["pkg10-1.0-0.conda"]["name"] == "pkg10"
    assert _publish(channel, caplog) == 2  # spliced again from the good file


def test_a_damaged_file_rendered_again_as_it_was_is_stored_whole_again(caplog):
    """Nothing changed but the bytes on disk: the file rendered whole has the digest of the
    damaged one, and is stored whole again (not left as it is, as a blob already there)."""
    channel = ChannelFactory(kind="conda")
    _add(channel, *(f"{name}.conda" for name in NAMES))
    _publish(channel, caplog)
    before = _published(channel)["linux-64/repodata.json"]
    _damage_in_place(channel, "linux-64/repodata.json", b'"name":"pkg10"', b'"name":"pkgXX"')

    assert _publish(channel, caplog) == 1
    assert _published(channel)["linux-64/repodata.json"] == before
    # Reported as verification reports what it fixes.
    (problem,) = VerificationProblem.objects.all()
    assert (problem.channel, problem.path, problem.is_open) == (
        channel,
        "linux-64/repodata.json",
        False,
    )
    assert problem.problem.startswith("stored file damaged: its bytes hash to sha256")


def test_a_damaged_file_another_channel_holds_gets_verifications_remedy_there(caplog):
    """The same bytes are one stored file: a channel whose publish finds it damaged renders
    its own whole, and the other channel holding it has it withdrawn, reported and rendered
    anew, as verification would."""
    first, second = ChannelFactory(kind="conda"), ChannelFactory(kind="conda")
    for channel in (first, second):
        _add(channel, *(f"{name}.conda" for name in NAMES))
        _publish(channel, caplog)
    shared = _published(second)["linux-64/repodata.json"]
    assert _published(first)["linux-64/repodata.json"] == shared
    _damage_in_place(first, "linux-64/repodata.json", b'"name":"pkg10"', b'"name":"pkgXX"')
    _add(first, "new-1-0.conda")

    assert _publish(first, caplog) == 1
    _same_as_a_full_render(first)
    assert _published(second)["linux-64/repodata.json"] == shared
    problems = VerificationProblem.objects.order_by("channel_id")
    assert [(p.channel, p.path, p.is_open) for p in problems] == [
        (first, "linux-64/repodata.json", False),
        (second, "linux-64/repodata.json", False),  # rendered anew there too
    ]


def test_a_damaged_channeldata_is_not_where_a_splice_takes_its_names_from(caplog):
    channel = ChannelFactory(kind="conda")
    _add(channel, *(f"{name}.conda" for name in NAMES))
    _publish(channel, caplog)
    _damage_in_place(channel, "channeldata.json", b'"pkg10"', b'"pkgXX"')
    _add(channel, "new-1-0.conda")

    assert _publish(channel, caplog) == 2
    assert "is damaged" in caplog.text
    listed = _listed(channel)
    assert "pkg10" in listed and "pkgXX" not in listed and listed["new"] == ["linux-64"]
    _same_as_a_full_render(channel)
