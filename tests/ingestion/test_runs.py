"""ingestion/runs.py: the life of an IngestRun row, from queued to finished, requeued or abandoned."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from procrastinate.contrib.django.models import ProcrastinateJob

from customers.models import Customer
from ingestion import pipeline, runs, tasks
from ingestion.batches import Batch, commit_batch
from ingestion.models import IngestRun, RunStatus
from ingestion.source import Page
from ingestion.validation import validate_page
from tests.customers.factories import create_customer
from tests.database import in_another_session, side_connection_kwargs
from tests.ingestion.fakes import FakeUpstream
from tests.ingestion.workers import wait_until
from tests.records import records

pytestmark = pytest.mark.django_db

LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


def run_in(status: str, **fields) -> IngestRun:
    """A run already in `status` (finished ones may be many; queued or running, at most one).

    A queued one has its job, as the background doors make it: without one it is orphaned.
    """
    run = IngestRun.objects.create(
        status=status, trigger="command", source_url="http://upstream.test", page_size=100, **fields
    )
    if status == RunStatus.QUEUED:
        tasks.execute_run_job.defer(run_id=run.pk)
    return run


def reloaded(run: IngestRun) -> IngestRun:
    return IngestRun.objects.get(pk=run.pk)


# --- create_run ------------------------------------------------------------------------


def test_create_run_queues_a_run_with_what_it_was_given():
    run = runs.create_run(trigger="api", source_url="http://upstream.test/v1", page_size=25, dry_run=True)

    assert (run.status, run.trigger, run.source_url, run.page_size, run.dry_run) == (
        "queued", "api", "http://upstream.test/v1", 25, True,
    )  # fmt: skip
    assert (run.started_at, run.finished_at, run.heartbeat_at) == (None, None, None)


def test_page_size_and_source_url_default_to_the_settings(settings):
    settings.INGESTION_PAGE_SIZE = 40
    settings.INGESTION_SOURCE_URL = "http://upstream.test/customers"

    run = runs.create_run(trigger="command")

    assert (run.page_size, run.source_url) == (40, "http://upstream.test/customers")


@pytest.mark.parametrize("page_size", [1, 100])
def test_page_sizes_from_1_to_100_are_accepted(page_size):
    assert runs.create_run(trigger="command", page_size=page_size).page_size == page_size


@pytest.mark.parametrize("page_size", [0, -1, 101])
def test_page_size_outside_1_to_100_is_refused_and_named(page_size):
    with pytest.raises(runs.RunRefused) as refused:
        runs.create_run(trigger="command", page_size=page_size)
    assert str(refused.value) == f"Page size must be between 1 and 100, not {page_size}."
    assert not IngestRun.objects.exists()


def test_a_refused_source_url_refuses_the_run_with_the_reason():
    with pytest.raises(runs.RunRefused) as refused:
        runs.create_run(trigger="command", source_url="http://elsewhere.test")
    assert str(refused.value).startswith("Host 'elsewhere.test' is not an allowed upstream")
    assert not isinstance(refused.value, runs.RunAlreadyActive)
    assert not IngestRun.objects.exists()


def test_a_second_run_is_refused_while_one_is_active():
    active = tasks.start_in_background(trigger="api")
    with pytest.raises(runs.RunAlreadyActive, match=f"run {active.pk} is queued") as refused:
        runs.create_run(trigger="command")
    assert refused.value.active == active
    assert IngestRun.objects.count() == 1


def test_a_second_run_is_refused_while_one_is_running_and_names_it():
    active = runs.mark_running(runs.create_run(trigger="api").pk)

    with pytest.raises(runs.RunAlreadyActive) as refused:
        runs.create_run(trigger="command")

    assert str(refused.value) == f"An ingestion is already in progress: run {active.pk} is running."
    assert refused.value.active == active


def test_finished_runs_do_not_block_a_new_one():
    for status in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.ABANDONED):
        run_in(status)

    assert runs.create_run(trigger="command").status == "queued"


# --- mark_running ----------------------------------------------------------------------


def test_mark_running_moves_a_queued_run_and_stamps_start_and_heartbeat():
    run = runs.create_run(trigger="command")
    IngestRun.objects.filter(pk=run.pk).update(error="left from an earlier attempt")

    running = runs.mark_running(run.pk)

    assert running.status == "running"
    assert running.started_at is not None
    assert running.heartbeat_at == running.started_at
    assert running.error == ""


@pytest.mark.parametrize("status", ["running", "succeeded", "failed", "abandoned"])
def test_mark_running_refuses_a_run_that_is_not_queued_and_leaves_it_as_it_was(status):
    run = run_in(status, heartbeat_at=LONG_AGO, error="kept")

    with pytest.raises(runs.RunRefused) as refused:
        runs.mark_running(run.pk)
    assert str(refused.value) == f"Run {run.pk} is not queued, so it cannot start."

    after = reloaded(run)
    assert (after.status, after.heartbeat_at, after.error, after.started_at) == (status, LONG_AGO, "kept", None)


def test_mark_running_refuses_an_unknown_run():
    with pytest.raises(runs.RunRefused) as refused:
        runs.mark_running(999999)
    assert str(refused.value) == "Run 999999 is not queued, so it cannot start."


def test_a_resumed_run_keeps_its_first_start_time():
    run = runs.create_run(trigger="command")
    runs.mark_running(run.pk)
    IngestRun.objects.filter(pk=run.pk).update(started_at=LONG_AGO)
    runs.mark_finished(run.pk, RunStatus.FAILED, "upstream gone")
    runs.requeue(run.pk)

    resumed = runs.mark_running(run.pk)

    assert resumed.started_at == LONG_AGO
    assert resumed.heartbeat_at > LONG_AGO
    assert resumed.error == ""


# --- mark_finished ---------------------------------------------------------------------


def test_mark_finished_records_status_error_and_finish_time():
    run = runs.mark_running(runs.create_run(trigger="command").pk)

    finished = runs.mark_finished(run.pk, RunStatus.FAILED, "Page 3: gave up")

    assert (finished.status, finished.error) == ("failed", "Page 3: gave up")
    assert finished.finished_at is not None
    assert reloaded(run).status == "failed"


def test_mark_finished_without_an_error_leaves_it_empty():
    run = runs.mark_running(runs.create_run(trigger="command").pk)

    assert runs.mark_finished(run.pk, RunStatus.SUCCEEDED).error == ""


def test_mark_finished_keeps_the_first_10000_characters_of_the_error():
    run = runs.mark_running(runs.create_run(trigger="command").pk)

    finished = runs.mark_finished(run.pk, RunStatus.FAILED, "x" * 10_000 + "cut")

    assert finished.error == "x" * 10_000


# --- requeue ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["failed", "abandoned"])
def test_requeue_queues_a_failed_or_abandoned_run_again(status):
    run = run_in(status, finished_at=timezone.now(), last_committed_page=4, fetched=400)

    queued = runs.requeue(run.pk)

    assert (queued.status, queued.finished_at) == ("queued", None)
    assert (queued.last_committed_page, queued.fetched) == (4, 400)  # it continues from there


def test_only_failed_abandoned_or_cancelled_runs_resume(ingest):
    run = ingest(FakeUpstream(records(3)))
    with pytest.raises(runs.RunRefused, match="only failed, abandoned or cancelled"):
        runs.requeue(run.pk)
    with pytest.raises(runs.RunRefused, match="does not exist"):
        runs.requeue(999999)


@pytest.mark.parametrize("status", ["queued", "running", "succeeded"])
def test_requeue_refuses_other_statuses_naming_the_status(status):
    run = run_in(status)

    with pytest.raises(runs.RunRefused) as refused:
        runs.requeue(run.pk)

    assert str(refused.value) == f"Run {run.pk} is {status}; only failed, abandoned or cancelled runs can be resumed."
    assert not isinstance(refused.value, runs.RunAlreadyActive)
    assert reloaded(run).status == status


def test_requeue_is_refused_while_another_run_is_active():
    failed = run_in(RunStatus.FAILED, finished_at=timezone.now())
    active = tasks.start_in_background(trigger="api")

    with pytest.raises(runs.RunAlreadyActive, match=f"run {active.pk} is queued") as refused:
        runs.requeue(failed.pk)

    assert refused.value.active == active
    assert reloaded(failed).status == "failed"


# --- abandon_stale_runs ----------------------------------------------------------------


def test_runs_without_heartbeat_are_marked_abandoned():
    run = runs.create_run(trigger="api")
    runs.mark_running(run.pk)
    IngestRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=10))
    fresh_cutoff = timedelta(minutes=5)
    assert runs.abandon_stale_runs(stale_after=fresh_cutoff) == [run.pk]
    run.refresh_from_db()
    assert run.status == "abandoned"
    assert "No heartbeat" in run.error
    assert runs.requeue(run.pk).status == "queued"


def test_an_abandoned_run_says_how_long_it_was_silent_and_is_finished():
    run = runs.mark_running(runs.create_run(trigger="api").pk)
    IngestRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=10))

    runs.abandon_stale_runs(stale_after=timedelta(minutes=5))

    abandoned = reloaded(run)
    assert abandoned.error == "No heartbeat for 300 s: the process running it stopped."
    assert abandoned.finished_at is not None


def test_a_running_run_with_a_recent_heartbeat_is_left_running():
    run = runs.mark_running(runs.create_run(trigger="api").pk)
    IngestRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=4))

    assert runs.abandon_stale_runs(stale_after=timedelta(minutes=5)) == []
    assert reloaded(run).status == "running"


@pytest.mark.parametrize("status", ["queued", "succeeded", "failed"])
def test_only_running_runs_are_abandoned(status):
    run = run_in(status, heartbeat_at=LONG_AGO, error="")

    assert runs.abandon_stale_runs(stale_after=timedelta(minutes=5)) == []
    assert (reloaded(run).status, reloaded(run).error) == (status, "")


def test_the_stale_cutoff_defaults_to_the_setting(settings):
    settings.INGESTION_ABANDON_AFTER_SECONDS = 60
    run = runs.mark_running(runs.create_run(trigger="api").pk)
    IngestRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=30))
    assert runs.abandon_stale_runs() == []

    IngestRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=90))

    assert runs.abandon_stale_runs() == [run.pk]
    assert reloaded(run).error == "No heartbeat for 60 s: the process running it stopped."


# --- wait_for_run ----------------------------------------------------------------------


class FakeClock:
    """A monotonic clock that moves only when the code under test sleeps."""

    def __init__(self, on_sleep=None):
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert len(self.sleeps) < 1000, "still waiting after 1000 sleeps"
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep:
            self.on_sleep(len(self.sleeps))


def test_wait_for_run_returns_a_finished_run_without_sleeping():
    run = run_in(RunStatus.SUCCEEDED)
    clock = FakeClock()

    assert runs.wait_for_run(run.pk, timeout=10, sleep=clock.sleep, clock=clock).status == "succeeded"
    assert clock.sleeps == []


def test_wait_for_run_polls_until_the_run_finishes():
    run = runs.mark_running(runs.create_run(trigger="api").pk)

    def finish_on_third_sleep(count):
        if count == 3:
            runs.mark_finished(run.pk, RunStatus.SUCCEEDED)

    clock = FakeClock(on_sleep=finish_on_third_sleep)

    waited = runs.wait_for_run(run.pk, timeout=10, poll=0.5, sleep=clock.sleep, clock=clock)

    assert waited.status == "succeeded"
    assert clock.sleeps == [0.5, 0.5, 0.5]


def test_wait_for_run_gives_up_at_the_timeout_and_returns_the_run_as_it_is():
    run = runs.create_run(trigger="api")
    clock = FakeClock()

    waited = runs.wait_for_run(run.pk, timeout=1.0, poll=0.4, sleep=clock.sleep, clock=clock)

    assert waited.status == "queued"
    # The last sleep ends at the deadline, not a whole poll past it.
    assert clock.sleeps == pytest.approx([0.4, 0.4, 0.2])


# --- heartbeat -------------------------------------------------------------------------


def _heartbeat_at(run: IngestRun):
    return IngestRun.objects.values_list("heartbeat_at", flat=True).get(pk=run.pk)


@pytest.mark.django_db(transaction=True)  # the heartbeat thread has its own connection
def test_heartbeat_touches_a_running_run_until_the_block_ends(settings):
    settings.INGESTION_HEARTBEAT_SECONDS = 0.01
    run = runs.mark_running(runs.create_run(trigger="api").pk)
    IngestRun.objects.filter(pk=run.pk).update(heartbeat_at=LONG_AGO)

    with runs.heartbeat(run.pk, run.attempt) as beat:
        assert wait_until(lambda: _heartbeat_at(run) > LONG_AGO, timeout=10)

    assert not beat.thread.is_alive()


@pytest.mark.django_db(transaction=True)
def test_heartbeat_does_not_touch_a_run_that_is_no_longer_running(settings):
    settings.INGESTION_HEARTBEAT_SECONDS = 0.01
    run = runs.mark_running(runs.create_run(trigger="api").pk)
    IngestRun.objects.filter(pk=run.pk).update(heartbeat_at=LONG_AGO)

    with runs.heartbeat(run.pk, run.attempt):
        assert wait_until(lambda: _heartbeat_at(run) > LONG_AGO, timeout=10)
        IngestRun.objects.filter(pk=run.pk).update(status=RunStatus.ABANDONED, heartbeat_at=LONG_AGO)
        # Twenty intervals: time for the thread to have tried again many times.
        wait_until(lambda: _heartbeat_at(run) > LONG_AGO, timeout=0.2)

    assert _heartbeat_at(run) == LONG_AGO


# --- record_crash ----------------------------------------------------------------------


def _integrity_error_quoting_an_email() -> IntegrityError:
    """A real unique violation: PostgreSQL's message has a DETAIL line that quotes the email."""
    create_customer(email="ada@example.com")
    try:
        create_customer(email="ADA@example.com")
    except IntegrityError as exc:
        return exc
    raise AssertionError("the second customer was inserted")


