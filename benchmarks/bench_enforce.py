"""From an advisory load to a published index without the affected files, on PostgreSQL.

    .venv/bin/python benchmarks/bench_enforce.py [--records 600000] [--affected-packages 40]
        [--baseline-advisories 5000] [--pg postgres://postgres@127.0.0.1:5432] [--db psm_bench]
        [--workdir /tmp/psm-bench-enforce] [--json FILE]

What it does, in order:

1. Database: drops and creates `--db` on the `--pg` server and migrates it. Then, untimed: a
   conda channel `bench` with a policy (CVE score below 7, no `active` advisory, no AGPL, a
   30-day cooldown; malicious packages blocked as always), a passive mirror of its linux-64
   subdir (its upstream is never asked for anything), `--records` package rows
   (`gen_conda.record` shapes, written with COPY), the conda name mapping of every third
   package to a PyPI name, `--baseline-advisories` stored advisories (conda and mapped PyPI
   ones, on the first half of the packages); the mirror decided once and the channel
   published once, as after a sync.
2. An OSV file of `--affected-packages` PyPI advisories (CVSS 9.8, fixed in 10) on mapped
   packages of the second half, and one `MAL-` entry (every version of one more package):
   a few hundred files.
3. Timed: (a) `vulnerabilities_load` of that file, then `enforcement.enforce` for the mirror,
   as the task the load queues would run it (the queue's delay is not counted), with the time
   spent in (b) `packages_decide` and (c) `channel_publish` inside it, and the total. (On a
   tree without the enforcement service: `packages_decide` then `channel_publish`.)
4. Checked: the published `linux-64/repodata.json` lists none of the affected files, and
   lists every other file it listed before. Exits 1 otherwise.

Prints the figures and writes them as JSON (`<workdir>/enforce.json` unless `--json`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import re
import resource
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import orjson
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
SUBDIR = "linux-64"
SOURCE = "http://127.0.0.1:9/bench"  # never fetched: enforcement works from stored rows
CRITICAL = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"  # 9.8
FIXED = "10"
#: A repodata key: a filename then an object ('"pkg-1-0-x_0.conda":{'), however indented.
KEY = re.compile(rb'"([^"]+\.(?:conda|tar\.bz2))"\s*:\s*\{')


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def package_name(p: int) -> str:
    return f"pkg-{p:06d}"


def pypi_name(p: int) -> str:
    return f"py-{package_name(p)}"


# --- the channel, as a sync would have left it -------------------------------------------------


def create_channel(records: int, baseline: int):
    """The policy, channel, mirror, name mapping, stored advisories and package rows."""
    from channels_app.models import Channel
    from mirrors_app.models import Mirror
    from policies_app.models import NameMapping, Policy

    policy = Policy.objects.create(
        name="bench-enforce",
        package_type="conda",
        cve_score=7,
        cve_score_comparator="<",
        cve_statuses_excluded=["active"],
        licenses_exclude=["AGPL"],
        min_age_days=30,
    )
    channel = Channel.objects.create(name="bench", kind="conda", policy=policy)
    mirror = Mirror.objects.create(
        channel=channel,
        name="bench",
        mode="passive",
        kind="conda",
        source_url=SOURCE,
        options={"subdirs": [SUBDIR]},
    )
    packages = max(records // 20, 1)
    NameMapping.objects.bulk_create(
        (
            NameMapping(conda_name=package_name(p), ecosystem="PyPI", name=pypi_name(p))
            for p in range(0, packages, 3)
        ),
        batch_size=5000,
    )
    store_baseline_advisories(baseline, packages)
    copy_packages(channel, mirror, records)
    return channel, mirror


def store_baseline_advisories(count: int, packages: int) -> None:
    """Advisories already loaded, on the first half of the packages: by conda name, or by
    the mapped PyPI name for every third package."""
    from policies_app import osv
    from policies_app.models import Vulnerability

    half = max(packages // 2, 1)
    rows = []
    for n in range(count):
        p = (n * 7) % half
        ecosystem, name = ("PyPI", pypi_name(p)) if p % 3 == 0 else ("conda", package_name(p))
        advisory = osv.Advisory(
            osv_id=f"BASE-{n:05d}",
            aliases=[f"CVE-2023-{n:05d}"],
            cvss_score=(Decimal("9.8"), Decimal("5.0"), None)[n % 3],
            status="active" if n % 9 == 0 else "reported",
            affected=[
                {
                    "ecosystem": ecosystem,
                    "name": name,
                    "ranges": [
                        {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3"}]}
                    ],
                    "versions": [],
                }
            ],
        )
        rows.append(Vulnerability(**dataclasses.asdict(advisory)))
    Vulnerability.objects.bulk_create(rows, batch_size=1000)


def copy_packages(channel, mirror, records: int) -> None:
    """`records` package rows of the mirror, as a passive sync stores them, with COPY."""
    from django.db import connection, transaction
    from django.db.models import F
    from django.utils import timezone

    from benchmarks.gen_conda import record
    from channels_app.models import Channel, Package
    from mirrors_app.sync.ingest import COLUMNS

    # Added a year ago: the cooldown judges by the record's timestamp (2020) anyway.
    added = timezone.now() - dt.timedelta(days=365)
    sql = (
        f"COPY {Package._meta.db_table} ({', '.join(COLUMNS)}) FROM STDIN"  # as a sync writes them
    )
    with transaction.atomic(), connection.cursor() as cursor:
        with cursor.cursor.copy(sql) as copy:
            for i in range(records):
                filename, rec = record(i, SUBDIR)
                copy.write_row(
                    (
                        channel.pk,
                        mirror.pk,
                        SUBDIR,
                        filename,
                        rec["name"],
                        rec["version"],
                        rec["sha256"],
                        rec["md5"],
                        rec["size"],
                        f"{SOURCE}/{SUBDIR}/{filename}",
                        orjson.dumps(rec).decode(),
                        i + 1,
                        True,
                        False,
                        "",
                        "",
                        "",
                        added,
                        added,
                    )
                )
        Channel.objects.filter(pk=channel.pk).update(content_version=F("content_version") + 1)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Package._meta.db_table}")  # autovacuum's job, off here


# --- the advisories that arrive ------------------------------------------------------------


def new_advisories(records: int, affected_packages: int) -> tuple[list[dict], set[str]]:
    """OSV documents for mapped packages of the second half (and one malicious package),
    and the files they affect (PEP 440 order: the mapping names PyPI projects)."""
    from benchmarks.gen_conda import record

    packages = max(records // 20, 1)
    half = packages // 2
    mapped = [p for p in range(half, packages) if p % 3 == 0]
    step = max(len(mapped) // max(affected_packages + 1, 1), 1)
    chosen = mapped[::step][: affected_packages + 1]
    documents, affected = [], set()
    for k, p in enumerate(chosen):
        malicious = k == len(chosen) - 1
        events = [{"introduced": "0"}] if malicious else [{"introduced": "0"}, {"fixed": FIXED}]
        document = {
            "schema_version": "1.6.0",
            "id": f"MAL-2026-{k:04d}" if malicious else f"GHSA-bench-{k:04d}",
            "modified": "2026-12-01T00:00:00Z",
            "published": "2026-12-01T00:00:00Z",
            "aliases": [] if malicious else [f"CVE-2026-{k:05d}"],
            "summary": "malicious code" if malicious else "remote code execution",
            "affected": [
                {
                    "package": {"ecosystem": "PyPI", "name": pypi_name(p)},
                    "ranges": [{"type": "ECOSYSTEM", "events": events}],
                }
            ],
        }
        if not malicious:
            document["severity"] = [{"type": "CVSS_V3", "score": CRITICAL}]
        documents.append(document)
        for i in range(p * 20, min(p * 20 + 20, records)):
            filename, rec = record(i, SUBDIR)
            if malicious or Version(rec["version"]) < Version(FIXED):
                affected.add(filename)
    return documents, affected


# --- what clients see ----------------------------------------------------------------------


def published_filenames(channel) -> set[str]:
    """The files the published `linux-64/repodata.json` lists."""
    from channels_app import storage
    from channels_app.models import PublishedFile

    published = PublishedFile.objects.select_related("artifact").get(
        channel=channel, path=f"{SUBDIR}/repodata.json"
    )
    with storage.open_artifact(published.artifact) as handle:
        body = handle.read()
    return {match.decode() for match in KEY.findall(body)}


# --- the timed part ------------------------------------------------------------------------


def enforcement_service():
    """`policies_app.enforcement.enforce` when the enforcement service exists, else None."""
    from policies_app import enforcement

    return getattr(enforcement, "enforce", None)


def settle(mirror) -> dict:
    """Decide and publish once, as the sync that stored the packages would have (untimed)."""
    from channels_app.publishing import channel_publish
    from mirrors_app.sync.policy import packages_decide, policy_fingerprint

    started = time.perf_counter()
    change = packages_decide(mirror=mirror)
    decided = time.perf_counter()
    mirror.policy_fingerprint = policy_fingerprint(mirror)
    mirror.save(update_fields=["policy_fingerprint"])
    channel_publish(channel=mirror.channel, force=True)
    return {
        "decide_s": round(decided - started, 2),
        "publish_s": round(time.perf_counter() - decided, 2),
        "excluded": sum(change.excluded.values()),
        "allowed": change.allowed,
        "peak_rss_mb": peak_rss_mb(),
    }


def timed_enforcement(mirror, path: Path, *, use_service: bool | None = None) -> dict:
    """Load the advisories at `path` and make the published index follow; time each step.

    With the enforcement service, `enforce` runs for the mirror as the task queued by the load
    would (the queue's own delay is not counted); its decision and publish are timed inside
    it. Without it, `packages_decide` and `channel_publish` run one after the other."""
    from channels_app import publishing
    from mirrors_app.sync import policy as sync_policy
    from policies_app.services import vulnerabilities_load

    enforce = enforcement_service() if use_service in (None, True) else None
    result: dict = {"via": "enforcement.enforce" if enforce else "packages_decide + publish"}
    started = time.perf_counter()
    loaded = vulnerabilities_load(path=path)
    result["load_s"] = round(time.perf_counter() - started, 2)
    result["loaded"] = str(loaded)
    result["rss_after_load_mb"] = peak_rss_mb()
    step = time.perf_counter()
    if enforce is not None:
        with timed(sync_policy, "packages_decide", result, "decide_s"):
            with timed(publishing, "channel_publish", result, "publish_s"):
                records = enforce(trigger="advisories loaded (benchmark)", mirror_ids=[mirror.pk])
        result["enforce_s"] = round(time.perf_counter() - step, 2)
        result["left"] = sum(r.left for r in records)
        result["published"] = any(r.published for r in records)
    else:
        change = sync_policy.packages_decide(mirror=mirror)
        result["decide_s"] = round(time.perf_counter() - step, 2)
        result["left"] = len(change.leaving)
        step = time.perf_counter()
        result["published"] = publishing.channel_publish(channel=mirror.channel)
        result["publish_s"] = round(time.perf_counter() - step, 2)
    result["total_s"] = round(time.perf_counter() - started, 2)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


@contextmanager
def timed(module, name: str, into: dict, key: str) -> Iterator[None]:
    """Add the time spent in `module.name` to `into[key]` while in the block (the services
    import it from its module when called)."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        began = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            into[key] = round(into.get(key, 0) + time.perf_counter() - began, 2)

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, original)


