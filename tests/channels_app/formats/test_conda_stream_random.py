"""Documents of every layout, followed as they are written (`conda_stream.DocumentStream`), by
one reader or by two (a section each): a reading that is taken must be the whole reading's.

The cases are random but seeded (the same on every run): pretty-printed and compact parts
mixed, indentation that changes from one object to the next, keys laid out as a section's
inside an entry, sections given twice or not as objects, and documents damaged (cut short,
a byte changed, dropped or added). Whatever the layout, a reading is either refused
(`Unfollowed`, or two readers that do not meet where the second section begins: read whole
then) or gives exactly what reading the whole document gives."""

from __future__ import annotations

import json
import random

import msgspec
import pytest

from channels_app.formats import conda_stream
from channels_app.formats.conda_stream import DocumentStream, Unfollowed

WHOLE = msgspec.json.Decoder(dict[str, msgspec.Raw])
SECTIONS = ("packages", "packages.conda")
CASES = 300


class _Layout:
    """JSON text of a value, laid out as the random choices say: each object or list
    compact or one item a line, its indentation its own."""

    def __init__(self, rng: random.Random, top_indent: str) -> None:
        self.rng, self.top_indent = rng, top_indent

    def space(self) -> str:
        return self.rng.choice(["", "", " ", "  ", "\t"])

    def dump(self, value, depth: int = 0, *, regular: bool = False) -> str:
        """`regular`: laid out as a pretty printer would (a section, mostly)."""
        if isinstance(value, dict):
            items = [(json.dumps(key), self.dump(item, depth + 1)) for key, item in value.items()]
            members = [f"{key}{self.space()}:{self.space()}{item}" for key, item in items]
            return self._container("{", "}", members, depth, regular)
        if isinstance(value, list):
            return self._container("[", "]", [self.dump(item, depth + 1) for item in value], depth)
        return json.dumps(value)

    def _container(self, opening, closing, members, depth, regular=False) -> str:
        if not members:
            return opening + self.space() + closing
        if not regular and self.rng.random() < 0.4:  # compact
            return opening + ("," + self.space()).join(members) + closing
        if regular or self.rng.random() < 0.7:  # as a pretty printer would
            inner, outer = self.top_indent * (depth + 1), self.top_indent * depth
        else:  # any indentation: the top level's, too
            inner = " " * self.rng.randint(0, 2 * (depth + 1))
            outer = " " * self.rng.randint(0, depth)
        separator = "," + self.space() + "\n" + inner
        return f"{opening}\n{inner}{separator.join(members)}\n{outer}{closing}"


def _entry(rng: random.Random, name: str) -> dict:
    entry = {"name": name, "version": f"{rng.randint(0, 9)}.0", "depends": ["python"]}
    if rng.random() < 0.2:  # a key laid out as a section's, inside an entry
        entry[rng.choice(SECTIONS)] = {"x-1.0-0.conda": {"y": [1, 2]}}
    if rng.random() < 0.1:
        entry["nested"] = {"a": {"b": [{"c": "}"}, '"', "\\"]}}
    return entry


def _document(rng: random.Random) -> list[tuple[str, object]]:
    """Top-level keys and values, in order; a key may come twice."""
    pairs: list[tuple[str, object]] = [
        ("info", {"subdir": "linux-64"}),
        ("removed", [f"old-{i}.conda" for i in range(rng.randint(0, 3))]),
        ("repodata_version", 1),
        ("x-extra", {"k": [rng.random()]}),
    ]
    for section in SECTIONS:
        if rng.random() < 0.85:
            suffix = ".conda" if section.endswith("conda") else ".tar.bz2"
            count = rng.choice([0, 1, 2, 5, 20, 40])
            names = [f"p{rng.randint(0, 60):02d}-1.0-{i}{suffix}" for i in range(count)]
            pairs.append((section, {name: _entry(rng, name[:3]) for name in names}))
    rng.shuffle(pairs)
    if rng.random() < 0.08:  # a key given twice
        pairs.insert(rng.randint(0, len(pairs)), rng.choice(pairs))
    if rng.random() < 0.05:  # a section not an object
        pairs.append((rng.choice(SECTIONS), rng.choice([[], "x", 1])))
    return pairs


