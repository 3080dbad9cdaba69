"""Reading a conda repodata document (`conda_document`, `conda_repodata`): one msgspec pass
checks it whole, entries are digested from their raw bytes. What it yields must be what the
straightforward reading (the whole document parsed, each entry made compact JSON) gives."""

from __future__ import annotations

import io
import json
import random

import msgspec
import orjson
import pytest

from channels_app.formats import (
    FormatError,
    PackageRecord,
    Rejected,
    UnitExtras,
    conda_document,
    conda_fingerprints,
    conda_repodata,
    conda_stream,
)
from channels_app.formats.base import entry_digest
from channels_app.formats.conda import CondaFormat

URL = "https://conda.example/forge/linux-64/repodata.json"
BASE = "https://conda.example/forge/linux-64/"


def _record(name: str, version: str, **extra) -> dict:
    return {
        "build": "0",
        "build_number": 0,
        "depends": ["python >=3.10"],
        "md5": "0" * 32,
        "name": name,
        "sha256": "a" * 64,
        "size": 10,
        "subdir": "linux-64",
        "version": version,
        **extra,
    }


DOCUMENT = {
    "info": {"subdir": "linux-64"},
    "packages": {
        "alpha-1.0-0.tar.bz2": _record("alpha", "1.0", license="MIT"),
        "beta-2.0-0.tar.bz2": _record("beta", "2.0", license='Ünïcode ☃ "quoted" \\ /'),
    },
    "packages.conda": {
        "gamma-0.1-0.conda": _record("gamma", "0.1", timestamp=1_700_000_000_000, ratio=0.5),
    },
    "removed": ["old-1.0-0.tar.bz2"],
    "repodata_version": 1,
}


class Stored:
    """`StoredEntries` over a dict of filename -> digest."""

    def __init__(self, digests: dict[str, int], kept: str | None = None) -> None:
        self.digests = dict(digests)
        self.seen: set[str] = set()
        self.kept, self.compared = kept, None

    def kept_document(self) -> str | None:
        return self.kept

    def only(self, filenames, gone=()) -> None:
        self.compared = sorted(filenames)
        self.gone = sorted(gone)

    def current_digests(self) -> dict[str, int]:
        return dict(self.digests)

    def is_current(self, filename: str, digest: int) -> bool:
        if self.digests.get(filename) == digest and filename not in self.seen:
            self.seen.add(filename)
            return True
        return False


def _items(body: bytes, stored=None, file=None) -> list:
    source = io.BytesIO(body) if file is None else file
    return list(CondaFormat().parse_unit(source, URL, "linux-64", stored))


def _indented(document: dict) -> bytes:
    return json.dumps(document, indent=2, sort_keys=True).encode()


@pytest.mark.parametrize("dump", [_indented, orjson.dumps], ids=["indented", "compact"])
def test_records_and_digests_are_those_of_the_whole_document_parsed(dump):
    body = dump(DOCUMENT)
    items = _items(body)
    assert items[0] == UnitExtras({"removed": ["old-1.0-0.tar.bz2"]})
    records = {item.filename: item for item in items if isinstance(item, PackageRecord)}
    whole = json.loads(body)  # the straightforward reading
    # `.conda` files first (`conda_repodata.ORDER`), each section in document order.
    expected = {**whole["packages.conda"], **whole["packages"]}
    assert list(records) == list(expected)
    for filename, record in expected.items():
        compact = orjson.dumps(record)
        # The digest stored before (ijson's dict made compact) is still the digest: a
        # re-sync after an upgrade finds every unchanged entry unchanged.
        assert records[filename].entry_digest == entry_digest(compact, BASE)
        assert records[filename].document == compact.decode()
        assert records[filename].extra == record


def test_a_resync_yields_unchanged_entries_and_only_changed_ones_as_records():
    first = [i for i in _items(_indented(DOCUMENT)) if isinstance(i, PackageRecord)]
    stored = Stored({r.filename: r.entry_digest for r in first})
    changed = json.loads(json.dumps(DOCUMENT))
    changed["packages"]["beta-2.0-0.tar.bz2"]["depends"] = ["python >=3.11"]
    items = _items(_indented(changed), stored)
    assert [type(i).__name__ for i in items[1:]] == ["Unchanged", "Unchanged", "PackageRecord"]
    assert items[3].filename == "beta-2.0-0.tar.bz2"


