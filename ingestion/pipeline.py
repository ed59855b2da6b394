"""An ingestion run, start to finish. Every door (command, API, task, admin) calls this.

    mark the run running (runs)
    -> walk the upstream's pages in order (source.fetch_pages), validating each
       record on the fetch threads (validation); a full run walks every record, an
       incremental one those changed since its source's watermark (watermarks)
    -> every INGESTION_BATCH_SIZE records, commit a batch in one short transaction:
       stage, record rejections, classify, merge into customers, count (batches); a first
       load into an empty table leaves the readers' indexes to the end of its walk
       (customers.indexes)
    -> at the end of the walk, retry its email conflicts together (batches.retry_conflicts)
    -> incremental: walk the upstream's tombstones since the same time (tombstones)
    -> when the run is complete (runs.verdict): apply its deletions, or hold them behind
       the mass-deletion guard (deletions), then retry its email conflicts again (what the
       deleted customers held is free now); incremental: read again, by id, the records
       earlier runs refused for an email this run may have freed (rereads); move the
       watermark (watermarks)
    -> finish the run as succeeded, incomplete when the listing moved under the walk
       (runs.verdict), or failed with the error (runs).

A heartbeat (runs.heartbeat) keeps the run alive meanwhile, and the page loop checks that
the run is still this execution's (runs.OwnershipWatch): a cancelled run stops at a page.
Because a batch and the run's progress commit together, a run that stops anywhere can be
resumed after its last committed page (`resume`) and ends exactly as an uninterrupted run.
"""

import logging
import threading
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from datetime import UTC

import requests
from django.conf import settings
from django.db import DatabaseError, connection
from opentelemetry import trace

from config import tracing
from customers import indexes
from ingestion import batches, deletions, rereads, runs, staging, watermarks
from ingestion.batches import Batch, StepObserver, commit_batch, retry_conflicts
from ingestion.models import IngestRun, RunMode, RunStatus
from ingestion.source import (
    CUSTOMERS_PATH,
    TOMBSTONES_PATH,
    ClientSettings,
    RetryReason,
    UpstreamClient,
    UpstreamError,
    fetch_pages,
)
from ingestion.source_url import SourceURLRefused, check_source_url
from ingestion.tombstones import commit_tombstones
from ingestion.validation import validate_page, validate_tombstone_page

logger = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

Progress = Callable[[IngestRun], None]


def ingest(
    *,
    trigger: str,
    source_url: str | None = None,
    page_size: int | None = None,
    dry_run: bool = False,
    mode: str = RunMode.FULL,
    progress: Progress | None = None,
    on_step: StepObserver | None = None,
) -> IngestRun:
    """Create a run (`full` or `incremental`) and execute it in this process."""
    options = {"source_url": source_url, "page_size": page_size, "dry_run": dry_run, "mode": mode}
    with runs.foreground_run(trigger=trigger, **options) as run:
        return execute_run(run.pk, progress=progress, on_step=on_step)


def resume(run_id: int, *, progress: Progress | None = None) -> IngestRun:
    """Requeue a failed, abandoned or cancelled run and execute it in this process, after its last committed page."""
    with runs.foreground_resume(run_id):
        return execute_run(run_id, progress=progress)


def execute_run(
    run_id: int,
    *,
    progress: Progress | None = None,
    session: requests.Session | None = None,
    on_step: StepObserver | None = None,
) -> IngestRun:
    """Execute a queued run from its last committed page; return it finished.

    `progress(run)` is called after each batch commit; `on_step(name, seconds)` is told
    how long each step of each commit took (bench/ uses it).
    """
    with tracer.start_as_current_span("ingestion.run", attributes={"ingestion.run.id": run_id}) as span:
        with runs.execution_lock(run_id):
            # A load that stopped without building the indexes it deferred (its process died and no
            # worker's sweep came by): built now, before this run writes without them.
            build_orphaned_indexes(but=run_id)
            ids = tracing.current_ids()
            run = runs.mark_running(run_id, trace_id=ids[0] if ids else "")
            try:
                run = _execute(run, progress=progress, session=session, on_step=on_step)
            except runs.RunFenced:
                # Cancelled, or abandoned and taken over while this process was stalled: not ours to finish.
                run = IngestRun.objects.get(pk=run_id)
                extra = {"run_id": run_id, "status": run.status}
                logger.warning("run no longer ours; this execution stops", extra=extra)
            finally:
                # A load that stopped before its walk ended built nothing back: readers get their indexes now.
                try:
                    _build_deferred_indexes(run_id)
                except DatabaseError:  # the database the run lost, most likely: the sweep builds them later
                    logger.exception("deferred indexes not built", extra={"run_id": run_id})
        _describe(span, run)
        return run