def _text(rng: random.Random) -> bytes:
    layout = _Layout(rng, rng.choice([" ", "  ", "    ", "\t"]))
    pairs = _document(rng)
    members = [f"{json.dumps(key)}{layout.space()}:{layout.space()}" for key, _ in pairs]
    values = [layout.dump(value, 1, regular=rng.random() < 0.9) for _, value in pairs]
    separator = "," + layout.space() + "\n" + layout.top_indent
    text = "{\n" + layout.top_indent
    text += separator.join(member + value for member, value in zip(members, values, strict=True))
    text += "\n}" + rng.choice(["", "\n"])
    raw = text.encode()
    damage = rng.random()
    if damage < 0.04:
        raw = raw[: rng.randint(0, len(raw) - 1)]
    elif damage < 0.07:
        at = rng.randrange(len(raw))
        raw = raw[:at] + rng.choice(b'{}[],:"\n x').to_bytes(1, "big") + raw[at + 1 :]
    elif damage < 0.09:
        at = rng.randrange(len(raw))
        raw = raw[:at] + raw[at + 1 :]
    elif damage < 0.12:
        at = rng.randrange(len(raw))
        raw = raw[:at] + rng.choice([b",", b"}", b"\n  ", b'"packages.conda": {']) + raw[at:]
    return raw


def _read_whole(raw: bytes):
    """The top-level values (sections as `{}`) and each section's entries; None where the
    document is not an object whose sections are objects."""
    try:
        top = WHOLE.decode(raw)
        sections = {}
        for section in SECTIONS:
            if section in top:
                entries = WHOLE.decode(top[section])
                sections[section] = {key: bytes(value) for key, value in entries.items()}
                top[section] = msgspec.Raw(b"{}")
    except msgspec.DecodeError:
        return None
    return {key: bytes(value) for key, value in top.items()}, sections


class _Entries:
    def __init__(self) -> None:
        self.by_section: dict[str, dict[str, bytes]] = {}

    def __call__(self, section: str, batch: dict[str, msgspec.Raw]) -> None:
        entries = self.by_section.setdefault(section, {})
        entries.update((name, bytes(raw)) for name, raw in batch.items())


def _follow(path, raw: bytes, rng: random.Random, owns: tuple[str | None, ...]):
    """The document written to `path` in pieces of random sizes while a reader for each of
    `owns` follows it; each reader's top-level values and the entries they handed over."""
    entries = _Entries()
    path.write_bytes(b"")
    streams = [DocumentStream(str(path), entries, own=own) for own in owns]
    try:
        with open(path, "ab", buffering=0) as out:
            at = 0
            while at < len(raw):
                step = rng.choice([1, 7, 64, 500, 4000])
                out.write(raw[at : at + step])
                at += step
                for stream in streams:
                    stream.advance()
        tops = [stream.finish() for stream in streams]
    finally:
        for stream in streams:
            stream.close()
    return tops, streams, entries.by_section


def _small_batches(monkeypatch) -> None:
    monkeypatch.setattr(conda_stream, "BATCH_BYTES", 300)
    monkeypatch.setattr(conda_stream, "WINDOW_BYTES", 1500)


@pytest.mark.parametrize("readers", [1, 2])
def test_a_reading_taken_is_the_whole_reading(tmp_path, monkeypatch, readers):
    _small_batches(monkeypatch)
    taken = refused = 0
    for case in range(CASES):
        rng = random.Random(f"{readers}-{case}")
        raw = _text(rng)
        whole = _read_whole(raw)
        owns = (None,) if readers == 1 else SECTIONS
        try:
            tops, streams, entries = _follow(tmp_path / f"{case}.json", raw, rng, owns)
        except Unfollowed:
            refused += 1
            continue
        if readers == 2:
            # As `conda_repodata._joined` takes two readings: where they met.
            first, then = sorted(streams, key=lambda stream: stream.first != stream.own)
            if (first.first, first.next_at) != (then.first, then.own_at):
                refused += 1
                continue
            top = {**first.proved(), **then.proved()}
        else:
            top = tops[0]
        assert whole is not None, f"case {case}: a reading taken of a document that is not one"
        whole_top, sections = whole
        assert list(top.items()) == list(whole_top.items()), f"case {case}"
        assert entries == {section: got for section, got in sections.items() if got}, case
        taken += 1
    # Both kinds of case came up often (the generator is not all one or the other).
    assert taken > CASES // 4 and refused > CASES // 20, (taken, refused)
