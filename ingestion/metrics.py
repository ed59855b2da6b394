"""Ingestion metrics for `GET /metrics` (config/metrics.py), read from `IngestRun` rows at scrape time.

Read from the database, not counted in memory, so they are right whatever process ran
the runs, and they survive restarts.
"""

import logging

from django.db import DatabaseError, connection
from django.db.models import Count, F, Max, Q, Sum
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

from ingestion import deletions
from ingestion.models import FailureReason, IngestFailure, IngestRun, RunStatus
from ingestion.source import RetryReason

logger = logging.getLogger(__name__)

OUTCOMES = IngestRun.OUTCOMES


class IngestionCollector:
    """Ingestion metrics computed at scrape time from `IngestRun` rows, in four small queries."""

    def collect(self):
        try:
            totals, last_run, (retries, failures) = _read_runs()
            waiting = deletions.pending()
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
        for reason, count in (dict.fromkeys(RetryReason, 0) | retries).items():
            by_reason.add_metric([reason], count)
        yield by_reason

        failure_rows = GaugeMetricFamily(
            "ingestion_failure_rows",
            "Refused records kept as failure rows (until INGESTION_RETENTION_DAYS prunes them), by reason.",
            labels=["reason"],
        )
        for reason, count in (dict.fromkeys(FailureReason.values, 0) | failures).items():
            failure_rows.add_metric([reason], count)
        yield failure_rows

        changes = CounterMetricFamily(
            "ingestion_customer_deletions",
            "Customers soft-deleted and restored by runs (not dry runs), summed over runs.",
            labels=["change"],
        )
        changes.add_metric(["deleted"], totals["deleted"] or 0)
        changes.add_metric(["restored"], totals["restored"] or 0)
        yield changes
        yield GaugeMetricFamily(
            "ingestion_deletions_held",
            "Deletions the mass-deletion guard holds, waiting for an operator's release (0: none).",
            value=waiting.deletions_held if waiting else 0,
        )

        last_success = totals["last_success"]
        yield GaugeMetricFamily(
            "ingestion_last_success_timestamp_seconds",
            "Unix time the newest succeeded run finished (0: none yet).",
            value=last_success.timestamp() if last_success else 0,
        )
        last_seconds = (last_run[1] - last_run[0]).total_seconds() if last_run else 0
        yield GaugeMetricFamily(
            "ingestion_last_run_duration_seconds",
            "Start to finish of the run that finished last (0: none yet).",
            value=last_seconds,
        )
        yield GaugeMetricFamily(
            "ingestion_last_run_records_per_second",
            "Records fetched per second by the run that finished last, start to finish (0: none yet).",
            value=last_run[2] / last_seconds if last_seconds else 0,
        )
        duration_sum = totals["duration_sum"]
        yield SummaryMetricFamily(
            "ingestion_run_duration_seconds",
            "Start to finish of finished runs (succeeded, failed, abandoned or cancelled once started).",
            count_value=totals["duration_count"],
            sum_value=duration_sum.total_seconds() if duration_sum else 0,
        )


def _read_runs():
    """Counts and sums over all runs: `(totals, (started_at, finished_at, fetched) | None, by reason)`,
    the last being `({reason: retries}, {reason: failure rows})`."""
    finished = Q(finished_at__isnull=False, started_at__isnull=False)
    totals = IngestRun.objects.order_by().aggregate(
        **{f"status_{status}": Count("pk", filter=Q(status=status)) for status in RunStatus.values},
        **{
            f"{outcome}_{dry_run}": Sum(outcome, filter=Q(dry_run=dry_run))
            for outcome in OUTCOMES
            for dry_run in (False, True)
        },
        deleted=Sum("deleted", filter=Q(dry_run=False)),
        restored=Sum("restored", filter=Q(dry_run=False)),
        last_success=Max("finished_at", filter=Q(status=RunStatus.SUCCEEDED)),
        duration_sum=Sum(F("finished_at") - F("started_at"), filter=finished),
        duration_count=Count("pk", filter=finished),
    )
    last_run = (
        IngestRun.objects.filter(finished)
        .order_by("-finished_at")
        .values_list("started_at", "finished_at", "fetched")
        .first()
    )
    return totals, last_run, _by_reason()


def _by_reason() -> tuple[dict[str, int], dict[str, int]]:
    """Sum of every run's `retries_by_reason`, key by key, and the failure rows by reason, in one statement."""
    table = connection.ops.quote_name(IngestRun._meta.db_table)
    column = connection.ops.quote_name(IngestRun._meta.get_field("retries_by_reason").column)
    failures = connection.ops.quote_name(IngestFailure._meta.db_table)
    # Names come from model metadata, never from input; there are no parameters. The failures'
    # count groups on the indexed reason column.
    sql = (
        f"SELECT 'retry', reason.key, SUM(reason.value::bigint) FROM {table} "  # noqa: S608
        f"CROSS JOIN LATERAL jsonb_each_text({table}.{column}) AS reason "
        f"WHERE jsonb_typeof({table}.{column}) = 'object' GROUP BY reason.key "
        f"UNION ALL SELECT 'failure', reason, COUNT(*) FROM {failures} GROUP BY reason"
    )
    retries, failure_rows = {}, {}
    with connection.cursor() as cursor:
        cursor.execute(sql)
        for kind, reason, count in cursor.fetchall():
            (retries if kind == "retry" else failure_rows)[reason] = int(count)
    return retries, failure_rows
