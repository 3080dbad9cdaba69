"""The conda repodata PSM publishes is read by a real conda client library (py-rattler) exactly
as PSM stored it.

Random upstream entries of every legal shape (and some malformed ones), seeded by their case
number, are read as a sync reads them (`read_repodata`, which checks each with
`entry_record`), stored as rows, and published: a whole render, then splices after random
changes. py-rattler then reads the published repodata.json: every record it loads equals, field
by field, the entry PSM stored; every stored entry is there; nothing PSM rejected is. The
`.zst` copy holds the same bytes, and the log's footer names the document's BLAKE2b-256.

Also, for each random entry alone: PSM either rejects it or py-rattler reads it as stored (an
entry py-rattler refuses would hide every file of its package name from its clients).

The publishes commit (see `test_conda_splice`), so these tests run outside a test transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard
from django.db import connection  # noqa: F401 - read by the skipif condition
from rattler import Channel as RattlerChannel
from rattler import ChannelConfig, SparseRepoData
from rattler.repo_data.sparse import PackageFormatSelection

from channels_app.formats.base import PackageRecord, Rejected
from channels_app.formats.conda_repodata import read_repodata
from channels_app.models import Channel, Package
from tests.channels_app.test_conda_splice import _full_render, _publish, _published
from tests.factories import ChannelFactory

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif("connection.vendor != 'postgresql'", reason="splicing is PostgreSQL's"),
]

UPSTREAM = "https://upstream.invalid/chan/{subdir}/repodata.json"
SUBDIRS = ("linux-64", "noarch")
#: Above this a `timestamp` is milliseconds (conda's and py-rattler's rule).
SECONDS_UP_TO = 253402300799

# --- Random entries ---------------------------------------------------------------------------

_NAME_PARTS = ["py", "lib", "x", "r-", "font", "c_", "zz", "a.b", "ca-cert", "_private", "9"]
_VERSIONS = [
    "1.0", "0.1.2", "2024.01.05", "1!2.0", "3!1.0+local.7", "1.0+cuda_11", "1_2_3", "1.0a1",
    "1.0rc2", "1.0.post1", "1.0.dev0", "v1", "1.0_1", "0.0.0", "10.20.30.40.50", "1.0-2",
    "2.0+x.y_z", "1.2g", "0!0",
]  # fmt: skip
_DEPENDS = [
    "python >=3.8,<3.13", "numpy", "libgcc-ng >=12", "openssl 3.*", "foo ==1.0|==2.0",
    "bar * *_cp311", "__glibc >=2.17", "baz >=1!2.0", "qux 1.0.* py_0", "conda-forge::zlib",
    "pkg[version='>=1,<2']", "x >=1.0+local", "_openmp_mutex * *_llvm", "tzdata",
]  # fmt: skip
_LICENSES = ["MIT", "BSD-3-Clause", "Licence publique générale", "许可证", "Ünïcode ✓", "GPL-2.0"]
_NOARCH = [None, "python", "generic", True, False, ""]

#: Malformed values PSM refuses (`entry_record`): the key, the value (None: drop the key).
_MALFORMED: list[tuple[str, Any]] = [
    ("build", None), ("build", 3), ("build_number", None), ("build_number", -1),
    ("build_number", "3"), ("build_number", 1.5), ("constrains", "abc"), ("constrains", [1]),
    ("license", 3), ("timestamp", 1.5), ("timestamp", "x"), ("timestamp", -5),
    ("timestamp", 1 << 62), ("timestamp", SECONDS_UP_TO), ("noarch", "weird"), ("track_features", 3),
    ("track_features", [1]), ("features", 3), ("arch", 3), ("platform", 3),
    ("license_family", 3), ("size", -1), ("size", "3"), ("size", 1 << 63), ("md5", "zz"),
    ("depends", None), ("depends", [3]), ("subdir", "osx-64"), ("legacy_bz2_size", -1),
    ("purls", ["zzz"]), ("extra_depends", 3), ("run_exports", 3),
    ("version", "1..0"), ("version", "1.0."), ("version", "1.*"), ("version", "+1"),
]  # fmt: skip


def _name(rng: random.Random) -> str:
    name = "".join(rng.choice(_NAME_PARTS) for _ in range(rng.randint(1, 3))).strip("-.")
    name = name or "p"
    return name.upper() if rng.random() < 0.05 else name


def _entry(case: int, subdir: str) -> tuple[str, str, dict[str, Any]]:
    """(section, file name, entry) of a random entry, seeded by `case`; about one in six is
    made malformed (`_MALFORMED`)."""
    rng = random.Random(case)
    name, version = _name(rng), rng.choice(_VERSIONS)
    build = rng.choice(["0", "h1234abc_0", "py311h0_1", "pyhd8ed1ab_0", "cuda112_3", "_"])
    build += f"_c{case}"  # one file name a case
    section, suffix = rng.choice([("packages", ".tar.bz2"), ("packages.conda", ".conda")])
    entry: dict[str, Any] = {
        "name": name,
        "version": version,
        "build": build,
        "build_number": rng.choice([0, 1, 17, 2**31, 2**63 - 1]),
        "depends": rng.sample(_DEPENDS, rng.randint(0, 4)),
    }
    digest = hashlib.sha256(f"{case}".encode())
    if rng.random() < 0.9:
        sha = digest.hexdigest()
        entry["sha256"] = sha.upper() if rng.random() < 0.1 else sha
    if "sha256" not in entry or rng.random() < 0.7:
        entry["md5"] = hashlib.md5(f"{case}".encode()).hexdigest()
    optional = {
        "subdir": lambda: subdir,
        "size": lambda: rng.choice([0, 1, 12345, 2**40, 2**63 - 1]),
        "timestamp": lambda: rng.choice(
            [1_700_000_000_000, 1_400_000_000, 0, 10**11 - 1, SECONDS_UP_TO + 1, 10**14 - 1]
        ),
        "license": lambda: rng.choice([*_LICENSES, None]),
        "license_family": lambda: rng.choice(["MIT", "BSD", None]),
        "constrains": lambda: rng.sample(_DEPENDS, rng.randint(0, 3)),
        "track_features": lambda: rng.choice(["", "mkl", "a b", "x,y", ["blas_mkl"], []]),
        "features": lambda: rng.choice(["vc14", None]),
        "noarch": lambda: rng.choice(_NOARCH),
        "arch": lambda: rng.choice(["x86_64", None]),
        "platform": lambda: rng.choice(["linux", None]),
        "legacy_bz2_size": lambda: rng.choice([0, 99, None]),
        "purls": lambda: ["pkg:pypi/" + name.lower()],
        "run_exports": lambda: {"weak": [name]},
        "extra_depends": lambda: {"test": [rng.choice(_DEPENDS)]},
        "zz_unknown": lambda: {"nested": [1, "ü", None], "n": 2**53 + 1},
        "app_entry": lambda: "ünicode ✓ \\u0000-free",
        "url": lambda: f"https://elsewhere.invalid/{name}-{version}-{build}{suffix}",
    }
    for key, value in optional.items():
        if rng.random() < 0.4:
            entry[key] = value()
    if rng.random() < 1 / 6:
        key, value = rng.choice(_MALFORMED)
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = value
    return section, f"{entry['name']}-{entry['version']}-{build}{suffix}", entry


def _upstream(cases: range, subdir: str) -> bytes:
    """An upstream repodata.json of the random entries of `cases`."""
    document: dict[str, Any] = {"info": {"subdir": subdir}, "packages": {}, "packages.conda": {}}
    for case in cases:
        section, filename, entry = _entry(case, subdir)
        document[section][filename] = entry
    return _json(document)


def _json(document: Any) -> bytes:
    """Upstream's JSON (may hold integers beyond 64 bits, which orjson cannot write)."""
    return json.dumps(document, ensure_ascii=False).encode()


