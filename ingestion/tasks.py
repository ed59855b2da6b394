"""Background doors onto the pipeline, on procrastinate (jobs live in PostgreSQL).

A run row and its job are created in one transaction: either both exist or neither,
so a run queued here always has a job and a job always has its run (a queued run whose
job is gone is abandoned by `runs.abandon_stale_runs`). The job's `lock` makes workers on
any number of machines run ingestions one after another. A job carries the trace context of
the request that queued it (config/tracing.py), so the run's spans join that request's trace.
"""

import logging
from contextlib import contextmanager
from datetime import timedelta

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone
from opentelemetry import trace
from procrastinate import jobs as procrastinate_jobs
from procrastinate.contrib.django import app

from config import tracing
from ingestion import jobs, pipeline, retention, runs
from ingestion.models import IngestRun, RunMode, RunTrigger

logger = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

QUEUE = "ingestion"


@contextmanager
def _job_connection():
    # Procrastinate runs sync jobs on pool threads; each thread has its own Django
    # connection, which nothing else would close.
    close_old_connections()
    try:
        yield
    finally:
        connection.close()


@app.task(name=jobs.EXECUTE_RUN_TASK, queue=QUEUE, lock="ingestion-run")
def execute_run_job(run_id: int, trace_context: dict[str, str] | None = None) -> None:
    # Jobs queued before tracing existed, or while it was off, carry no context: a trace of their own.
    with (
        _job_connection(),
        tracing.continued(trace_context),
        tracer.start_as_current_span("ingestion.job", kind=trace.SpanKind.CONSUMER) as span,
    ):
        try:
            pipeline.execute_run(run_id)
        except runs.RunRefused as exc:
            # The run was cancelled, resumed or finished elsewhere meanwhile; nothing to do.
            logger.warning("job skipped", extra={"run_id": run_id, "reason": str(exc)})
            span.set_attribute("ingestion.job.skipped", str(exc))


def start_in_background(
    *,
    trigger: str,
    source_url: str | None = None,
    page_size: int | None = None,
    dry_run: bool = False,
    mode: str = RunMode.FULL,
) -> IngestRun:
    """Create a queued run and its job, atomically; refuse if a run is active."""
    with transaction.atomic():
        run = runs.create_run(trigger=trigger, source_url=source_url, page_size=page_size, dry_run=dry_run, mode=mode)
        _defer(run.pk)
    return run


def resume_in_background(run_id: int) -> IngestRun:
    """Queue a failed, abandoned or cancelled run again, with its job, atomically."""
    with transaction.atomic():
        run = runs.requeue(run_id)
        _defer(run.pk)
    return run


@app.periodic(cron="* * * * *")
@app.task(name="ingestion.sweep", queue=QUEUE, queueing_lock="ingestion-sweep")
def sweep(timestamp: int) -> None:
    """Every minute: notice dead runs, release their jobs, start a scheduled run if due."""
    with _job_connection():
        runs.abandon_stale_runs()
        _fail_stalled_jobs()
        # A first load whose process died left the readers' indexes unbuilt.
        pipeline.build_orphaned_indexes()
        start_scheduled_run_if_due()


@app.periodic(cron="17 3 * * *")
@app.task(name="ingestion.prune", queue=QUEUE, queueing_lock="ingestion-prune")
def prune_job(timestamp: int) -> None:
    """Every night: delete staging, failures and finished jobs past their retention."""
    with _job_connection():
        pruned = retention.prune()
        logger.info("pruned", extra={"staged": pruned.staged, "failures": pruned.failures})
        # procrastinate keeps finished jobs: the sweep alone adds 1,440 a day, and the run life
        # cycle's job lookups (ingestion/jobs.py) read them. No run needs a finished job.
        async_to_sync(app.job_manager.delete_old_jobs)(
            nb_hours=settings.INGESTION_RETENTION_DAYS * 24,
            include_failed=True,
            include_cancelled=True,
            include_aborted=True,
        )


def _defer(run_id: int) -> None:
    # The trace context only when there is one: an untraced job's arguments stay {"run_id": ...}.
    headers = tracing.carrier()
    execute_run_job.defer(run_id=run_id, **({"trace_context": headers} if headers else {}))


def _fail_stalled_jobs() -> None:
    # A job whose worker died stays "doing" and would hold the ingestion lock forever.
    stalled = async_to_sync(app.job_manager.get_stalled_jobs)(queue=QUEUE, task_name=execute_run_job.name)
    for job in stalled:
        async_to_sync(app.job_manager.finish_job)(job, procrastinate_jobs.Status.FAILED, delete_job=False)
        logger.warning("stalled job released", extra={"job_id": job.id})


def start_scheduled_run_if_due() -> IngestRun | None:
    """Start the run that is due, if any: a full one every INGESTION_SCHEDULE_MINUTES, else an
    incremental one every INGESTION_INCREMENTAL_MINUTES, each counted from the last run of its mode.

    The full run wins when both are due: it is also the reconciliation. One run at a time
    still holds (the database refuses a second active run), so the two never overlap.
    """
    if IngestRun.objects.active().exists():
        return None
    for mode, interval in (
        (RunMode.FULL, settings.INGESTION_SCHEDULE_MINUTES),
        (RunMode.INCREMENTAL, settings.INGESTION_INCREMENTAL_MINUTES),
    ):
        if not interval:
            continue
        last = IngestRun.objects.filter(mode=mode).order_by("-created_at").first()
        if last and last.created_at > timezone.now() - timedelta(minutes=interval):
            continue
        try:
            return start_in_background(trigger=RunTrigger.SCHEDULE, mode=mode)
        except runs.RunAlreadyActive:
            return None
    return None