def run(
    records: int,
    affected_packages: int,
    baseline: int,
    workdir: Path,
    *,
    use_service: bool | None = None,
) -> dict:
    """Set up, enforce, check; every figure in a dict (`ok`: the check passed).
    `use_service`: False times `packages_decide` + `channel_publish` without `enforce`."""
    result: dict = {"records": records, "baseline_advisories": baseline}
    started = time.perf_counter()
    channel, mirror = create_channel(records, baseline)
    result["setup_s"] = round(time.perf_counter() - started, 2)
    result["settle"] = settle(mirror)
    before = published_filenames(channel)
    documents, affected = new_advisories(records, affected_packages)
    path = workdir / "advisories.json"
    path.write_bytes(orjson.dumps(documents))
    result["new_advisories"] = len(documents)
    result["affected_files"] = len(affected)
    result["listed_before"] = len(before)
    result["affected_listed_before"] = len(affected & before)
    result.update(timed_enforcement(mirror, path, use_service=use_service))
    after = published_filenames(channel)
    result["listed_after"] = len(after)
    still = sorted(affected & after)
    lost = sorted(before - affected - after)
    result["still_listed"] = still[:20]
    result["wrongly_dropped"] = lost[:20]
    result["ok"] = bool(affected) and affected <= before and not still and not lost
    return result


