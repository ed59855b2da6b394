"""The life of an `IngestRun` row: create, mark running, keep alive, finish, requeue, abandon.

Status changes are single conditional UPDATEs, so two processes can never both move
the same run (for example two workers picking up one resumed run). While a run
executes, a heartbeat thread touches it; a run whose heartbeat stops (its process was
killed) is marked abandoned by `abandon_stale_runs`, so nothing stays "running" forever.
"""

import logging
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.utils import timezone

from ingestion.models import ACTIVE_STATUSES, IngestRun, RunStatus
from ingestion.source_url import SourceURLRefused, check_source_url

logger = logging.getLogger(__name__)


class RunRefused(Exception):
    """A run cannot be created, started or resumed; the message says why."""


class RunAlreadyActive(RunRefused):
    def __init__(self, active: IngestRun | None):
        self.active = active
        name = f"run {active.pk} is {active.status}" if active else "another run is active"
        super().__init__(f"An ingestion is already in progress: {name}.")


def create_run(
    *, trigger: str, source_url: str | None = None, page_size: int | None = None, dry_run: bool = False
) -> IngestRun:
    """Create a queued run; refuse when another run is queued or running."""
    page_size = settings.INGESTION_PAGE_SIZE if page_size is None else page_size
    if not 1 <= page_size <= 100:
        raise RunRefused(f"Page size must be between 1 and 100, not {page_size}.")
    source_url = source_url or settings.INGESTION_SOURCE_URL
    try:
        check_source_url(source_url)
    except SourceURLRefused as exc:
        raise RunRefused(str(exc)) from None
    try:
        with transaction.atomic():
            return IngestRun.objects.create(
                trigger=trigger,
                source_url=source_url,
                page_size=page_size,
                dry_run=dry_run,
            )
    except IntegrityError as exc:
        if "ingestrun_one_active" not in str(exc):
            raise
        raise RunAlreadyActive(IngestRun.objects.active().first()) from None


def mark_running(run_id: int) -> IngestRun:
    """Move a queued run to running; refuse anything else."""
    now = timezone.now()
    moved = IngestRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(
        status=RunStatus.RUNNING, heartbeat_at=now, error=""
    )
    if not moved:
        raise RunRefused(f"Run {run_id} is not queued, so it cannot start.")
    IngestRun.objects.filter(pk=run_id, started_at__isnull=True).update(started_at=now)
    return IngestRun.objects.get(pk=run_id)


def mark_finished(run_id: int, status: str, error: str = "") -> IngestRun:
    """Record the run's final status (and error); return it."""
    IngestRun.objects.filter(pk=run_id).update(status=status, error=error[:10000], finished_at=timezone.now())
    run = IngestRun.objects.get(pk=run_id)
    logger.info("run finished", extra={"run_id": run.pk, "status": run.status, **run.counters()})
    return run


def requeue(run_id: int) -> IngestRun:
    """Queue a failed or abandoned run again; it continues after its last committed page."""
    try:
        with transaction.atomic():
            moved = IngestRun.objects.filter(pk=run_id, status__in=[RunStatus.FAILED, RunStatus.ABANDONED]).update(
                status=RunStatus.QUEUED, finished_at=None
            )
    except IntegrityError:
        raise RunAlreadyActive(IngestRun.objects.active().first()) from None
    if not moved:
        run = IngestRun.objects.filter(pk=run_id).first()
        if run is None:
            raise RunRefused(f"Run {run_id} does not exist.")
        raise RunRefused(f"Run {run_id} is {run.status}; only failed or abandoned runs can be resumed.")
    return IngestRun.objects.get(pk=run_id)


def abandon_stale_runs(*, stale_after: timedelta | None = None) -> list[int]:
    """Mark running runs whose heartbeat stopped (their worker died) as abandoned."""
    if stale_after is None:
        stale_after = timedelta(seconds=settings.INGESTION_ABANDON_AFTER_SECONDS)
    cutoff = timezone.now() - stale_after
    stale = list(
        IngestRun.objects.filter(status=RunStatus.RUNNING, heartbeat_at__lt=cutoff).values_list("pk", flat=True)
    )
    for run_id in stale:
        IngestRun.objects.filter(pk=run_id, status=RunStatus.RUNNING, heartbeat_at__lt=cutoff).update(
            status=RunStatus.ABANDONED,
            finished_at=timezone.now(),
            error=f"No heartbeat for {int(stale_after.total_seconds())} s: the process running it stopped.",
        )
        logger.warning("run abandoned", extra={"run_id": run_id})
    return stale


def wait_for_run(
    run_id: int, *, timeout: float, poll: float = 0.2, sleep=time.sleep, clock=time.monotonic
) -> IngestRun:
    """Return the run once it is no longer queued or running, or when `timeout` passes."""
    deadline = clock() + timeout
    while True:
        run = IngestRun.objects.get(pk=run_id)
        if run.status not in ACTIVE_STATUSES or clock() >= deadline:
            return run
        sleep(min(poll, max(0.0, deadline - clock())))


class heartbeat:
    """While the block runs, touch the run's heartbeat from a side thread every INGESTION_HEARTBEAT_SECONDS."""

    def __init__(self, run_id: int):
        self.run_id = run_id
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id}", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stop.set()
        self.thread.join()

    def _beat(self) -> None:
        try:
            while not self.stop.wait(settings.INGESTION_HEARTBEAT_SECONDS):
                IngestRun.objects.filter(pk=self.run_id, status=RunStatus.RUNNING).update(heartbeat_at=timezone.now())
        finally:
            connection.close()


def record_crash(run_id: int, exc: BaseException) -> None:
    """Record an unexpected error on the run as `failed`, on a fresh connection if the old one broke."""
    # First line only: database errors add DETAIL lines that quote row values (an email).
    text = str(exc).strip()
    message = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
    logger.error("run crashed", extra={"run_id": run_id, "reason": type(exc).__name__})
    try:
        if connection.in_atomic_block:
            return  # the caller's transaction will roll back; it owns the outcome
        close_old_connections()
        if connection.connection is not None and not connection.is_usable():
            connection.close()
        mark_finished(run_id, RunStatus.FAILED, message)
    except Exception:
        logger.exception("could not record the failure of run", extra={"run_id": run_id})