def _describe(span: trace.Span, run: IngestRun) -> None:
    """What the run span says at the end: the run's mode, trigger, status and counters, as attributes."""
    if not span.is_recording():
        return
    span.set_attributes(
        {
            "ingestion.run.mode": run.mode,
            "ingestion.run.trigger": run.trigger,
            "ingestion.run.attempt": run.attempt,
            "ingestion.run.status": run.status,
            **{f"ingestion.run.{name}": value for name, value in run.counters().items()},
        }
    )
    if run.status == RunStatus.FAILED:
        span.set_status(trace.StatusCode.ERROR, run.error[:200])


def _execute(
    run: IngestRun, *, progress: Progress | None, session: requests.Session | None, on_step: StepObserver | None
) -> IngestRun:
    run_id, attempt = run.pk, run.attempt
    try:
        # Checked again at execution: settings or DNS may have changed since the run was queued.
        # The addresses checked now are the only ones the run's connections go to.
        addresses = check_source_url(run.source_url)
    except SourceURLRefused as exc:
        return runs.mark_finished(run_id, RunStatus.FAILED, str(exc), attempt=attempt)
    retries = _RetryCounter(run.retries_by_reason)

    def client(path: str, params: dict[str, str]) -> UpstreamClient:
        return UpstreamClient(
            run.source_url,
            page_size=run.page_size,
            settings=client_settings(run.page_size),
            session=session,
            addresses=addresses,
            on_retry=retries.add,
            path=path,
            params=params,
        )

    since = {} if run.updated_since is None else {"updated_since": _upstream_time(run.updated_since)}
    logger.info("run started", extra={"run_id": run_id, "page": run.last_committed_page + 1, "mode": run.mode})
    try:
        with runs.heartbeat(run_id, attempt):
            if not run.records_walked:
                run = _walk(
                    run,
                    client(CUSTOMERS_PATH, since),
                    first_page=run.last_committed_page + 1,
                    prepare=validate_page,
                    commit=lambda run, batch: commit_batch(run, batch, retries=retries.take(), on_step=on_step),
                    next_position=lambda run: run.fetched + 1,
                    progress=progress,
                )
                if run.status != RunStatus.RUNNING:
                    return run
                _end_of_walk(run)
                with tracer.start_as_current_span("ingestion.conflicts"):
                    run = batches.mark_walked(retry_conflicts(run))
            if run.mode == RunMode.INCREMENTAL:
                run = _walk(
                    run,
                    client(TOMBSTONES_PATH, {"since": since["updated_since"]}),
                    first_page=run.last_tombstone_page + 1,
                    prepare=validate_tombstone_page,
                    commit=lambda run, batch: commit_tombstones(run, batch, retries=retries.take()),
                    next_position=lambda run: run.tombstones + 1,
                    progress=progress,
                )
                if run.status != RunStatus.RUNNING:
                    return run
            status, error = runs.verdict(run)
            if status == RunStatus.SUCCEEDED:
                with tracer.start_as_current_span("ingestion.deletions"):
                    run = deletions.settle(run)
                if run.deleted and not run.dry_run:
                    # The deletions freed emails that records this run refused may have wanted.
                    with tracer.start_as_current_span("ingestion.conflicts"):
                        run = retry_conflicts(run, holder_deleted=True)
                if run.mode == RunMode.INCREMENTAL:
                    try:
                        with tracer.start_as_current_span("ingestion.rereads"):
                            run = rereads.read_refused_again(run, client(CUSTOMERS_PATH, {}), retries=retries)
                    except UpstreamError as exc:
                        logger.error("run failed", extra={"run_id": run_id, "reason": "upstream"})
                        return runs.mark_finished(run_id, RunStatus.FAILED, str(exc), attempt=attempt)
                watermarks.advance(run)
    except runs.RunFenced:
        raise
    except BaseException as exc:
        runs.record_crash(run_id, exc, attempt=attempt)
        raise
    return runs.mark_finished(run_id, status, error, attempt=attempt)