@pytest.mark.django_db(transaction=True)  # record_crash records nothing inside an atomic block
def test_record_crash_fails_the_run_with_the_first_line_of_the_error_only():
    run = runs.mark_running(runs.create_run(trigger="api").pk)
    error = _integrity_error_quoting_an_email()
    assert "DETAIL" in str(error) and "ada@example.com" in str(error).lower()

    runs.record_crash(run.pk, error)

    crashed = reloaded(run)
    assert crashed.status == "failed"
    assert crashed.error == f"IntegrityError: {str(error).splitlines()[0]}"
    assert "\n" not in crashed.error and "ada@example.com" not in crashed.error.lower()
    assert crashed.finished_at is not None
    assert Customer.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_record_crash_names_the_exception_when_it_has_no_message():
    run = runs.mark_running(runs.create_run(trigger="api").pk)

    runs.record_crash(run.pk, KeyboardInterrupt())

    assert (reloaded(run).status, reloaded(run).error) == ("failed", "KeyboardInterrupt: ")


@pytest.mark.django_db(transaction=True)
def test_record_crash_inside_an_atomic_block_records_nothing_and_leaves_the_callers_transaction_alone():
    run = runs.mark_running(runs.create_run(trigger="api").pk)

    with transaction.atomic():
        IngestRun.objects.filter(pk=run.pk).update(error="the caller's own write")
        runs.record_crash(run.pk, RuntimeError("the caller's transaction owns this"))
        assert reloaded(run).error == "the caller's own write"  # its connection still works

    after = reloaded(run)
    assert (after.status, after.error, after.finished_at) == ("running", "the caller's own write", None)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("health_checks", [True, False], ids=["health-checks", "no-health-checks"])
