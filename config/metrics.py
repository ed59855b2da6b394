"""Prometheus metrics at `GET /metrics`: API requests and ingestion runs.

API request metrics are counted in each process by `RequestMetricsMiddleware`. Under
gunicorn with PROMETHEUS_MULTIPROC_DIR set, prometheus_client keeps them in one file
per worker in that directory and a scrape merges every file, so whichever worker
answers reports the whole server. Ingestion metrics are read from `IngestRun` rows at
scrape time, so they are right whatever process ran the runs.
"""

import logging
import time

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Count, F, Max, Q, Sum
from django.http import HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from ingestion.models import IngestRun, RunStatus

logger = logging.getLogger(__name__)

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

OUTCOMES = ("inserted", "updated", "unchanged", "invalid", "conflicts", "duplicates")
# The reasons UpstreamClient reports, listed so that each series exists (at 0) before
# its first retry; a reason missing here is still reported once it occurs.
RETRY_REASONS = ("server_error", "rate_limited", "timeout", "connection", "malformed")


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


class IngestionCollector:
    """Ingestion metrics computed at scrape time from `IngestRun` rows, in three aggregate queries."""

    def collect(self):
        try:
            totals, last_run, retries = _read_runs()
        except DatabaseError as exc:
            # The request metrics stay up when the database is not: they are what shows the outage.
            # No traceback: a scrape every few seconds would repeat it for as long as the outage lasts.
            logger.warning("ingestion metrics unavailable", extra={"reason": type(exc).__name__})
            yield GaugeMetricFamily("ingestion_metrics_up", "1 if the ingestion metrics could be read.", value=0)
            return
        yield GaugeMetricFamily("ingestion_metrics_up", "1 if the ingestion metrics could be read.", value=1)

        runs = GaugeMetricFamily("ingestion_runs", "Ingestion runs by status.", labels=["status"])
        for status in RunStatus.values:
            runs.add_metric([status], totals[f"status_{status}"])
        yield runs

        records = CounterMetricFamily(
            "ingestion_records",
            "Fetched records by outcome, summed over runs; dry_run=true: what dry runs would have written.",
            labels=["outcome", "dry_run"],
        )
        for outcome in OUTCOMES:
            for dry_run in (False, True):
                records.add_metric([outcome, str(dry_run).lower()], totals[f"{outcome}_{dry_run}"] or 0)
        yield records

        by_reason = CounterMetricFamily(
            "ingestion_upstream_retries", "Upstream requests retried, by reason, summed over runs.", labels=["reason"]
        )
        for reason, count in (dict.fromkeys(RETRY_REASONS, 0) | retries).items():
            by_reason.add_metric([reason], count)
        yield by_reason

        last_success = totals["last_success"]
        yield GaugeMetricFamily(
            "ingestion_last_success_timestamp_seconds",
            "Unix time the newest succeeded run finished (0: none yet).",
            value=last_success.timestamp() if last_success else 0,
        )
        yield GaugeMetricFamily(
            "ingestion_last_run_duration_seconds",
            "Start to finish of the run that finished last (0: none yet).",
            value=(last_run[1] - last_run[0]).total_seconds() if last_run else 0,
        )
        duration_sum = totals["duration_sum"]
        yield SummaryMetricFamily(
            "ingestion_run_duration_seconds",
            "Start to finish of finished runs (succeeded, failed or abandoned).",
            count_value=totals["duration_count"],
            sum_value=duration_sum.total_seconds() if duration_sum else 0,
        )


def _read_runs():
    """Counts and sums over all runs: `(totals, (started_at, finished_at) | None, {reason: retries})`."""
    finished = Q(finished_at__isnull=False, started_at__isnull=False)
    totals = IngestRun.objects.order_by().aggregate(
        **{f"status_{status}": Count("pk", filter=Q(status=status)) for status in RunStatus.values},
        **{
            f"{outcome}_{dry_run}": Sum(outcome, filter=Q(dry_run=dry_run))
            for outcome in OUTCOMES
            for dry_run in (False, True)
        },
        last_success=Max("finished_at", filter=Q(status=RunStatus.SUCCEEDED)),
        duration_sum=Sum(F("finished_at") - F("started_at"), filter=finished),
        duration_count=Count("pk", filter=finished),
    )
    last_run = (
        IngestRun.objects.filter(finished).order_by("-finished_at").values_list("started_at", "finished_at").first()
    )
    return totals, last_run, _retries_by_reason()


def _retries_by_reason() -> dict[str, int]:
    """Sum of every run's `retries_by_reason`, key by key, in the database."""
    table = connection.ops.quote_name(IngestRun._meta.db_table)
    column = connection.ops.quote_name(IngestRun._meta.get_field("retries_by_reason").column)
    # Names come from model metadata, never from input; there are no parameters.
    sql = (
        f"SELECT reason.key, SUM(reason.value::bigint) FROM {table} "  # noqa: S608
        f"CROSS JOIN LATERAL jsonb_each_text({table}.{column}) AS reason "
        f"WHERE jsonb_typeof({table}.{column}) = 'object' GROUP BY reason.key"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return {reason: int(count) for reason, count in cursor.fetchall()}


def scrape_registry() -> CollectorRegistry:
    """What one scrape reports: every worker's request metrics when in multiprocess mode, and ingestion."""
    registry = CollectorRegistry()
    if settings.METRICS_MULTIPROC_DIR:
        MultiProcessCollector(registry, path=settings.METRICS_MULTIPROC_DIR)
    else:
        registry.register(REQUESTS)
        registry.register(LATENCY)
    registry.register(IngestionCollector())
    return registry


@require_GET
def metrics(request):
    """Prometheus text exposition. Open to scrapers: it holds counts and timings, no personal data."""
    response = HttpResponse(generate_latest(scrape_registry()), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response
