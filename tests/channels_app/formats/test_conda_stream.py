"""A repodata.json followed as it is written (`channels_app/formats/conda_stream.py`): the
sections' entries in batches, the other top-level values whole, exactly as a whole reading
gives them; anything laid out otherwise is not followed."""

from __future__ import annotations

import json
import threading
import time

import msgspec
import pytest

from channels_app.formats import conda_stream
from channels_app.formats.conda_stream import DocumentStream, Unfollowed, indentation
from tests.fixtures.conda_channel import repodata_entry

WHOLE = msgspec.json.Decoder(dict[str, msgspec.Raw])


def _document(count: int = 40) -> dict:
    return {
        "info": {"subdir": "linux-64", "base_url": "https://files.example/"},
        "packages": {
            f"p{i:03d}-1.0-0.tar.bz2": repodata_entry(f"p{i:03d}", "1.0") for i in range(count)
        },
        "packages.conda": {
            f"q{i:03d}-1.0-0.conda": repodata_entry(f"q{i:03d}", "1.0") for i in range(count)
        },
        "removed": ["gone-1.0-0.tar.bz2"],
        "repodata_version": 1,
    }


class _Read:
    """What a stream handed over: each section's entries as bytes, by batch."""

    def __init__(self) -> None:
        self.batches: dict[str, list[dict[str, bytes]]] = {}

    def __call__(self, section: str, entries: dict[str, msgspec.Raw]) -> None:
        batch = {name: bytes(raw) for name, raw in entries.items()}
        self.batches.setdefault(section, []).append(batch)

    def entries(self, section: str) -> dict[str, bytes]:
        merged: dict[str, bytes] = {}
        for batch in self.batches.get(section, []):
            merged.update(batch)
        return merged


def _followed(path) -> tuple[dict[str, bytes], _Read]:
    read = _Read()
    stream = DocumentStream(str(path), read)
    try:
        stream.advance()
        return stream.finish(), read
    finally:
        stream.close()


def _as_read_whole(raw: bytes) -> tuple[dict[str, bytes], dict[str, dict[str, bytes]]]:
    """The top-level values (sections as `{}`) and each section's entries, read whole."""
    top = WHOLE.decode(raw)
    sections = {}
    for section in ("packages", "packages.conda"):
        if section in top:
            sections[section] = {k: bytes(v) for k, v in WHOLE.decode(top[section]).items()}
            top[section] = msgspec.Raw(b"{}")
    return {key: bytes(value) for key, value in top.items()}, sections


def _same_as_read_whole(path) -> _Read:
    top, read = _followed(path)
    whole_top, sections = _as_read_whole(path.read_bytes())
    assert list(top.items()) == list(whole_top.items())
    for section, entries in sections.items():
        assert list(read.entries(section).items()) == list(entries.items())
    assert set(read.batches) <= set(sections)
    return read


def _small_batches(monkeypatch) -> None:
    """Batches of a few entries each (an entry is about 500 bytes)."""
    monkeypatch.setattr(conda_stream, "BATCH_BYTES", 500)
    monkeypatch.setattr(conda_stream, "WINDOW_BYTES", 2000)


@pytest.mark.parametrize("indent", [1, 2, 4, "\t"])
def test_a_pretty_printed_document_reads_as_a_whole_reading(tmp_path, monkeypatch, indent):
    _small_batches(monkeypatch)
    path = tmp_path / "repodata.json"
    path.write_text(json.dumps(_document(), indent=indent))
    read = _same_as_read_whole(path)
    assert len(read.batches["packages"]) > 5


def test_sections_in_any_order_among_other_keys(tmp_path, monkeypatch):
    _small_batches(monkeypatch)
    document = _document(12)
    reordered = {
        "signatures": {"p001-1.0-0.tar.bz2": {"k": {"signature": "x"}}},
        "packages.conda": document["packages.conda"],
        "info": document["info"],
        "x-nested": {"packages": {"not-a-section": {}}, "list": [1, {"a": []}]},
        "packages": {},  # empty
        "removed": [],
    }
    path = tmp_path / "repodata.json"
    path.write_text(json.dumps(reordered, indent=1))
    top, read = _followed(path)
    assert list(top) == list(reordered)
    assert (top["packages"], top["packages.conda"]) == (b"{}", b"{}")
    assert json.loads(top["x-nested"]) == reordered["x-nested"]
    assert read.entries("packages") == {}
    _same_as_read_whole(path)


def test_a_document_without_sections_or_with_one(tmp_path):
    path = tmp_path / "repodata.json"
    path.write_text(json.dumps({"info": {"subdir": "noarch"}}, indent=2))
    _same_as_read_whole(path)
    document = _document(3)
    del document["packages"]
    path.write_text(json.dumps(document, indent=2))
    _same_as_read_whole(path)


