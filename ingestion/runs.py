"""The life of an `IngestRun` row: create, mark running, keep alive, finish, cancel, requeue, abandon.

Status changes are single conditional UPDATEs, so two processes can never both move
the same run (for example two workers picking up one resumed run). Each start of a run
is a new `attempt`; the execution's batch commits, heartbeats and finish apply only while
the run is still running under that attempt (`IngestRun.objects.owned_by`), so an execution
that lost its run (it was cancelled, or abandoned and resumed elsewhere) stops at its next
page (`OwnershipWatch`) or commit and never changes its status.

While a run executes, its process holds the run's execution lock (a session advisory
lock, released by PostgreSQL the moment the process or its connection dies) and a
heartbeat thread touches the run. `abandon_stale_runs` abandons a running run only when both
its heartbeat is stale and nobody holds that lock, and a queued run only when no live job
will execute it and nobody holds that lock, so a live run is never abandoned. A run this
process executes itself has no job: `foreground_run` and `foreground_resume` hold its lock
from the moment it is queued.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, IntegrityError, close_old_connections, connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from ingestion import jobs, watermarks
from ingestion.models import (
    ACTIVE_STATUSES,
    RESUMABLE_STATUSES,
    IngestRun,
    RunMode,
    RunStatus,
    StagedCustomer,
    StageOutcome,
)
from ingestion.source_url import SourceURLRefused, check_source_url

logger = logging.getLogger(__name__)


class RunRefused(Exception):
    """A run cannot be created, started or resumed; the message says why."""


class RunFenced(Exception):
    """This execution no longer owns its run: it was cancelled, or abandoned and perhaps resumed elsewhere."""


# Two-key advisory locks (this class, the run id): a key space apart from customers' write lock.
EXECUTION_LOCK_CLASS = 7_402


class RunAlreadyActive(RunRefused):
    def __init__(self, active: IngestRun | None):
        self.active = active
        name = f"run {active.pk} is {active.status}" if active else "another run is active"
        super().__init__(f"An ingestion is already in progress: {name}.")


def create_run(
    *,
    trigger: str,
    source_url: str | None = None,
    page_size: int | None = None,
    dry_run: bool = False,
    mode: str = RunMode.FULL,
) -> IngestRun:
    """Create a queued run; refuse when another run is queued or running.

    An incremental run reads from its source's watermark minus the lookback; without a
    watermark (no run has proven one yet) it is created as a full run.
    """
    return _create(trigger=trigger, source_url=source_url, page_size=page_size, dry_run=dry_run, mode=mode, hold=False)


@contextmanager
def foreground_run(**options) -> Iterator[IngestRun]:
    """`create_run` for a run this process executes itself, holding the run's execution lock for the block.

    Such a run has no job. The lock is taken in the transaction that inserts the run, so no other
    process ever sees it queued, without a live job and unheld, and abandons it as orphaned.
    """
    run = _create(**options, hold=True)
    try:
        yield run
    finally:
        _unlock_execution(run.pk)


def _create(
    *,
    trigger: str,
    source_url: str | None = None,
    page_size: int | None = None,
    dry_run: bool = False,
    mode: str = RunMode.FULL,
    hold: bool,
) -> IngestRun:
    page_size = settings.INGESTION_PAGE_SIZE if page_size is None else page_size
    if not 1 <= page_size <= 100:
        raise RunRefused(f"Page size must be between 1 and 100, not {page_size}.")
    source_url = source_url or settings.INGESTION_SOURCE_URL
    try:
        check_source_url(source_url)
    except SourceURLRefused as exc:
        raise RunRefused(str(exc)) from None
    if mode not in RunMode.values:
        raise RunRefused(f"Mode must be one of {', '.join(RunMode.values)}, not {mode!r}.")
    # Any door notices a dead run, not only a worker's sweep: cron + the command has no worker.
    abandon_stale_runs()
    since = watermarks.since_for(source_url) if mode == RunMode.INCREMENTAL else None
    if since is None:
        mode = RunMode.FULL
    try:
        with transaction.atomic():
            run = IngestRun.objects.create(
                trigger=trigger,
                source_url=source_url,
                page_size=page_size,
                dry_run=dry_run,
                mode=mode,
                updated_since=since,
            )
            # A session lock: it outlives this transaction. Nobody else can hold a new run's id.
            if hold and not _try_execution_lock(connection, run.pk):
                raise RunRefused(f"Run {run.pk} is being executed by another process.")
            return run
    except IntegrityError as exc:
        if "ingestrun_one_active" not in str(exc):
            raise
        raise RunAlreadyActive(IngestRun.objects.active().first()) from None


def mark_running(run_id: int, *, trace_id: str = "") -> IngestRun:
    """Move a queued run to running, recording the trace of this execution ("" when untraced); refuse anything else."""
    now = timezone.now()
    moved = IngestRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(
        status=RunStatus.RUNNING, heartbeat_at=now, error="", attempt=F("attempt") + 1, trace_id=trace_id
    )
    if not moved:
        if IngestRun.objects.filter(pk=run_id, status=RunStatus.CANCELLED).exists():
            raise RunRefused(f"Run {run_id} was cancelled, so it does not start.")
        raise RunRefused(f"Run {run_id} is not queued, so it cannot start.")
    IngestRun.objects.filter(pk=run_id, started_at__isnull=True).update(started_at=now)
    return IngestRun.objects.get(pk=run_id)


def mark_finished(run_id: int, status: str, error: str = "", *, attempt: int | None = None) -> IngestRun:
    """Record the run's final status (and error); return it.

    With `attempt`, only while the run is still running under that attempt: an execution
    that lost its run cannot overwrite what happened to it since.
    """
    runs = IngestRun.objects.filter(pk=run_id) if attempt is None else IngestRun.objects.owned_by(run_id, attempt)
    moved = runs.update(status=status, error=error[:10000], finished_at=timezone.now())
    run = IngestRun.objects.get(pk=run_id)
    if moved:
        logger.info("run finished", extra={"run_id": run.pk, "status": run.status, **run.counters()})
    else:
        logger.warning("run not finished: it moved on without this execution", extra={"run_id": run.pk})
    return run


def verdict(run: IngestRun) -> tuple[str, str]:
    """How a run whose walk reached the end finishes: (status, error).

    `succeeded` only when every page announced the same total and the run read exactly
    that many records. Page/limit paging over a listing that changed can skip a record
    that moved onto a page already read, and nothing in the pages says which: such a run
    is `incomplete` and says what it saw. What it read is committed; the next run reads
    the listing again.
    """
    if run.total_changed:
        return RunStatus.INCOMPLETE, (
            f"The upstream's total changed during the walk (first page: {run.first_total:,}, "
            f"last page: {run.records_expected:,}); records may have moved between pages unread. "
            "What was read is committed; run again to read the rest."
        )
    if run.fetched != run.records_expected:
        return RunStatus.INCOMPLETE, (
            f"Read {run.fetched:,} records where the upstream announced {run.records_expected:,}. "
            "What was read is committed; run again to read the rest."
        )
    if run.mode == RunMode.INCREMENTAL and _read_twice(run):
        # A record changed during the walk moves to the end of the listing by updated_at; every
        # record after its old place moves back one, and one of them may cross onto a page read already.
        return RunStatus.INCOMPLETE, (
            "A record changed while the walk was under way (it was listed twice), so records after it may "
            "have moved onto pages already read. What was read is committed; the watermark stays, and the "
            "next run reads these changes again."
        )
    return RunStatus.SUCCEEDED, ""


def _read_twice(run: IngestRun) -> bool:
    # Any repeated read leaves one of its rows marked duplicate or superseded (ingestion/classification.py).
    return StagedCustomer.objects.filter(
        run=run, outcome__in=[StageOutcome.DUPLICATE, StageOutcome.SUPERSEDED]
    ).exists()


def ensure_owned(run: IngestRun) -> None:
    """Raise `RunFenced` unless the run is still running under this execution's attempt (one primary-key read)."""
    if not IngestRun.objects.owned_by(run.pk, run.attempt).exists():
        raise RunFenced(f"Run {run.pk} is no longer running under attempt {run.attempt}.")


