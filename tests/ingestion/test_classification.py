"""Repeated reads and emails changing hands, end to end: what a run applies, refuses and records.

The copy converges: after one complete run over an upstream that stood still, the table
holds each customer's last read, minus the reads refused with a reason.
"""

import uuid

import pytest

from customers.models import Customer
from ingestion import pipeline, runs
from ingestion.models import IngestFailure
from tests.ingestion.fakes import FakeUpstream, Reply
from tests.records import record, records

pytestmark = pytest.mark.django_db


def emails() -> dict[str, str]:
    return {str(customer_id): email for customer_id, email in Customer.objects.values_list("customer_id", "email")}


def failures(run) -> list[tuple[str, int, str | None]]:
    """(reason, position, conflicting customer index) of each failure of `run`, in position order."""
    by_id = {uuid.UUID(record(index)["customer_id"]): index for index in range(200)}
    return [
        (failure.reason, failure.position, by_id.get(failure.conflicting_customer_id))
        for failure in IngestFailure.objects.filter(run=run).order_by("position")
    ]


def assert_adds_up(run) -> None:
    counters = run.counters()
    assert counters.pop("fetched") == sum(counters.values())


def assert_exact_copy(source: list[dict]) -> None:
    """The table holds each record's last read in `source`, and no email placeholder is left."""
    last = {raw["customer_id"]: raw for raw in source}
    assert emails() == {customer_id: raw["email"] for customer_id, raw in last.items()}
    for customer_id, raw in last.items():
        assert Customer.objects.get(customer_id=customer_id).first_name == raw["first_name"]


def swapped(source: list[dict], *pairs: tuple[int, int]) -> list[dict]:
    """A copy of `source` where each (a, b) takes b's email (a rotation when pairs chain)."""
    changed = [dict(raw) for raw in source]
    for a, b in pairs:
        changed[a]["email"] = source[b]["email"]
    return changed


def test_two_customers_swapping_emails_in_one_batch_are_both_applied(ingest):
    ingest(FakeUpstream(records(3)))
    source = swapped(records(3), (0, 1), (1, 0))
    run = ingest(FakeUpstream(source))
    assert run.status == "succeeded"
    assert (run.updated, run.unchanged, run.conflicts) == (2, 1, 0)
    assert_exact_copy(source)
    assert not IngestFailure.objects.filter(run=run).exists()


def test_a_rotation_of_three_emails_is_applied(ingest):
    ingest(FakeUpstream(records(4)))
    source = swapped(records(4), (0, 1), (1, 2), (2, 0))
    run = ingest(FakeUpstream(source))
    assert (run.updated, run.unchanged, run.conflicts) == (3, 1, 0)
    assert_exact_copy(source)


def test_an_earlier_record_takes_the_email_a_later_record_of_the_batch_gives_up(ingest):
    ingest(FakeUpstream(records(3)))
    source = records(3)
    source[0]["email"] = "customer2@example.com"
    source[2]["email"] = "moved2@example.com"
    run = ingest(FakeUpstream(source))
    assert (run.updated, run.unchanged, run.conflicts) == (2, 1, 0)
    assert_exact_copy(source)


def test_a_new_customer_takes_an_email_a_known_one_gives_up_in_the_same_batch(ingest):
    ingest(FakeUpstream(records(2)))
    source = [record(0, email="moved0@example.com"), record(1), record(5, email="customer0@example.com")]
    run = ingest(FakeUpstream(source))
    assert (run.inserted, run.updated, run.unchanged, run.conflicts) == (1, 1, 1, 0)
    assert_exact_copy([*records(2), *source])


def test_an_email_whose_owner_keeps_it_is_a_conflict_naming_the_owner(ingest):
    ingest(FakeUpstream(records(3)))
    # 0 wants 1's email and 1 wants 2's, but 2 keeps its own: 1 stays, so 0 must too.
    source = [record(0, email="customer1@example.com"), record(1, email="customer2@example.com"), record(2)]
    run = ingest(FakeUpstream(source))
    assert (run.unchanged, run.conflicts) == (1, 2)
    assert failures(run) == [("email_conflict", 1, 1), ("email_conflict", 2, 2)]
    assert_exact_copy(records(3))
    assert_adds_up(run)


def test_a_swap_split_across_batches_converges_within_the_run(ingest, settings):
    settings.INGESTION_BATCH_SIZE = 2
    ingest(FakeUpstream(records(6)), page_size=2)
    # 0 and 5 swap: each batch sees the other's email still held by a customer it does not hold.
    source = swapped(records(6), (0, 5), (5, 0))
    run = ingest(FakeUpstream(source), page_size=2)
    assert run.status == "succeeded"
    assert (run.updated, run.unchanged, run.conflicts) == (2, 4, 0)
    assert_exact_copy(source)
    assert not IngestFailure.objects.filter(run=run).exists()
    assert_adds_up(run)