def test_record_crash_records_on_a_fresh_connection_when_the_old_one_broke(monkeypatch, health_checks):
    # With CONN_HEALTH_CHECKS (the project's setting) Django would reconnect anyway; record_crash does not rely on it.
    monkeypatch.setitem(connection.settings_dict, "CONN_HEALTH_CHECKS", health_checks)
    run = runs.mark_running(runs.create_run(trigger="api").pk)
    connection.ensure_connection()
    connection.connection.close()  # the server went away under the run

    runs.record_crash(run.pk, RuntimeError("connection lost"))

    assert (reloaded(run).status, reloaded(run).error) == ("failed", "RuntimeError: connection lost")


@pytest.mark.django_db(transaction=True)
def test_heartbeat_survives_a_lost_connection(settings):
    settings.INGESTION_HEARTBEAT_SECONDS = 0.01
    run = runs.mark_running(runs.create_run(trigger="api").pk)
    IngestRun.objects.filter(pk=run.pk).update(heartbeat_at=LONG_AGO)

    with runs.heartbeat(run.pk, run.attempt) as beat:
        assert wait_until(lambda: _heartbeat_at(run) > LONG_AGO, timeout=10)
        # Cut off the heartbeat thread's session: the one other session whose last statement
        # touched the heartbeat (an idle session another test left open is not it).
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND query LIKE 'UPDATE %heartbeat_at%'"
            )
            assert cursor.fetchall() == [(True,)]
        IngestRun.objects.filter(pk=run.pk).update(heartbeat_at=LONG_AGO)

        assert wait_until(lambda: _heartbeat_at(run) > LONG_AGO, timeout=10)
        assert beat.thread.is_alive()


