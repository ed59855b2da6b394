import json
import uuid
from datetime import datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from customers.models import Customer
from ingestion import pipeline, runs
from ingestion.models import IngestFailure, IngestRun, StagedCustomer
from tests.database import in_another_session
from tests.ingestion.fakes import FakeUpstream, Reply, envelope
from tests.records import record, records

pytestmark = pytest.mark.django_db


def _xmins() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT customer_id, xmin::text FROM customers_customer")
        return dict(cursor.fetchall())


def test_first_run_inserts_every_record_with_counters_that_add_up(ingest):
    source = records(250)
    source[7]["address"] = "7 Main Street\nSpringfield"
    run = ingest(FakeUpstream(source), page_size=100)
    assert run.status == "succeeded"
    assert run.counters() == {
        "fetched": 250, "inserted": 250, "updated": 0, "unchanged": 0, "invalid": 0, "conflicts": 0,
        "duplicates": 0, "suppressed": 0,
    }  # fmt: skip
    assert (run.pages_done, run.pages_expected, run.records_expected) == (3, 3, 250)
    assert Customer.objects.count() == 250
    customer = Customer.objects.get(customer_id=source[7]["customer_id"])
    assert customer.email == source[7]["email"]
    assert customer.account_balance == source[7]["account_balance"]
    assert customer.updated_at is None
    assert customer.address == "7 Main Street\nSpringfield"


def test_seq_numbers_rows_densely_in_first_ingestion_order(ingest):
    ingest(FakeUpstream(records(30)), page_size=7)
    ingest(FakeUpstream(records(45)), page_size=7)
    seqs = list(Customer.objects.order_by("seq").values_list("seq", "email"))
    assert [seq for seq, _ in seqs] == list(range(1, 46))
    assert [email for _, email in seqs] == [f"customer{i}@example.com" for i in range(45)]


def test_rerun_with_unchanged_source_updates_nothing_and_rewrites_no_row(ingest):
    source = records(120)
    ingest(FakeUpstream(source))
    before = _xmins()
    run = ingest(FakeUpstream(source))
    assert run.counters()["unchanged"] == 120
    assert run.inserted == run.updated == 0
    assert _xmins() == before  # not one row version was written
    assert not Customer.objects.filter(updated_at__isnull=False).exists()


def test_changed_field_updates_the_row_and_keeps_created_at(ingest):
    source = records(20)
    ingest(FakeUpstream(source))
    changed = [dict(r) for r in source]
    changed[4]["phone"] = "+44 20 7946 0000"
    changed[4]["created_at"] = "2030-01-01T00:00:00Z"  # the upstream's creation time is kept as first seen
    run = ingest(FakeUpstream(changed))
    assert (run.updated, run.unchanged) == (1, 19)
    customer = Customer.objects.get(customer_id=source[4]["customer_id"])
    assert customer.phone == "+44 20 7946 0000"
    assert customer.created_at == datetime.fromisoformat(source[4]["created_at"])
    assert customer.updated_at is not None
    assert Customer.objects.filter(updated_at__isnull=False).count() == 1


def test_each_bad_record_lands_in_failures_while_the_rest_loads(ingest):
    source = records(12)
    source[1]["email"] = "not-an-email"
    del source[2]["last_name"]
    source[3]["date_of_birth"] = "1980-13-45"
    source[4]["account_balance"] = "12,34x"
    source[5]["phone"] = "+1 555 0100 0200 0300 0400"
    source[6]["first_name"] = "Nul\x00byte"
    run = ingest(FakeUpstream(source))
    assert run.status == "succeeded"
    assert (run.inserted, run.invalid) == (6, 6)
    reasons = dict(IngestFailure.objects.filter(run=run).values_list("position", "reason"))
    assert reasons == {
        2: "invalid_email", 3: "missing_field", 4: "invalid_date", 5: "invalid_decimal", 6: "too_long",
        7: "invalid_characters",
    }  # fmt: skip
    failure = IngestFailure.objects.get(run=run, position=2)
    assert failure.customer_id == uuid.UUID(source[1]["customer_id"])
    assert failure.raw["email"] == "not-an-email"
    assert failure.errors == {"email": ["Must be a valid email address."]}
    assert failure.page == 1
    assert not Customer.objects.filter(email="not-an-email").exists()


