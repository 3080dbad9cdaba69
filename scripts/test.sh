#!/usr/bin/env bash
# The one test command: `bash scripts/test.sh [pytest arguments]`.
#
# Needs only Python 3.11+. Creates .venv, installs PSM with its test extras, makes sure
# PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) are running, starting or installing them
# when it can, installs R (Debian's r-base-core) for the R client tests and Chromium with its
# driver for the browser tests when it can, then runs ruff and pytest. Without PostgreSQL the
# tests fall back to SQLite (with a warning); without Redis the worker integration tests use
# the embedded file-system broker.
# An already-set DATABASE_URL or PSM_TEST_BROKER_URL is used as is.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f pyproject.toml ] || { echo "scripts/test.sh: cannot find the PSM repository" >&2; exit 1; }

PYTHON=${PYTHON:-python3}
VENV=.venv
PG_URL=postgres://postgres@127.0.0.1:5432/psm
REDIS_URL=redis://127.0.0.1:6379/15
AMQP_URL=amqp://guest:guest@127.0.0.1:5672//

say() { printf '==> %s\n' "$*"; }
warn() { printf '\n*** WARNING: %s\n\n' "$*" >&2; }

# --- Python environment ---------------------------------------------------------------------

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "scripts/test.sh needs Python 3.11 or newer as '$PYTHON' (set PYTHON=...)." >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
# Reinstall only when the dependencies may have changed since the last install.
stamp="$VENV/.psm-test-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    say "installing psm with its test dependencies into $VENV"
    "$VENV/bin/python" -m pip install --quiet -e ".[test]"
    touch "$stamp"
fi
PY="$VENV/bin/python"

# --- System services ------------------------------------------------------------------------

apt_updated=""
apt_install() {
    # Only as root on a Debian-like system; anything else is left to the developer.
    command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ] || return 1
    say "installing $* with apt-get"
    if [ -z "$apt_updated" ]; then
        apt-get update -qq && apt_updated=1 || return 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Wait up to $1 seconds for the command that follows to succeed.
wait_for() {
    local seconds=$1
    shift
    for _ in $(seq "$((seconds * 2))"); do
        "$@" && return 0
        sleep 0.5
    done
    return 1
}

pg_ok() {
    # Connects (and authenticates) as the tests will, to the always-present `postgres` database.
    "$PY" -c 'import sys, psycopg; psycopg.connect(sys.argv[1], connect_timeout=3).close()' \
        "${PG_URL%/*}/postgres" >/dev/null 2>&1
}

start_postgres() {
    local installed=""
    if [ ! -d /etc/postgresql ] || ! command -v pg_ctlcluster >/dev/null; then
        apt_install postgresql || return 1
        installed=1
    fi
    local version
    for version in $(ls /etc/postgresql); do
        if [ -n "$installed" ]; then
            # A cluster we just installed: let the tests in as `postgres` from loopback.
            sed -i '1i host all postgres 127.0.0.1/32 trust' \
                "/etc/postgresql/$version/main/pg_hba.conf"
        fi
        say "starting PostgreSQL $version"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
        if [ -n "$installed" ]; then  # the package may have started it before our pg_hba line
            pg_ctlcluster --skip-systemctl-redirect "$version" main reload >/dev/null 2>&1 || true
        fi
    done
    wait_for 15 pg_ok
}

redis_ok() {
    "$PY" -c 'import sys, redis; redis.Redis.from_url(sys.argv[1], socket_timeout=2).ping()' \
        "$REDIS_URL" >/dev/null 2>&1
}

start_redis() {
    command -v redis-server >/dev/null || apt_install redis-server || return 1
    say "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        >/dev/null || return 1
    wait_for 10 redis_ok
}

amqp_ok() {
    "$PY" -c 'import sys, kombu; kombu.Connection(sys.argv[1], connect_timeout=3).ensure_connection(max_retries=1)' \
        "$AMQP_URL" >/dev/null 2>&1
}

start_rabbitmq() {
    # Installed but stopped: start it (a fresh machine without it skips the RabbitMQ case).
    command -v rabbitmq-server >/dev/null || return 1
    say "starting RabbitMQ"
    if command -v service >/dev/null; then
        service rabbitmq-server start >/dev/null 2>&1 || rabbitmq-server -detached >/dev/null 2>&1
    else
        rabbitmq-server -detached >/dev/null 2>&1
    fi
    wait_for 60 amqp_ok
}

if [ -n "${DATABASE_URL:-}" ]; then
    say "database: DATABASE_URL as set"
