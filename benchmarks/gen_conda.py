"""Generate a conda-forge-scale subdir: repodata.json (+ .zst) with realistic record shapes.

    python benchmarks/gen_conda.py OUTDIR [--records 600000] [--subdir linux-64]
    python benchmarks/gen_conda.py OUTDIR --mutate 0.01   # change 1% of records in place
        [--seed 1] [--no-jlap]

Records look like conda-forge's: name, version, build, build_number, depends, constrains,
license, license_family, md5, sha256, size, subdir, timestamp; half in `packages` (.tar.bz2),
half in `packages.conda`.

Each subdir (and noarch) also gets a `repodata.jlap` beside its repodata.json, as conda-forge's
CDN publishes it (tests/fixtures/conda_jlap.py writes it): a fresh write starts a log with no
patches that names the document just written; `--mutate` appends one patch, from the served
document it replaces to the new one (a `remove` and an `add` per changed entry). `--mutate`
changes the records `--seed` picks (relative to a fresh write), so two mutations with different
seeds differ. `--no-jlap` writes no log and deletes an existing one.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
from pathlib import Path

import orjson
import zstandard

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:  # run as a script: the log's writer lives in the test fixtures
    sys.path.insert(0, ROOT)

from tests.fixtures.conda_jlap import NAME as JLAP  # noqa: E402
from tests.fixtures.conda_jlap import document_hash, entry_ops, patch_lines, write_log  # noqa: E402

LICENSES = [
    ("MIT", "MIT"),
    ("BSD-3-Clause", "BSD"),
    ("Apache-2.0", "APACHE"),
    ("GPL-3.0-or-later", "GPL3"),
    ("LGPL-2.1-or-later", "LGPL"),
    ("PSF-2.0", "PSF"),
]
DEPS = [
    "libgcc-ng >=12",
    "libstdcxx-ng >=12",
    "python >=3.10,<3.11.0a0",
    "python_abi 3.10.* *_cp310",
    "numpy >=1.21.6,<2.0a0",
    "openssl >=3.1.2,<4.0a0",
    "zlib >=1.2.13,<1.3.0a0",
    "libzlib >=1.2.13,<1.3.0a0",
    "__glibc >=2.17",
]


def record(i: int, subdir: str, salt: str = "") -> tuple[str, dict]:
    rng = random.Random(i)
    name = f"pkg-{i // 20:06d}"
    version = f"{rng.randint(0, 30)}.{rng.randint(0, 40)}.{i % 20}"
    build_hash = hashlib.md5(f"{i}{salt}".encode()).hexdigest()[:8]
    build = f"py310h{build_hash}_{i % 3}"
    ext = ".conda" if i % 2 else ".tar.bz2"
    lic, fam = LICENSES[i % len(LICENSES)]
    digest = hashlib.sha256(f"{i}{salt}".encode()).hexdigest()
    rec = {
        "build": build,
        "build_number": i % 3,
        "constrains": [f"{name}-base {version}"] if i % 4 == 0 else [],
        "depends": rng.sample(DEPS, k=rng.randint(2, 6)),
        "license": lic,
        "license_family": fam,
        "md5": digest[:32],
        "name": name,
        "sha256": digest,
        "size": rng.randint(5_000, 50_000_000),
        "subdir": subdir,
        "timestamp": 1_600_000_000_000 + i * 1000,
        "version": version,
    }
    return f"{name}-{version}-{build}{ext}", rec


def file_hash(path: Path) -> str:
    """`document_hash` of a file's bytes, read in chunks rather than whole."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, lambda: hashlib.blake2b(digest_size=32)).hexdigest()


def log_latest(folder: Path) -> str | None:
    """The document the log in `folder` ends at (its footer's `latest`); None without a log."""
    path = folder / JLAP
    if not path.exists():
        return None
    lines = path.read_bytes().rstrip(b"\n").split(b"\n")
    try:
        return orjson.loads(lines[-2])["latest"]
    except (IndexError, KeyError, TypeError, orjson.JSONDecodeError):
        return None