def _read(data: bytes, subdir: str) -> tuple[list[PackageRecord], set[str]]:
    """The records a sync stores of an upstream document, and the file names it rejects."""
    url = UPSTREAM.format(subdir=subdir)
    items = list(read_repodata(io.BytesIO(data), url, subdir))
    records = [item for item in items if isinstance(item, PackageRecord)]
    rejected = {item.filename for item in items if isinstance(item, Rejected)}
    return records, rejected


# --- Stored as rows --------------------------------------------------------------------------


def _store(channel: Channel, subdir: str, records: list[PackageRecord]) -> None:
    """Write the records as a sync does (the entry as PSM keeps it in `record`)."""
    Package.objects.bulk_create(
        Package(
            channel=channel,
            unit=subdir,
            filename=record.filename,
            name=record.name,
            version=record.version,
            sha256=record.sha256 or "",
            md5=record.md5 or "",
            size=record.size,
            upstream_url=record.url,
            record=record.document,
            entry_digest=record.entry_digest,
            on_demand=True,
        )
        for record in records
    )


def _served(channel: Channel, subdir: str) -> dict[str, dict[str, Any]]:
    """The entries stored and served for a subdir, by file name."""
    rows = Package.objects.filter(channel=channel, unit=subdir, removed=False, excluded_reason="")
    return {
        filename: orjson.loads(record)
        for filename, record in rows.values_list("filename", "record")
    }


