"""The migrations work on the embedded default too (SQLite, no DATABASE_URL), not only on
the PostgreSQL the other tests use: the set-up command of the README migrates from scratch,
and an upgrade may be rolled back."""

from __future__ import annotations

import os
import subprocess
import sys

from django.conf import settings


def _manage(data_dir, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env["PSM_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_migrations_apply_and_roll_back_on_the_embedded_sqlite_database(tmp_path):
    for args in (
        ("migrate", "--noinput"),
        ("migrate", "channels_app", "0009", "--noinput"),  # before the renames of 0010
        ("migrate", "mirrors_app", "0006", "--noinput"),
        ("migrate", "--noinput"),
        ("makemigrations", "--check", "--dry-run"),
    ):
        done = _manage(tmp_path, *args)
        assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    assert (tmp_path / "psm.sqlite3").exists()
