"""Background runs on procrastinate: run and job together, a real worker executes them."""

import itertools
import signal
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone
from procrastinate.contrib.django import app
from procrastinate.contrib.django.models import ProcrastinateJob

from customers.models import Customer
from ingestion import pipeline, runs, tasks
from ingestion.models import IngestRun, SyncCursor
from mocksource.dataset import write_dataset
from mocksource.faults import FaultConfig
from tests.ingestion.workers import wait_until, worker_process
from tests.records import records
from tests.upstream import running_mocksource

ROOT = Path(__file__).resolve().parents[2]


def run_worker_until_idle():
    """Run a real worker on the ingestion queue until it has nothing left to do."""
    with app.replace_connector(app.connector.get_worker_connector()) as worker_app:
        worker_app.run_worker(queues=[tasks.QUEUE], wait=False, install_signal_handlers=False, listen_notify=False)


@pytest.mark.django_db
def test_run_and_job_are_created_together():
    run = tasks.start_in_background(trigger="api")
    job = ProcrastinateJob.objects.get(task_name="ingestion.execute_run")
    assert run.status == "queued"
    assert (job.task_name, job.args, job.queue_name, job.status) == (
        "ingestion.execute_run",
        {"run_id": run.pk},
        "ingestion",
        "todo",
    )


@pytest.mark.django_db
def test_a_refused_run_leaves_no_job():
    tasks.start_in_background(trigger="api")
    with pytest.raises(runs.RunAlreadyActive):
        tasks.start_in_background(trigger="api")
    assert ProcrastinateJob.objects.filter(task_name="ingestion.execute_run").count() == 1
    assert IngestRun.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_worker_executes_the_queued_run(tmp_path, settings):
    path = tmp_path / "customers.jsonl"
    write_dataset(records(120), path)
    with running_mocksource(path) as base_url:
        settings.INGESTION_SOURCE_URL = base_url
        run = tasks.start_in_background(trigger="api")
        run_worker_until_idle()
    run.refresh_from_db()
    assert (run.status, run.inserted) == ("succeeded", 120)
    assert Customer.objects.count() == 120
    assert ProcrastinateJob.objects.get(task_name="ingestion.execute_run").status == "succeeded"


@pytest.mark.django_db
def test_sweep_starts_a_scheduled_run_when_the_interval_has_passed(settings):
    settings.INGESTION_SCHEDULE_MINUTES = 0
    assert tasks.start_scheduled_run_if_due() is None
    settings.INGESTION_SCHEDULE_MINUTES = 30
    run = tasks.start_scheduled_run_if_due()
    assert (run.trigger, run.status) == ("schedule", "queued")
    assert tasks.start_scheduled_run_if_due() is None  # one is active, and it is too soon anyway
    IngestRun.objects.filter(pk=run.pk).update(status="succeeded", created_at=timezone.now() - timedelta(minutes=31))
    assert tasks.start_scheduled_run_if_due().trigger == "schedule"


@pytest.mark.django_db
def test_the_schedule_runs_incremental_runs_between_full_ones_and_never_two_at_once(settings):
    settings.INGESTION_SCHEDULE_MINUTES, settings.INGESTION_INCREMENTAL_MINUTES = 24 * 60, 10
    full = tasks.start_scheduled_run_if_due()
    assert full.mode == "full"
    assert tasks.start_scheduled_run_if_due() is None  # one run at a time
    IngestRun.objects.filter(pk=full.pk).update(status="succeeded", high_water=timezone.now())
    SyncCursor.objects.create(source_url=full.source_url, watermark=timezone.now(), run=full)

    incremental = tasks.start_scheduled_run_if_due()

    assert (incremental.mode, incremental.trigger) == ("incremental", "schedule")
    IngestRun.objects.filter(pk=incremental.pk).update(status="succeeded")
    assert tasks.start_scheduled_run_if_due() is None  # the incremental one ran under 10 minutes ago
    IngestRun.objects.update(created_at=timezone.now() - timedelta(days=2))
    assert tasks.start_scheduled_run_if_due().mode == "full"  # both due: the reconciliation wins


@pytest.mark.django_db(transaction=True)  # a job closes its connection when it ends
def test_sweep_marks_silent_runs_abandoned(settings):
    settings.INGESTION_ABANDON_AFTER_SECONDS = 60
    run = runs.create_run(trigger="api")
    runs.mark_running(run.pk)
    IngestRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=61))
    tasks.sweep.func(timestamp=0)
    run.refresh_from_db()
    assert run.status == "abandoned"


@pytest.mark.django_db(transaction=True)
def test_worker_killed_mid_run_is_noticed_then_resumed_to_the_same_end_state(tmp_path):
    path = tmp_path / "customers.jsonl"
    source = records(400)
    source[50]["email"] = "broken"
    source.append(dict(source[10]))
    write_dataset(source, path)
    with running_mocksource(path, faults=FaultConfig(latency_ms=150)) as base_url:
        run = runs.create_run(trigger="api", source_url=base_url, page_size=20)
        worker = worker_process(INGESTION_BATCH_SIZE="20", INGESTION_CONCURRENCY="1")
        try:
            tasks.execute_run_job.defer(run_id=run.pk)
            assert wait_until(lambda: IngestRun.objects.get(pk=run.pk).last_committed_page >= 3)
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
        finally:
            worker.kill()
        killed = IngestRun.objects.get(pk=run.pk)
        assert killed.status == "running"
        assert 0 < killed.inserted < 400
        assert Customer.objects.count() == killed.inserted  # only whole batches were committed

        assert runs.abandon_stale_runs(stale_after=timedelta(seconds=0)) == [run.pk]
        runs.requeue(run.pk)
        resumed = pipeline.execute_run(run.pk)
    assert resumed.status == "succeeded"
    assert resumed.counters() == {
        "fetched": 401, "inserted": 399, "updated": 0, "unchanged": 0, "invalid": 1, "conflicts": 0,
        "duplicates": 1, "suppressed": 0,
    }  # fmt: skip
    assert Customer.objects.count() == 399
    assert list(Customer.objects.order_by("seq").values_list("seq", flat=True)) == list(range(1, 400))