# --- one execution per run ---------------------------------------------------------------


@contextmanager
def _held_by_another_process(run: IngestRun) -> Iterator[None]:
    """Hold the run's execution lock from another session; closing it is that process dying."""
    executor = psycopg.connect(**side_connection_kwargs(), autocommit=True)
    try:
        executor.execute("SELECT pg_advisory_lock(%s, %s)", [runs.EXECUTION_LOCK_CLASS, run.pk])
        yield
    finally:
        executor.close()


def _taken_over(run: IngestRun) -> IngestRun:
    """What a sweep and a resume do to a run whose process stalled: the run's next attempt."""
    IngestRun.objects.filter(pk=run.pk).update(status=RunStatus.ABANDONED)
    runs.requeue(run.pk)
    return runs.mark_running(run.pk)


def test_each_start_is_a_new_attempt():
    first = runs.mark_running(runs.create_run(trigger="api").pk)

    assert (first.attempt, _taken_over(first).attempt) == (1, 2)


def test_a_stale_execution_cannot_commit_a_batch_after_its_run_was_taken_over():
    stale = runs.mark_running(runs.create_run(trigger="api", source_url="http://upstream.test").pk)
    _taken_over(stale)
    batch = Batch(first_position=1)
    batch.add(validate_page(Page(1, 100, 3, records(3))))

    with pytest.raises(runs.RunFenced):
        commit_batch(stale, batch)

    assert Customer.objects.count() == 0
    current = IngestRun.objects.get(pk=stale.pk)
    assert (current.status, current.fetched, current.attempt) == (RunStatus.RUNNING, 0, 2)


