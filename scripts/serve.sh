#!/usr/bin/env bash
# The one "run the server" command: `bash scripts/serve.sh`.
#
# Embedded mode by default: SQLite, the file-system Celery broker and every file under
# PSM_DATA_DIR (./var), so nothing but Python 3.11+ is needed. DATABASE_URL, CELERY_BROKER_URL and
# the other variables in the README are honoured when set. Starts a Celery worker with the
# scheduler embedded (-B) and the web server on PSM_BIND (127.0.0.1:8000); Ctrl+C stops both.
# Binding beyond loopback also needs PSM_ALLOWED_HOSTS.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f pyproject.toml ] || { echo "scripts/serve.sh: cannot find the PSM repository" >&2; exit 1; }

PYTHON=${PYTHON:-python3}
VENV=.venv
BIND=${PSM_BIND:-127.0.0.1:8000}

say() { printf '==> %s\n' "$*"; }

# --- Python environment ---------------------------------------------------------------------

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "scripts/serve.sh needs Python 3.11 or newer as '$PYTHON' (set PYTHON=...)." >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
# Reinstall only when the dependencies may have changed since the last install.
stamp="$VENV/.psm-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    say "installing psm into $VENV"
    "$VENV/bin/python" -m pip install --quiet -e .
    touch "$stamp"
fi
PY="$VENV/bin/python"

# --- Database, static files, first administrator --------------------------------------------

say "migrating the database"
"$PY" manage.py migrate --noinput
say "collecting static files"
"$PY" manage.py collectstatic --noinput --verbosity 0

has_admin=$("$PY" manage.py shell -c "from django.contrib.auth import get_user_model
print(get_user_model().objects.filter(is_superuser=True).exists())" | tail -n 1)
if [ "$has_admin" != "True" ]; then
    if [ -n "${PSM_ADMIN_PASSWORD:-}" ]; then
        admin=${PSM_ADMIN_USER:-admin}
        say "creating the administrator '$admin'"
        DJANGO_SUPERUSER_PASSWORD="$PSM_ADMIN_PASSWORD" "$PY" manage.py createsuperuser \
            --noinput --username "$admin" --email "${PSM_ADMIN_EMAIL:-$admin@localhost}"
    else
        cat <<EOF

No administrator exists yet. Create one (in another terminal) with:

    $VENV/bin/python manage.py createsuperuser

or set PSM_ADMIN_PASSWORD (and optionally PSM_ADMIN_USER) before running scripts/serve.sh.

EOF
    fi
fi

# --- Worker and web server ------------------------------------------------------------------

worker_pid="" web_pid=""
cleanup() {
    trap - EXIT INT TERM
    [ -z "$web_pid" ] || kill "$web_pid" 2>/dev/null || true
    [ -z "$worker_pid" ] || kill "$worker_pid" 2>/dev/null || true  # warm shutdown
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# SQLite takes one writer at a time: keep the worker small.
concurrency=()
case "${DATABASE_URL:-sqlite}" in sqlite*) concurrency=(--concurrency 2) ;; esac

say "starting the Celery worker with the embedded scheduler"
"$PY" -m celery -A psm worker -B --loglevel=INFO "${concurrency[@]}" \
    --scheduler django_celery_beat.schedulers:DatabaseScheduler &
worker_pid=$!

# --insecure: serve the admin's static files although DEBUG is off (fine for embedded use;
# production serves STATIC_ROOT from the web server in front).
say "starting the web server on http://$BIND/ (admin: http://$BIND/admin/)"
"$PY" manage.py runserver --insecure --noreload "$BIND" &
web_pid=$!

# Both run in the background so Ctrl+C or a TERM reaches this script's trap at once.
status=0
wait "$web_pid" || status=$?
exit "$status"
