"""What PostgreSQL spends writing a sync's rows into the package table, by what it checks.

    .venv/bin/python benchmarks/package_copy.py postgres://postgres@127.0.0.1:5432/psm_bench
        [--batch 5000] [--rounds 2] [--work-mem 32MB]

Run it on a benchmark database after a full sync (bench_conda.py leaves one; migrations up to
channels_app 0016). It COPies the package table's rows, in transactions of `--batch` rows as
a sync writes them, into three copies of the table with its indexes: without any reference
check, with the two foreign keys on `channel_id` and `mirror_id` that the table had before
migration 0016 (deferred, as Django makes them), and with that migration's statement
trigger. It prints the seconds of each (COPY and commit, then the commit alone), round after
round, and drops the copies.
"""

from __future__ import annotations

import argparse
import time

import psycopg

COLUMNS = (
    "channel_id, mirror_id, unit, filename, name, version, sha256, md5, size, upstream_url, "
    "record, entry_digest, on_demand, removed, error, excluded_reason, would_exclude_reason, "
    "added_at, updated_at"
)
COPIES = {
    "psm_copy_unchecked": [],
    "psm_copy_foreign_keys": [
        "ALTER TABLE psm_copy_foreign_keys ADD FOREIGN KEY (channel_id) "
        "REFERENCES channels_app_channel (id) DEFERRABLE INITIALLY DEFERRED",
        "ALTER TABLE psm_copy_foreign_keys ADD FOREIGN KEY (mirror_id) "
        "REFERENCES mirrors_app_mirror (id) DEFERRABLE INITIALLY DEFERRED",
    ],
    "psm_copy_statement_trigger": [
        "CREATE TRIGGER psm_copy_references AFTER INSERT ON psm_copy_statement_trigger "
        "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
        "EXECUTE FUNCTION psm_package_references_inserted()",
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dsn")
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work-mem", default="32MB", help="as the sync's writing thread sets it")
    args = parser.parse_args()
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        with conn.cursor().copy(f"COPY channels_app_package ({COLUMNS}) TO STDOUT") as copy:
            lines = b"".join(bytes(block) for block in copy).split(b"\n")[:-1]
        print(f"{len(lines)} rows, in transactions of {args.batch}", flush=True)
        conn.execute("SELECT set_config('work_mem', %s, false)", [args.work_mem])
        try:
            for table, checks in COPIES.items():
                conn.execute(f"DROP TABLE IF EXISTS {table}")
                conn.execute(f"CREATE TABLE {table} (LIKE channels_app_package INCLUDING ALL)")
                for statement in checks:
                    conn.execute(statement)
            for round_ in range(1, args.rounds + 1):
                for table in COPIES:
                    conn.execute(f"TRUNCATE {table}")
                    conn.execute("CHECKPOINT")
                    total, commits = _copy(conn, table, lines, args.batch)
                    print(f"round {round_}: {table:<28} {total:6.2f} s, commit {commits:.2f} s")
        finally:
            for table in COPIES:
                conn.execute(f"DROP TABLE IF EXISTS {table}")


def _copy(conn: psycopg.Connection, table: str, lines: list[bytes], batch: int):
    started, commits = time.monotonic(), 0.0
    for start in range(0, len(lines), batch):
        with conn.transaction():
            with conn.cursor().copy(f"COPY {table} ({COLUMNS}) FROM STDIN") as copy:
                copy.write(b"\n".join(lines[start : start + batch]) + b"\n")
            committing = time.monotonic()
        commits += time.monotonic() - committing
    return time.monotonic() - started, commits


if __name__ == "__main__":
    main()
