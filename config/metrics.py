"""Prometheus metrics at `GET /metrics`: API requests here, ingestion runs from ingestion/metrics.py.

API request metrics are counted in each process by `RequestMetricsMiddleware`. Under
gunicorn with PROMETHEUS_MULTIPROC_DIR set, prometheus_client keeps them in one file
per worker in that directory and a scrape merges every file, so whichever worker
answers reports the whole server. Ingestion metrics are read from `IngestRun` rows at
scrape time, so they are right whatever process ran the runs, and reused for
METRICS_CACHE_SECONDS so a flood of scrapes cannot hammer the database.

Who may scrape: METRICS_ALLOWED_NETWORKS (the client address, as accounts/client_address.py
reads it) and METRICS_TOKEN (a bearer token); with neither set, anyone who reaches it.
"""

import hmac
import time

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from accounts.client_address import client_ip
from config import cached
from ingestion.metrics import IngestionCollector

# Any other method is counted as "other": a label value per made-up method would let
# a client grow the number of series without bound.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Up to INGESTION_MAX_WAIT_SECONDS: POST /api/ingest?wait=N holds its request that long.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

# Not registered anywhere at import: `metrics` builds the registry of each scrape.
REQUESTS = Counter(
    "http_requests",
    "API requests answered, by method, route (URL pattern name) and status code.",
    ["method", "route", "status"],
    registry=None,
)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time to answer an API request, by method and route (URL pattern name).",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
    registry=None,
)


class RequestMetricsMiddleware:
    """Counts and times every request; first in MIDDLEWARE, so the time covers all the others."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        method = request.method if request.method in _METHODS else "other"
        route = request_route(request)
        REQUESTS.labels(method, route, str(response.status_code)).inc()
        LATENCY.labels(method, route).observe(time.perf_counter() - started)
        return response


def request_route(request) -> str:
    """The resolved URL pattern's name, never the path: a path per customer id is a series per customer.

    The name, not the route template, also keeps the admin's configurable URL out of /metrics.
    """
    match = request.resolver_match
    # No match: static files, HTTPS redirects and unknown paths are answered before (or without) routing.
    return match.view_name if match is not None else "unresolved"


def scrape_registry() -> CollectorRegistry:
    """What one scrape reports: every worker's request metrics when in multiprocess mode, and ingestion."""
    registry = CollectorRegistry()
    if settings.METRICS_MULTIPROC_DIR:
        MultiProcessCollector(registry, path=settings.METRICS_MULTIPROC_DIR)
    else:
        registry.register(REQUESTS)
        registry.register(LATENCY)
    registry.register(CachedCollector(IngestionCollector()))
    return registry


class CachedCollector:
    """A collector whose metric families are reused for METRICS_CACHE_SECONDS in this process."""

    def __init__(self, collector):
        self.collector = collector

    def collect(self):
        return cached.INGESTION.get(lambda: list(self.collector.collect()), seconds=settings.METRICS_CACHE_SECONDS)


@require_GET
def metrics(request):
    """Prometheus text exposition, for the allowed networks and the token when they are set."""
    refusal = scrape_refusal(request)
    if refusal is not None:
        return refusal
    response = HttpResponse(generate_latest(scrape_registry()), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response


def scrape_refusal(request) -> HttpResponse | None:
    """403 for an address outside METRICS_ALLOWED_NETWORKS, 401 without METRICS_TOKEN; None to let it in.

    The address is checked first, so a client outside the networks learns nothing about the token.
    """
    networks = settings.METRICS_ALLOWED_NETWORKS
    if networks:
        address = client_ip(request)
        if address is None or not any(address in network for network in networks):
            return _refused(403, "Forbidden: this address may not read the metrics.")
    token = settings.METRICS_TOKEN
    if token and not _bearer_matches(request.headers.get("Authorization", ""), token):
        response = _refused(401, "Unauthorized: send Authorization: Bearer <METRICS_TOKEN>.")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return None


def _bearer_matches(header: str, token: str) -> bool:
    scheme, _, given = header.partition(" ")
    # Constant time: how long a wrong token took to refuse must not tell how much of it was right.
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def _refused(status: int, text: str) -> HttpResponse:
    # Plain text like the metrics themselves: a scraper shows the body of a failed scrape as is.
    response = HttpResponse(text + "\n", status=status, content_type="text/plain; charset=utf-8")
    response["Cache-Control"] = "no-store"
    return response