# --- Read by py-rattler ----------------------------------------------------------------------


def _rattler_reads(path: Path, subdir: str) -> dict[str, Any]:
    """Every record py-rattler loads from the repodata.json at `path`, by file name (each
    package name loaded on its own, as a solve does)."""
    sparse = SparseRepoData(RattlerChannel("psm", ChannelConfig()), subdir, str(path))
    try:
        loaded: dict[str, Any] = {}
        for name in sparse.package_names(PackageFormatSelection.BOTH):
            for record in sparse.load_records(name, PackageFormatSelection.BOTH):
                assert record.file_name not in loaded, record.file_name
                loaded[record.file_name] = record
        return loaded
    finally:
        sparse.close()


def _timestamp(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    seconds = value if value <= SECONDS_UP_TO else value / 1000
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)


def _features(value: Any) -> list[str]:
    if isinstance(value, list):
        return value
    return [] if value is None else value.replace(",", " ").split(" ")


def _noarch(value: Any) -> str:
    return {True: "generic", "generic": "generic", "python": "python"}.get(value, "none")


def _hex(value: bytes | None) -> str | None:
    return value.hex() if value is not None else None


def _as_stored(record: Any, filename: str, stored: dict[str, Any], subdir: str) -> None:
    """py-rattler's `record` of `filename` is the entry PSM stored, field by field."""
    read = {
        "name": record.name.source,
        "version": str(record.version),
        "build": str(record.build),
        "build_number": record.build_number,
        "depends": record.depends,
        "constrains": record.constrains,
        "sha256": _hex(record.sha256),
        "md5": _hex(record.md5),
        "size": record.size,
        "subdir": record.subdir,
        # py-rattler hands the epoch back as the integer 0, not as a date.
        "timestamp": _timestamp(0) if record.timestamp == 0 else record.timestamp,
        "license": record.license,
        "license_family": record.license_family,
        "track_features": record.track_features,
        "features": record.features,
        "noarch": "generic"
        if record.noarch.generic
        else "python"
        if record.noarch.python
        else "none",
        "arch": record.arch,
        "platform": record.platform,
        "legacy_bz2_size": record.legacy_bz2_size,
        "file_name": record.file_name,
        "url_tail": record.url.rsplit("/", 2)[-2:],
    }
    sha256, md5 = stored.get("sha256"), stored.get("md5")
    expected = {
        "name": stored["name"],
        "version": stored["version"],
        "build": stored["build"],
        "build_number": stored["build_number"],
        "depends": stored.get("depends", []),
        "constrains": stored.get("constrains", []),
        "sha256": sha256.lower() if sha256 else None,
        "md5": md5.lower() if md5 else None,
        "size": stored.get("size"),
        "subdir": stored.get("subdir", subdir),
        "timestamp": _timestamp(stored.get("timestamp")),
        "license": stored.get("license"),
        "license_family": stored.get("license_family"),
        "track_features": _features(stored.get("track_features")),
        "features": stored.get("features"),
        "noarch": _noarch(stored.get("noarch")),
        "arch": stored.get("arch"),
        "platform": stored.get("platform"),
        "legacy_bz2_size": stored.get("legacy_bz2_size"),
        "file_name": filename,
        "url_tail": [subdir, filename],  # relative to the channel: fetched from PSM
    }
    assert read == expected, filename


def _published_right(channel: Channel, tmp_path: Path, rejected: set[str]) -> int:
    """Check each subdir's published files against the stored rows (see the module's
    docstring); return how many records py-rattler read."""
    files, read_count = _published(channel), 0
    for subdir in SUBDIRS:
        data = files[f"{subdir}/repodata.json"]
        assert (
            zstandard.ZstdDecompressor()
            .decompressobj()
            .decompress(files[f"{subdir}/repodata.json.zst"])
            == data
        )
        footer = orjson.loads(files[f"{subdir}/repodata.jlap"].rstrip(b"\n").split(b"\n")[-2])
        assert footer["latest"] == hashlib.blake2b(data, digest_size=32).hexdigest()
        path = tmp_path / subdir / "repodata.json"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        loaded, served = _rattler_reads(path, subdir), _served(channel, subdir)
        assert sorted(loaded) == sorted(served)  # none missing, none added
        assert not rejected & loaded.keys()
        for filename, record in loaded.items():
            _as_stored(record, filename, served[filename], subdir)
        read_count += len(loaded)
    return read_count