class OwnershipWatch:
    """Tells the page loop when its run stopped being this execution's (cancelled, taken over).

    `check()` asks the database at the first page after each commit (`committed()`), then
    at most once every `interval` seconds, so a cancelled run stops at a page boundary
    within about a second, without fetching and writing a batch its fenced commit would
    roll back. Not at every page: the loop runs on the thread that commits, and each
    query there waits for the GIL behind the validating fetch threads (a query per page
    doubled a warm run: docs/benchmarks.md).
    """

    def __init__(self, run: IngestRun, *, interval: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.run, self.interval, self.clock = run, interval, clock
        self.due = 0.0

    def committed(self, run: IngestRun) -> None:
        self.run, self.due = run, 0.0

    def check(self) -> None:
        now = self.clock()
        if now >= self.due:
            ensure_owned(self.run)
            self.due = now + self.interval


def cancel(run_id: int, *, by: str) -> IngestRun:
    """Cancel a queued or running run, and its job if no worker has taken it yet; return the run.

    A running run's execution finds its run cancelled at its next page or commit and stops; every
    batch it committed stays, and a resume continues after them. `by` says who, for the error text.
    """
    with transaction.atomic():
        moved = (
            IngestRun.objects.active()
            .filter(pk=run_id)
            .update(status=RunStatus.CANCELLED, finished_at=timezone.now(), error=f"Cancelled by {by}.")
        )
        if not moved:
            run = IngestRun.objects.filter(pk=run_id).first()
            if run is None:
                raise RunRefused(f"Run {run_id} does not exist.")
            raise RunRefused(f"Run {run_id} is {run.status}; only queued or running runs can be cancelled.")
        for job_id in jobs.cancel_waiting(run_id):
            logger.info("job cancelled", extra={"run_id": run_id, "job_id": job_id})
    logger.warning("run cancelled", extra={"run_id": run_id})
    return IngestRun.objects.get(pk=run_id)


@contextmanager
def execution_lock(run_id: int) -> Iterator[None]:
    """Hold the run's execution lock on this connection for the block; refuse if another process holds it.

    Re-entrant within one connection, as PostgreSQL's advisory locks are: each hold is released once.
    """
    if not _try_execution_lock(connection, run_id):
        raise RunRefused(f"Run {run_id} is being executed by another process.")
    try:
        yield
    finally:
        _unlock_execution(run_id)


def _try_execution_lock(on, run_id: int) -> bool:
    with on.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [EXECUTION_LOCK_CLASS, run_id])
        return cursor.fetchone()[0]