def test_a_split_resync_yields_what_one_process_yields(tmp_path, monkeypatch):
    first = [i for i in _items(_indented(DOCUMENT)) if isinstance(i, PackageRecord)]
    digests = {r.filename: r.entry_digest for r in first}
    changed = json.loads(json.dumps(DOCUMENT))
    changed["packages.conda"]["gamma-0.1-0.conda"]["depends"] = []
    changed["packages.conda"]["delta-1-0.conda"] = _record("delta", "1", url="https://x.example/d")
    changed["packages.conda"]["huge-1-0.conda"] = _record("huge", "1", big=2**70)
    path = tmp_path / "repodata.json"
    path.write_bytes(_indented(changed))
    alone = _items(path.read_bytes(), Stored(digests))
    monkeypatch.setattr(conda_repodata, "PARALLEL_BYTES", 0)
    monkeypatch.setattr(conda_repodata, "PARALLEL_FROM", 1)
    with open(path, "rb") as file:
        split = _items(b"", Stored(digests), file)
    assert split == alone
    assert Rejected("huge-1-0.conda", conda_repodata.UNREPRESENTABLE) in split


def test_a_resync_against_the_kept_document_yields_the_changed_entries_as_digests_do(tmp_path):
    kept = tmp_path / "kept.json"
    kept.write_bytes(_indented(DOCUMENT))
    first = [i for i in _items(kept.read_bytes()) if isinstance(i, PackageRecord)]
    digests = {r.filename: r.entry_digest for r in first}
    changed = json.loads(json.dumps(DOCUMENT))
    changed["packages.conda"]["gamma-0.1-0.conda"]["depends"] = []
    changed["packages.conda"]["delta-1-0.conda"] = _record("delta", "1", url="https://x.example/d")
    changed["packages.conda"]["huge-1-0.conda"] = _record("huge", "1", big=2**70)
    del changed["packages"]["alpha-1.0-0.tar.bz2"]
    body = _indented(changed)
    by_digest = _items(body, Stored(digests))
    stored = Stored(digests, kept=str(kept))
    compared = _items(body, stored)
    assert stored.compared == sorted(
        ["alpha-1.0-0.tar.bz2", "delta-1-0.conda", "gamma-0.1-0.conda", "huge-1-0.conda"]
    )
    assert stored.gone == ["alpha-1.0-0.tar.bz2"]  # removed before the others are read
    records = [i for i in by_digest if isinstance(i, PackageRecord | Rejected)]
    assert [i for i in compared if isinstance(i, PackageRecord | Rejected)] == records
    assert [i for i in compared if type(i).__name__ == "Unchanged"] == [
        conda_repodata.Unchanged("", 1)  # beta, not parsed
    ]
    assert compared[0] == by_digest[0]  # the extras


@pytest.mark.parametrize(
    "kept_text",
    [b'{"info": {"subdir": "linux-64"', b'{"info": {"base_url": "https://elsewhere.example/"}}'],
    ids=["unreadable", "files-elsewhere"],
)
def test_a_kept_document_not_to_compare_with_leaves_the_digests_to_compare(tmp_path, kept_text):
    kept = tmp_path / "kept.json"
    kept.write_bytes(kept_text)
    digests = {"alpha-1.0-0.tar.bz2": 1}
    stored = Stored(digests, kept=str(kept))
    assert _items(_indented(DOCUMENT), stored) == _items(_indented(DOCUMENT), Stored(digests))
    assert stored.compared is None


def test_duplicate_keys_count_once_with_their_last_value():
    body = (
        b'{"info": {"subdir": "linux-64"}, "packages": {"alpha-1.0-0.tar.bz2": '
        + orjson.dumps(_record("alpha", "1.0"))
        + b', "alpha-1.0-0.tar.bz2": '
        + orjson.dumps(_record("alpha", "1.0", license="BSD"))
        + b'}, "removed": ["a-1-0.conda"], "removed": ["b-1-0.conda"]}'
    )
    items = _items(body)
    assert items[0] == UnitExtras({"removed": ["b-1-0.conda"]})
    (record,) = items[1:]
    assert record.license == "BSD"


