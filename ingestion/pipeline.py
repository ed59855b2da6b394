"""An ingestion run, start to finish. Every door (command, API, task, admin) calls this.

    fetch pages in order (source) -> validate each record (validation)
    -> per batch, in one short transaction: stage with COPY (staging), record the
       rejected (failures), merge set-based (merge), add the counters and the last
       committed page to the run (this module)
    -> finish the run as succeeded, or failed with the error.

Because a batch and the run's progress commit together, a run that stops anywhere can
be resumed after its last committed page and ends exactly as an uninterrupted run.
"""

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F
from django.utils import timezone

from ingestion import runs
from ingestion.failures import RejectedRecord, record_conflicts, record_rejections
from ingestion.merge import merge_batch
from ingestion.models import IngestRun, RunStatus
from ingestion.source import ClientSettings, Page, UpstreamClient, UpstreamError
from ingestion.source_url import SourceURLRefused, check_source_url
from ingestion.staging import StagedRow, stage_rows
from ingestion.validation import Rejection, ValidRecord, validate_record

logger = logging.getLogger(__name__)

# One merge at a time across all processes: `seq` numbering and the email checks
# assume nobody else writes customers between classification and merge.
MERGE_LOCK_KEY = 7_401_553_001

Progress = Callable[[IngestRun], None]