def _unlock_execution(run_id: int) -> None:
    # A broken connection has released it already.
    with suppress(DatabaseError), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [EXECUTION_LOCK_CLASS, run_id])


def requeue(run_id: int) -> IngestRun:
    """Queue a failed, abandoned or cancelled run again; it continues after its last committed page."""
    run = _requeue(run_id)
    _unlock_execution(run_id)
    return run


@contextmanager
def foreground_resume(run_id: int) -> Iterator[IngestRun]:
    """`requeue` for a run this process executes itself, holding its execution lock for the block.

    As with `foreground_run`: the requeued run has no job, so nobody else may see it unheld.
    """
    run = _requeue(run_id)
    try:
        yield run
    finally:
        _unlock_execution(run_id)


def _requeue(run_id: int) -> IngestRun:
    """Requeue the run and return it holding its execution lock (released here if refused)."""
    abandon_stale_runs()
    # A cancelled run's execution goes on until its next page. Queued again meanwhile, its new
    # job would find the run held, skip it, and leave it queued for nobody.
    if not _try_execution_lock(connection, run_id):
        raise RunRefused(
            f"Run {run_id} is still being executed by another process; a cancelled run stops at its next page, "
            "so try again in a moment."
        )
    try:
        return _requeue_held(run_id)
    except BaseException:
        _unlock_execution(run_id)
        raise