def test_a_stale_execution_cannot_finish_the_run_it_lost():
    stale = runs.mark_running(runs.create_run(trigger="api").pk)
    _taken_over(stale)

    finished = runs.mark_finished(stale.pk, RunStatus.SUCCEEDED, attempt=stale.attempt)

    assert (finished.status, finished.finished_at) == (RunStatus.RUNNING, None)


def test_a_stale_execution_stops_at_its_next_commit_and_leaves_the_run_to_its_owner(settings):
    settings.INGESTION_BATCH_SIZE = 100
    run = runs.create_run(trigger="api", source_url="http://upstream.test")

    def take_over_after_the_first_batch(progress_run):
        _taken_over(progress_run)

    finished = pipeline.execute_run(
        run.pk, session=FakeUpstream(records(300)).session(), progress=take_over_after_the_first_batch
    )

    # The first batch committed under attempt 1; the second found attempt 2 and rolled back.
    assert (finished.status, finished.attempt, finished.fetched) == (RunStatus.RUNNING, 2, 100)
    assert Customer.objects.count() == 100


@pytest.mark.django_db(transaction=True)
def test_a_run_whose_process_holds_its_execution_lock_is_not_abandoned_however_stale():
    run = runs.mark_running(runs.create_run(trigger="api").pk)
    IngestRun.objects.filter(pk=run.pk).update(heartbeat_at=LONG_AGO)

    with _held_by_another_process(run):
        assert runs.abandon_stale_runs() == []
        assert IngestRun.objects.get(pk=run.pk).status == RunStatus.RUNNING

    assert runs.abandon_stale_runs() == [run.pk]
    assert IngestRun.objects.get(pk=run.pk).status == RunStatus.ABANDONED


