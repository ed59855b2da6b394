"""A first load into an empty table builds the readers' indexes at the end (customers/indexes.py)."""

import threading

import psycopg
import pytest
from django.db import connection

from customers import indexes
from customers.models import Customer, DeferredIndex
from ingestion import pipeline, runs, tasks
from ingestion.models import IngestRun
from tests.database import side_connection_kwargs
from tests.ingestion.fakes import FakeUpstream, Reply
from tests.records import records

pytestmark = pytest.mark.django_db

# The customers indexes that no write reads: what a first load may leave to its end.
READER_INDEXES = {
    "customer_created_idx",
    "customer_first_name_trgm",
    "customer_last_name_idx",
    "customer_last_name_trgm",
    "customer_updated_nf_seq_idx",
    "customer_updated_seq_idx",
}


def definitions() -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'customers_customer'")
        return dict(cursor.fetchall())


@pytest.fixture
def first_loads_defer(settings):
    settings.INGESTION_ALLOWED_HOSTS = ["upstream.test"]  # the fake transport's host (tests/ingestion/fakes.py)
    settings.INGESTION_DEFER_INDEXES_FROM = 100
    settings.INGESTION_BATCH_SIZE = 100
    yield
    # A test that commits (transaction=True) must not leave the database without them.
    indexes.restore_reader_indexes()


def run_watching(fake, **options):
    """Ingest from `fake`; return the run and the indexes present after each batch commit."""
    seen = []
    run = runs.create_run(trigger="command", source_url="http://upstream.test", page_size=50, **options)
    run = pipeline.execute_run(run.pk, session=fake.session(), progress=lambda run: seen.append(set(definitions())))
    return run, seen


def test_a_first_load_builds_the_readers_indexes_at_the_end_exactly_as_they_were(first_loads_defer):
    before = definitions()

    run, seen = run_watching(FakeUpstream(records(300)))

    assert run.status == "succeeded" and Customer.objects.count() == 300
    assert seen[0] == set(before) - READER_INDEXES  # the unique, primary and partial ones stay
    assert definitions() == before
    assert not DeferredIndex.objects.exists()


def test_a_load_into_a_table_with_rows_keeps_every_index(first_loads_defer):
    run_watching(FakeUpstream(records(10)))
    before = set(definitions())

    run, seen = run_watching(FakeUpstream(records(300)))

    assert run.inserted == 290
    assert seen == [before] * 3


@pytest.mark.parametrize("options", [{"dry_run": True}, {}])
def test_a_dry_run_or_a_load_below_the_threshold_keeps_every_index(first_loads_defer, settings, options):
    if not options:
        settings.INGESTION_DEFER_INDEXES_FROM = 301
    before = set(definitions())

    run, seen = run_watching(FakeUpstream(records(300)), **options)

    assert run.status == "succeeded" and seen == [before] * 3


def test_a_load_that_fails_halfway_builds_them_before_it_stops(first_loads_defer):
    before = definitions()
    down = [Reply(503)] * 10
    fake = FakeUpstream(records(300), script={4: down})

    run, seen = run_watching(fake)

    assert run.status == "failed" and run.fetched == 150
    assert seen[0] == set(before) - READER_INDEXES
    assert definitions() == before


@pytest.mark.django_db(transaction=True)  # a job closes its connection when it ends
def test_a_load_whose_process_died_gets_them_from_the_sweep_once_its_run_is_abandoned(first_loads_defer):
    before = definitions()
    run = runs.create_run(trigger="command", source_url="http://upstream.test", page_size=50)
    run = runs.mark_running(run.pk)
    # What a killed process leaves: the first batch committed, the indexes dropped and remembered.
    with connection.cursor() as cursor:
        indexes.defer_reader_indexes(cursor, run_id=run.pk)
    assert indexes.deferred_by() == run.pk

    tasks.sweep.func(timestamp=0)  # the run is still running: its load may go on
    assert indexes.deferred_by() == run.pk

    IngestRun.objects.filter(pk=run.pk).update(status="abandoned")
    tasks.sweep.func(timestamp=0)

    assert indexes.deferred_by() is None
    assert definitions() == before


def test_the_next_run_builds_what_a_stopped_load_left_unbuilt_before_it_writes(first_loads_defer):
    # A load's process died after its first batch (no worker's sweep ran since); then another run starts.
    before = definitions()
    stopped = runs.create_run(trigger="command", source_url="http://upstream.test", page_size=50)
    with connection.cursor() as cursor:
        indexes.defer_reader_indexes(cursor, run_id=stopped.pk)
    IngestRun.objects.filter(pk=stopped.pk).update(status="abandoned")

    run, seen = run_watching(FakeUpstream(records(300)))

    # It found the indexes missing and not its own: built them, then deferred them as its own first load.
    assert run.status == "succeeded" and seen[0] == set(before) - READER_INDEXES
    assert definitions() == before and not DeferredIndex.objects.exists()


def test_a_resumed_load_keeps_deferring_and_builds_them_at_its_end(first_loads_defer):
    before = definitions()
    source = records(300)
    run, _ = run_watching(FakeUpstream(source, script={4: [Reply(503)] * 10}))
    # What a killed process would have left instead of failing: an index still deferred by the run.
    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX customer_created_idx")
    DeferredIndex.objects.create(name="customer_created_idx", definition=before["customer_created_idx"], run_id=run.pk)

    runs.requeue(run.pk)
    seen = []
    resumed = pipeline.execute_run(
        run.pk, session=FakeUpstream(source).session(), progress=lambda run: seen.append(set(definitions()))
    )

    assert (resumed.status, resumed.inserted) == ("succeeded", 300)
    assert seen == [set(before) - {"customer_created_idx"}]
    assert definitions() == before


def test_a_busy_table_keeps_its_indexes_rather_than_making_readers_wait(first_loads_defer):
    before = set(definitions())
    holding, release = threading.Event(), threading.Event()

    def reader():
        with psycopg.connect(**side_connection_kwargs()) as conn, conn.transaction():
            conn.execute("SELECT count(*) FROM customers_customer")  # holds its lock until the transaction ends
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        holding.wait(10)
        run, seen = run_watching(FakeUpstream(records(300)))
    finally:
        release.set()
        thread.join()

    assert run.status == "succeeded" and run.inserted == 300
    assert seen[0] == before
