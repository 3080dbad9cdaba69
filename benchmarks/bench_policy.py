"""Policy engine throughput: records decided per second by a policy using every rule kind.

    .venv/bin/python benchmarks/bench_policy.py [--records 600000]

Records come from gen_conda.py's generator (conda-forge shapes); no database is needed. Reports
the per-record rules alone (`check`) and the whole evaluation (`decide_all`: exclusions, the
allow list with its dependency closure, and the legacy rule).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "psm.settings")

import django  # noqa: E402

django.setup()

from benchmarks.gen_conda import record  # noqa: E402
from policies_app.engine import Advisory, CompiledPolicy, Entry  # noqa: E402
from policies_app.models import Policy  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=600_000)
    args = parser.parse_args()
    entries = [Entry(*record(i, "linux-64"), "linux-64") for i in range(args.records)]
    policy = Policy(
        name="bench",
        platforms_include=["linux-64", "noarch"],
        platforms_exclude=["win-32"],
        licenses_exclude=["GPL3", "AGPL"],
        unknown_license="block",
        cve_score=Decimal("7"),
        cve_score_comparator="<",
        cve_statuses_excluded=["active"],
        allow_specs=[f"pkg-{n:06d}" for n in range(0, args.records // 20, 50)],
        block_specs=["pkg-000100 >=10", "pkg-000200[build=*_1]"],
        include_dependencies=True,
        created_after=dt.date(2020, 1, 1),
        min_age_days=30,
        exclusions=["pkg-000300"],
    )
    advisories = [
        Advisory(
            f"CVE-2024-{n:04d}",
            Decimal("9.8") if n % 2 else Decimal("5.0"),
            "reported",
            [
                {
                    "ecosystem": "conda",
                    "name": f"pkg-{n:06d}",
                    "ranges": [
                        {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "20"}]}
                    ],
                }
            ],
        )
        for n in range(0, args.records // 20, 7)
    ]
    compiled = CompiledPolicy(policy, advisories, today=dt.date(2026, 11, 25))

    started = time.perf_counter()
    dropped = sum(compiled.check(entry) is not None for entry in entries)
    check_s = time.perf_counter() - started
    started = time.perf_counter()
    decisions = compiled.decide_all(entries)
    decide_s = time.perf_counter() - started
    allowed = sum(d.allowed for d in decisions.values())
    print(f"records: {len(entries):,}; advisories: {len(advisories):,}")
    print(
        f"check (per-record rules): {check_s:.2f} s, {len(entries) / check_s:,.0f} records/s, "
        f"{dropped:,} dropped"
    )
    print(
        f"decide_all (everything):  {decide_s:.2f} s, {len(entries) / decide_s:,.0f} records/s, "
        f"{allowed:,} allowed"
    )


if __name__ == "__main__":
    main()