elif pg_ok || start_postgres; then
    export DATABASE_URL="$PG_URL"
    say "database: PostgreSQL at 127.0.0.1:5432"
else
    warn "PostgreSQL is not reachable on 127.0.0.1:5432 as user postgres (trust auth) and could
not be started or installed: the tests run on SQLite instead. CI must run them on PostgreSQL."
fi

if [ -n "${PSM_TEST_BROKER_URL:-}" ]; then
    say "broker: PSM_TEST_BROKER_URL as set"
elif redis_ok || start_redis; then
    export PSM_TEST_BROKER_URL="$REDIS_URL"
    say "broker: Redis at 127.0.0.1:6379"
else
    say "broker: Redis unavailable; the worker tests use the embedded file-system broker"
fi

# RabbitMQ: the second broker of the worker fault tests (Redis is the first).
if [ -n "${PSM_TEST_AMQP_URL:-}" ]; then
    say "RabbitMQ: PSM_TEST_AMQP_URL as set"
elif amqp_ok || start_rabbitmq; then
    export PSM_TEST_AMQP_URL="$AMQP_URL"
    say "RabbitMQ: at 127.0.0.1:5672"
else
    warn "RabbitMQ is not reachable on 127.0.0.1:5672 and could not be started: the worker
fault tests run on Redis only."
fi

# R's install.packages is the client of the R channel tests (they skip, saying so, without it).
if command -v Rscript >/dev/null; then
    say "R: $(command -v Rscript)"
elif apt_install --no-install-recommends r-base-core && command -v Rscript >/dev/null; then
    say "R: installed r-base-core"
else
    warn "R (Rscript) is not installed and could not be installed with apt (r-base-core): the
R client tests are skipped."
fi

# Headless Chromium and its WebDriver drive the admin and the package browser (tests/browser).
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    say "Chromium: $(command -v chromium)"
elif apt_install --no-install-recommends chromium chromium-driver && command -v chromedriver >/dev/null; then
    say "Chromium: installed chromium and chromium-driver"
else
    warn "Chromium and ChromeDriver are not installed and could not be installed with apt
(chromium chromium-driver): the browser tests are skipped."
fi

# --- Node.js: the OpenID Connect provider of the single sign-on tests --------------------------

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt_install nodejs npm || true
fi
if command -v node >/dev/null && command -v npm >/dev/null; then
    oidc_dir=tests/fixtures/oidc
    oidc_stamp=$oidc_dir/node_modules/.psm-installed
    if [ ! -f "$oidc_stamp" ] || [ "$oidc_dir/package-lock.json" -nt "$oidc_stamp" ]; then
        say "installing the test OpenID Connect provider (npm ci in $oidc_dir)"
        if (cd "$oidc_dir" && npm ci --no-audit --no-fund --loglevel=error); then
            touch "$oidc_stamp"
        else
            warn "npm ci failed in $oidc_dir: the single sign-on tests will be skipped."
        fi
    fi
else
    warn "Node.js and npm are not installed and could not be: the single sign-on tests
(tests/psm/test_oidc.py) will be skipped."
fi

# Every file the tests write (embedded broker, SQLite test database, blobs) goes here.
PSM_DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/psm-test.XXXXXX")
export PSM_DATA_DIR
trap 'rm -rf "$PSM_DATA_DIR"' EXIT

# --- Lint and test --------------------------------------------------------------------------

say "ruff check"
"$VENV/bin/ruff" check .

# One pytest process per core (pytest-xdist); each uses a Redis database of its own as the test
# broker (tests/fixtures/celery_worker.py). PSM_TEST_PROCESSES=0 runs everything in this process.
processes=${PSM_TEST_PROCESSES:-auto}
say "pytest -n $processes $*"
status=0
"$PY" -m pytest -n "$processes" "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure." >&2
fi

# The whole run on PostgreSQL, then again on SQLite, the embedded default (no DATABASE_URL) a
# first server runs on, the tests of what differs most between the two: clients installing,
# hostile input, syncs, serving. Only for the whole suite (no pytest arguments).
SQLITE_TESTS=(tests/e2e tests/security tests/channels_app/test_fast_path.py
    tests/mirrors_app/test_sync.py tests/mirrors_app/test_conda_kept_document.py)
database=${DATABASE_URL:-}
if [ "$status" -eq 0 ] && [ $# -eq 0 ] && [ "${database#postgres}" != "$database" ]; then
    say "pytest -n $processes on SQLite: ${SQLITE_TESTS[*]}"
    env -u DATABASE_URL "$PY" -m pytest -n "$processes" \
        "${SQLITE_TESTS[@]}" || status=$?
fi
exit "$status"