def test_followed_while_it_is_written(tmp_path, monkeypatch):
    """Written a few bytes at a time by another thread: batches are read as they arrive, and
    the whole reading is the same."""
    _small_batches(monkeypatch)
    raw = json.dumps(_document(200), indent=1).encode()
    path = tmp_path / "repodata.json"
    path.write_bytes(b"")
    written = threading.Event()

    def write() -> None:
        with open(path, "ab", buffering=0) as out:
            for start in range(0, len(raw), 997):
                out.write(raw[start : start + 997])
                time.sleep(0.0005)
        written.set()

    writer = threading.Thread(target=write)
    read = _Read()
    stream = DocumentStream(str(path), read)
    writer.start()
    before_the_end = 0
    while not written.is_set():
        stream.advance()
        before_the_end = sum(len(b) for b in read.batches.get("packages", []))
    writer.join()
    top = stream.finish()
    stream.close()
    assert before_the_end > 0  # read while it was written
    whole_top, sections = _as_read_whole(raw)
    assert top == whole_top
    assert read.entries("packages") == sections["packages"]
    assert read.entries("packages.conda") == sections["packages.conda"]


def test_an_entry_given_twice_counts_with_its_last_value(tmp_path):
    text = json.dumps(_document(3), indent=1)
    first = '"p000-1.0-0.tar.bz2": {'
    again = '"p000-1.0-0.tar.bz2": {"name": "again"},\n  ' + first
    path = tmp_path / "repodata.json"
    path.write_text(text.replace(first, again, 1))
    _, read = _followed(path)
    assert json.loads(read.entries("packages")["p000-1.0-0.tar.bz2"])["name"] == "p000"
    _same_as_read_whole(path)


@pytest.mark.parametrize(
    ("why", "text"),
    [
        ("compact", json.dumps(_document(3))),
        ("one line, spaced", json.dumps(_document(3), indent=None, separators=(", ", ": "))),
        ("not an object", "[\n 1\n]"),
        ("a section given twice", '{\n "packages": {},\n "packages": {\n  "a.tar.bz2": {}\n }\n}'),
        ("a section not an object", '{\n "packages": null,\n "info": {}\n}'),
        ("a section on one line", '{\n "info": {}, "packages": {"a.tar.bz2": {}}\n}'),
        (
            "a section's key nested at the top's indentation",
            '{\n "info": {\n "packages": {\n  "a.tar.bz2": {}\n }\n }\n}',
        ),
        ("entries on one line", '{\n "packages": {"a.tar.bz2": {}, "b.tar.bz2": {}\n }\n}'),
        ("truncated in a section", json.dumps(_document(3), indent=1)[:900]),
        ("truncated after a section", json.dumps(_document(3), indent=1)[:-20]),
        ("not JSON between sections", '{\n "packages": {},\n "info": {oops},\n "x": 1\n}'),
        ("text after the end", json.dumps(_document(3), indent=1) + "\n{}"),
        (
            "an entry that is not JSON",
            '{\n "packages": {\n  "a.tar.bz2": {},\n  "b.tar.bz2": [1,,2]\n }\n}',
        ),
    ],
)
def test_what_is_not_laid_out_to_be_followed_is_not(tmp_path, why, text):
    path = tmp_path / "repodata.json"
    path.write_text(text)
    with pytest.raises(Unfollowed):
        _followed(path)


def test_an_entry_longer_than_a_window_is_not_followed(tmp_path, monkeypatch):
    monkeypatch.setattr(conda_stream, "WINDOW_BYTES", 4096)
    document = _document(2)
    document["packages"]["p000-1.0-0.tar.bz2"]["depends"] = ["x" * 10_000]
    path = tmp_path / "repodata.json"
    path.write_text(json.dumps(document, indent=1))
    with pytest.raises(Unfollowed, match="does not end"):
        _followed(path)


def test_too_much_between_sections_is_not_held(tmp_path, monkeypatch):
    monkeypatch.setattr(conda_stream, "PART_BYTES", 1000)
    monkeypatch.setattr(conda_stream, "SEARCH_BYTES", 256)
    document = _document(2)
    document["info"]["note"] = "y" * 5000
    path = tmp_path / "repodata.json"
    path.write_text(json.dumps(document, indent=1))
    with pytest.raises(Unfollowed, match="too much"):
        _followed(path)


def test_indentation_is_read_from_the_first_line_break():
    assert indentation(b'{\n  "info": {}') == b"  "
    assert indentation(b'  \n{\n\t"info"') == b"\t"
    assert indentation(b"{\n") is None  # not yet said
    assert indentation(b'{"info": {}}') is None
    assert indentation(b"[\n 1]") is None


SECTIONS = ("packages", "packages.conda")