def test_email_owned_by_another_customer_is_a_conflict_and_the_owner_is_untouched(ingest):
    ingest(FakeUpstream(records(5)))
    newcomer = record(100, email="CUSTOMER3@Example.com")
    run = ingest(FakeUpstream([*records(5), newcomer]))
    assert (run.unchanged, run.conflicts, run.inserted) == (5, 1, 0)
    failure = IngestFailure.objects.get(run=run)
    assert failure.reason == "email_conflict"
    assert failure.customer_id == uuid.UUID(newcomer["customer_id"])
    assert failure.conflicting_customer_id == uuid.UUID(record(3)["customer_id"])
    assert failure.raw["email"] == "CUSTOMER3@Example.com"
    assert Customer.objects.get(customer_id=record(3)["customer_id"]).email == "customer3@example.com"


def test_email_used_earlier_in_the_same_run_is_a_conflict_in_any_batch(ingest, settings):
    settings.INGESTION_BATCH_SIZE = 4
    source = [*records(6), record(50, email="customer1@EXAMPLE.com"), record(51, email="customer5@example.com")]
    run = ingest(FakeUpstream(source), page_size=2)
    assert (run.inserted, run.conflicts) == (6, 2)
    assert set(IngestFailure.objects.values_list("reason", flat=True)) == {"email_conflict"}


def test_two_rows_sharing_an_email_in_one_batch_keep_the_first(ingest):
    source = [record(1), record(2, email="customer1@example.com")]
    run = ingest(FakeUpstream(source))
    assert (run.inserted, run.conflicts) == (1, 1)
    assert IngestFailure.objects.get().conflicting_customer_id == uuid.UUID(record(1)["customer_id"])


def test_upstream_failure_mid_run_keeps_committed_rows_and_a_rerun_completes(ingest, settings):
    settings.INGESTION_BATCH_SIZE = 10
    settings.INGESTION_CONCURRENCY = 1
    source = records(50)
    broken = FakeUpstream(source, script={3: [Reply(500)] * 10})
    run = ingest(broken, page_size=10)
    assert run.status == "failed"
    assert "Page 3: gave up" in run.error
    assert run.finished_at is not None
    assert (run.inserted, run.last_committed_page, run.retries) == (20, 2, 5)
    assert Customer.objects.count() == 20
    rerun = ingest(FakeUpstream(source), page_size=10)
    assert rerun.status == "succeeded"
    assert (rerun.inserted, rerun.unchanged) == (30, 20)
    assert Customer.objects.count() == 50


def test_unreachable_upstream_fails_the_run_cleanly(settings):
    from ingestion import pipeline

    settings.INGESTION_MAX_RETRIES = 1
    settings.INGESTION_CONNECT_TIMEOUT = 1
    settings.INGESTION_ALLOWED_PORTS = [9]
    run = runs.create_run(trigger="command", source_url="http://127.0.0.1:9")
    run = pipeline.execute_run(run.pk)
    assert run.status == "failed"
    assert "connection failed" in run.error
    assert run.fetched == 0 and Customer.objects.count() == 0


def test_dry_run_counts_but_writes_nothing_to_customers(ingest):
    ingest(FakeUpstream(records(5)))
    source = [*records(5), record(6)]
    source[0]["last_name"] = "Renamed"
    run = ingest(FakeUpstream(source), dry_run=True)
    assert (run.inserted, run.updated, run.unchanged) == (1, 1, 4)
    assert Customer.objects.count() == 5
    assert Customer.objects.get(customer_id=source[0]["customer_id"]).last_name == "Last0"


def resumable_source() -> list[dict]:
    """45 records, one invalid, and one repeated: what the resume tests walk."""
    source = records(45)
    source[12]["email"] = "broken"
    source.append(dict(source[3]))
    return source


def assert_ends_like_the_uninterrupted_run_of_resumable_source(run) -> None:
    assert run.status == "succeeded"
    assert run.counters() == {
        "fetched": 46, "inserted": 44, "updated": 0, "unchanged": 0, "invalid": 1, "conflicts": 0,
        "duplicates": 1, "suppressed": 0,
    }  # fmt: skip
    assert Customer.objects.count() == 44
    assert list(Customer.objects.order_by("seq").values_list("seq", flat=True)) == list(range(1, 45))


def test_resumed_run_ends_like_an_uninterrupted_one(ingest, settings):
    settings.INGESTION_BATCH_SIZE = 10
    settings.INGESTION_CONCURRENCY = 1
    source = resumable_source()
    run = ingest(FakeUpstream(source, script={4: [Reply(503)] * 10}), page_size=10)
    assert run.status == "failed"
    runs.requeue(run.pk)
    from ingestion import pipeline

    resumed = pipeline.execute_run(run.pk, session=FakeUpstream(source).session())
    assert_ends_like_the_uninterrupted_run_of_resumable_source(resumed)
    assert resumed.pages_done == 5


