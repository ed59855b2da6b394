"""An ingestion run, start to finish. Every door (command, API, task, admin) calls this.

    mark the run running (runs)
    -> walk the upstream's pages in order (source.fetch_pages), validating each
       record on the fetch threads (validation)
    -> every INGESTION_BATCH_SIZE records, commit a batch in one short transaction:
       stage, record rejections, classify, merge into customers, count (batches)
    -> at the end of the walk, retry its email conflicts together (batches.retry_conflicts)
    -> finish the run as succeeded, incomplete when the upstream's total moved under
       the walk (runs.verdict), or failed with the error (runs).

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

import requests
from django.conf import settings

from ingestion import runs
from ingestion.batches import Batch, StepObserver, commit_batch, retry_conflicts
from ingestion.models import IngestRun, RunStatus
from ingestion.source import ClientSettings, RetryReason, UpstreamClient, UpstreamError, fetch_pages
from ingestion.source_url import SourceURLRefused, check_source_url
from ingestion.validation import validate_page

logger = logging.getLogger(__name__)

Progress = Callable[[IngestRun], None]


def ingest(
    *,
    trigger: str,
    source_url: str | None = None,
    page_size: int | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    on_step: StepObserver | None = None,
) -> IngestRun:
    """Create a run and execute it in this process."""
    with runs.foreground_run(trigger=trigger, source_url=source_url, page_size=page_size, dry_run=dry_run) as run:
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
    with runs.execution_lock(run_id):
        run = runs.mark_running(run_id)
        try:
            return _execute(run, progress=progress, session=session, on_step=on_step)
        except runs.RunFenced:
            # Cancelled, or abandoned and taken over while this process was stalled: not ours to finish.
            run = IngestRun.objects.get(pk=run_id)
            logger.warning("run no longer ours; this execution stops", extra={"run_id": run_id, "status": run.status})
            return run


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
    client = UpstreamClient(
        run.source_url,
        page_size=run.page_size,
        settings=client_settings(run.page_size),
        session=session,
        addresses=addresses,
        on_retry=retries.add,
    )
    batch = Batch(first_position=run.fetched + 1)
    logger.info("run started", extra={"run_id": run_id, "page": run.last_committed_page + 1})
    try:
        first = run.last_committed_page + 1
        with runs.heartbeat(run_id, attempt), closing(fetch_pages(client, first=first, prepare=validate_page)) as pages:
            try:
                watch = runs.OwnershipWatch(run)
                for page in pages:
                    watch.check()
                    batch.add(page)
                    if batch.size >= settings.INGESTION_BATCH_SIZE:
                        run = commit_batch(run, batch, retries=retries.take(), on_step=on_step)
                        batch = Batch(first_position=run.fetched + 1)
                        if progress:
                            progress(run)
                        watch.committed(run)
            except UpstreamError as exc:
                # The pages fetched before the failure are complete: keep them, then fail.
                commit_batch(run, batch, retries=retries.take(), on_step=on_step)
                logger.error("run failed", extra={"run_id": run_id, "page": batch.last_page, "reason": "upstream"})
                return runs.mark_finished(run_id, RunStatus.FAILED, str(exc), attempt=attempt)
            run = commit_batch(run, batch, retries=retries.take(), on_step=on_step)
            run = retry_conflicts(run)
    except runs.RunFenced:
        raise
    except BaseException as exc:
        runs.record_crash(run_id, exc, attempt=attempt)
        raise
    return runs.mark_finished(run_id, *runs.verdict(run), attempt=attempt)


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
