"""Steps 3 to 5 of a run, per batch of whole pages, in one short transaction:
stage the valid records with COPY (staging), record the rejected (failures), refuse
duplicates and email conflicts (classification), merge the rest into customers
(customers.merge), and add the counters and the last committed page to the run.

Because a batch and the run's progress commit together, a run that stops anywhere
can be resumed after its last committed page and ends exactly as an uninterrupted run.
"""

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Greatest
from django.utils import timezone
from opentelemetry import trace

from customers import indexes, merge
from ingestion import erasure
from ingestion.classification import classify_batch, retryable_conflicts
from ingestion.failures import RejectedRecord, record_conflicts, record_rejections
from ingestion.models import FailureReason, IngestFailure, IngestRun, StagedCustomer
from ingestion.runs import RunFenced
from ingestion.source import page_count
from ingestion.staging import StagedRow, stage_rows
from ingestion.validation import Rejection, ValidatedPage

logger = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

STAGED = StagedCustomer._meta.db_table

# Told the seconds each step of a commit took: "copy", "rejections", "classify", "merge",
# "conflicts", then "batch" for the whole commit, transaction included. Each step is also a
# span: `ingestion.batch` and its children `ingestion.batch.copy` and so on.
StepObserver = Callable[[str, float], None]


@dataclass
class Batch:
    """Whole pages of validated records waiting for one commit, numbered from `first_position`."""

    first_position: int
    valid: list[StagedRow] = field(default_factory=list)
    rejected: list[RejectedRecord] = field(default_factory=list)
    pages: int = 0
    last_page: int = 0
    total: int | None = None
    limit: int = 1
    opening_total: int | None = None  # announced by the batch's first page
    totals: set[int] = field(default_factory=set)
    high_water: datetime | None = None  # the newest `updated_at` read (ingestion/watermarks.py)
    served_at: datetime | None = None  # the upstream's clock at the batch's first page

    @property
    def size(self) -> int:
        return len(self.valid) + len(self.rejected)

    @property
    def last_position(self) -> int:
        return self.first_position + self.size - 1

    def add(self, prepared: ValidatedPage) -> None:
        page, position = prepared.page, self.first_position + self.size
        for index, outcome in enumerate(prepared.outcomes):
            if isinstance(outcome, Rejection):
                self.rejected.append(RejectedRecord(page.number, position + index, outcome, prepared.refused[index]))
            else:
                self.valid.append(StagedRow(page.number, position + index, outcome))
        self.high_water = max(filter(None, (self.high_water, prepared.newest)), default=None)
        if self.pages == 0:
            self.served_at = page.served_at
        self.pages += 1
        # A resume of a run that committed every page reads the empty page past the end to
        # learn the walk is over: that is not a page done.
        self.last_page = min(page.number, page_count(page.total, page.limit))
        self.total, self.limit = page.total, page.limit
        if self.opening_total is None:
            self.opening_total = page.total
        self.totals.add(page.total)

    def expectations(self) -> dict[str, int]:
        """What the latest page announced: records and pages in the whole listing."""
        return {"records_expected": self.total, "pages_expected": page_count(self.total, self.limit)}


def commit_batch(
    run: IngestRun,
    batch: Batch,
    *,
    retries: tuple[int, dict[str, int]] = (0, {}),
    on_step: StepObserver | None = None,
) -> IngestRun:
    """Stage, reject, classify, merge and count one batch in one transaction; return the run."""
    counts = dict.fromkeys((*IngestRun.COUNTERS, "restored"), 0)
    now = timezone.now()
    described = {"ingestion.batch.rows": batch.size, "ingestion.batch.pages": batch.pages}
    with _step(on_step, "batch", described), transaction.atomic():
        if batch.size:
            counts |= _write(run, batch, now, on_step)
            trace.get_current_span().set_attributes({f"ingestion.batch.{k}": v for k, v in counts.items() if v})
        changes = {name: F(name) + value for name, value in counts.items() if value}
        if batch.pages:
            changes |= {"last_committed_page": max(batch.last_page, run.last_committed_page), **batch.expectations()}
            first_total = batch.opening_total if run.first_total is None else run.first_total
            if run.first_total is None:
                changes["first_total"] = first_total
            if batch.totals != {first_total}:
                changes["total_changed"] = True
            if batch.high_water is not None:
                changes["high_water"] = Greatest(F("high_water"), Value(batch.high_water))  # NULLs ignored
            if run.upstream_started_at is None and batch.served_at is not None:
                changes["upstream_started_at"] = batch.served_at
        new_retries, retries_by_reason = retries
        # Only while this execution owns the run; otherwise the whole batch rolls back.
        owned = IngestRun.objects.owned_by(run.pk, run.attempt).update(
            **changes, retries=F("retries") + new_retries, retries_by_reason=retries_by_reason, heartbeat_at=now
        )
        if not owned:
            raise RunFenced(f"Run {run.pk} is no longer running under attempt {run.attempt}; batch not committed.")
    run.refresh_from_db()
    if batch.size:
        logger.info(
            "batch committed",
            extra={"run_id": run.pk, "page": batch.last_page, **{k: v for k, v in counts.items() if v}},
        )
    return run