def test_pages_fetched_concurrently_merge_in_page_order(ingest, settings):
    settings.INGESTION_CONCURRENCY = 4
    settings.INGESTION_BATCH_SIZE = 5
    source = records(100)
    source[90]["email"] = source[10]["email"]  # the later one must lose, whatever finishes first
    run = ingest(FakeUpstream(source), page_size=5)
    assert (run.inserted, run.conflicts) == (99, 1)
    assert IngestFailure.objects.get().position == 91
    assert list(Customer.objects.order_by("seq").values_list("email", flat=True))[:3] == [
        "customer0@example.com", "customer1@example.com", "customer2@example.com",
    ]  # fmt: skip


def test_total_growing_while_paging_is_followed_and_is_no_success(ingest):
    # Records added at the end are read; whether others moved between pages nothing can tell.
    source = records(30)
    fake = FakeUpstream(source, total=lambda page: 20 if page == 1 else 30)
    run = ingest(fake, page_size=10)
    assert (run.status, run.inserted, run.pages_expected) == ("incomplete", 30, 3)


def test_total_shrinking_while_paging_stops_at_the_new_end_and_is_no_success(ingest):
    fake = FakeUpstream(records(30), total=lambda page: 30 if page == 1 else 20)
    run = ingest(fake, page_size=10)
    assert (run.status, run.fetched, run.pages_expected) == ("incomplete", 20, 2)
    assert "(first page: 30, last page: 20)" in run.error


def test_lone_surrogate_in_a_kept_field_is_rejected_and_the_run_goes_on(ingest):
    source = records(3)
    source[1]["first_name"] = "Bad\ud800"

    run = ingest(FakeUpstream(source))

    assert run.status == "succeeded"
    assert (run.fetched, run.inserted, run.invalid) == (3, 2, 1)
    failure = IngestFailure.objects.get(run=run)
    assert failure.reason == "invalid_characters"
    # jsonb cannot hold a lone surrogate: it is kept as the JSON escape, readable and lossless.
    assert failure.raw["first_name"] == "Bad\\ud800"


def test_rejected_record_with_unstorable_text_is_stored_with_its_escapes(ingest):
    source = records(3)
    source[1] |= {"email": "not-an-email", "note\udfff": "x\ud83d", "nul": "a\x00b"}

    run = ingest(FakeUpstream(source))

    assert run.status == "succeeded"
    assert (run.inserted, run.invalid) == (2, 1)
    raw = IngestFailure.objects.get(run=run).raw
    assert raw["note\\udfff"] == "x\\ud83d"
    assert raw["nul"] == "a\\u0000b"