@pytest.mark.django_db(transaction=True)
def test_a_second_execution_of_a_run_is_refused_while_the_first_holds_it():
    run = runs.create_run(trigger="api", source_url="http://upstream.test")

    with _held_by_another_process(run), pytest.raises(runs.RunRefused, match="being executed by another process"):
        pipeline.execute_run(run.pk, session=FakeUpstream(records(3)).session())

    assert IngestRun.objects.get(pk=run.pk).status == RunStatus.QUEUED


def test_starting_a_run_first_abandons_a_dead_one_so_no_worker_is_needed():
    dead = runs.mark_running(runs.create_run(trigger="command").pk)
    IngestRun.objects.filter(pk=dead.pk).update(heartbeat_at=LONG_AGO)

    new = runs.create_run(trigger="command")

    assert IngestRun.objects.get(pk=dead.pk).status == RunStatus.ABANDONED
    assert new.status == RunStatus.QUEUED


def test_starting_a_run_still_refuses_while_a_live_one_runs():
    live = runs.mark_running(runs.create_run(trigger="command").pk)

    with pytest.raises(runs.RunAlreadyActive, match=f"run {live.pk} is running"):
        runs.create_run(trigger="command")


def test_resuming_a_run_first_abandons_a_dead_one_that_would_block_it():
    failed = runs.mark_running(runs.create_run(trigger="command").pk)
    runs.mark_finished(failed.pk, RunStatus.FAILED, "upstream down")
    dead = runs.mark_running(runs.create_run(trigger="command").pk)
    IngestRun.objects.filter(pk=dead.pk).update(heartbeat_at=LONG_AGO)

    resumed = runs.requeue(failed.pk)

    assert IngestRun.objects.get(pk=dead.pk).status == RunStatus.ABANDONED
    assert resumed.status == RunStatus.QUEUED


# --- cancel ------------------------------------------------------------------------------


def _job_of(run: IngestRun) -> ProcrastinateJob:
    return ProcrastinateJob.objects.get(task_name="ingestion.execute_run", args={"run_id": run.pk})


def _set_job(run: IngestRun, status: str | None) -> None:
    """Move the run's job to `status`, or delete it (None), as a worker or an operator would."""
    with connection.cursor() as cursor:
        if status is None:
            cursor.execute("DELETE FROM procrastinate_jobs WHERE args = %s::jsonb", [f'{{"run_id": {run.pk}}}'])
        else:
            cursor.execute(
                "UPDATE procrastinate_jobs SET status = %s WHERE args = %s::jsonb", [status, f'{{"run_id": {run.pk}}}']
            )


def test_cancel_of_a_queued_run_says_who_and_when_and_cancels_its_waiting_job():
    run = tasks.start_in_background(trigger="api")

    cancelled = runs.cancel(run.pk, by="an operator")

    assert (cancelled.status, cancelled.error, cancelled.started_at) == ("cancelled", "Cancelled by an operator.", None)
    assert cancelled.finished_at is not None
    assert reloaded(run).status == "cancelled"
    assert _job_of(run).status == "cancelled"


def test_cancel_leaves_a_job_a_worker_already_took_which_then_finds_the_run_cancelled():
    run = tasks.start_in_background(trigger="api")
    _set_job(run, "doing")

    runs.cancel(run.pk, by="an operator")

    assert _job_of(run).status == "doing"
    with pytest.raises(runs.RunRefused) as refused:
        runs.mark_running(run.pk)
    assert str(refused.value) == f"Run {run.pk} was cancelled, so it does not start."
    assert (reloaded(run).status, reloaded(run).attempt) == ("cancelled", 0)


def test_cancel_of_a_running_run_keeps_its_progress_and_fences_its_execution():
    run = runs.mark_running(runs.create_run(trigger="api").pk)
    IngestRun.objects.filter(pk=run.pk).update(last_committed_page=3, fetched=300, inserted=300)
    runs.ensure_owned(run)

    cancelled = runs.cancel(run.pk, by="an operator")

    assert (cancelled.status, cancelled.last_committed_page, cancelled.fetched, cancelled.inserted) == (
        "cancelled", 3, 300, 300,
    )  # fmt: skip
    with pytest.raises(runs.RunFenced):
        runs.ensure_owned(run)
    assert runs.mark_finished(run.pk, RunStatus.SUCCEEDED, attempt=run.attempt).status == "cancelled"