@pytest.mark.parametrize(
    ("body", "where", "reason"),
    [
        (b'{"packages": {"a-1-0.tar.bz2": {"name": "a"', URL, "not valid JSON"),
        (b'{"packages": {"a-1-0.tar.bz2": {"name": "a",}}}', URL, "not valid JSON"),
        (b'{"packages": {}} trailing', URL, "not valid JSON"),
        (b'{"packages": {}, "x": [1,,2]}', URL, "not valid JSON"),
        (b"", URL, "repodata must be a JSON object"),
        (b'"packages"', URL, "repodata must be a JSON object"),
        (b'{"packages": []}', f"{URL} [packages]", "must be an object of file name"),
        (b'{"packages.conda": "x"}', f"{URL} [packages.conda]", "must be an object of file"),
        (b'{"info": [1]}', f"{URL} [info]", "must be an object"),
        (b'{"removed": {"a": 1}}', f"{URL} [removed]", "must be a list of package file"),
        (b'{"removed": ["../x.conda"]}', f"{URL} [removed]", "must be a list of package file"),
    ],
)
def test_malformed_documents_fail_whole_before_any_record(body, where, reason):
    good = b'{"packages": {"a-1-0.tar.bz2": ' + orjson.dumps(_record("a", "1")) + b"}, "
    body = body if not body.startswith(b"{") else good + body[1:]
    items = CondaFormat().parse_unit(io.BytesIO(body), URL, "linux-64")
    with pytest.raises(FormatError) as caught:
        next(item for item in items if isinstance(item, PackageRecord))
    assert caught.value.where == where
    assert reason in caught.value.reason


def test_entries_of_the_wrong_type_are_rejected_one_by_one():
    body = orjson.dumps(
        {
            "packages": {
                "a-1-0.tar.bz2": [1],
                "b-1-0.tar.bz2": _record("b", "1", depends="python"),
                "c-1-0.tar.bz2": _record("c", "1", size="10"),
                "d-1-0.tar.bz2": _record("d", "1"),
            }
        }
    )
    reasons = {i.filename: i.reason for i in _items(body) if isinstance(i, Rejected)}
    assert reasons == {
        "a-1-0.tar.bz2": "record is not an object",
        "b-1-0.tar.bz2": "malformed depends",
        "c-1-0.tar.bz2": "malformed size",
    }


def test_an_integer_past_64_bits_rejects_its_entry_alone():
    body = (
        b'{"packages": {"a-1-0.tar.bz2": {"name": "a", "version": "1", "size": '
        + str(2**64).encode()
        + b"}, "
        + b'"b-1-0.tar.bz2": '
        + orjson.dumps(_record("b", "1"))
        + b"}}"
    )
    items = _items(body)
    assert Rejected("a-1-0.tar.bz2", conda_repodata.UNREPRESENTABLE) in items
    assert [i.filename for i in items if isinstance(i, PackageRecord)] == ["b-1-0.tar.bz2"]


def test_a_huge_entry_is_read_like_any_other():
    depends = [f"dep-{i} >=1" for i in range(200_000)]  # ~3 MB of one record
    body = orjson.dumps({"packages": {"a-1-0.tar.bz2": _record("a", "1", depends=depends)}})
    (record,) = [i for i in _items(body) if isinstance(i, PackageRecord)]
    assert record.depends == tuple(depends)


def test_a_huge_unknown_key_is_left_out_unparsed(monkeypatch):
    def parse(raw):  # the budget must be enforced before anything is parsed
        raise AssertionError("parsed")

    huge = b'{"packages": {}, "x_huge": [' + b"1," * (4 * conda_document.EXTRA_KEYS_BYTES) + b"1]}"
    monkeypatch.setattr(conda_document.orjson, "loads", parse)
    items = _items(huge)
    assert items[1] == Rejected("x_huge", "unknown top-level keys past 1024 KiB")


def test_a_document_is_read_from_its_file_without_a_copy(tmp_path):
    path = tmp_path / "repodata.json"
    path.write_bytes(_indented(DOCUMENT))
    with open(path, "rb") as file:
        document = conda_document.Document(file, URL)
        assert set(document.entries("packages")) == set(DOCUMENT["packages"])
        assert not isinstance(conda_document.mapped(file), bytes)


def _followed_by(children: int, kept: str, new: str) -> conda_repodata.Streamed | None:
    """The reading of the document at `new` as it downloads, by one child (both sections)
    or by two (a section each, joined)."""
    handed = (new, URL, True)
    if children == 1:
        before = conda_repodata._kept_side(kept, "packages")
        given, streamed = conda_repodata._followed(lambda: handed, kept, new, before)
        assert given == handed
        return streamed
    answers = []
    for section in ("packages.conda", "packages"):
        before = conda_repodata._kept_side(kept, section)
        given, streamed = conda_repodata._followed(
            lambda: handed, kept, new, before, section, own=True
        )
        assert given == handed
        assert list(streamed.compared) == [section]
        answers.append(streamed)
    return conda_repodata._joined(answers)