def _stored_number(run, key: str) -> tuple[str, str]:
    """The jsonb type and text PostgreSQL holds for `key` of the run's one failure."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT jsonb_typeof(raw -> %s), raw ->> %s FROM ingestion_ingestfailure WHERE run_id = %s",
            [key, key, run.pk],
        )
        return cursor.fetchone()


EXACT_NUMBERS = {
    "past-a-double's-precision": "0.1000000000000000055511151231257827",
    "long-exact-decimal": "12345678901234567890.123456789",
    "past-a-double's-range": "1E+400",
    "below-a-double's-range": "-1E-400",
    "largest-numeric-holds": "9.99999999999999999999E+131071",
    "most-decimals-numeric-holds": "1E-16383",
    "400-digit-integer": "7" * 400,
    # Longer than Python's int-string conversion limit (4300 digits).
    "5000-digit-integer": "9" * 5000,
}


@pytest.mark.parametrize("text", EXACT_NUMBERS.values(), ids=EXACT_NUMBERS.keys())
def test_rejected_record_keeps_a_number_exactly_as_a_jsonb_number(ingest, text):
    source = records(3)
    source[1]["account_balance"] = Decimal(text)  # sent with its own digits: 1E+400 stays 1E+400

    run = ingest(FakeUpstream(source))

    assert (run.status, run.inserted, run.invalid) == ("succeeded", 2, 1)
    kind, stored = _stored_number(run, "account_balance")
    assert kind == "number"
    assert Decimal(stored) == Decimal(text)
    read = IngestFailure.objects.get(run=run).raw["account_balance"]
    assert not isinstance(read, float | str)
    assert Decimal(read) == Decimal(text)


BEYOND_NUMERIC = {
    "past-numeric's-range": "1E+131072",
    "more-decimals-than-numeric-holds": "1E-16384",
    "one-trailing-zero-too-many": "1.0E-16383",
    "a-million-digit-exponent": "-4.5E+1000000",
}


@pytest.mark.parametrize("text", BEYOND_NUMERIC.values(), ids=BEYOND_NUMERIC.keys())
def test_a_number_numeric_cannot_hold_is_kept_as_its_digits_in_a_string(ingest, text):
    source = records(3)
    source[1]["account_balance"] = Decimal(text)

    run = ingest(FakeUpstream(source))

    assert (run.status, run.inserted, run.invalid) == ("succeeded", 2, 1)
    assert _stored_number(run, "account_balance") == ("string", text)


@pytest.mark.parametrize("number", [float("inf"), float("-inf"), float("nan")])
def test_a_non_finite_number_is_kept_as_the_upstream_spelled_it(ingest, number):
    source = records(3)
    source[1]["account_balance"] = number  # the body says Infinity, -Infinity or NaN

    run = ingest(FakeUpstream(source))

    assert (run.status, run.invalid) == ("succeeded", 1)
    assert IngestFailure.objects.get(run=run).raw["account_balance"] == json.dumps(number)


def _page(records_on_page: list, *, total: int, page: int, limit: int) -> Reply:
    body = envelope(records_on_page, total=total, page=page, limit=limit)
    return Reply(200, body, {"Content-Type": "application/json"})


@pytest.mark.parametrize("kept", [0, 10], ids=["empty", "short"])
def test_a_page_missing_records_its_total_announces_is_retried_then_the_page_loads(ingest, kept):
    source = records(250)
    # Page 2 first comes back with `kept` of its 100 records, the total unchanged.
    fake = FakeUpstream(source, script={2: [_page(source[100 : 100 + kept], total=250, page=2, limit=100)]})

    run = ingest(fake)

    assert run.status == "succeeded"
    assert (run.fetched, run.inserted) == (250, 250)
    assert run.retries_by_reason == {"malformed": 1}


@pytest.mark.parametrize("kept", [0, 10], ids=["empty", "short"])
def test_a_page_that_stays_short_fails_the_run_keeping_what_it_committed(ingest, settings, kept):
    settings.INGESTION_MAX_RETRIES = 2
    settings.INGESTION_BACKOFF_SECONDS = 0.0
    settings.INGESTION_BATCH_SIZE = 100
    source = records(250)
    short = _page(source[100 : 100 + kept], total=250, page=2, limit=100)
    fake = FakeUpstream(source, script={2: [short, short, short]})

    run = ingest(fake)

    assert run.status == "failed"
    assert "records" in run.error and "page 2" in run.error.lower()
    assert (run.fetched, run.inserted, run.last_committed_page) == (100, 100, 1)
    assert Customer.objects.count() == 100

    runs.requeue(run.pk)
    resumed = pipeline.execute_run(run.pk, session=FakeUpstream(source).session())
    assert (resumed.status, resumed.fetched, resumed.inserted) == ("succeeded", 250, 250)


class ChangesAfterPage(FakeUpstream):
    """A listing that changes once `page` has been served: `change(records)` edits it in place."""

    def __init__(self, records, *, page: int, change, **options):
        super().__init__(records, **options)
        self.page, self.change, self.changed = page, change, False

    def send(self, request, **kwargs):
        response = super().send(request, **kwargs)
        if self.calls[-1] == self.page and not self.changed:
            self.changed = True
            self.change(self.records)
        return response


def test_a_total_that_changes_during_the_walk_ends_incomplete_not_succeeded(ingest, settings):
    settings.INGESTION_CONCURRENCY = 1
    source = records(250)
    # A record of page 1 goes after page 1 was read: every later record moves up one place,
    # and the first record of page 2 lands on page 1, which the walk has passed.
    upstream = ChangesAfterPage(list(source), page=1, change=lambda listing: listing.pop(50))
    run = ingest(upstream, page_size=100)
    assert run.status == "incomplete"
    assert run.error.startswith("The upstream's total changed during the walk (first page: 250, last page: 249)")
    assert (run.fetched, run.inserted, run.records_expected) == (249, 249, 249)
    assert not Customer.objects.filter(customer_id=source[100]["customer_id"]).exists()
    # The next run over the listing as it stands now reads the record it missed.
    rerun = ingest(FakeUpstream(upstream.records), page_size=100)
    assert (rerun.status, rerun.inserted, rerun.unchanged) == ("succeeded", 1, 248)


def test_a_total_change_seen_before_a_crash_still_makes_the_resumed_run_incomplete(ingest, settings):
    settings.INGESTION_CONCURRENCY = 1
    settings.INGESTION_BATCH_SIZE = 100
    upstream = ChangesAfterPage(
        records(300), page=1, change=lambda listing: listing.append(record(999)), script={3: [Reply(503)] * 10}
    )
    run = ingest(upstream, page_size=100)
    assert (run.status, run.last_committed_page, run.total_changed) == ("failed", 2, True)
    runs.requeue(run.pk)
    resumed = pipeline.execute_run(run.pk, session=FakeUpstream(upstream.records).session())
    assert resumed.status == "incomplete"
    assert "(first page: 300, last page: 301)" in resumed.error
    assert resumed.fetched == 301


def test_a_walk_with_one_total_throughout_succeeds(ingest):
    run = ingest(FakeUpstream(records(250)), page_size=100)
    assert (run.status, run.error, run.first_total, run.total_changed) == ("succeeded", "", 250, False)


def test_a_run_that_read_other_than_its_total_is_not_a_success():
    # The pages' own checks make this unreachable for a stable total; the verdict holds anyway.
    run = IngestRun(fetched=99, records_expected=100, first_total=100)
    assert runs.verdict(run) == (
        "incomplete",
        "Read 99 records where the upstream announced 100. What was read is committed; run again to read the rest.",
    )
    assert runs.verdict(IngestRun(fetched=100, records_expected=100, first_total=100)) == ("succeeded", "")


# --- cancel ------------------------------------------------------------------------------


def _cancel(run_id: int) -> None:
    runs.cancel(run_id, by="an operator")


def test_a_run_cancelled_between_batches_stops_at_its_next_page_keeping_what_it_committed(settings):
    settings.INGESTION_BATCH_SIZE = 20
    source = records(100)
    source[5]["email"] = "broken"
    run = runs.create_run(trigger="api", source_url="http://upstream.test", page_size=10)
    cancelled, steps_after = [], []

    def cancel_after_the_first_batch(progress_run):
        if not cancelled:
            cancelled.append(runs.cancel(progress_run.pk, by="an operator"))

    def after_cancel(name, seconds):
        if cancelled:
            steps_after.append(name)

    finished = pipeline.execute_run(
        run.pk, session=FakeUpstream(source).session(), progress=cancel_after_the_first_batch, on_step=after_cancel
    )

    assert (finished.status, finished.error) == ("cancelled", "Cancelled by an operator.")
    assert finished.finished_at == cancelled[0].finished_at  # the execution did not finish it again
    assert finished.counters() == {
        "fetched": 20, "inserted": 19, "updated": 0, "unchanged": 0, "invalid": 1, "conflicts": 0,
        "duplicates": 0, "suppressed": 0,
    }  # fmt: skip
    assert finished.last_committed_page == 2
    assert (Customer.objects.count(), IngestFailure.objects.count()) == (19, 1)
    # Not one step of another batch: it stopped at the next page, not at the next commit.
    assert steps_after == []


@pytest.mark.django_db(transaction=True)  # the cancel commits from another session, mid-batch
def test_a_cancel_landing_while_a_batch_is_written_rolls_that_batch_back(settings):
    settings.INGESTION_BATCH_SIZE = 20
    source = records(60)
    source[25]["email"] = "broken"  # in the second batch: its failure row must go with it
    run = runs.create_run(trigger="api", source_url="http://upstream.test", page_size=10)
    merges = []

    def cancel_during_the_second_merge(name, seconds):
        if name == "merge":
            merges.append(name)
            if len(merges) == 2:
                in_another_session(lambda: _cancel(run.pk))

    finished = pipeline.execute_run(
        run.pk, session=FakeUpstream(source).session(), on_step=cancel_during_the_second_merge
    )

    assert finished.status == "cancelled"
    assert finished.counters() == {
        "fetched": 20, "inserted": 20, "updated": 0, "unchanged": 0, "invalid": 0, "conflicts": 0,
        "duplicates": 0, "suppressed": 0,
    }  # fmt: skip
    assert finished.last_committed_page == 2
    assert Customer.objects.count() == 20
    assert not IngestFailure.objects.exists()
    assert StagedCustomer.objects.filter(run_id=run.pk).count() == 20


def test_a_cancel_after_the_last_batch_leaves_the_run_cancelled_and_a_resume_finishes_it():
    source = records(30)
    run = runs.create_run(trigger="api", source_url="http://upstream.test", page_size=10)

    def cancel_once_committed(name, seconds):
        if name == "batch":
            _cancel(run.pk)

    finished = pipeline.execute_run(run.pk, session=FakeUpstream(source).session(), on_step=cancel_once_committed)

    assert (finished.status, finished.fetched, finished.last_committed_page) == ("cancelled", 30, 3)
    runs.requeue(run.pk)
    resumed = pipeline.execute_run(run.pk, session=FakeUpstream(source).session())
    assert (resumed.status, resumed.fetched, resumed.inserted) == ("succeeded", 30, 30)
    # The resume read the empty page past the end to learn the walk is over; it is not a page done.
    assert (resumed.pages_done, resumed.pages_expected) == (3, 3)
    assert Customer.objects.count() == 30


def test_a_cancelled_run_resumed_ends_like_an_uninterrupted_one(settings):
    settings.INGESTION_BATCH_SIZE = 10
    source = resumable_source()
    run = runs.create_run(trigger="api", source_url="http://upstream.test", page_size=10)

    def cancel_after_two_batches(progress_run):
        if progress_run.last_committed_page == 2:
            _cancel(run.pk)

    cancelled = pipeline.execute_run(run.pk, session=FakeUpstream(source).session(), progress=cancel_after_two_batches)
    assert (cancelled.status, cancelled.fetched) == ("cancelled", 20)

    runs.requeue(run.pk)
    resumed = pipeline.execute_run(run.pk, session=FakeUpstream(source).session())

    assert_ends_like_the_uninterrupted_run_of_resumable_source(resumed)
    assert (resumed.pages_done, resumed.attempt, resumed.error) == (5, 2, "")


def test_a_run_cancelled_before_it_starts_is_not_executed():
    fake = FakeUpstream(records(5))
    run = runs.create_run(trigger="api", source_url="http://upstream.test")
    _cancel(run.pk)

    with pytest.raises(runs.RunRefused, match="was cancelled, so it does not start"):
        pipeline.execute_run(run.pk, session=fake.session())

    assert fake.calls == []
    assert (IngestRun.objects.get(pk=run.pk).status, Customer.objects.count()) == ("cancelled", 0)


@pytest.mark.parametrize("depth", [101, 950])
def test_a_record_nested_past_a_sane_depth_is_a_retried_malformed_page_not_a_crash(ingest, depth):
    # At 950 the parser may or may not give up, by the depth of the thread's stack; storing
    # the rejected record would: whatever the thread, a page past 100 levels is malformed.
    deep = "[" * depth + "]" * depth
    body = envelope([], total=1, page=1, limit=10).replace(
        b'"data":[]', b'"data":[{"customer_id":"x","email":"broken","extra":%b}]' % deep.encode()
    )
    fake = FakeUpstream(records(1), script={1: [Reply(200, body, {"Content-Type": "application/json"})]})
    run = ingest(fake, page_size=10)
    assert (run.status, run.retries_by_reason, run.inserted, run.invalid) == ("succeeded", {"malformed": 1}, 1, 0)


def test_a_record_nested_up_to_the_limit_is_kept_whole(ingest):
    nested = record(1, email="broken")
    value = None
    for _ in range(97):  # the envelope, its list and the record make it 100
        value = [value]
    nested["extra"] = value
    run = ingest(FakeUpstream([nested]))
    assert (run.status, run.invalid, run.retries) == ("succeeded", 1, 0)
    assert IngestFailure.objects.get(run=run).raw["extra"] == value


def test_a_batch_that_changes_customers_waits_for_the_wal_flush_and_one_that_changes_nothing_does_not(ingest):
    """A feed consumer may read a batch's events the moment it commits: they must survive a server crash."""
    source = records(30)
    with CaptureQueriesContext(connection) as first:
        ingest(FakeUpstream(source), page_size=10)
    with CaptureQueriesContext(connection) as again:
        ingest(FakeUpstream(source), page_size=10)
    asynchronous = "SET LOCAL synchronous_commit = off"
    assert not any(asynchronous in query["sql"] for query in first.captured_queries)
    assert any(asynchronous in query["sql"] for query in again.captured_queries)
