"""The life of an `IngestRun` row: create, start, finish, resume, abandon.

Status changes are single conditional UPDATEs, so two processes can never both move
the same run (for example two workers picking up one resumed run).
"""

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
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


def start_run(run_id: int) -> IngestRun:
    """Move a queued run to running; refuse anything else."""
    now = timezone.now()
    moved = IngestRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(
        status=RunStatus.RUNNING, heartbeat_at=now, error=""
    )
    if not moved:
        raise RunRefused(f"Run {run_id} is not queued, so it cannot start.")
    IngestRun.objects.filter(pk=run_id, started_at__isnull=True).update(started_at=now)
    return IngestRun.objects.get(pk=run_id)


def finish_run(run_id: int, status: str, error: str = "") -> IngestRun:
    IngestRun.objects.filter(pk=run_id).update(status=status, error=error[:10000], finished_at=timezone.now())
    run = IngestRun.objects.get(pk=run_id)
    logger.info("run finished", extra={"run_id": run.pk, "status": run.status, **_counters(run)})
    return run


def resume_run(run_id: int) -> IngestRun:
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


def _counters(run: IngestRun) -> dict[str, int]:
    return {name: getattr(run, name) for name in IngestRun.COUNTERS}
