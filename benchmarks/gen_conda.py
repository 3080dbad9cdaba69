"""Generate a conda-forge-scale subdir: repodata.json (+ .zst) with realistic record shapes.

    python benchmarks/gen_conda.py OUTDIR [--records 600000] [--subdir linux-64]
    python benchmarks/gen_conda.py OUTDIR --mutate 0.01   # change 1% of records in place

Records look like conda-forge's: name, version, build, build_number, depends, constrains,
license, license_family, md5, sha256, size, subdir, timestamp; half in `packages` (.tar.bz2),
half in `packages.conda`.
"""

from __future__ import annotations

import argparse
import hashlib
import random
from pathlib import Path

import orjson
import zstandard

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


def write(out: Path, count: int, subdir: str, mutate: float = 0.0, seed: int = 1) -> None:
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
    body = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
    target = out / subdir
    target.mkdir(parents=True, exist_ok=True)
    (target / "repodata.json").write_bytes(body)
    (target / "repodata.json.zst").write_bytes(zstandard.ZstdCompressor(level=3).compress(body))
    noarch = out / "noarch"
    noarch.mkdir(exist_ok=True)
    if not (noarch / "repodata.json").exists():
        empty = orjson.dumps({"info": {"subdir": "noarch"}, "packages": {}, "packages.conda": {}})
        (noarch / "repodata.json").write_bytes(empty)
    (out / "channeldata.json").write_bytes(
        orjson.dumps({"subdirs": [subdir, "noarch"], "packages": {}})
    )
    print(f"{target / 'repodata.json'}: {count} records, {len(body) / 1e6:.0f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--records", type=int, default=600_000)
    parser.add_argument("--subdir", default="linux-64")
    parser.add_argument("--mutate", type=float, default=0.0)
    args = parser.parse_args()
    write(args.out, args.records, args.subdir, args.mutate)
