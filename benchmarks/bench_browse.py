"""The package browser's three pages on a conda-forge-sized channel, on PostgreSQL.

    .venv/bin/python benchmarks/bench_browse.py [--records 600000] [--repeat 15]
        [--pg postgres://postgres@127.0.0.1:5432] [--db psm_bench_browse] [--json FILE]

Untimed: drops and creates `--db`, migrates it, and writes `--records` package rows into one
public conda channel with one INSERT ... SELECT (names `pkg-NNNNNN`, 20 files a name over five
platforms, as `gen_conda.py` shapes them; every 50th file excluded by the policy, so the
served set is a strict subset), then VACUUM (ANALYZE), as autovacuum would.

Timed, in process through Django's test client (URL routing, permission filters, queries,
templates; no HTTP server): the channel list (`/`), a channel's first page, a deep page
(the middle of the list), a search (a substring of the names), its second page, and a
package's page. Each is requested `--repeat` times after one warm-up; the median and the
slowest are reported, with the number of SQL queries each page makes. It asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FILL = """
INSERT INTO channels_app_package (unit, filename, name, version, sha256, md5, size,
    upstream_url, added_at, updated_at, channel_id, error, on_demand, record, entry_digest,
    removed, excluded_reason, would_exclude_reason)
SELECT (ARRAY['linux-64','noarch','osx-64','osx-arm64','win-64'])[1 + i %% 5],
       format('pkg-%%s-%%s.%%s.%%s-h%%s_0.conda', lpad((i / 20)::text, 6, '0'), i %% 31, i %% 41,
              i %% 20, i),
       'pkg-' || lpad((i / 20)::text, 6, '0'),
       format('%%s.%%s.%%s', i %% 31, i %% 41, i %% 20), '', '', 1000 + i, '', now(), now(),
       %(channel)s, '', true, '{}', 0, false,
       CASE WHEN i %% 50 = 0 THEN 'license GPL3 is excluded' ELSE '' END, ''
FROM generate_series(0, %(records)s - 1) AS i
"""


def fill(records: int) -> object:
    from django.db import connection

    from channels_app.models import Channel

    channel = Channel.objects.create(name="forge", kind="conda", description="benchmark")
    with connection.cursor() as cursor:
        cursor.execute(FILL, {"channel": channel.pk, "records": records})
        cursor.execute("VACUUM (ANALYZE) channels_app_package")
    return channel


def measure(client, url: str, repeat: int) -> dict:
    from django.db import connection

    queries = []

    def count(execute, sql, params, many, context):
        queries.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        client.get(url)
        times.append((time.perf_counter() - started) * 1000)
    return {
        "url": url,
        "median_ms": round(statistics.median(times), 1),
        "max_ms": round(max(times), 1),
        "queries": len(queries),
    }


def run(records: int, repeat: int) -> dict:
    from django.test import Client

    from psm.browse import queries

    started = time.monotonic()
    channel = fill(records)
    filled = round(time.monotonic() - started, 1)
    names = queries.package_names(channel).count()
    middle = names // 2 // 50 + 1
    client = Client()
    pages = {
        "channel list": "/",
        "channel, page 1": "/channels/forge/",
        f"channel, page {middle}": f"/channels/forge/?page={middle}",
        "search '0123'": "/channels/forge/?q=0123",
        "search '012', page 2": "/channels/forge/?q=012&page=2",
        "package": "/channels/forge/packages/pkg-012345/",
    }
    return {
        "records": records,
        "served_names": names,
        "fill_s": filled,
        "pages": {label: measure(client, url, repeat) for label, url in pages.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=600_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432", help="server URL")
    parser.add_argument("--db", default="psm_bench_browse")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.update(
        {
            "DATABASE_URL": f"{args.pg}/{args.db}",
            "PSM_DATA_DIR": os.environ.get("PSM_DATA_DIR", "/tmp/psm-bench-browse"),
            "PSM_SECRET_KEY": "benchmark-only-not-secret",
            "CELERY_BROKER_URL": "memory://localhost/",
            "PSM_ALLOWED_HOSTS": "testserver",  # the test client's host
            "DJANGO_SETTINGS_MODULE": "psm.settings",
        }
    )
    sys.path.insert(0, str(ROOT))
    from benchmarks.bench_conda import fresh_database

    load = os.getloadavg()
    fresh_database(args.pg, args.db)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    result = run(args.records, args.repeat)
    result.update({"cpus": os.cpu_count(), "load_at_start": load, "load_at_end": os.getloadavg()})
    print(f"{result['records']:,} files, {result['served_names']:,} served names")
    print(f"{'page':<24}{'median ms':>10}{'max ms':>9}{'queries':>9}")
    for label, page in result["pages"].items():
        print(f"{label:<24}{page['median_ms']:>10}{page['max_ms']:>9}{page['queries']:>9}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
