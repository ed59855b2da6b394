from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from customers.models import CustomerChange
from ingestion.models import IngestFailure, IngestRun, StagedCustomer
from ingestion.retention import Pruned, prune

pytestmark = pytest.mark.django_db


def make_run(status: str, finished_days_ago: float | None) -> IngestRun:
    finished = timezone.now() - timedelta(days=finished_days_ago) if finished_days_ago is not None else None
    return IngestRun.objects.create(
        trigger="api", source_url="http://x", page_size=10, status=status, finished_at=finished
    )


def add_rows(run: IngestRun, count: int = 3) -> None:
    now = timezone.now()
    for position in range(1, count + 1):
        StagedCustomer.objects.create(
            run=run, page=1, position=position, customer_id=f"00000000-0000-0000-0000-{run.pk:06d}{position:06d}",
            first_name="A", last_name="B", email=f"{run.pk}-{position}@example.com", created_at=now,
        )  # fmt: skip
        IngestFailure.objects.create(run=run, page=1, position=position, reason="invalid_email", errors={}, raw={})


def test_prune_keeps_what_a_resume_or_a_reader_still_needs():
    old_success, new_success = make_run("succeeded", 40), make_run("succeeded", 1)
    old_failed, new_failed = make_run("failed", 40), make_run("failed", 1)
    for run in (old_success, new_success, old_failed, new_failed):
        add_rows(run)
    pruned = prune(days=30)
    assert (pruned.staged, pruned.failures) == (9, 6)
    assert set(StagedCustomer.objects.values_list("run_id", flat=True)) == {new_failed.pk}
    assert set(IngestFailure.objects.values_list("run_id", flat=True)) == {new_success.pk, new_failed.pk}
    assert IngestRun.objects.count() == 4


def test_staging_of_an_incomplete_run_goes_at_once_like_a_succeeded_ones():
    # Nothing resumes an incomplete run: its walk ended; the next run reads the listing anew.
    incomplete = make_run("incomplete", 1)
    add_rows(incomplete)
    assert prune(days=30).staged == 3
    assert IngestFailure.objects.filter(run=incomplete).count() == 3


def test_prune_keeps_a_cancelled_runs_staging_for_its_resume_until_the_cutoff():
    old_cancelled, new_cancelled = make_run("cancelled", 40), make_run("cancelled", 1)
    for run in (old_cancelled, new_cancelled):
        add_rows(run)

    assert prune(days=30) == Pruned(staged=3, failures=3)
    assert set(StagedCustomer.objects.values_list("run_id", flat=True)) == {new_cancelled.pk}


def test_prune_command_reports_what_it_deleted():
    add_rows(make_run("succeeded", 100), count=2)
    out = StringIO()
    call_command("prune_ingestion", "--days", "30", stdout=out)
    assert out.getvalue().strip() == "Deleted 2 staged rows, 2 failure rows and 0 change-feed events."


def test_prune_command_refuses_negative_days():
    with pytest.raises(CommandError, match="--days must be zero or more"):
        call_command("prune_ingestion", "--days", "-1")


def test_the_nightly_prune_also_prunes_change_feed_events_past_their_retention(settings):
    settings.INGESTION_CHANGES_RETENTION_DAYS = 7
    old = timezone.now() - timedelta(days=8)
    CustomerChange.objects.bulk_create(
        CustomerChange(cursor=cursor, kind="deleted", at=old if cursor < 3 else timezone.now())
        for cursor in range(1, 5)
    )
    assert prune().changes == 2
    assert list(CustomerChange.objects.values_list("cursor", flat=True)) == [3, 4]