def _write(run: IngestRun, batch: Batch, now, on_step: StepObserver | None) -> dict[str, int]:
    """The batch's rows through every step, on one cursor; its counters, which add up to its size."""
    span = {"run_id": run.pk, "first": batch.first_position, "last": batch.last_position}
    with connection.cursor() as cursor:
        # Before classifying: the email checks read customers, so no other writer may move them.
        merge.lock_writers(cursor)
        if _first_load(run, batch):
            indexes.defer_reader_indexes(cursor, run_id=run.pk)
        # Under the lock, so an erasure is either seen here or removes what this batch writes.
        valid, rejected, suppressed = erasure.without_suppressed(batch.valid, batch.rejected)
        with _step(on_step, "copy"):
            stage_rows(cursor, run_id=run.pk, rows=valid, staged_at=now)
        with _step(on_step, "rejections"):
            invalid = record_rejections(run.pk, rejected)
        with _step(on_step, "classify"):
            classified = classify_batch(cursor, **span)
        with _step(on_step, "merge"):
            merged = merge.merge_staged(cursor, staged_table=STAGED, dry_run=run.dry_run, **span)
        if not merged.inserted and not merged.updated:
            # Nothing a reader can see changed (no customer, no change-feed event): do not wait
            # for the WAL flush (its cost is in docs/benchmarks.md). The batch and the run's
            # progress commit together, so a commit lost in a server crash loses both and the
            # resume redoes the batch. A batch that wrote changes waits: a feed consumer may
            # read its events the moment it commits, and they must never un-happen.
            cursor.execute("SET LOCAL synchronous_commit = off")
        with _step(on_step, "conflicts"):
            record_conflicts(cursor, **span, also=classified.overtaken)
    refused = classified.refused
    counts = {
        "fetched": batch.size,
        "inserted": merged.inserted,
        "updated": merged.updated,
        "unchanged": merged.unchanged,
        "invalid": invalid,
        # A read superseded inside its batch was never written: like an identical repeat,
        # it is a read of a customer the batch reads again.
        "duplicates": refused.get("duplicate", 0) + refused.get("superseded", 0),
        "conflicts": refused.get("email_conflict", 0),
        "suppressed": suppressed,
    }
    if sum(value for name, value in counts.items() if name != "fetched") != counts["fetched"]:
        raise AssertionError(f"Counters do not add up for run {run.pk}: {counts}")
    # Beside the sum: a restored customer is one of the updated.
    return counts | {"restored": merged.restored}


def _first_load(run: IngestRun, batch: Batch) -> bool:
    """Whether this batch starts a load big enough to build the readers' indexes at its end
    (whether the table is empty, customers.indexes decides under the write lock)."""
    threshold = settings.INGESTION_DEFER_INDEXES_FROM
    return bool(threshold) and run.fetched == 0 and not run.dry_run and (batch.total or 0) >= threshold


def mark_walked(run: IngestRun) -> IngestRun:
    """Record that the run's records walk is over (conflicts retried): a resume goes on from there."""
    if not IngestRun.objects.owned_by(run.pk, run.attempt).update(records_walked=True, heartbeat_at=timezone.now()):
        raise RunFenced(f"Run {run.pk} is no longer running under attempt {run.attempt}.")
    run.records_walked = True
    return run


def retry_conflicts(run: IngestRun, *, holder_deleted: bool = False) -> IngestRun:
    """Once the walk is complete, try the run's email conflicts again, together, in one transaction.

    A swap or rotation of emails split across batches is refused batch by batch (each
    customer's email is still held by one the batch does not hold), and would be again on
    every run with the same batch boundaries. Together, the owners give the emails up, so
    classification frees them and the merge applies them. What is applied stops being a
    conflict (its failure row goes, its counter moves); what is still refused keeps a
    failure naming today's owner. Only last reads are retried: a customer read again
    later in the walk was settled by that read. With `holder_deleted` (after the run's
    deletions), only conflicts with a customer the run deleted are retried: their email is free.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        merge.lock_writers(cursor)
        positions = retryable_conflicts(cursor, run_id=run.pk, holder_deleted=holder_deleted)
        if not positions:
            return run
        span = {"run_id": run.pk, "positions": positions}
        retried = StagedCustomer.objects.filter(run=run, position__in=positions)
        retried.update(outcome=None, conflicting_customer_id=None)
        IngestFailure.objects.filter(run=run, position__in=positions, reason=FailureReason.EMAIL_CONFLICT).delete()
        classified = classify_batch(cursor, **span)
        merged = merge.merge_staged(cursor, staged_table=STAGED, dry_run=run.dry_run, **span)
        record_conflicts(cursor, **span, also=classified.overtaken)
        applied = merged.inserted + merged.updated + merged.unchanged
        if applied + classified.refused.get("email_conflict", 0) != len(positions):
            raise AssertionError(f"Retried conflicts of run {run.pk} do not add up: {classified}, {merged}")
        owned = IngestRun.objects.owned_by(run.pk, run.attempt).update(
            conflicts=F("conflicts") - applied,
            inserted=F("inserted") + merged.inserted,
            updated=F("updated") + merged.updated,
            unchanged=F("unchanged") + merged.unchanged,
            restored=F("restored") + merged.restored,
            heartbeat_at=timezone.now(),
        )
        if not owned:
            raise RunFenced(f"Run {run.pk} is no longer running under attempt {run.attempt}; retry not committed.")
    run.refresh_from_db()
    logger.info(
        "email conflicts retried",
        extra={"run_id": run.pk, "retried": len(positions), "applied": applied, "conflicts": run.conflicts},
    )
    return run


@contextmanager
def _step(on_step: StepObserver | None, name: str, attributes: dict | None = None) -> Iterator[None]:
    started = time.perf_counter()
    span_name = "ingestion.batch" if name == "batch" else f"ingestion.batch.{name}"
    try:
        with tracer.start_as_current_span(span_name, attributes=attributes):
            yield
    finally:
        if on_step is not None:
            on_step(name, time.perf_counter() - started)
