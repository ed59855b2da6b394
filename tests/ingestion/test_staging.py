"""Staging writes each validated record into the staging columns of the same names."""

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from ingestion import pipeline, runs, staging
from ingestion.models import IngestRun, StagedCustomer
from ingestion.staging import StagedRow, stage_rows
from ingestion.validation import ValidRecord
from tests.ingestion.fakes import FakeUpstream
from tests.records import records


@pytest.mark.django_db
def test_copy_puts_every_field_in_its_own_column():
    run = IngestRun.objects.create(trigger="command", source_url="http://upstream.test", page_size=100)
    record = ValidRecord(
        customer_id=uuid.UUID("00000000-0000-4000-8000-000000000001"),
        first_name="Ada",
        last_name="Lovelace",
        email="ada@example.com",
        phone="+44 20 7946 0000",
        address="12 St James's Square\nLondon",
        date_of_birth=date(1815, 12, 10),
        account_balance=Decimal("-12.50"),
        created_at=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    missing = record._replace(customer_id=uuid.uuid4(), email="b@example.com", phone=None, address=None)
    missing = missing._replace(date_of_birth=None, account_balance=None)

    staged_at = timezone.now()
    with connection.cursor() as cursor:
        rows = [StagedRow(3, 201, record), StagedRow(3, 202, missing)]
        written = stage_rows(cursor, run_id=run.pk, rows=rows, staged_at=staged_at)

    assert written == 2
    staged = StagedCustomer.objects.filter(run=run).order_by("position")
    assert [(row.page, row.position) for row in staged] == [(3, 201), (3, 202)]
    for row, expected in zip(staged, (record, missing), strict=True):
        assert ValidRecord(*(getattr(row, name) for name in ValidRecord._fields)) == expected
        assert (row.outcome, row.run_id, row.staged_at) == (None, run.pk, staged_at)


@pytest.mark.django_db
@pytest.mark.parametrize(("threshold", "analysed"), [(300, True), (301, False)])
def test_a_walk_that_staged_many_rows_refreshes_the_planner_statistics_of_staging(
    settings, monkeypatch, threshold, analysed
):
    # Stale statistics made the conflict retry after a million-row walk plan a scan per position.
    # (ANALYZE writes pg_class in place, past any rollback: the statement is what a test can see.)
    settings.INGESTION_ALLOWED_HOSTS = ["upstream.test"]
    monkeypatch.setattr(staging, "REFRESH_STATISTICS_FROM", threshold)
    run = runs.create_run(trigger="command", source_url="http://upstream.test")

    with CaptureQueriesContext(connection) as queries:
        pipeline.execute_run(run.pk, session=FakeUpstream(records(300)).session())

    statements = [query["sql"] for query in queries.captured_queries]
    assert ("ANALYZE ingestion_stagedcustomer" in statements) is analysed