@pytest.mark.parametrize("children", [1, 2])
@pytest.mark.parametrize("removed", [True, False])
def test_a_document_followed_as_it_downloads_compares_as_one_read_whole(
    tmp_path, monkeypatch, children, removed
):
    """The children's reading of a document as it downloads (`conda_stream`, in batches,
    one child or two) gives each section's comparison, and leaves the fingerprints, that one
    read whole does; an entry given twice, in two batches, counts once with its last
    value."""
    monkeypatch.setattr(conda_stream, "BATCH_BYTES", 200)
    monkeypatch.setattr(conda_stream, "WINDOW_BYTES", 800)
    document = json.loads(json.dumps(DOCUMENT))
    for i in range(30):
        document["packages"][f"p{i:02d}-1.0-0.tar.bz2"] = _record(f"p{i:02d}", "1.0")
    kept = tmp_path / "kept.json"
    kept.write_bytes(_indented(document))
    changed = json.loads(json.dumps(document))
    changed["packages"]["p03-1.0-0.tar.bz2"]["depends"] = []
    if removed:
        del changed["packages"]["p07-1.0-0.tar.bz2"]
    changed["packages.conda"]["delta-1-0.conda"] = _record("delta", "1")
    text = _indented(changed)
    # p20 given twice: first changed, then as kept (the last counts: unchanged).
    entry = b'"p20-1.0-0.tar.bz2": {'
    text = text.replace(entry, entry + b'"name": "twice"},\n    ' + entry, 1)
    new = tmp_path / "new.json"
    new.write_bytes(text)
    streamed = _followed_by(children, str(kept), str(new))
    assert isinstance(streamed, conda_repodata.Streamed)
    with open(new, "rb") as file:
        whole = conda_document.Document(file, URL)
        for section in ("packages", "packages.conda"):
            old = conda_repodata._kept_side(str(kept), section)[1]
            found, same, gone, prints = conda_repodata._compared(whole.entries(section), old)
            base, changed_here, same_here, gone_here = streamed.compared[section]
            assert (base, same_here, gone_here) == (BASE, same, gone)
            assert sorted(changed_here) == sorted((name, bytes(raw)) for name, raw in found)
            assert conda_fingerprints.load(str(new), section) == (None, prints)
        assert streamed.top == {
            key: b"{}" if key.startswith("packages") else bytes(raw)
            for key, raw in whole.top.items()
        }
    assert [name for name, _ in streamed.compared["packages"][1]] == ["p03-1.0-0.tar.bz2"]
    assert streamed.compared["packages"][3] == (["p07-1.0-0.tar.bz2"] if removed else [])


def test_two_readings_that_do_not_meet_where_the_second_section_begins_are_not_joined():
    """The first section's reader stopped at a key other than where the second's reader
    found its own: what lies between was proved by neither, so the readings are not the
    document's."""
    first = conda_repodata.Streamed(
        {"packages": b"{}", "packages.conda": b"{}"}, {"packages": ()}, "packages", None, 100, {}
    )
    then = conda_repodata.Streamed(
        {"packages": b"{}", "packages.conda": b"{}"},
        {"packages.conda": ()},
        "packages",
        90,
        None,
        {},
    )
    assert conda_repodata._joined([first, then]) is None
    assert conda_repodata._joined([first, then._replace(own_at=100)]) is not None
    # Or one that did not read as the other says it began.
    assert conda_repodata._joined([first, then._replace(own_at=100, first="x")]) is None
    assert conda_repodata._joined([first, None]) is None


def test_a_document_not_laid_out_to_be_followed_is_compared_once_whole(tmp_path):
    kept = tmp_path / "kept.json"
    kept.write_bytes(orjson.dumps(DOCUMENT))
    new = tmp_path / "new.json"
    new.write_bytes(orjson.dumps(DOCUMENT))  # compact
    before = conda_repodata._kept_side(str(kept), "packages")
    handed = (str(new), URL, True)
    assert conda_repodata._followed(lambda: handed, str(kept), str(new), before) == (
        handed,
        None,
    )
    answer = conda_repodata._compare_in_child(lambda: handed, str(kept), "packages", str(new))
    assert answer == (BASE, [], 2, [])  # the child's own section, compared once it is whole