def _by_two(path) -> tuple[dict[str, bytes], _Read, tuple]:
    """The document read by two streams, a section each (`own`): the top-level values each
    proved, merged as `conda_repodata._joined` merges them, what each handed over, and where each
    says the second section's key is (the first section's reader, then the other)."""
    read, streams = _Read(), {}
    for section in SECTIONS:
        stream = DocumentStream(str(path), read, own=section)
        try:
            stream.advance()
            streams[section] = (stream.finish(), stream)
        finally:
            stream.close()
    assert set(read.batches) <= set(SECTIONS)
    for section, (_, stream) in streams.items():  # each handed over its own section only
        assert stream.read <= {section}
    first, then = sorted(streams.values(), key=lambda item: item[1].first != item[1].own)
    assert first[1].first == then[1].first
    top = dict(first[1].proved())
    top.update(then[1].proved())
    return top, read, (first[1].next_at, then[1].own_at)


def _document_orders() -> list:
    document = _document(12)
    return [
        document,
        {key: document[key] for key in ("removed", "packages.conda", "info", "packages")},
        {"info": document["info"], "packages": document["packages"]},  # one section
        {"packages.conda": document["packages.conda"], "removed": []},
        {"info": document["info"]},  # none
        {"packages": {}, "x": {"a": [1]}, "packages.conda": {}},  # both empty
    ]


@pytest.mark.parametrize("document", _document_orders())
@pytest.mark.parametrize("indent", [1, 4])
def test_two_readers_a_section_each_read_what_a_whole_reading_does(
    tmp_path, monkeypatch, document, indent
):
    """Each reads its own section; the first section's reader stops at the second's key,
    where the second found it; together they read what a whole reading gives."""
    _small_batches(monkeypatch)
    path = tmp_path / "repodata.json"
    path.write_text(json.dumps(document, indent=indent))
    top, read, (next_at, own_at) = _by_two(path)
    whole_top, sections = _as_read_whole(path.read_bytes())
    assert list(top.items()) == list(whole_top.items())
    for section, entries in sections.items():
        assert list(read.entries(section).items()) == list(entries.items())
    assert next_at == own_at
    raw = path.read_bytes()
    if len(sections) == 2:  # at the second section's key, its line's start
        second = max(sections, key=lambda section: raw.index(f'"{section}":'.encode()))
        assert raw[next_at:].startswith(b"\n" + b" " * indent + f'"{second}"'.encode())
    else:
        assert next_at is None


def test_two_readers_follow_a_document_while_it_is_written(tmp_path, monkeypatch):
    """Written a few bytes at a time, a key split across two reads included: the reader of
    the second section finds its key as it arrives."""
    _small_batches(monkeypatch)
    raw = json.dumps(_document(200), indent=1).encode()
    path = tmp_path / "repodata.json"
    path.write_bytes(b"")
    read = _Read()
    streams = [DocumentStream(str(path), read, own=section) for section in SECTIONS]
    with open(path, "ab", buffering=0) as out:
        for start in range(0, len(raw), 7):
            out.write(raw[start : start + 7])
            if start % 4900 == 0 or start > raw.index(b'"packages.conda"') - 40:
                for stream in streams:
                    stream.advance()
    tops = [stream.finish() for stream in streams]
    for stream in streams:
        stream.close()
    packages, conda = streams
    assert packages.next_at == conda.own_at == raw.index(b'\n "packages.conda"')
    whole_top, sections = _as_read_whole(raw)
    assert {**tops[0], **tops[1]} == whole_top
    assert read.entries("packages") == sections["packages"]
    assert read.entries("packages.conda") == sections["packages.conda"]


def test_a_second_sections_key_inside_the_first_is_not_where_the_first_reader_stops(tmp_path):
    """A line laid out as the second section's key, inside an entry of the first: its
    reader finds that one, not the key the first reader proved, or does not follow."""
    text = json.dumps(_document(3), indent=1)
    entry = '"p001-1.0-0.tar.bz2": {'
    fake = entry + '"x": {\n "packages.conda": {\n   "z.conda": {}\n   }\n   },'
    path = tmp_path / "repodata.json"
    path.write_text(text.replace(entry, fake, 1))
    _same_as_read_whole(path)  # read by one, it is followed (and valid)
    try:
        _, _, (next_at, own_at) = _by_two(path)
    except Unfollowed:
        return
    assert next_at != own_at


@pytest.mark.parametrize(
    ("why", "text"),
    [
        (
            "the second section given twice",
            '{\n "packages": {},\n "packages.conda": {},\n "packages.conda": {}\n}',
        ),
        (
            "the first given again after",
            '{\n "packages": {},\n "packages.conda": {},\n "packages": {}\n}',
        ),
        ("the second not an object", '{\n "packages": {},\n "packages.conda": [],\n "x": 1\n}'),
        (
            "truncated after the second",
            '{\n "packages": {},\n "packages.conda": {\n  "a.conda": {}\n }',
        ),
    ],
)
def test_what_two_readers_cannot_follow(tmp_path, why, text):
    path = tmp_path / "repodata.json"
    path.write_text(text)
    with pytest.raises(Unfollowed):
        _by_two(path)
