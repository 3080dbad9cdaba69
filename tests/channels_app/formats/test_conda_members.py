"""The lengths of a published repodata.json's members, and the splice that merges changed rows
in by them (`conda_members`): the bytes a render of the rows after gives, or nothing."""

from __future__ import annotations

import random
from array import array

import pytest

from channels_app.formats import conda_members
from channels_app.formats.conda_members import MemberList, key, lengths_after, merge_section


def _member(name: str, version: str = "1") -> bytes:
    return key(name) + b':{"version":"' + version.encode() + b'"}'


def _section(names: list[str]) -> tuple[bytes, int, int, array]:
    """A document whose one section holds these members; where they lie and their lengths."""
    members = [_member(name) for name in names]
    body = b",".join(members)
    data = b'{"info":{},"packages":{' + body + b'},"removed":[]}'
    start = data.index(b'"packages":{') + len(b'"packages":{')
    return data, start, start + len(body), array("I", map(len, members))


def _joined(data: bytes, pieces: list) -> bytes:
    return b",".join(p if isinstance(p, bytes) else data[p[0] : p[1]] for p in pieces)


NAMES = [f"p{i:02d}-1-0.conda" for i in range(0, 80, 2)]  # more than a stride of them


@pytest.mark.parametrize(
    "changes",
    [
        {},  # nothing: the section as it was
        {"a-1-0.conda": "1", "p40-1-0.conda": "2", "z-1-0.conda": "1"},  # new, changed
        {"p00-1-0.conda": None, "p78-1-0.conda": None, "p31-1-0.conda": None},  # gone, never was
        {"p01-1-0.conda": "1", "p02-1-0.conda": None, "p03-1-0.conda": "1"},  # side by side
        {name: None for name in NAMES},  # every one gone
        {name: "2" for name in NAMES[::3]} | {"p33-1-0.conda": "1"},
    ],
)
def test_merged_changes_give_the_section_of_the_rows_after(changes):
    data, start, end, lengths = _section(NAMES)
    rows = sorted(
        (key(name), None if version is None else _member(name, version))
        for name, version in changes.items()
    )
    pieces, after = merge_section(data, start, end, lengths, rows)

    now = {name: "1" for name in NAMES} | changes
    expected = [_member(name, version) for name, version in sorted(now.items()) if version]
    assert _joined(data, pieces) == b",".join(expected)
    assert list(after) == [len(member) for member in expected]


def test_changes_merge_into_an_empty_section():
    data, start, end, lengths = _section([])
    pieces, after = merge_section(data, start, end, lengths, [(key("a"), _member("a"))])
    assert (_joined(data, pieces), list(after)) == (_member("a"), [len(_member("a"))])


def test_members_that_do_not_lie_where_the_lengths_say_are_not_merged():
    data, start, end, lengths = _section(NAMES)
    change = [(key("p41-1-0.conda"), _member("p41-1-0.conda"))]
    short = array("I", lengths)
    short[-1] -= 1  # not up to the section's end
    assert merge_section(data, start, end, short, change) is None
    # The same sum, a member moved: where a kept run begins (the rest of the lengths are the
    # note's, whose digest tells them damaged).
    shifted = array("I", lengths)
    shifted[20], shifted[21] = shifted[20] + 1, shifted[21] - 1
    assert merge_section(data, start, end, shifted, change) is None


@pytest.mark.parametrize(
    ("old", "changed"), [("a!b", "a"), ("a", "a!b"), ("a-1", "a"), ("b", 'a"b')]
)
def test_a_name_that_sorts_otherwise_by_member_key_is_not_merged(old, changed):
    """A name that begins a neighbour's ("a" sorts before "a!b" by file name, after it by
    member key), or one JSON escapes: left to the database."""
    data, start, end, lengths = _section([old])
    assert merge_section(data, start, end, lengths, [(key(changed), _member(changed))]) is None


def test_random_changes_merge_to_the_section_after_or_not_at_all(monkeypatch):
    """Seeded random sections and changes, names that begin one another among them: a merge
    either gives the bytes and lengths of the section rendered after, or is refused (the
    file is then rendered whole)."""
    monkeypatch.setattr(conda_members, "STRIDE", 4)  # many strides in a small section
    merged = refused = 0
    for case in range(1500):
        rng = random.Random(case)
        pool = [
            "".join(rng.choice("ab-!.0é") for _ in range(rng.randint(1, 4)))
            + ("" if rng.random() < 0.1 else "-1-0.conda")  # a few that begin others
            for _ in range(60)
        ]
        old = {name: "1" for name in rng.sample(pool, rng.randint(0, 30))}
        changes = {name: rng.choice([None, "1", "2", "33"]) for name in rng.sample(pool, 8)}
        data, start, end, lengths = _section(sorted(old))
        rows = sorted(
            (key(name), None if version is None else _member(name, version))
            for name, version in changes.items()
        )
        result = merge_section(data, start, end, lengths, rows)
        if result is None:
            refused += 1
            continue
        pieces, after = result
        now = {name: version for name, version in (old | changes).items() if version}
        expected = [_member(name, version) for name, version in sorted(now.items())]
        assert _joined(data, pieces) == b",".join(expected), case
        assert list(after) == [len(member) for member in expected], case
        merged += 1
    assert merged > 300 and refused > 30, (merged, refused)


def test_a_render_s_member_list_keeps_lengths_while_its_keys_come_in_order():
    members = MemberList()
    members.add_lines(_member("a") + b"\n" + _member("b") + b"\n")
    members.add(_member("c"))
    assert members.ordered and list(members.lengths) == [len(_member(n)) for n in "abc"]
    members.add(_member("b"))  # before the last one
    assert not members.ordered
    unordered = MemberList()
    unordered.add_lines(_member("b") + b"\n" + _member("a") + b"\n")
    assert not unordered.ordered


def test_a_note_gives_the_lengths_back_for_the_same_sections_only():
    data, start, end, lengths = _section(NAMES)
    note = conda_members.note([(start, end)], [lengths])
    assert conda_members.read(note, [(start, end)]) == [lengths]
    assert conda_members.read(note, [(start, end + 1)]) is None
    assert conda_members.read(note, [(start, end), (end, end)]) is None
    assert conda_members.read(b"not a note", [(start, end)]) is None
    wrong = array("I", lengths)
    wrong[0] += 1  # not the section's length
    assert conda_members.read(conda_members.note([(start, end)], [wrong]), [(start, end)]) is None
    moved = array("I", lengths)
    moved[0], moved[1] = moved[0] - 1, moved[1] + 1  # damaged on disk, the same sum
    damaged = note.replace(lengths.tobytes(), moved.tobytes())
    assert damaged != note and conda_members.read(damaged, [(start, end)]) is None


def test_lengths_after_a_splice_by_gaps():
    data, start, end, lengths = _section(["a", "b", "c", "d"])
    b_at = data.index(b'"b"')
    d_at = data.index(b'"d"')
    pieces = [(start, b_at - 1), _member("bb"), (d_at, end)]  # b and c replaced by bb
    after = lengths_after(start, end, lengths, pieces)
    assert list(after) == [len(_member(n)) for n in ("a", "bb", "d")]
    assert lengths_after(start, end, lengths, [(start + 1, end)]) is None  # not a member's start