def ingest(
    *,
    trigger: str,
    source_url: str | None = None,
    page_size: int | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> IngestRun:
    """Create a run and execute it in this process."""
    run = runs.create_run(trigger=trigger, source_url=source_url, page_size=page_size, dry_run=dry_run)
    return execute_run(run.pk, progress=progress)


def execute_run(run_id: int, *, progress: Progress | None = None, session: requests.Session | None = None) -> IngestRun:
    """Execute a queued run from its last committed page; return it finished."""
    run = runs.start_run(run_id)
    try:
        # Checked again at execution: settings or DNS may have changed since the run was queued.
        check_source_url(run.source_url)
    except SourceURLRefused as exc:
        return runs.finish_run(run_id, RunStatus.FAILED, str(exc))
    retries = _RetryCounter(run.retries_by_reason)
    client = UpstreamClient(
        run.source_url, page_size=run.page_size, settings=client_settings(), session=session, on_retry=retries.add
    )
    batch = _Batch(first_position=run.fetched + 1)
    logger.info("run started", extra={"run_id": run.pk, "page": run.last_committed_page + 1})
    try:
        with _heartbeat(run.pk):
            for page in fetch_pages(client, first=run.last_committed_page + 1, prepare=validate_page):
                batch.add(page)
                if batch.size >= settings.INGESTION_BATCH_SIZE:
                    run = commit_batch(run, batch, retries=retries.take())
                    batch = _Batch(first_position=run.fetched + 1)
                    if progress:
                        progress(run)
            run = commit_batch(run, batch, retries=retries.take())
    except UpstreamError as exc:
        # The pages fetched before the failure are complete: keep them, then fail.
        commit_batch(run, batch, retries=retries.take())
        logger.error("run failed", extra={"run_id": run_id, "page": batch.last_page, "reason": "upstream"})
        return runs.finish_run(run_id, RunStatus.FAILED, str(exc))
    except BaseException as exc:
        _fail_after_crash(run_id, exc)
        raise
    return runs.finish_run(run_id, RunStatus.SUCCEEDED)


def fetch_pages(client: UpstreamClient, *, first: int, prepare: Callable | None = None) -> Iterator:
    """Yield pages from `first` on, in page order, fetched ahead on a thread pool.

    Up to INGESTION_CONCURRENCY requests run at once, and up to two batches' worth of
    pages wait ready, so fetching (and `prepare`, run on the same threads: validation)
    goes on while the caller commits a batch. Memory stays bounded by that window.
    The walk ends after the last page announced by the latest `total`, or at the first
    empty page. Pages come out strictly in order, whichever fetch finishes first.
    """
    work = client.fetch_page if prepare is None else (lambda number: prepare(client.fetch_page(number)))
    concurrency = settings.INGESTION_CONCURRENCY
    window = max(concurrency, 2 * -(-settings.INGESTION_BATCH_SIZE // client.page_size))
    item = work(first)
    yield item
    page = _page_of(item)
    last = _last_page(page)
    if page.number >= last or not page.records:
        return
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        ahead, next_number = {}, page.number + 1
        try:
            while True:
                while next_number <= last and len(ahead) < window:
                    ahead[next_number] = pool.submit(work, next_number)
                    next_number += 1
                if not ahead:
                    return
                item = ahead.pop(min(ahead)).result()
                yield item
                page = _page_of(item)
                last = _last_page(page)
                if not page.records or page.number >= last:
                    return
        finally:
            for future in ahead.values():
                future.cancel()


def _page_of(item) -> Page:
    return item if isinstance(item, Page) else item.page


def _last_page(page: Page) -> int:
    return max(1, -(-page.total // page.limit))


def commit_batch(run: IngestRun, batch: "_Batch", *, retries: tuple[int, dict[str, int]] = (0, {})) -> IngestRun:
    """Stage, reject, merge and count one batch in one transaction; return the run."""
    counts = dict.fromkeys(IngestRun.COUNTERS, 0)
    now = timezone.now()
    with transaction.atomic():
        if batch.size:
            with connection.cursor() as cursor:
                # Do not wait for the WAL flush (4-9% of a 1M run, docs/benchmarks.md). The batch
                # and the run's progress commit together, so a commit lost in a server crash
                # loses both and the resume redoes the batch. Readers may see a batch for the
                # moment before it is durable; after a crash it is gone until the resume
                # writes it again. Later synchronous commits (heartbeats, finish_run) flush
                # every batch before them, so a run reported finished is durable.
                cursor.execute("SET LOCAL synchronous_commit = off")
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [MERGE_LOCK_KEY])
                stage_rows(cursor, run_id=run.pk, rows=batch.valid, staged_at=now)
                counts["invalid"] = record_rejections(run.pk, batch.rejected)
                outcomes = merge_batch(
                    cursor, run_id=run.pk, first=batch.first_position, last=batch.last_position, dry_run=run.dry_run
                )
                record_conflicts(cursor, run_id=run.pk, first=batch.first_position, last=batch.last_position)
            counts.update(_counters_from(outcomes))
            counts["fetched"] = batch.size
            if sum(value for name, value in counts.items() if name != "fetched") != counts["fetched"]:
                raise AssertionError(f"Counters do not add up for run {run.pk}: {counts}")
        changes = {name: F(name) + value for name, value in counts.items() if value}
        if batch.pages:
            changes |= {"last_committed_page": batch.last_page, **batch.expectations()}
        new_retries, retries_by_reason = retries
        IngestRun.objects.filter(pk=run.pk).update(
            **changes, retries=F("retries") + new_retries, retries_by_reason=retries_by_reason, heartbeat_at=now
        )
    run.refresh_from_db()
    if batch.size:
        logger.info(
            "batch committed",
            extra={"run_id": run.pk, "page": batch.last_page, **{k: v for k, v in counts.items() if v}},
        )
    return run


def _counters_from(outcomes: dict[str, int]) -> dict[str, int]:
    return {
        "inserted": outcomes.get("inserted", 0),
        "updated": outcomes.get("updated", 0),
        "unchanged": outcomes.get("unchanged", 0),
        "duplicates": outcomes.get("duplicate", 0),
        "conflicts": outcomes.get("email_conflict", 0) + outcomes.get("duplicate_id", 0),
    }


def client_settings() -> ClientSettings:
    return ClientSettings(
        connect_timeout=settings.INGESTION_CONNECT_TIMEOUT,
        read_timeout=settings.INGESTION_READ_TIMEOUT,
        page_deadline=settings.INGESTION_PAGE_DEADLINE,
        max_retries=settings.INGESTION_MAX_RETRIES,
        backoff_seconds=settings.INGESTION_BACKOFF_SECONDS,
        retry_after_cap=settings.INGESTION_RETRY_AFTER_CAP,
        max_response_bytes=settings.INGESTION_MAX_RESPONSE_BYTES,
    )


@dataclass(frozen=True, slots=True)
class ValidatedPage:
    page: Page
    outcomes: list[ValidRecord | Rejection]


def validate_page(page: Page) -> ValidatedPage:
    """Validate every record of a page (runs on the fetch threads)."""
    return ValidatedPage(page, [validate_record(raw) for raw in page.records])


@dataclass
class _Batch:
    """Whole pages of validated records waiting for one commit."""

    first_position: int
    valid: list[StagedRow] = field(default_factory=list)
    rejected: list[RejectedRecord] = field(default_factory=list)
    pages: int = 0
    last_page: int = 0
    total: int | None = None
    limit: int = 1

    @property
    def size(self) -> int:
        return len(self.valid) + len(self.rejected)

    @property
    def last_position(self) -> int:
        return self.first_position + self.size - 1

    def add(self, prepared: "ValidatedPage") -> None:
        page, position = prepared.page, self.first_position + self.size
        for raw, outcome in zip(page.records, prepared.outcomes, strict=True):
            if isinstance(outcome, Rejection):
                self.rejected.append(RejectedRecord(page.number, position, outcome, raw))
            else:
                self.valid.append(StagedRow(page.number, position, outcome))
            position += 1
        self.pages += 1
        self.last_page, self.total, self.limit = page.number, page.total, page.limit

    def expectations(self) -> dict[str, int]:
        return {"records_expected": self.total, "pages_expected": _last_page(Page(0, self.limit, self.total, []))}


class _RetryCounter:
    """Counts retries reported by fetch threads; each commit takes the new ones.

    `by_reason` carries on from what the run already recorded, so a resumed run keeps
    adding to its own totals.
    """

    def __init__(self, by_reason: dict[str, int]):
        self._lock = threading.Lock()
        self._new = 0
        self.by_reason = Counter(by_reason)

    def add(self, reason: str) -> None:
        with self._lock:
            self._new += 1
            self.by_reason[reason] += 1

    def take(self) -> tuple[int, dict[str, int]]:
        with self._lock:
            new, self._new = self._new, 0
            return new, dict(self.by_reason)


class _heartbeat:
    """Touch the run's heartbeat from a side thread while the run is alive.

    A run whose heartbeat stops (its process was killed) is marked abandoned by
    `runs.abandon_stale_runs`, so nothing stays "running" forever.
    """

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


def _fail_after_crash(run_id: int, exc: BaseException) -> None:
    """Record an unexpected error on the run, on a fresh connection if the old one broke."""
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
        runs.finish_run(run_id, RunStatus.FAILED, message)
    except Exception:
        logger.exception("could not record the failure of run", extra={"run_id": run_id})
