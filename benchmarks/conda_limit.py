"""The physical limit of a conda sync: what any mirror must do at the least, done the fastest way.

    python benchmarks/conda_limit.py URL DSN OUTDIR

Streams URL (a subdir's `repodata.json.zst`) through zstd into a temporary file, parses it
with orjson (one call; memory is no concern here), COPYs one row per record (unit, filename,
compact JSON) into an unindexed table of the DSN's database, then reads the rows back in
filename order and writes the subdir's index (`repodata.json` and `.zst`, as PSM renders
them) into OUTDIR. No checks, no policy, no diffing: `bench_conda.py` runs it beside PSM's
syncs and reports each sync as a multiple of it. Prints one line of JSON: each step's seconds.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson
import psycopg
import zstandard

SECTIONS = (("packages", ".tar.bz2"), ("packages.conda", ".conda"))
TABLE = "bench_limit_package"


def main(url: str, dsn: str, outdir: Path) -> dict[str, float]:
    steps: dict[str, float] = {}
    started = mark = time.monotonic()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        steps[name] = round(now - mark, 2)
        mark = now

    with tempfile.TemporaryFile() as body:
        with urllib.request.urlopen(url) as response:
            reader = zstandard.ZstdDecompressor().stream_reader(response)
            while chunk := reader.read(1 << 20):
                body.write(chunk)
        lap("fetch")
        body.seek(0)
        document = orjson.loads(body.read())
    lap("parse")
    subdir = document.get("info", {}).get("subdir", "linux-64")
    with psycopg.connect(dsn) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(f"CREATE TABLE {TABLE} (unit text, filename text, record text)")
        with conn.cursor().copy(f"COPY {TABLE} (unit, filename, record) FROM STDIN") as copy:
            for section, _ in SECTIONS:
                for filename, record in document.get(section, {}).items():
                    copy.write_row((subdir, filename, orjson.dumps(record).decode()))
        conn.commit()
        del document
        lap("copy")
        outdir.mkdir(parents=True, exist_ok=True)
        with (
            open(outdir / "repodata.json", "wb") as plain,
            open(outdir / "repodata.json.zst", "wb") as packed,
            zstandard.ZstdCompressor(level=3, threads=-1).stream_writer(packed) as zst,
        ):
            parts = [b'{"info":' + orjson.dumps({"subdir": subdir})]
            for section, suffix in SECTIONS:
                parts.append(b',"' + section.encode() + b'":{')
                first = True
                with conn.cursor(name="limit") as rows:
                    rows.itersize = 10_000
                    rows.execute(
                        f"SELECT filename, record FROM {TABLE} WHERE unit = %s "
                        "AND filename LIKE %s ORDER BY filename",
                        (subdir, "%" + suffix),
                    )
                    for filename, record in rows:
                        parts.append(
                            (b"" if first else b",")
                            + orjson.dumps(filename)
                            + b":"
                            + record.encode()
                        )
                        first = False
                        if len(parts) >= 2000:
                            block = b"".join(parts)
                            plain.write(block)
                            zst.write(block)
                            parts = []
                parts.append(b"}")
            parts.append(b',"removed":[],"repodata_version":1}')
            block = b"".join(parts)
            plain.write(block)
            zst.write(block)
        conn.execute(f"DROP TABLE {TABLE}")
        conn.commit()
    lap("write index")
    steps["total"] = round(time.monotonic() - started, 2)
    return steps


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))))