def _walk(
    run: IngestRun,
    client: UpstreamClient,
    *,
    first_page: int,
    prepare: Callable,
    commit: Callable[[IngestRun, Batch], IngestRun],
    next_position: Callable[[IngestRun], int],
    progress: Progress | None,
) -> IngestRun:
    """Walk one listing from `first_page`, committing a batch every INGESTION_BATCH_SIZE records.

    Returns the run still running when the walk reached the end, or finished as failed when
    the upstream gave up (the pages read before that are committed).
    """
    batch = Batch(first_position=next_position(run))
    with closing(fetch_pages(client, first=first_page, prepare=prepare)) as pages:
        try:
            watch = runs.OwnershipWatch(run)
            for page in pages:
                watch.check()
                batch.add(page)
                if batch.size >= settings.INGESTION_BATCH_SIZE:
                    run = commit(run, batch)
                    batch = Batch(first_position=next_position(run))
                    if progress:
                        progress(run)
                    watch.committed(run)
        except UpstreamError as exc:
            # The pages fetched before the failure are complete: keep them, then fail.
            commit(run, batch)
            logger.error("run failed", extra={"run_id": run.pk, "page": batch.last_page, "reason": "upstream"})
            return runs.mark_finished(run.pk, RunStatus.FAILED, str(exc), attempt=run.attempt)
    return commit(run, batch)


def _end_of_walk(run: IngestRun) -> None:
    """What the records walk leaves to its end: the readers' indexes a first load deferred,
    and statistics on what it staged for the planner of the statements that follow."""
    _build_deferred_indexes(run.pk)
    with connection.cursor() as cursor:
        staging.refresh_statistics(cursor, staged=run.fetched)


def build_orphaned_indexes(*, but: int | None = None) -> None:
    """Build the readers' indexes a load deferred if its run is no longer active (nor `but`, a
    run about to resume its own load): nobody else would build them."""
    owner = indexes.deferred_by()
    if owner is not None and owner != but and not IngestRun.objects.active().filter(pk=owner).exists():
        logger.warning("building the indexes a stopped load deferred", extra={"run_id": owner})
        indexes.restore_reader_indexes()


def _build_deferred_indexes(run_id: int) -> None:
    """Build the readers' indexes this run's first load deferred (customers/indexes.py), if it did."""
    if indexes.deferred_by() == run_id:
        with tracer.start_as_current_span("ingestion.indexes"):
            indexes.restore_reader_indexes()


def _upstream_time(moment) -> str:
    """An aware time as the upstream's parameters take it: ISO-8601 UTC to the second, `Z`, rounded down."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def client_settings(page_size: int) -> ClientSettings:
    """The upstream client's settings as a run uses them, from INGESTION_* settings."""
    return ClientSettings(
        connect_timeout=settings.INGESTION_CONNECT_TIMEOUT,
        read_timeout=settings.INGESTION_READ_TIMEOUT,
        page_deadline=settings.INGESTION_PAGE_DEADLINE,
        max_retries=settings.INGESTION_MAX_RETRIES,
        backoff_seconds=settings.INGESTION_BACKOFF_SECONDS,
        retry_after_cap=settings.INGESTION_RETRY_AFTER_CAP,
        max_response_bytes=settings.INGESTION_MAX_RESPONSE_BYTES,
        concurrency=settings.INGESTION_CONCURRENCY,
        # Two batches' worth of pages may wait validated while one batch commits.
        prefetch_pages=2 * -(-settings.INGESTION_BATCH_SIZE // page_size),
    )


class _RetryCounter:
    """Counts retries reported by fetch threads; each commit takes the new ones.

    `by_reason` carries on from what the run already recorded, so a resumed run keeps
    adding to its own totals.
    """

    def __init__(self, by_reason: dict[str, int]):
        self._lock = threading.Lock()
        self._new = 0
        self.by_reason = Counter(by_reason)

    def add(self, reason: RetryReason) -> None:
        with self._lock:
            self._new += 1
            self.by_reason[str(reason)] += 1

    def take(self) -> tuple[int, dict[str, int]]:
        with self._lock:
            new, self._new = self._new, 0
            return new, dict(self.by_reason)