def test_the_ownership_watch_asks_after_each_commit_then_once_a_second(django_assert_num_queries):
    run = runs.mark_running(runs.create_run(trigger="api").pk)
    now = [100.0]
    watch = runs.OwnershipWatch(run, interval=1.0, clock=lambda: now[0])

    with django_assert_num_queries(1):
        for _ in range(50):  # fifty pages within the same second: one query
            watch.check()
    runs.cancel(run.pk, by="an operator")
    watch.check()  # still inside the second: not asked yet
    now[0] += 1.0
    with pytest.raises(runs.RunFenced):
        watch.check()


def test_the_ownership_watch_asks_at_the_first_page_after_a_commit():
    run = runs.mark_running(runs.create_run(trigger="api").pk)
    watch = runs.OwnershipWatch(run, interval=3600, clock=lambda: 100.0)
    watch.check()
    runs.cancel(run.pk, by="an operator")

    watch.committed(run)

    with pytest.raises(runs.RunFenced):
        watch.check()


@pytest.mark.parametrize("status", ["succeeded", "failed", "abandoned", "cancelled"])
def test_cancel_refuses_a_run_that_is_neither_queued_nor_running_and_leaves_it(status):
    run = run_in(status, error="kept", finished_at=LONG_AGO)

    with pytest.raises(runs.RunRefused) as refused:
        runs.cancel(run.pk, by="an operator")

    assert str(refused.value) == f"Run {run.pk} is {status}; only queued or running runs can be cancelled."
    assert (reloaded(run).status, reloaded(run).error, reloaded(run).finished_at) == (status, "kept", LONG_AGO)


def test_cancel_refuses_an_unknown_run():
    with pytest.raises(runs.RunRefused) as refused:
        runs.cancel(999999, by="an operator")
    assert str(refused.value) == "Run 999999 does not exist."


def test_a_second_cancel_is_refused_and_keeps_the_first():
    run = runs.mark_running(runs.create_run(trigger="api").pk)
    first = runs.cancel(run.pk, by="the first operator")

    with pytest.raises(runs.RunRefused, match="is cancelled; only queued or running"):
        runs.cancel(run.pk, by="the second operator")

    assert (reloaded(run).error, reloaded(run).finished_at) == ("Cancelled by the first operator.", first.finished_at)


def test_a_cancelled_run_no_longer_blocks_a_new_one():
    cancelled = runs.cancel(tasks.start_in_background(trigger="api").pk, by="an operator")

    assert runs.create_run(trigger="command").status == "queued"
    assert reloaded(cancelled).status == "cancelled"


def test_a_cancelled_run_resumes_after_its_last_committed_page():
    run = runs.mark_running(runs.create_run(trigger="api").pk)
    IngestRun.objects.filter(pk=run.pk).update(last_committed_page=4, fetched=400)
    runs.cancel(run.pk, by="an operator")

    queued = runs.requeue(run.pk)

    assert (queued.status, queued.finished_at, queued.last_committed_page, queued.fetched) == ("queued", None, 4, 400)
    assert runs.mark_running(run.pk).attempt == 2


def test_resuming_a_cancelled_run_is_refused_while_another_run_is_active():
    cancelled = runs.cancel(runs.mark_running(runs.create_run(trigger="api").pk).pk, by="an operator")
    active = tasks.start_in_background(trigger="api")

    with pytest.raises(runs.RunAlreadyActive, match=f"run {active.pk} is queued"):
        runs.requeue(cancelled.pk)

    assert reloaded(cancelled).status == "cancelled"


@pytest.mark.django_db(transaction=True)
def test_a_cancelled_run_is_not_requeued_while_its_execution_has_not_stopped_yet():
    run = runs.mark_running(runs.create_run(trigger="api").pk)
    runs.cancel(run.pk, by="an operator")

    with _held_by_another_process(run):
        with pytest.raises(runs.RunRefused) as refused:
            runs.requeue(run.pk)
        assert str(refused.value) == (
            f"Run {run.pk} is still being executed by another process; a cancelled run stops at its next page, "
            "so try again in a moment."
        )
        assert reloaded(run).status == "cancelled"

    assert runs.requeue(run.pk).status == "queued"


