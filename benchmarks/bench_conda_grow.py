"""Peak memory of a conda re-sync that finds many more records than are stored.

    .venv/bin/python benchmarks/bench_conda_grow.py [--stored 200000] [--records 600000]
        [--workdir /tmp/psm-bench-grow] [--pg postgres://postgres@127.0.0.1:5432]
        [--db psm_bench_grow] [--policy]

Generates a subdir of `--records` records and one of its first `--stored` (gen_conda.py makes
record i the same in both), syncs the smaller one into a fresh database, then serves the
larger one and syncs again: the second sync takes in the difference (400,000 new records by
default, more than half of them while the child process checks the document and keeps back
what it found). Prints both syncs (wall, peak RSS of the worker and its child, rows) as JSON.
Uses `bench_conda.py`'s upstream, database and sync helpers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_conda as bench  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stored", type=int, default=200_000)
    parser.add_argument("--records", type=int, default=600_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/psm-bench-grow"))
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--db", default="psm_bench_grow")
    parser.add_argument("--policy", action="store_true", help="as bench_conda.py --policy")
    args = parser.parse_args()
    work = args.workdir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    small, large, chan = work / "small", work / "large", work / "chan"
    # No repodata.jlap: only the documents are swapped below, and the re-sync is to read the
    # whole larger one.
    bench.generate(small, args.stored, jlap=False)
    bench.generate(large, args.records, jlap=False)
    shutil.copytree(small, chan)
    upstream = bench.make_upstream(chan)
    url = f"http://127.0.0.1:{upstream.server_address[1]}"
    dsn = f"{args.pg}/{args.db}"
    env = bench.psm_env(dsn, work / "data")
    bench.fresh_database(args.pg, args.db)
    bench.manage(env, "migrate", "--noinput")
    bench.manage(env, "shell", "-c", bench.SETUP.format(url=url, subdir=bench.SUBDIR))
    if args.policy:
        bench.manage(env, "shell", "-c", bench.POLICY)
    runs = [bench.run_sync(env, dsn, work, f"{args.stored} stored", 1, False)]
    for name in ("repodata.json", "repodata.json.zst"):
        shutil.copy(large / bench.SUBDIR / name, chan / bench.SUBDIR / name)
    bench.vacuum_analyze(dsn)
    runs.append(bench.run_sync(env, dsn, work, f"{args.records} found", 2, False))
    upstream.shutdown()
    keys = ("label", "state", "wall_s", "peak_rss_mb", "ingested", "live_rows", "load_before")
    print(json.dumps([{key: run[key] for key in keys} for run in runs], indent=2))


if __name__ == "__main__":
    main()