def test_a_conflict_the_retry_cannot_resolve_keeps_its_failure_and_counter(ingest, settings):
    settings.INGESTION_BATCH_SIZE = 2
    ingest(FakeUpstream(records(4)), page_size=2)
    source = records(4)
    source[3]["email"] = "customer0@example.com"  # 0 keeps it
    run = ingest(FakeUpstream(source), page_size=2)
    assert (run.unchanged, run.conflicts) == (3, 1)
    assert failures(run) == [("email_conflict", 4, 0)]
    assert_adds_up(run)


def test_a_different_later_read_of_an_id_wins_and_the_earlier_is_recorded_superseded(ingest, settings):
    settings.INGESTION_BATCH_SIZE = 3
    first = record(1)
    source = [first, record(2), dict(first), record(3), record(4), dict(first, first_name="Changed")]
    run = ingest(FakeUpstream(source), page_size=2)
    # Batch 1 inserts the first read and counts the identical repeat; batch 2's read updates it.
    assert run.counters() == {
        "fetched": 6, "inserted": 4, "updated": 1, "unchanged": 0, "invalid": 0, "conflicts": 0,
        "duplicates": 1, "suppressed": 0,
    }  # fmt: skip
    assert Customer.objects.get(customer_id=first["customer_id"]).first_name == "Changed"
    assert failures(run) == [("superseded", 1, 1)]
    assert IngestFailure.objects.get(run=run).raw["first_name"] == "First1"


def test_within_one_batch_only_the_last_read_of_an_id_is_written(ingest):
    one = record(1)
    source = [one, dict(one, first_name="Second"), record(2), dict(one), dict(one)]
    run = ingest(FakeUpstream(source))
    # Reads 1 and 2 are overtaken by read 4 (which is read 1 again), read 5 repeats read 4.
    assert (run.inserted, run.duplicates) == (2, 3)
    assert Customer.objects.get(customer_id=one["customer_id"]).first_name == "First1"
    assert failures(run) == [("superseded", 1, 1), ("superseded", 2, 1)]
    assert_adds_up(run)


def test_a_later_read_refused_for_its_email_leaves_the_earlier_read_in_place(ingest, settings):
    settings.INGESTION_BATCH_SIZE = 2
    source = [record(1), record(2), record(3), record(1, email="customer2@example.com")]
    run = ingest(FakeUpstream(source), page_size=2)
    assert (run.inserted, run.conflicts) == (3, 1)
    assert emails()[record(1)["customer_id"]] == "customer1@example.com"
    assert failures(run) == [("email_conflict", 4, 2)]
    assert_adds_up(run)


def test_a_dry_run_applies_nothing_and_counts_what_would_be(ingest):
    ingest(FakeUpstream(records(3)))
    source = swapped(records(3), (0, 1), (1, 0))
    run = ingest(FakeUpstream(source), dry_run=True)
    assert (run.updated, run.unchanged, run.conflicts) == (2, 1, 0)
    assert_exact_copy(records(3))


def test_a_failed_walk_retries_no_conflict_and_its_resume_converges(ingest, settings):
    settings.INGESTION_BATCH_SIZE = 2
    settings.INGESTION_CONCURRENCY = 1
    ingest(FakeUpstream(records(6)), page_size=2)
    source = swapped(records(6), (0, 5), (5, 0))
    run = ingest(FakeUpstream(source, script={3: [Reply(503)] * 10}), page_size=2)
    # The walk is incomplete, so nothing says the owner of customer 0's new email gives it up.
    assert (run.status, run.conflicts) == ("failed", 1)
    runs.requeue(run.pk)
    resumed = pipeline.execute_run(run.pk, session=FakeUpstream(source).session())
    assert (resumed.status, resumed.updated, resumed.unchanged, resumed.conflicts) == ("succeeded", 2, 4, 0)
    assert_exact_copy(source)
    assert_adds_up(resumed)


def test_a_retried_conflict_that_applies_supersedes_the_read_an_earlier_batch_merged(ingest, settings):
    settings.INGESTION_BATCH_SIZE = 2
    ingest(FakeUpstream(records(6)), page_size=2)
    two_takes_five = record(2, email="customer5@example.com")
    source = [record(2, first_name="Early"), record(1), two_takes_five, record(3), record(4)]
    source.append(record(5, email="customer2@example.com"))
    run = ingest(FakeUpstream(source), page_size=2)
    assert (run.updated, run.unchanged, run.conflicts) == (3, 3, 0)
    assert failures(run) == [("superseded", 1, 2)]
    assert_exact_copy([*records(6), *source])
    assert_adds_up(run)


def test_an_id_listed_twice_with_different_content_in_two_batches_is_written_twice_on_every_run(ingest, settings):
    # The README's one exception to "a rerun of an unchanged source updates nothing".
    settings.INGESTION_BATCH_SIZE = 2
    source = [record(1), record(2), record(3), record(1, first_name="Later")]
    first = ingest(FakeUpstream(source), page_size=2)
    rerun = ingest(FakeUpstream(source), page_size=2)
    assert (first.inserted, first.updated) == (3, 1)
    assert (rerun.updated, rerun.unchanged) == (2, 2)
    assert Customer.objects.get(customer_id=record(1)["customer_id"]).first_name == "Later"