# --- abandon_stale_runs: queued runs nothing will execute ---------------------------------


@pytest.mark.parametrize(
    ("job_status", "gone"),
    [
        (None, "it has no job"),
        ("failed", "its job {job} is failed"),
        ("cancelled", "its job {job} is cancelled"),
        ("succeeded", "its job {job} is succeeded"),
    ],
    ids=["deleted", "failed", "cancelled", "succeeded"],
)
def test_a_queued_run_whose_job_is_gone_is_abandoned_saying_so(job_status, gone):
    run = tasks.start_in_background(trigger="api")
    job = _job_of(run).pk
    _set_job(run, job_status)

    assert runs.abandon_stale_runs() == [run.pk]

    abandoned = reloaded(run)
    assert abandoned.status == "abandoned"
    assert abandoned.error == f"Queued, but {gone.format(job=job)}: nothing would ever execute it."
    assert abandoned.finished_at is not None
    assert runs.requeue(run.pk).status == "queued"


@pytest.mark.parametrize("job_status", ["todo", "doing"])
def test_a_queued_run_whose_job_waits_or_executes_is_left_queued(job_status):
    run = tasks.start_in_background(trigger="api")
    _set_job(run, job_status)

    assert runs.abandon_stale_runs() == []
    assert reloaded(run).status == "queued"


def test_a_queued_run_counts_the_job_of_its_latest_resume():
    run = tasks.start_in_background(trigger="api")
    _set_job(run, "failed")
    runs.abandon_stale_runs()
    tasks.resume_in_background(run.pk)

    assert runs.abandon_stale_runs() == []
    assert reloaded(run).status == "queued"


def test_starting_a_run_first_abandons_a_queued_one_whose_job_is_gone():
    orphan = tasks.start_in_background(trigger="api")
    _set_job(orphan, None)

    new = tasks.start_in_background(trigger="api")

    assert reloaded(orphan).status == "abandoned"
    assert new.status == "queued"


@pytest.mark.django_db(transaction=True)
def test_a_queued_run_without_a_job_is_not_abandoned_while_a_process_holds_it():
    run = runs.create_run(trigger="command")

    with _held_by_another_process(run):
        assert runs.abandon_stale_runs() == []
        assert reloaded(run).status == "queued"

    assert runs.abandon_stale_runs() == [run.pk]


@pytest.mark.django_db(transaction=True)
def test_a_run_created_for_this_process_is_held_from_its_creation_and_released_after():
    with runs.foreground_run(trigger="command") as run:
        # Another process's sweep, between the insert and this process starting the run.
        assert in_another_session(runs.abandon_stale_runs) == []
        assert reloaded(run).status == "queued"

    assert in_another_session(runs.abandon_stale_runs) == [run.pk]


@pytest.mark.django_db(transaction=True)
def test_a_run_resumed_for_this_process_is_held_from_its_requeue_and_released_after():
    failed = run_in(RunStatus.FAILED, finished_at=timezone.now())

    with runs.foreground_resume(failed.pk) as run:
        assert in_another_session(runs.abandon_stale_runs) == []
        assert (run.pk, reloaded(run).status) == (failed.pk, "queued")

    assert in_another_session(runs.abandon_stale_runs) == [failed.pk]


def _free(run: IngestRun) -> bool:
    """Whether another process could take the run's execution lock now."""
    with psycopg.connect(**side_connection_kwargs(), autocommit=True) as other:
        return other.execute("SELECT pg_try_advisory_lock(%s, %s)", [runs.EXECUTION_LOCK_CLASS, run.pk]).fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_a_refused_foreground_resume_holds_nothing():
    succeeded = run_in(RunStatus.SUCCEEDED)

    refused = pytest.raises(runs.RunRefused, match="only failed, abandoned or cancelled")
    with refused, runs.foreground_resume(succeeded.pk):
        pass

    assert _free(succeeded)
