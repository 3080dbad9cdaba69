"""Decision throughput: files decided per second for each package type, every rule kind on.

    .venv/bin/python benchmarks/bench_policy.py                  # conda, Python and R, full size
    .venv/bin/python benchmarks/bench_policy.py --only pypi      # one package type
    .venv/bin/python benchmarks/bench_policy.py --smoke          # small sizes (a CI check)

Sizes: `--records 600000` conda files; `--projects 200000` Python projects of
`--files-per-project 5` files (1,000,000 files); `--packages 20000` R packages (their current
files plus Archive versions, 50,000 files); `--advisories` per package type (default 5,000 for
conda and Python, 300 for R, every 25th a `MAL-` entry) and `--waivers 100`. The data
and rules are in `policy_data.py`: deterministic, in memory, no database.

Each package type runs in its own process (so its peak RSS is its own) and reports:

- `build`: making the candidates from the records (what `packages_decide` does after reading
  the rows);
- `compile`: the policy with its advisory index, waivers and the mirror filters;
- `decide`: `Decider.decide_all` over every file, as `packages_decide` calls it: the filters,
  every policy rule, waivers, the allow list's dependency closure, the legacy rule; the
  headline decisions/s; `filters` is the part spent in the mirror filters;
- `check`: the per-file policy rules alone (`CompiledPolicy.check`, no filters, no closure);
- peak RSS of the process, and after building the candidates;
- how many files each rule kind kept out (so a run shows every rule kind at work).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("conda", "pypi", "cran")
SMOKE = {"records": 4000, "projects": 2000, "packages": 1000, "advisories": 200, "waivers": 20}


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def make_case(kind: str, args: argparse.Namespace):
    from benchmarks import policy_data

    conda_advisories = args.advisories if args.advisories is not None else 5000
    if kind == "conda":
        return policy_data.conda_case(args.records, conda_advisories, args.waivers)
    if kind == "pypi":
        return policy_data.python_case(
            args.projects, args.files_per_project, conda_advisories, args.waivers
        )
    r_advisories = max(args.advisories // 16, 40) if args.advisories is not None else 300
    return policy_data.r_case(args.packages, r_advisories, args.waivers // 2)


def measure(case) -> dict:
    """Time one case's decisions (see the module docstring)."""
    result: dict = {"kind": case.kind, "data": case.describe, "files": case.files}
    started = time.perf_counter()
    candidates = case.make_candidates()
    result["build_s"] = round(time.perf_counter() - started, 2)
    result["rss_after_build_mb"] = peak_rss_mb()

    started = time.perf_counter()
    decider = case.decider()
    result["compile_s"] = round(time.perf_counter() - started, 2)
    filters_s = 0.0
    if decider.filters is not None:
        inner = decider.filters

        def timed(files):
            nonlocal filters_s
            began = time.perf_counter()
            try:
                return inner(files)
            finally:
                filters_s += time.perf_counter() - began

        decider.filters = timed

    started = time.perf_counter()
    decisions = decider.decide_all(candidates)
    decide_s = time.perf_counter() - started
    result["decide_s"] = round(decide_s, 2)
    result["decisions_per_s"] = round(len(candidates) / decide_s)
    result["filters_s"] = round(filters_s, 2)
    result.update(_tally(decisions))
    result["rules"] = {
        "advisories": len(case.advisories),
        "malicious_advisories": sum(a.malicious for a in case.advisories),
        "mapping_names": len(case.mapping),
        "allow": len(case.policy.allow_specs),
        "block": len(case.policy.block_specs),
        "exclusions": len(case.policy.exclusions),
        "waivers": len(case.waivers),
        "filters": sorted(case.filters or ()),
    }
    del candidates, decisions

    candidates = case.make_candidates()  # fresh: no rattler record cached by the first pass
    policy = decider.policy
    started = time.perf_counter()
    dropped = sum(policy.check(c)[0] is not None for c in candidates)
    check_s = time.perf_counter() - started
    result["check_s"] = round(check_s, 2)
    result["check_per_s"] = round(len(candidates) / check_s)
    result["check_dropped"] = dropped
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def _tally(decisions: dict) -> dict:
    blocked: Counter[str] = Counter()
    kept: Counter[str] = Counter()
    for decision in decisions.values():
        if decision.waived:  # past at least one rule by a waiver (maybe kept out by the next)
            kept["waived"] += 1
        if not decision.allowed:
            blocked[decision.rule] += 1
        elif decision.reason.startswith("kept by exclusion"):
            kept["exclusion"] += 1
        elif decision.reason.startswith("noarch dependency of"):
            kept["noarch dependency"] += 1
        elif decision.reason.startswith("dependency of"):
            kept["dependency"] += 1
    return {
        "allowed": sum(d.allowed for d in decisions.values()),
        "blocked_by_rule": dict(blocked.most_common()),
        "let_in_by": dict(kept.most_common()),  # and "waived": waivers applied
    }


def run_child(kind: str, args: argparse.Namespace) -> dict:
    """Measure one package type in a process of its own (its own peak RSS)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, __file__, "--only", kind, "--child-json", out.name]
        for name in ("records", "projects", "files_per_project", "packages", "waivers"):
            command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
        if args.advisories is not None:
            command += ["--advisories", str(args.advisories)]
        subprocess.run(command, check=True, cwd=ROOT)
        return json.loads(Path(out.name).read_text())


def print_result(result: dict) -> None:
    print(
        f"{result['kind']:<6} {result['data']}: decide {result['decide_s']:.2f} s, "
        f"{result['decisions_per_s']:,} files/s (filters {result['filters_s']:.2f} s); "
        f"check {result['check_per_s']:,} files/s; build {result['build_s']:.2f} s, "
        f"compile {result['compile_s']:.2f} s; peak RSS {result['peak_rss_mb']:.0f} MB "
        f"({result['rss_after_build_mb']:.0f} MB after building)",
        flush=True,
    )
    print(f"       allowed {result['allowed']:,}; kept out by {result['blocked_by_rule']}")
    print(f"       let in by {result['let_in_by']}; rules {result['rules']}", flush=True)


def git_describe() -> str:
    found = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    return found.stdout.strip()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=KINDS, action="append", help="repeatable")
    parser.add_argument("--records", type=int, default=600_000, help="conda files")
    parser.add_argument("--projects", type=int, default=200_000, help="Python projects")
    parser.add_argument("--files-per-project", type=int, default=5)
    parser.add_argument("--packages", type=int, default=20_000, help="R packages")
    parser.add_argument("--advisories", type=int, help="per type (R: a 16th of it)")
    parser.add_argument("--waivers", type=int, default=100)
    parser.add_argument("--smoke", action="store_true", help="small sizes, for a quick check")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--child-json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        for name, value in SMOKE.items():
            setattr(args, name, value)
    return args


def setup_django() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "psm.settings")
    import django

    django.setup()


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    kinds = args.only or list(KINDS)
    if args.child_json:
        setup_django()
        result = measure(make_case(kinds[0], args))
        args.child_json.write_text(json.dumps(result))
        return [result]
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} at start ({os.cpu_count()} CPUs)", flush=True)
    results = []
    for kind in kinds:
        result = run_child(kind, args)
        print_result(result)
        results.append(result)
    if args.json:
        summary = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "git": git_describe(),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "cpus": os.cpu_count(),
            "load_at_start": load,
            "results": results,
        }
        args.json.write_text(json.dumps(summary, indent=2))
    return results


if __name__ == "__main__":
    main()