def _followed_by_two_children(kept, new) -> conda_repodata.Streamed:
    """The joined reading of the document at `new` by two real children, a section each,
    compared with the one at `kept`."""
    comparison = conda_repodata.Comparison(str(kept), str(new), follows=True)
    try:
        assert set(comparison.children) == {"packages", "packages.conda"}
        comparison.hand(str(new), URL, True)
        streamed = comparison.streamed()
    finally:
        comparison.close()
    assert streamed is not None
    return streamed


def test_two_children_follow_a_document_and_the_fingerprints_name_its_base(tmp_path):
    """A document laid out to be followed is read by two children, a section each, as it
    downloads; `info` between the sections (read by the first section's child only) names
    the base: the other section's fingerprints, left without it, are not kept."""
    info = {"subdir": "linux-64", "base_url": "https://files.example/x/"}

    def laid_out(document: dict) -> bytes:
        ordered = {"packages": document["packages"], "info": info}
        return json.dumps({**ordered, **document, "info": info}, indent=1).encode()

    kept = tmp_path / "kept.json"
    kept.write_bytes(laid_out(DOCUMENT))
    changed = json.loads(json.dumps(DOCUMENT))
    changed["packages.conda"]["delta-1-0.conda"] = _record("delta", "1")
    new = tmp_path / "new.json"
    new.write_bytes(laid_out(changed))
    streamed = _followed_by_two_children(kept, new)
    assert list(streamed.top) == list(json.loads(new.read_bytes()))
    assert list(streamed.top)[:3] == ["packages", "info", "packages.conda"]
    assert [name for name, _ in streamed.compared["packages.conda"][1]] == ["delta-1-0.conda"]
    assert streamed.compared["packages"][1:] == ([], len(DOCUMENT["packages"]), [])
    assert conda_fingerprints.load(str(new), "packages")[0] == "https://files.example/x/"
    assert conda_fingerprints.load(str(new), "packages.conda") is None


def test_a_key_given_twice_before_the_second_section_counts_with_its_last_value(tmp_path):
    """`info` given before the first section and again between the two: the second
    section's child read only the first (it does not read between the sections), so the
    joined reading takes the values before the second section from the first section's
    child, as a whole reading gives them (the last), and that child's base."""
    first = {"subdir": "linux-64", "base_url": "https://files.example/first/"}
    last = {"subdir": "linux-64", "base_url": "https://files.example/last/"}

    def laid_out(document: dict) -> bytes:
        text = json.dumps(
            {"info": first, "packages": document["packages"], "x-between": 1, **document},
            indent=1,
        )
        again = '\n "x-between": 1,'
        return text.replace(again, again + '\n "info": ' + json.dumps(last) + ",", 1).encode()

    kept = tmp_path / "kept.json"
    kept.write_bytes(laid_out(DOCUMENT))
    new = tmp_path / "new.json"
    new.write_bytes(laid_out(DOCUMENT))
    streamed = _followed_by_two_children(kept, new)
    with open(new, "rb") as file:
        whole = conda_document.Document(file, URL)
        assert streamed.top == {
            key: b"{}" if key.startswith("packages") else bytes(raw)
            for key, raw in whole.top.items()
        }
    assert json.loads(streamed.top["info"]) == last
    assert conda_fingerprints.load(str(new), "packages")[0] == last["base_url"]
    assert conda_fingerprints.load(str(new), "packages.conda") is None  # named the first


def test_a_section_tallied_batch_by_batch_compares_as_one_read_whole():
    """Seeded random kept and new sections, the new one handed over in batches with names
    given again in later batches (the last counts): the tally gives what comparing the
    whole section gives."""
    for case in range(500):
        rng = random.Random(case)
        names = [f"p{i:02d}-1-0.conda" for i in range(40)]
        kept = {name: f'{{"v":{rng.randint(0, 2)}}}'.encode() for name in rng.sample(names, 20)}
        old = conda_fingerprints.of(kept)
        given = [
            (name, f'{{"v":{rng.randint(0, 2)}}}'.encode())
            for name in rng.choices(names, k=rng.randint(0, 40))
        ]
        tally = conda_repodata._Tally(old)
        at = 0
        while at < len(given):
            step = rng.randint(1, 8)
            tally.add({name: msgspec.Raw(raw) for name, raw in given[at : at + step]})
            at += step
        whole = {name: msgspec.Raw(raw) for name, raw in given}
        found, same, gone, prints = conda_repodata._compared(whole, old)
        base, found_here, same_here, gone_here = tally.compared(BASE)
        assert sorted(found_here) == sorted((name, bytes(raw)) for name, raw in found), case
        assert (same_here, gone_here, tally.prints) == (same, gone, prints), case
