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

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from customers import merge
from ingestion.classification import classify_batch
from ingestion.failures import RejectedRecord, record_conflicts, record_rejections
from ingestion.models import IngestRun, StagedCustomer
from ingestion.runs import RunFenced
from ingestion.source import page_count
from ingestion.staging import StagedRow, stage_rows
from ingestion.validation import Rejection, ValidatedPage

logger = logging.getLogger(__name__)

# Told the seconds each step of a commit took: "copy", "rejections", "classify", "merge",
# "conflicts", then "batch" for the whole commit, transaction included.
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

    @property
    def size(self) -> int:
        return len(self.valid) + len(self.rejected)

    @property
    def last_position(self) -> int:
        return self.first_position + self.size - 1

    def add(self, prepared: ValidatedPage) -> None:
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
    counts = dict.fromkeys(IngestRun.COUNTERS, 0)
    now = timezone.now()
    with _step(on_step, "batch"), transaction.atomic():
        if batch.size:
            counts |= _write(run, batch, now, on_step)
        changes = {name: F(name) + value for name, value in counts.items() if value}
        if batch.pages:
            changes |= {"last_committed_page": batch.last_page, **batch.expectations()}
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
        # Do not wait for the WAL flush (its cost is in docs/benchmarks.md). The batch and the
        # run's progress commit together, so a commit lost in a server crash loses both and the
        # resume redoes the batch. Readers may see a batch for the moment before it is durable;
        # after a crash it is gone until the resume writes it again. Later synchronous commits
        # (heartbeats, the run's finish) flush every batch before them, so a run reported
        # finished is durable.
        cursor.execute("SET LOCAL synchronous_commit = off")
        # Before classifying: the email checks read customers, so no other writer may move them.
        merge.lock_writers(cursor)
        with _step(on_step, "copy"):
            stage_rows(cursor, run_id=run.pk, rows=batch.valid, staged_at=now)
        with _step(on_step, "rejections"):
            invalid = record_rejections(run.pk, batch.rejected)
        with _step(on_step, "classify"):
            refused = classify_batch(cursor, **span)
        with _step(on_step, "merge"):
            merged = merge.merge_staged(cursor, staged_table=StagedCustomer._meta.db_table, dry_run=run.dry_run, **span)
        with _step(on_step, "conflicts"):
            record_conflicts(cursor, **span)
    counts = {
        "fetched": batch.size,
        "inserted": merged.inserted,
        "updated": merged.updated,
        "unchanged": merged.unchanged,
        "invalid": invalid,
        "duplicates": refused.get("duplicate", 0),
        "conflicts": refused.get("email_conflict", 0) + refused.get("duplicate_id", 0),
    }
    if sum(value for name, value in counts.items() if name != "fetched") != counts["fetched"]:
        raise AssertionError(f"Counters do not add up for run {run.pk}: {counts}")
    return counts


@contextmanager
def _step(on_step: StepObserver | None, name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        if on_step is not None:
            on_step(name, time.perf_counter() - started)
