"""PSM settings, read from the environment.

Defaults give the embedded mode: SQLite, a file-system Celery broker and every file under one data
directory, so `scripts/serve.sh` works on a machine with nothing but Python. Production sets
`DATABASE_URL` (PostgreSQL) and `CELERY_BROKER_URL` (Redis or RabbitMQ). Every variable is listed in
the README. A bad value stops start-up with `ImproperlyConfigured` naming the variable.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def envstr(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: bool) -> bool:
    """Accept only true/false (any case); anything else is a configuration error."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value == "true":
        return True
    if value == "false":
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def envint(name: str, default: int, *, minimum: int = 0) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from None
    if number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {number}")
    return number


def envsecret(name: str, default: str = "") -> str:
    """Read NAME, or the file named by NAME_FILE (for container secrets)."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE: cannot read {path}: {exc}") from None
    return os.environ.get(name, default)


def envlist(name: str, default: list[str], *, extendable: bool = False) -> list[str]:
    """A comma-separated list; it replaces the default, or with `extendable` and a leading
    "+" (`+a,b`) adds to it."""
    value = os.environ.get(name)
    if value is None:
        return default
    extend = extendable and value.lstrip().startswith("+")
    if extend:
        value = value.lstrip()[1:]
    items = [item.strip() for item in value.split(",") if item.strip()]
    return [*default, *items] if extend else items


# --- Core -----------------------------------------------------------------------------------

DEBUG = envbool("PSM_DEBUG", False)
DATA_DIR = Path(envstr("PSM_DATA_DIR", str(BASE_DIR / "var"))).resolve()
try:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
except OSError as exc:
    raise ImproperlyConfigured(f"PSM_DATA_DIR: cannot create {DATA_DIR}: {exc}") from None

SECRET_KEY = envsecret("PSM_SECRET_KEY")
# Served over HTTPS (directly or behind a TLS proxy): secure cookies, HSTS, redirect to HTTPS.
PSM_HTTPS = envbool("PSM_HTTPS", False)
_weak = len(set(SECRET_KEY)) < 5 or SECRET_KEY.startswith("django-insecure-")
if SECRET_KEY and (len(SECRET_KEY) < 50 or _weak) and PSM_HTTPS and not DEBUG:
    # Django's own bar (check --deploy, security.W009): sessions and CSRF tokens are signed with it.
    raise ImproperlyConfigured(
        "PSM_SECRET_KEY is too weak for production: give at least 50 random characters, e.g. "
        "python -c 'import secrets; print(secrets.token_urlsafe(50))'"
    )
if not SECRET_KEY:
    # Embedded mode: a key generated once and kept in the data directory.
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        from django.core.management.utils import get_random_secret_key

        key_file.write_text(get_random_secret_key())
        key_file.chmod(0o600)
    SECRET_KEY = key_file.read_text().strip()

ALLOWED_HOSTS = envlist("PSM_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = envlist("PSM_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "django_celery_beat",
    "mozilla_django_oidc",
    "axes",
    "channels_app",
    "policies_app",
    "mirrors_app",
    # Last: its post_migrate hook builds the permission groups from every app's permissions.
    "psm",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "psm.input.RejectNulMiddleware",
    "psm.input.RejectOutOfRangeMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: turns a login that django-axes locked out into psm.throttle.lockout_response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "psm.urls"
WSGI_APPLICATION = "psm.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "psm" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "psm.context.single_sign_on",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------


def _database() -> dict:
    url = envstr("DATABASE_URL")
    if not url:
        return _sqlite(DATA_DIR / "psm.sqlite3")
    try:
        config = dj_database_url.parse(url, conn_max_age=envint("PSM_DB_CONN_MAX_AGE", 60))
    except Exception as exc:  # dj-database-url raises several types for bad URLs
        raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
    if not config.get("ENGINE") or not config.get("NAME"):
        raise ImproperlyConfigured("DATABASE_URL must name an engine and a database")
    if config["ENGINE"] == "django.db.backends.sqlite3":
        return _sqlite(config["NAME"])  # a file named by URL runs as the embedded default
    return config


def _sqlite(path: Path | str) -> dict:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": path,
        # The web server, the worker and the scheduler share one file: wait for locks
        # instead of failing, and let readers run beside the writer (WAL).
        "OPTIONS": {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
        # A file, not memory: a worker process in the integration tests sees the data, and a
        # live test server's threads get connections of their own (not the test's one).
        "TEST": {"NAME": str(DATA_DIR / "test_psm.sqlite3")},
    }


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth -----------------------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    # First: refuses a locked-out client before any password or sign-on is checked.
    "psm.throttle.LockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "admin:login"

# Login throttling (django-axes, failures kept in the database). Failed admin logins count per
# (user name, client address): an attacker cannot lock the real administrator out from
# elsewhere. Refused tokens (API and package routes) count per client address. At the limit the
# client is refused, even with the right password or a valid token, for the cool-off.
AXES_FAILURE_LIMIT = envint("PSM_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=envint("PSM_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "psm.throttle.lockout_response"
AXES_CLIENT_IP_CALLABLE = "psm.throttle.client_ip"
AXES_VERBOSE = False  # no banner at every start; failures and lockouts are still logged
# Masked where axes keeps or logs a failed request's parameters (passwords always are).
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "token", "access_token", "code", "state"]
# Proxies in front of PSM that append the client address to X-Forwarded-For (0: none, the
# connecting address is the client's).
PSM_TRUSTED_PROXY_COUNT = envint("PSM_TRUSTED_PROXY_COUNT", 0)
# The production server's processes and threads per process (`python -m psm.server`).
PSM_WEB_WORKERS = envint("PSM_WEB_WORKERS", os.cpu_count() or 1, minimum=1)
PSM_WEB_THREADS = envint("PSM_WEB_THREADS", 8, minimum=1)
# Client addresses never locked out (e.g. a build farm's NAT), exact addresses.
AXES_IP_WHITELIST = envlist("PSM_LOGIN_NEVER_LOCK_IPS", [])
AXES_NEVER_LOCKOUT_WHITELIST = bool(AXES_IP_WHITELIST)

# Keycloak single sign-on through mozilla-django-oidc. Local logins stay available (break-glass).
PSM_OIDC_ENABLED = envbool("PSM_OIDC_ENABLED", False)
# Where roles are read in the tokens (dotted paths; {client} is OIDC_RP_CLIENT_ID).
PSM_OIDC_ROLE_CLAIMS = envlist(
    "PSM_OIDC_ROLE_CLAIMS", ["realm_access.roles", "resource_access.{client}.roles", "groups"]
)
# Roles named <prefix><category>:<level> (e.g. psm:channel.mirror:manage) grant that level;
# <prefix>admin makes a superuser. Empty: only PSM_OIDC_ROLE_MAP counts.
PSM_OIDC_ROLE_PREFIX = envstr("PSM_OIDC_ROLE_PREFIX", "psm:")


def _role_map() -> dict[str, list[str]]:
    """PSM_OIDC_ROLE_MAP: JSON {"role or group": ["category:level" | "superuser" |
    "group:<team group>", ...]}."""
    import json

    raw = envstr("PSM_OIDC_ROLE_MAP").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"PSM_OIDC_ROLE_MAP is not valid JSON: {exc}") from None
    if not isinstance(value, dict) or not all(
        isinstance(v, list) and all(isinstance(i, str) for i in v) for v in value.values()
    ):
        raise ImproperlyConfigured(
            'PSM_OIDC_ROLE_MAP must map role names to lists, e.g. {"ops": ["channel:manage"]}'
        )
    from psm.roles import parse_map_entry

    for grants in value.values():
        for grant in grants:
            try:
                parse_map_entry(grant)
            except ValueError as exc:
                raise ImproperlyConfigured(f"PSM_OIDC_ROLE_MAP: {exc}") from None
    return value


PSM_OIDC_ROLE_MAP = _role_map()
# Access tokens accepted on the API must name one of these in `aud` or `azp` (default: the
# client id); PSM_OIDC_ISSUER, when set, must be their `iss`.
PSM_OIDC_AUDIENCES = envlist("PSM_OIDC_AUDIENCES", [])
PSM_OIDC_ISSUER = envstr("PSM_OIDC_ISSUER")
if PSM_OIDC_ENABLED:
    _oidc_required = [
        "OIDC_RP_CLIENT_ID",
        "OIDC_RP_CLIENT_SECRET",
        "OIDC_OP_AUTHORIZATION_ENDPOINT",
        "OIDC_OP_TOKEN_ENDPOINT",
        "OIDC_OP_USER_ENDPOINT",
        "OIDC_OP_JWKS_ENDPOINT",
    ]
    _missing = [name for name in _oidc_required if not envsecret(name)]
    if _missing:
        raise ImproperlyConfigured(
            f"PSM_OIDC_ENABLED is true but these are not set: {', '.join(_missing)}"
        )
    OIDC_RP_CLIENT_ID = envstr("OIDC_RP_CLIENT_ID")
    OIDC_RP_CLIENT_SECRET = envsecret("OIDC_RP_CLIENT_SECRET")
    OIDC_OP_AUTHORIZATION_ENDPOINT = envstr("OIDC_OP_AUTHORIZATION_ENDPOINT")
    OIDC_OP_TOKEN_ENDPOINT = envstr("OIDC_OP_TOKEN_ENDPOINT")
    OIDC_OP_USER_ENDPOINT = envstr("OIDC_OP_USER_ENDPOINT")
    OIDC_OP_JWKS_ENDPOINT = envstr("OIDC_OP_JWKS_ENDPOINT")
    # Keycloak: <realm URL>/protocol/openid-connect/logout (the end_session_endpoint).
    OIDC_OP_LOGOUT_ENDPOINT = envstr("OIDC_OP_LOGOUT_ENDPOINT")
    OIDC_RP_SIGN_ALGO = envstr("OIDC_RP_SIGN_ALGO", "RS256")
    OIDC_RP_SCOPES = envstr("OIDC_RP_SCOPES", "openid email profile")
    OIDC_USE_PKCE = envbool("OIDC_USE_PKCE", True)
    OIDC_TIMEOUT = envint("OIDC_TIMEOUT", 10, minimum=1)
    OIDC_VERIFY_SSL = envbool("OIDC_VERIFY_SSL", True)
    # Logout at the provider needs the ID token as id_token_hint.
    OIDC_STORE_ID_TOKEN = True
    OIDC_OP_LOGOUT_URL_METHOD = "psm.oidc.provider_logout_url"
    AUTHENTICATION_BACKENDS.insert(1, "psm.oidc.PSMOIDCBackend")  # after the lockout check
    LOGIN_REDIRECT_URL = "/admin/"
    LOGOUT_REDIRECT_URL = "/admin/"

# --- HTTPS and browser protections -----------------------------------------------------------

# Behind a TLS proxy that sets X-Forwarded-Proto (and strips it from clients): trust it.
if envbool("PSM_SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = PSM_HTTPS
SESSION_COOKIE_HTTPONLY = True
SECURE_SSL_REDIRECT = PSM_HTTPS and envbool("PSM_SSL_REDIRECT", True)
# Paths answered over plain HTTP too (regular expressions without the leading slash), e.g. a
# load balancer's probe.
SECURE_REDIRECT_EXEMPT = envlist("PSM_SSL_REDIRECT_EXEMPT", [])
SECURE_HSTS_SECONDS = envint("PSM_HSTS_SECONDS", 31536000 if PSM_HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("PSM_HSTS_INCLUDE_SUBDOMAINS", PSM_HTTPS)
SECURE_HSTS_PRELOAD = envbool("PSM_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Asking browsers to preload HSTS is the domain owner's decision (it binds every subdomain, and
# only the registrable domain's own header counts): opt in with PSM_HSTS_PRELOAD.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
# Indexes' `include` columns, which SQLite (the embedded default) has no use for: its index is
# then a plain one, as correct, for a database that never holds a conda-forge-sized subdir.
SILENCED_SYSTEM_CHECKS.append("models.W040")

# --- I18N / time ----------------------------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = envstr("PSM_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Static files ---------------------------------------------------------------------------

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
MEDIA_ROOT = DATA_DIR / "files"

# --- REST API -------------------------------------------------------------------------------

REST_FRAMEWORK = {
    # First the token classes: unauthenticated requests get 401 with WWW-Authenticate.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "psm.tokens.ApiTokenAuthentication",
        "psm.oidc.OIDCBearerAuthentication",  # Keycloak access tokens, when PSM_OIDC_ENABLED
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["psm.permissions.ModelPermissions"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PARSER_CLASSES": [
        "psm.api.JSONParser",
        "psm.api.FormParser",
        "psm.api.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "psm.api.Pagination",
    "PAGE_SIZE": 100,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "PSM API",
    "DESCRIPTION": "Channels, mirrors, policies and sync runs of the Package Security Manager.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "ENUM_NAME_OVERRIDES": {
        "KindEnum": "channels_app.formats.kind_choices",
        "ApiTokenKindEnum": "psm.models.ApiToken.Kind",
    },
}

# --- Celery ---------------------------------------------------------------------------------


def _broker() -> tuple[str, dict]:
    url = envstr("CELERY_BROKER_URL")
    if not url:
        # Embedded: kombu's file-system transport needs no server. Producer and consumer
        # use the same folder, so in and out are the same directory.
        folder = DATA_DIR / "broker"
        for sub in ("queue", "control", "processed"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        options = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "control_folder": str(folder / "control"),
            "processed_folder": str(folder / "processed"),
        }
        return "filesystem://", options
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "amqp", "amqps", "pyamqp", "filesystem", "memory"):
        raise ImproperlyConfigured(
            f"CELERY_BROKER_URL scheme {scheme!r} is not supported; use redis://, amqp:// "
            "or leave it unset for the embedded broker"
        )
    return url, {}


CELERY_BROKER_URL, CELERY_BROKER_TRANSPORT_OPTIONS = _broker()
# Runs record their own state in the database; no result backend is needed.
CELERY_TASK_IGNORE_RESULT = True
# Late acknowledgement: a message is acked once its run ends, so one a killed worker had
# reserved goes back to the queue (RabbitMQ at once, Redis after its visibility timeout), and
# with one message per worker (prefetch 1) a busy worker reserves none it cannot start. A
# message delivered again for a run that already started does nothing: claiming a run is
# atomic. A run whose worker died mid-run is failed by `fail_stale_runs`, which also re-sends
# runs still queued after PSM_RUN_STALE_AFTER (a message lost with the broker's data).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# A running run whose heartbeat is older than this is taken to have lost its worker. The sweep
# looks every tenth of it (at least every 15 s), so such a run fails within 1.1 times this.
PSM_RUN_STALE_AFTER = envint("PSM_RUN_STALE_AFTER", 900, minimum=60)
CELERY_BEAT_SCHEDULE = {
    "fail-stale-runs": {
        "task": "mirrors.fail_stale_runs",
        "schedule": max(15.0, PSM_RUN_STALE_AFTER / 10),
    },
    "hourly-load-vulnerabilities": {
        "task": "policies.load_vulnerabilities",
        "schedule": 3600.0,
    },
    "hourly-load-name-mapping": {
        "task": "policies.load_name_mapping",
        "schedule": 3600.0,
    },
    "hourly-collect-garbage": {
        "task": "channels.collect_garbage",
        "schedule": 3600.0,
    },
    "hourly-verify-storage": {
        "task": "channels.verify_storage",
        "schedule": 3600.0,
    },
    # What changes with time alone: a cooldown that ends, a waiver that expires. Mirrors whose
    # decisions depend on neither are skipped at the cost of one comparison.
    "hourly-enforce-policies": {
        "task": "policies.enforce_due",
        "schedule": 3600.0,
    },
}

# --- PSM ------------------------------------------------------------------------------------

# Hosts PSM may fetch from (mirror sources, the files their indexes name, redirects). A name
# matches the host and its subdomains; "*" allows any name and any public address. An address or
# CIDR entry ("10.0.0.0/8", "::1") allows those addresses: loopback, private, link-local and
# other non-public addresses are refused unless an entry names them (names alone never do).
# The variable replaces this default list; a leading "+" adds to it instead.
PSM_UPSTREAM_ALLOWLIST = envlist(
    "PSM_UPSTREAM_ALLOWLIST",
    [
        "conda.anaconda.org",
        "repo.anaconda.com",
        "repo.anaconda.cloud",
        "anaconda.org",
        "pypi.org",
        "files.pythonhosted.org",
        "cran.r-project.org",
        "cloud.r-project.org",
    ],
    extendable=True,
)
# Allow upstreams on private networks (10/8, 172.16/12, 192.168/16, fc00::/7, ...) and loopback
# without listing their addresses; link-local (cloud metadata), multicast and reserved still need
# an address entry.
PSM_UPSTREAM_ALLOW_PRIVATE = envbool("PSM_UPSTREAM_ALLOW_PRIVATE", False)
PSM_HTTP_TIMEOUT = envint("PSM_HTTP_TIMEOUT", 60, minimum=1)
PSM_HTTP_RETRIES = envint("PSM_HTTP_RETRIES", 3)
PSM_HTTP_PROXY = envstr("PSM_HTTP_PROXY")
# Largest index document a run accepts (decompressed), a guard against hostile upstreams.
PSM_MAX_INDEX_BYTES = envint("PSM_MAX_INDEX_BYTES", 2 * 1024**3, minimum=1024)
# Largest package file stored, when the index gives no size (CRAN, HTML-only simple indexes):
# an upstream that sends without end must not fill the disk.
PSM_MAX_FILE_BYTES = envint("PSM_MAX_FILE_BYTES", 32 * 1024**3, minimum=1024)
# Package files an active mirror downloads at once (each streams to disk, 1 MiB in memory).
PSM_DOWNLOAD_WORKERS = envint("PSM_DOWNLOAD_WORKERS", 4, minimum=1)
# Seconds clients may cache an index file (package files are immutable and cached for a year).
PSM_INDEX_MAX_AGE = envint("PSM_INDEX_MAX_AGE", 60)
# Answer anonymous requests for a public channel's index files before Django's full request
# machinery (channels_app.fast_path); off: every request takes the whole stack.
PSM_SERVING_FAST_PATH = envbool("PSM_SERVING_FAST_PATH", True)
# Keep what the fast path resolved per process until PostgreSQL notifies a change to channels
# or published files (channels_app.index_cache); off: every request asks the database.
PSM_SERVING_CACHE = envbool("PSM_SERVING_CACHE", True)
# Folder of OSV advisories (.json files, .zip archives such as osv.dev's <ecosystem>/all.zip),
# loaded hourly by `policies.load_vulnerabilities`. Empty: no automatic loading.
PSM_VULNERABILITY_DIR = envstr("PSM_VULNERABILITY_DIR")
# Block every version an OSV malicious-package entry (`MAL-…`) names, in every mirror, with or
# without a policy and whatever its mode; only a waiver naming the entry lets one in.
PSM_BLOCK_MALICIOUS = envbool("PSM_BLOCK_MALICIOUS", True)


def _webhook_url() -> str:
    """PSM_WEBHOOK_URL, checked to be an http(s) URL."""
    url = envsecret("PSM_WEBHOOK_URL").strip()
    if not url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        # Not quoted: the URL may carry credentials.
        raise ImproperlyConfigured("PSM_WEBHOOK_URL must be an http:// or https:// URL")
    return url


# Where to announce policy enforcements (packages that left, entered or would leave a channel):
# a JSON POST per event, signed with PSM_WEBHOOK_SECRET when set (X-PSM-Signature: sha256=<HMAC
# of the body>), retried PSM_WEBHOOK_RETRIES times with exponential backoff. Set by the
# operator, so not held to the upstream allowlist. Empty: nothing is announced.
PSM_WEBHOOK_URL = _webhook_url()
PSM_WEBHOOK_SECRET = envsecret("PSM_WEBHOOK_SECRET")
PSM_WEBHOOK_RETRIES = envint("PSM_WEBHOOK_RETRIES", 5)
# The conda → PyPI name mapping file (cf-graph-countyfair name_mapping.yaml/.json or parselmouth
# compressed_mapping.json), reloaded hourly by `policies.load_name_mapping`: PyPI advisories
# apply to conda packages only through it. Empty: no automatic loading.
PSM_NAME_MAPPING_FILE = envstr("PSM_NAME_MAPPING_FILE")
# Verification (channels_app/verification.py): each hourly run re-hashes the stored files
# verified longest ago, up to this many bytes and files, so all of storage is covered in turn.
PSM_VERIFY_BYTES_PER_RUN = envint("PSM_VERIFY_BYTES_PER_RUN", 10 * 1024**3)
PSM_VERIFY_FILES_PER_RUN = envint("PSM_VERIFY_FILES_PER_RUN", 50_000)
# Also fetch damaged active package files again at once (else the mirror's next run does).
PSM_VERIFY_REPAIR = envbool("PSM_VERIFY_REPAIR", False)

# Every handler hides secrets (URL tokens and passwords, PSM API tokens) in what it writes,
# tracebacks included: psm.redaction.RedactingFilter. Django's own handlers (the console in
# debug mode, mail_admins, runserver's request lines) are replaced by these; Celery's worker
# handlers get the filter in psm/celery.py.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "psm.redaction.RedactingFilter"}},
    "formatters": {
        "django.server": {
            "()": "django.utils.log.ServerFormatter",
            "format": "[{server_time}] {message}",
            "style": "{",
        }
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "filters": ["redact"]},
        "django.server": {
            "class": "logging.StreamHandler",
            "formatter": "django.server",
            "filters": ["redact"],
        },
    },
    "root": {"handlers": ["console"], "level": envstr("PSM_LOG_LEVEL", "INFO")},
    "loggers": {
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        "django.server": {"handlers": ["django.server"], "level": "INFO", "propagate": False},
    },
}