# --- driver ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=600_000)
    parser.add_argument("--affected-packages", type=int, default=40)
    parser.add_argument("--baseline-advisories", type=int, default=5000)
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432", help="server URL")
    parser.add_argument("--db", default="psm_bench")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/psm-bench-enforce"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    workdir = args.workdir.resolve()
    shutil.rmtree(workdir / "data", ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.update(
        {
            "DATABASE_URL": f"{args.pg}/{args.db}",
            "PSM_DATA_DIR": str(workdir / "data"),
            "PSM_SECRET_KEY": "benchmark-only-not-secret",
            "CELERY_BROKER_URL": "memory://localhost/",  # tasks queued meanwhile (bz2 copies) stay queued
            "DJANGO_SETTINGS_MODULE": "psm.settings",
        }
    )
    sys.path.insert(0, str(ROOT))
    from benchmarks.bench_conda import fresh_database, git_describe

    load = os.getloadavg()
    print(f"load average {load[0]:.1f} at start; fresh database {args.db}", flush=True)
    fresh_database(args.pg, args.db)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    result = run(args.records, args.affected_packages, args.baseline_advisories, workdir)
    result.update(
        {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "git": git_describe(),
            "cpus": os.cpu_count(),
            "load_at_start": load,
            "load_at_end": os.getloadavg(),
        }
    )
    out = args.json or workdir / "enforce.json"
    out.write_text(json.dumps(result, indent=2))
    for line in report(result):
        print(line)
    print(f"results: {out}")
    sys.exit(0 if result["ok"] else 1)


def report(result: dict) -> Iterator[str]:
    settle = result["settle"]
    yield (
        f"setup {result['setup_s']} s ({result['records']:,} rows, "
        f"{result['baseline_advisories']:,} stored advisories); first decision "
        f"{settle['decide_s']} s ({settle['excluded']:,} excluded), first publish "
        f"{settle['publish_s']} s"
    )
    yield (
        f"{result['new_advisories']} new advisories affecting {result['affected_files']} files "
        f"(listed before: {result['affected_listed_before']}), via {result['via']}:"
    )
    steps = [("load", "load_s"), ("decide", "decide_s"), ("publish", "publish_s")]
    steps += [("enforce (decide, publish, record)", "enforce_s"), ("total", "total_s")]
    yield "  " + ", ".join(f"{label} {result[key]} s" for label, key in steps if key in result)
    yield (
        f"  left: {result['left']}; peak RSS {settle['peak_rss_mb']:.0f} MB after the first "
        f"decision and publish, {result['peak_rss_mb']:.0f} MB at the end (the index read "
        "to check it included)"
    )
    verdict = "OK" if result["ok"] else "FAILED"
    yield (
        f"published index: {result['listed_before']:,} files before, {result['listed_after']:,} "
        f"after; affected still listed: {len(result['still_listed'])}; others dropped: "
        f"{len(result['wrongly_dropped'])}: {verdict}"
    )


if __name__ == "__main__":
    main()