def _sync(channel: Channel, cases: range) -> set[str]:
    """Read upstream documents of the random entries of `cases` (spread over the subdirs) and
    store what is accepted; return the file names rejected."""
    rejected: set[str] = set()
    for index, subdir in enumerate(SUBDIRS):
        records, refused = _read(_upstream(cases[index :: len(SUBDIRS)], subdir), subdir)
        _store(channel, subdir, records)
        rejected |= refused
    return rejected


# --- The tests --------------------------------------------------------------------------------

ENTRY_CASES = range(600)


@pytest.mark.django_db(transaction=False)
def test_every_random_entry_psm_accepts_is_read_by_rattler_as_stored(tmp_path):
    """Each entry alone, in a one-entry document: rejected by PSM, or read by py-rattler as
    the entry PSM stores (its raw JSON, minus an absolute `url`)."""
    accepted = refused = 0
    for case in ENTRY_CASES:
        section, filename, entry = _entry(case, "linux-64")
        document = {"packages": {}, "packages.conda": {}, section: {filename: entry}}
        records, rejected = _read(_json(document), "linux-64")
        if rejected:
            assert not records and rejected == {filename}
            refused += 1
            continue
        (record,) = records
        served = {
            "info": {"subdir": "linux-64"},
            section: {filename: orjson.loads(record.document)},
        }
        path = tmp_path / f"{case}.json"
        path.write_bytes(orjson.dumps(served))
        loaded = _rattler_reads(path, "linux-64")
        assert list(loaded) == [filename], case
        _as_stored(loaded[filename], filename, orjson.loads(record.document), "linux-64")
        assert "url" not in orjson.loads(record.document)
        accepted += 1
    assert accepted > 400 and refused > 50  # both kinds were tried


def test_a_whole_render_of_random_entries_is_read_by_rattler_as_stored(caplog, tmp_path):
    channel = ChannelFactory(kind="conda")
    rejected = _sync(channel, range(400))
    assert _publish(channel, caplog) == 0  # rendered whole
    assert _published_right(channel, tmp_path, rejected) > 250


def test_splices_after_random_changes_are_read_by_rattler_as_stored(caplog, tmp_path):
    """Rounds of random changes (new entries, entries replaced, rows removed or excluded and
    back), each published by a splice: the same bytes as a full render, read as stored."""
    channel = ChannelFactory(kind="conda")
    rejected = _sync(channel, range(1000, 1200))
    _publish(channel, caplog)
    read = 0
    for round_ in range(4):
        rng = random.Random(round_)
        start = 2000 + 100 * round_
        rejected |= _sync(channel, range(start, start + rng.randint(10, 60)))
        rows = Package.objects.filter(channel=channel)
        ids = list(rows.order_by("id").values_list("id", flat=True))
        rows.filter(id__in=rng.sample(ids, 15)).update(removed=True)
        rows.filter(id__in=rng.sample(ids, 5)).update(excluded_reason="blocked")
        rows.filter(id__in=rng.sample(ids, 5)).update(excluded_reason="", removed=False)
        _replace_entries(channel, rng, rng.sample(ids, 10), 5000 + 100 * round_)
        assert _publish(channel, caplog) == len(SUBDIRS)  # spliced
        full = _full_render(channel)
        files = _published(channel)
        for subdir in SUBDIRS:
            path = f"{subdir}/repodata.json"
            assert files[path] == full[path], (round_, path)
        read += _published_right(channel, tmp_path, rejected)
    assert read > 400


def _replace_entries(channel: Channel, rng: random.Random, ids: list[int], seed: int) -> None:
    """Give the rows `ids` new random entries (of their own file name, as an upstream change of
    an entry), where PSM accepts the new entry."""
    for number, row in enumerate(Package.objects.filter(id__in=ids)):
        _, _, entry = _entry(seed + number, row.unit)
        entry.update(name=row.name, version=row.version)
        section = "packages.conda" if row.filename.endswith(".conda") else "packages"
        document = {"packages": {}, "packages.conda": {}, section: {row.filename: entry}}
        records, _ = _read(_json(document), row.unit)
        if records:
            (record,) = records
            Package.objects.filter(id=row.id).update(
                record=record.document, entry_digest=record.entry_digest
            )