@pytest.mark.django_db(transaction=True)
def test_two_workers_never_run_one_run_twice_nor_two_runs_at_once(tmp_path):
    path = tmp_path / "customers.jsonl"
    write_dataset(records(200), path)
    with running_mocksource(path, faults=FaultConfig(latency_ms=20)) as base_url:
        workers = [worker_process(INGESTION_BATCH_SIZE="50") for _ in range(2)]
        try:
            finished = []
            for _ in range(3):
                run = runs.create_run(trigger="api", source_url=base_url, page_size=50)
                # The same run deferred twice, as a duplicate delivery would: it must execute once.
                tasks.execute_run_job.defer(run_id=run.pk)
                tasks.execute_run_job.defer(run_id=run.pk)
                assert wait_until(lambda run=run: IngestRun.objects.get(pk=run.pk).status == "succeeded", 60)
                assert wait_until(
                    lambda: (
                        not ProcrastinateJob.objects.filter(
                            status__in=["todo", "doing"], task_name="ingestion.execute_run"
                        ).exists()
                    )
                )
                finished.append(IngestRun.objects.get(pk=run.pk))
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                worker.wait(15)
    assert [run.fetched for run in finished] == [200, 200, 200]
    assert [run.inserted for run in finished] == [200, 0, 0]
    intervals = sorted((run.started_at, run.finished_at) for run in finished)
    assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(intervals))


@pytest.mark.django_db(transaction=True)
def test_a_worker_never_executes_a_run_cancelled_while_queued():
    run = tasks.start_in_background(trigger="api", source_url="http://upstream.test")
    runs.cancel(run.pk, by="an operator")

    run_worker_until_idle()

    run.refresh_from_db()
    assert (run.status, run.attempt, run.started_at) == ("cancelled", 0, None)
    assert ProcrastinateJob.objects.get(task_name="ingestion.execute_run").status == "cancelled"


@pytest.mark.django_db(transaction=True)
def test_a_worker_that_takes_a_cancelled_runs_job_anyway_leaves_the_run_alone():
    run = tasks.start_in_background(trigger="api", source_url="http://upstream.test")
    runs.cancel(run.pk, by="an operator")
    tasks.execute_run_job.defer(run_id=run.pk)  # as a worker that took the job just before the cancel would have it

    run_worker_until_idle()

    run.refresh_from_db()
    assert (run.status, run.attempt, run.error) == ("cancelled", 0, "Cancelled by an operator.")
    assert Customer.objects.count() == 0
    # Only this queue: the worker here serves it alone, and other apps defer periodic jobs of their own.
    assert set(ProcrastinateJob.objects.filter(queue_name=tasks.QUEUE).values_list("status", flat=True)) == {
        "cancelled",
        "succeeded",
    }


@pytest.mark.django_db(transaction=True)
def test_sweep_abandons_a_queued_run_whose_job_was_deleted_so_runs_start_again(settings):
    settings.INGESTION_SCHEDULE_MINUTES = 30
    orphan = tasks.start_in_background(trigger="api")
    IngestRun.objects.filter(pk=orphan.pk).update(created_at=timezone.now() - timedelta(minutes=31))
    ProcrastinateJob.objects.filter(task_name="ingestion.execute_run").delete()

    tasks.sweep.func(timestamp=0)

    orphan.refresh_from_db()
    assert (orphan.status, orphan.error) == ("abandoned", "Queued, but it has no job: nothing would ever execute it.")
    assert IngestRun.objects.get(status="queued").trigger == "schedule"


@pytest.mark.django_db(transaction=True)  # the job closes its connection, as on a worker thread
def test_the_nightly_prune_deletes_finished_jobs_past_retention_and_keeps_the_rest(settings):
    settings.INGESTION_RETENTION_DAYS = 30
    ages = {"succeeded": 40, "failed": 40, "cancelled": 40, "todo": 40}
    kept_recent = tasks.execute_run_job.defer(run_id=9_000)
    jobs = {status: tasks.execute_run_job.defer(run_id=9_001 + index) for index, status in enumerate(ages)}
    with connection.cursor() as cursor:
        for status, job_id in [*jobs.items(), ("succeeded", kept_recent)]:
            cursor.execute("UPDATE procrastinate_jobs SET status = %s WHERE id = %s", [status, job_id])
        for status, job_id in jobs.items():
            cursor.execute(
                "UPDATE procrastinate_events SET at = now() - make_interval(days => %s) WHERE job_id = %s",
                [ages[status], job_id],
            )

    tasks.prune_job.func(timestamp=0)

    left = set(ProcrastinateJob.objects.filter(task_name="ingestion.execute_run").values_list("id", flat=True))
    assert left == {kept_recent, jobs["todo"]}  # a job that may still run is never pruned
