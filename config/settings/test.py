"""Settings for the test suite: the base settings with fast hashing and plain static files."""

import os

# Tests never run with a real secret; base.py refuses to start without one.
os.environ.setdefault("DJANGO_SECRET_KEY", "test-suite-only-secret-key")
os.environ.setdefault("DJANGO_HTTPS", "false")
# The test upstreams listen on loopback.
os.environ.setdefault("INGESTION_ALLOW_PRIVATE_NETWORKS", "true")
# Throttle counters per process in tests; a test that checks throttling sets its own rates.
os.environ.setdefault("DJANGO_CACHE", "locmem")
# The contract test reads /api/schema anonymously when it is collected; the docs tests
# switch this off to check the default of production.
os.environ.setdefault("API_PUBLIC_DOCS", "true")

from .base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Retries in tests wait on a patched clock, never on real time.
INGESTION_BACKOFF_SECONDS = 0.0
# Every scrape and readiness call reads the database afresh; the caching tests set a window.
METRICS_CACHE_SECONDS = 0.0
API_READY_CACHE_SECONDS = 0.0