def _requeue_held(run_id: int) -> IngestRun:
    try:
        with transaction.atomic():
            moved = IngestRun.objects.filter(pk=run_id, status__in=RESUMABLE_STATUSES).update(
                status=RunStatus.QUEUED, finished_at=None
            )
    except IntegrityError:
        raise RunAlreadyActive(IngestRun.objects.active().first()) from None
    if not moved:
        run = IngestRun.objects.filter(pk=run_id).first()
        if run is None:
            raise RunRefused(f"Run {run_id} does not exist.")
        raise RunRefused(f"Run {run_id} is {run.status}; only failed, abandoned or cancelled runs can be resumed.")
    return IngestRun.objects.get(pk=run_id)


def abandon_stale_runs(*, stale_after: timedelta | None = None) -> list[int]:
    """Abandon the runs nobody will execute; return their ids.

    A running run whose heartbeat is older than `stale_after`, and a queued run without a job
    that is waiting or executing (it was deleted, failed or cancelled), each only while no
    process holds its execution lock.
    """
    if stale_after is None:
        stale_after = timedelta(seconds=settings.INGESTION_ABANDON_AFTER_SECONDS)
    silent = IngestRun.objects.filter(status=RunStatus.RUNNING, heartbeat_at__lt=timezone.now() - stale_after)
    orphaned = IngestRun.objects.filter(~jobs.has_live_job(), status=RunStatus.QUEUED)
    seconds = int(stale_after.total_seconds())
    return [
        *_abandon(silent, lambda run_id: f"No heartbeat for {seconds} s: the process running it stopped."),
        *_abandon(orphaned, lambda run_id: f"Queued, but {jobs.gone(run_id)}: nothing would ever execute it."),
    ]


def _abandon(candidates: QuerySet, error: Callable[[int], str]) -> list[int]:
    abandoned = []
    for run_id in candidates.values_list("pk", flat=True):
        # Taking the lock proves no live process executes the run (a paused one still holds it),
        # nor is about to execute a run it queued itself.
        if not _try_execution_lock(connection, run_id):
            logger.warning("run looks dead, but a live process holds it: not abandoned", extra={"run_id": run_id})
            continue
        try:
            # The same conditions again: the run may have moved since it was listed.
            moved = candidates.filter(pk=run_id).update(
                status=RunStatus.ABANDONED, finished_at=timezone.now(), error=error(run_id)
            )
        finally:
            _unlock_execution(run_id)
        if moved:
            abandoned.append(run_id)
            logger.warning("run abandoned", extra={"run_id": run_id})
    return abandoned


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
    """While the block runs, touch the run's heartbeat from a side thread every INGESTION_HEARTBEAT_SECONDS.

    Only while the run is running under `attempt`. A database error is logged and the next
    beat reconnects: one lost connection must not silence a live run.
    """

    def __init__(self, run_id: int, attempt: int):
        self.run_id = run_id
        self.attempt = attempt
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
                try:
                    IngestRun.objects.owned_by(self.run_id, self.attempt).update(heartbeat_at=timezone.now())
                except DatabaseError as exc:
                    logger.warning("heartbeat failed", extra={"run_id": self.run_id, "reason": type(exc).__name__})
                    connection.close()
        finally:
            connection.close()


def record_crash(run_id: int, exc: BaseException, *, attempt: int | None = None) -> None:
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
        mark_finished(run_id, RunStatus.FAILED, message, attempt=attempt)
    except Exception:
        logger.exception("could not record the failure of run", extra={"run_id": run_id})
