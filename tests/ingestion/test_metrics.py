"""The ingestion collector of `GET /metrics` (ingestion/metrics.py): run metrics read from `IngestRun` rows."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import OperationalError

from ingestion.models import IngestFailure, IngestRun, RunStatus
from tests.scraping import scrape, value

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def make_run(status, *, started=None, finished=None, **fields) -> IngestRun:
    return IngestRun.objects.create(
        status=status,
        trigger="command",
        source_url="http://upstream.test",
        page_size=100,
        started_at=started,
        finished_at=finished,
        **fields,
    )


@pytest.fixture
def runs(db):
    succeeded = make_run(
        RunStatus.SUCCEEDED,
        started=T0,
        finished=T0 + timedelta(seconds=30),
        fetched=100,
        inserted=90,
        updated=4,
        unchanged=1,
        invalid=2,
        conflicts=2,
        duplicates=1,
        retries=2,
        retries_by_reason={"server_error": 2},
    )
    failed = make_run(
        RunStatus.FAILED,
        started=T0 + timedelta(minutes=5),
        finished=T0 + timedelta(minutes=5, seconds=12),
        fetched=10,
        inserted=10,
        retries=6,
        retries_by_reason={"server_error": 1, "timeout": 5},
    )
    dry = make_run(
        RunStatus.SUCCEEDED, started=T0, finished=T0 + timedelta(seconds=3), dry_run=True, fetched=7, inserted=7
    )
    running = make_run(RunStatus.RUNNING, started=T0 + timedelta(minutes=10), fetched=50, inserted=50)
    return succeeded, failed, dry, running


def test_runs_are_counted_by_status_including_statuses_with_none(client, runs):
    samples = scrape(client)

    assert value(samples, "ingestion_runs", status="succeeded") == 2
    assert value(samples, "ingestion_runs", status="failed") == 1
    assert value(samples, "ingestion_runs", status="running") == 1
    assert samples[("ingestion_runs", frozenset({("status", "abandoned")}))] == 0


@pytest.mark.django_db
def test_an_incomplete_or_cancelled_run_is_counted_as_such_never_as_a_success(client):
    make_run(RunStatus.INCOMPLETE, started=T0, finished=T0 + timedelta(seconds=5), fetched=249, inserted=249)
    make_run(RunStatus.CANCELLED, started=T0, finished=T0 + timedelta(seconds=2), fetched=20, inserted=20)

    samples = scrape(client)

    assert value(samples, "ingestion_runs", status="incomplete") == 1
    assert value(samples, "ingestion_runs", status="cancelled") == 1
    assert value(samples, "ingestion_runs", status="succeeded") == 0


def test_records_are_summed_over_runs_by_outcome_with_dry_runs_apart(client, runs):
    samples = scrape(client)

    def records(outcome, dry_run="false"):
        return value(samples, "ingestion_records_total", outcome=outcome, dry_run=dry_run)

    assert records("inserted") == 90 + 10 + 50
    assert (records("updated"), records("unchanged"), records("invalid")) == (4, 1, 2)
    assert (records("conflicts"), records("duplicates")) == (2, 1)
    assert records("inserted", dry_run="true") == 7
    assert records("updated", dry_run="true") == 0


def test_upstream_retries_are_summed_by_reason_and_every_known_reason_is_present(client, runs):
    samples = scrape(client)

    assert value(samples, "ingestion_upstream_retries_total", reason="server_error") == 3
    assert value(samples, "ingestion_upstream_retries_total", reason="timeout") == 5
    assert ("ingestion_upstream_retries_total", frozenset({("reason", "rate_limited")})) in samples


def test_failure_rows_are_counted_by_reason_and_every_reason_is_present(client, runs):
    succeeded = runs[0]
    for position, reason in enumerate(["invalid_email", "invalid_email", "email_conflict"], start=1):
        IngestFailure.objects.create(run=succeeded, page=1, position=position, reason=reason, raw={})

    samples = scrape(client)

    assert value(samples, "ingestion_failure_rows", reason="invalid_email") == 2
    assert value(samples, "ingestion_failure_rows", reason="email_conflict") == 1
    assert ("ingestion_failure_rows", frozenset({("reason", "too_long")})) in samples


def test_last_success_and_durations_come_from_finished_runs(client, runs):
    samples = scrape(client)

    # By finished_at, not by id: the dry run was created last but finished before the other success.
    assert value(samples, "ingestion_last_success_timestamp_seconds") == (T0 + timedelta(seconds=30)).timestamp()
    # The failed run finished last: 10 records in 12 seconds.
    assert value(samples, "ingestion_last_run_duration_seconds") == 12
    assert value(samples, "ingestion_last_run_records_per_second") == pytest.approx(10 / 12)
    assert value(samples, "ingestion_run_duration_seconds_count") == 3
    assert value(samples, "ingestion_run_duration_seconds_sum") == 30 + 12 + 3
    assert value(samples, "ingestion_metrics_up") == 1


def test_without_runs_every_ingestion_metric_is_zero(client, db):
    samples = scrape(client)

    assert value(samples, "ingestion_runs", status="succeeded") == 0
    assert value(samples, "ingestion_records_total", outcome="inserted", dry_run="false") == 0
    assert value(samples, "ingestion_last_success_timestamp_seconds") == 0
    assert value(samples, "ingestion_last_run_duration_seconds") == 0
    assert value(samples, "ingestion_last_run_records_per_second") == 0
    assert value(samples, "ingestion_run_duration_seconds_count") == 0
    assert value(samples, "ingestion_failure_rows", reason="invalid_email") == 0


def test_scrape_cost_does_not_grow_with_the_number_of_runs(client, runs, django_assert_max_num_queries):
    for minute in range(20, 40):
        started = T0 + timedelta(minutes=minute)
        make_run(RunStatus.FAILED, started=started, finished=started, retries_by_reason={"malformed": 1})

    with django_assert_max_num_queries(4):
        samples = scrape(client)

    assert value(samples, "ingestion_upstream_retries_total", reason="malformed") == 20


def test_request_metrics_survive_a_database_outage(client, db, monkeypatch):
    def unavailable():
        raise OperationalError("connection refused")

    monkeypatch.setattr("ingestion.metrics._read_runs", unavailable)
    client.get("/api/health")

    samples = scrape(client)

    assert value(samples, "ingestion_metrics_up") == 0
    assert value(samples, "http_requests_total", method="GET", route="health", status="200") >= 1
