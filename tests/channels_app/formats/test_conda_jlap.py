"""Reading a conda subdir's repodata.jlap: the checksum chain, a read from where the last one
stopped, the chain of patches from a document, and the entries the patches change."""

from __future__ import annotations

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
