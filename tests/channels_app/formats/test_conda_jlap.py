"""Reading a conda subdir's repodata.jlap: the checksum chain, a read from where the last one
stopped, the chain of patches from a document, and the entries the patches change."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from channels_app.formats import conda_jlap
from channels_app.formats.conda_jlap import LogError, chain, patched, read_log, touched
from tests.fixtures.conda_jlap import append_patch, document_hash, pointer, write_log

DOCS = [b'{"v":0}', b'{"v":1}', b'{"v":2}']
HASHES = [document_hash(doc) for doc in DOCS]
ADD = {"op": "add", "path": pointer("packages", "a-1-0.tar.bz2"), "value": {"name": "a"}}


def _log(tmp_path, patches: int) -> bytes:
    write_log(tmp_path, [], HASHES[0])
    body = b""
    for n in range(patches):
        body = append_patch(tmp_path, DOCS[n], DOCS[n + 1], [ADD])
    return body or (tmp_path / conda_jlap.NAME).read_bytes()


def test_a_log_read_whole_then_from_where_it_stopped(tmp_path):
    first = read_log(_log(tmp_path, 1))
    assert first.latest == HASHES[1] and [p["to"] for p in first.patches] == [HASHES[1]]
    body = append_patch(tmp_path, DOCS[1], DOCS[2], [ADD])
    later = read_log(body[first.pos :], first.pos, bytes.fromhex(first.iv))
    assert later.latest == HASHES[2] and [p["from"] for p in later.patches] == [HASHES[1]]
    assert later.pos > first.pos and read_log(body).iv == later.iv
    # Nothing new since: the footer and checksum only.
    again = read_log(body[later.pos :], later.pos, bytes.fromhex(later.iv))
    assert (again.patches, again.latest, again.pos) == ([], HASHES[2], later.pos)


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b.replace(b'"a"', b'"b"'),  # a patch changed
        lambda b: b.rsplit(b"\n", 2)[0] + b"\n",  # no checksum line
        lambda b: b"zz" + b[2:],  # not a hex IV
        lambda b: b"",
        lambda b: b[: len(b) // 2],
    ],
    ids=["changed", "no checksum", "bad iv", "empty", "cut"],
)
def test_a_damaged_log_is_refused(tmp_path, damage):
    with pytest.raises(LogError):
        read_log(damage(_log(tmp_path, 2)))


def test_a_ranged_read_against_the_wrong_checksum_is_refused(tmp_path):
    first = read_log(_log(tmp_path, 1))
    body = append_patch(tmp_path, DOCS[1], DOCS[2], [ADD])
    with pytest.raises(LogError):
        read_log(body[first.pos :], first.pos, bytes(32))


def test_malformed_lines_are_refused(tmp_path):
    lines = [b"[]", b'{"from": "x", "to": "y", "patch": []}', b"not json"]
    for line in lines:
        write_log(tmp_path, [line], HASHES[0])
        with pytest.raises(LogError):
            read_log((tmp_path / conda_jlap.NAME).read_bytes())
    write_log(tmp_path, [], "not-a-hash")
    with pytest.raises(LogError):
        read_log((tmp_path / conda_jlap.NAME).read_bytes())


def test_the_chain_from_a_document_to_the_latest():
    patches = [
        {"from": HASHES[0], "to": HASHES[1], "patch": [1]},
        {"from": "f" * 64, "to": "e" * 64, "patch": [9]},  # another branch
        {"from": HASHES[1], "to": HASHES[2], "patch": [2]},
    ]
    assert chain(patches, HASHES[0], HASHES[2]) == [[1], [2]]
    assert chain(patches, HASHES[1], HASHES[2]) == [[2]]
    assert chain(patches, HASHES[2], HASHES[2]) == []
    assert chain(patches, "0" * 64, HASHES[2]) is None


def test_what_changes_inside_entries_starts_from_the_stored_ones():
    key = ("packages", "s-1-0.tar.bz2")
    steps = [
        [{"op": "replace", "path": pointer(*key) + "/depends/0", "value": "b"}],
        [{"op": "add", "path": pointer(*key) + "/license", "value": "MIT"},
         {"op": "remove", "path": pointer("packages.conda", "gone-1-0.conda")}, ADD],
    ]  # fmt: skip
    asked = []

    def stored(keys):
        asked.append(set(keys))
        return {key: {"name": "s", "depends": ["a"]}}

    entries = patched(steps, stored)
    assert asked == [{key}]
    assert entries == {
        key: {"name": "s", "depends": ["b"], "license": "MIT"},
        ("packages.conda", "gone-1-0.conda"): None,
        ("packages", "a-1-0.tar.bz2"): {"name": "a"},
    }
    assert patched(steps, lambda keys: {}) is None  # not stored: the document is read


def test_pointers_are_unescaped_and_operations_checked():
    escaped = {"op": "add", "path": "/packages/a~1b~0c", "value": {}}
    assert touched([[escaped]]) == ({("packages", "a/b~c")}, set())
    for operation in (
        {"op": "copy", "from": "/packages/a", "path": "/packages/b"},
        {"op": "test", "path": "/packages/a", "value": {}},
        {"op": "add", "path": "/info/subdir", "value": "x"},
        {"op": "add", "path": "/packages", "value": {}},
        {"op": "add", "path": "/packages/a"},  # no value
        {"op": "remove", "path": 7},
    ):
        assert touched([[operation]]) is None, operation
    # Changed inside after being added whole: nothing stored is asked for.
    added_then_changed = [[ADD], [{**ADD, "op": "add", "path": ADD["path"] + "/x", "value": 1}]]
    assert touched(added_then_changed) == ({("packages", "a-1-0.tar.bz2")}, set())
    assert patched(added_then_changed, lambda keys: {}) == {
        ("packages", "a-1-0.tar.bz2"): {"name": "a", "x": 1}
    }
    assert orjson.dumps(ADD["value"]) == b'{"name":"a"}'  # the step's own value untouched


# --- The log PSM writes for the subdirs it serves ---------------------------------------------

OPS = orjson.dumps([ADD])


def _written(patches: int, limit: int = 1 << 20) -> bytes:
    """A log PSM wrote: started at DOCS[0], then a patch to each next document."""
    log = conda_jlap.started(HASHES[0])
    for n in range(patches):
        log = conda_jlap.appended(log, HASHES[n], HASHES[n + 1], OPS, limit)
    return log


def test_a_written_log_is_read_as_conda_forges_are(tmp_path):
    empty = read_log(conda_jlap.started(HASHES[0]))
    assert (empty.patches, empty.latest) == ([], HASHES[0])
    assert conda_jlap.started(HASHES[0]) == conda_jlap.started(HASHES[0])  # the same each time
    log = _written(2)
    read = read_log(log)
    assert read.latest == HASHES[2]
    assert chain(read.patches, HASHES[0], HASHES[2]) == [[ADD], [ADD]]
    # A reader that kept where the one-patch log ended reads on from there.
    first = read_log(_written(1))
    later = read_log(log[first.pos :], first.pos, bytes.fromhex(first.iv))
    assert chain(later.patches, HASHES[1], later.latest) == [[ADD]]
    # The same document again: the same log (no patch from a document to itself).
    assert conda_jlap.appended(log, None, HASHES[2], b"[]", 1 << 20) == log


def test_a_log_that_does_not_end_where_the_patch_starts_starts_anew():
    log = _written(1)
    for kept, before in [(log, HASHES[0]), (None, HASHES[1]), (b"not a log", HASHES[1])]:
        again = read_log(conda_jlap.appended(kept, before, HASHES[2], OPS, 1 << 20))
        assert (again.patches, again.latest) == ([], HASHES[2])
    # `before` None: wherever the log ends (it was published with the document it ends at).
    grown = read_log(conda_jlap.appended(log, None, HASHES[2], OPS, 1 << 20))
    assert [patch["from"] for patch in grown.patches] == [HASHES[0], HASHES[1]]


def test_a_log_past_its_limit_loses_its_oldest_patches_and_stays_readable():
    whole = _written(2)
    size_of_one = len(whole) - len(_written(1))
    trimmed = _written(2, limit=len(whole) - 1)  # one patch too many
    read = read_log(trimmed)
    assert [patch["to"] for patch in read.patches] == [HASHES[2]]
    assert len(trimmed) == len(whole) - size_of_one
    assert chain(read.patches, HASHES[0], read.latest) is None  # read whole from there
    assert chain(read.patches, HASHES[1], read.latest) == [[ADD]]
    # Its IV is the running checksum where the dropped patch ended: the lines left verify as
    # they did, and a reader's saved place past the cut still reads on.
    first = read_log(whole)
    assert read.iv == first.iv
    # A patch larger than the limit alone: no patch is kept, the log names the new document.
    alone = read_log(_written(1, limit=10))
    assert (alone.patches, alone.latest) == ([], HASHES[1])


def test_the_log_limit_is_a_share_of_the_document():
    assert conda_jlap.log_limit(0) == conda_jlap.LOG_MIN_BYTES
    assert conda_jlap.log_limit(400 << 20) == (400 << 20) // conda_jlap.LOG_SHARE


def _as_conda_reads(body: bytes, iv: bytes = b"") -> str:
    """The latest document of a log read as conda reads one: its lines as `requests` splits
    them on newlines (an empty last line after a final newline included), each keyed by the
    one before (the first line is the IV where the read starts at 0), the last line the
    checksum of the one before it; the footer's `latest`."""
    lines = body.split(b"\n")
    if not iv:
        iv, lines = bytes.fromhex(lines[0].decode()), lines[1:]
    running = iv
    for line in lines[:-1]:
        running = hashlib.blake2b(line, key=running, digest_size=32).digest()
    assert lines[-1] == running.hex().encode(), "checksum mismatch"
    return orjson.loads(lines[-2])["latest"]


def test_the_logs_psm_writes_verify_as_conda_reads_them():
    for log in (conda_jlap.started(HASHES[0]), _written(2), _written(2, limit=300)):
        latest = read_log(log).latest
        assert _as_conda_reads(log) == latest
        # From where the footer begins, as a client that read the log before asks for it.
        before_footer = read_log(log)
        assert _as_conda_reads(log[before_footer.pos :], bytes.fromhex(before_footer.iv)) == latest