def keep_log(folder: Path, jlap: bool = True) -> None:
    """Give `folder`'s repodata.json a log that ends at it (one with no patches, unless the
    log there already does), or with `jlap` false, remove the log. Leaves a log that already
    fits untouched (its ETag stays the same)."""
    if not jlap:
        (folder / JLAP).unlink(missing_ok=True)
        return
    latest = file_hash(folder / "repodata.json")
    if log_latest(folder) != latest:
        write_log(folder, [], latest)


def append_log(folder: Path, before: str, after: str, ops: list[dict]) -> None:
    """Add the patch `ops` from the document hashed `before` to `after` to `folder`'s log
    (`conda_jlap.append_patch`, from the hashes rather than the documents' bytes). A log that
    does not end at `before` is started again, so the chain always holds."""
    kept = patch_lines(folder) if log_latest(folder) == before else []
    line = orjson.dumps({"from": before, "to": after, "patch": ops})
    write_log(folder, [*kept, line], after)


def write(
    out: Path, count: int, subdir: str, mutate: float = 0.0, seed: int = 1, jlap: bool = True
) -> None:
    target = out / subdir
    target.mkdir(parents=True, exist_ok=True)
    served = target / "repodata.json"
    # With a log to extend: the document being replaced, its hash and its parsed entries (the
    # bytes are dropped once parsed; the patch needs only the hash and the entries).
    old_hash, old_doc = None, None
    if mutate and jlap and served.exists():
        old = served.read_bytes()
        old_hash, old_doc = document_hash(old), orjson.loads(old)
        del old
    changed = set()
    if mutate:
        changed = set(random.Random(seed).sample(range(count), int(count * mutate)))
    packages, conda = {}, {}
    for i in range(count):
        filename, rec = record(i, subdir, salt="changed" if i in changed else "")
        (conda if filename.endswith(".conda") else packages)[filename] = rec
    doc = {
        "info": {"subdir": subdir},
        "packages": packages,
        "packages.conda": conda,
        "removed": [],
        "repodata_version": 1,
    }
    ops = entry_ops(old_doc, doc) if old_doc is not None else None
    old_doc = None  # one parsed document at most while the new one is encoded
    body = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
    del doc, packages, conda
    served.write_bytes(body)
    (target / "repodata.json.zst").write_bytes(zstandard.ZstdCompressor(level=3).compress(body))
    if not jlap:
        (target / JLAP).unlink(missing_ok=True)
    elif ops is not None:
        append_log(target, old_hash, document_hash(body), ops)
    else:
        write_log(target, [], document_hash(body))
    noarch = out / "noarch"
    noarch.mkdir(exist_ok=True)
    if not (noarch / "repodata.json").exists():
        empty = orjson.dumps({"info": {"subdir": "noarch"}, "packages": {}, "packages.conda": {}})
        (noarch / "repodata.json").write_bytes(empty)
    keep_log(noarch, jlap)
    (out / "channeldata.json").write_bytes(
        orjson.dumps({"subdirs": [subdir, "noarch"], "packages": {}})
    )
    log = f"{JLAP} with {len(ops)} operations appended" if ops is not None else f"new {JLAP}"
    print(
        f"{served}: {count} records, {len(body) / 1e6:.0f} MB; " + (log if jlap else f"no {JLAP}")
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--records", type=int, default=600_000)
    parser.add_argument("--subdir", default="linux-64")
    parser.add_argument("--mutate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1, help="picks the records --mutate changes")
    parser.add_argument(
        "--no-jlap", action="store_true", help=f"write no {JLAP} (and delete an existing one)"
    )
    args = parser.parse_args()
    write(args.out, args.records, args.subdir, args.mutate, args.seed, jlap=not args.no_jlap)
