"""The last step of a complete run: which customers the upstream no longer has, behind a guard.

- A **full** run that read the whole listing (it `succeeded`) proves that every live
  customer it did not see is gone: an anti-join of customers against the run's staged ids
  (and the ids of the records it rejected: a record that failed validation still exists).
- An **incremental** run applies the tombstones it staged, except for customers its own
  records walk read (a listed record is newer than a tombstone the walk had not reached;
  if the upstream really deleted it, the next run reads the tombstone again).

Both are one set-based statement (customers.merge.delete_customers); no id is held in Python.
Only a succeeded run deletes anything: a failed, cancelled or incomplete walk proves nothing.

**The guard.** When the deletions would exceed INGESTION_MAX_DELETE_RATIO of the live
customers or INGESTION_MAX_DELETES, or a full run's listing was empty, nothing is deleted:
the run keeps its inserts and updates, succeeds, and says how many deletions it holds. An
operator releases them (`release`), or the next complete full run recomputes them.
"""

import logging

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from customers import merge
from customers.models import Customer
from ingestion.models import (
    FailureReason,
    IngestFailure,
    IngestRun,
    RunMode,
    RunStatus,
    StagedCustomer,
    StagedTombstone,
)
from ingestion.runs import RunFenced, RunRefused

logger = logging.getLogger(__name__)

_STAGED = StagedCustomer._meta.db_table
_FAILURES = IngestFailure._meta.db_table
_TOMBSTONES = StagedTombstone._meta.db_table


def _unseen(runs: str) -> str:
    """Customers (alias c) no record of the runs `runs` (a condition on alias r's run_id) named."""
    return f"""
NOT EXISTS (SELECT 1 FROM {_STAGED} r WHERE {runs} AND r.customer_id = c.customer_id)
AND NOT EXISTS (
    SELECT 1 FROM {_FAILURES} r
    WHERE {runs} AND r.customer_id = c.customer_id AND r.reason <> '{FailureReason.INVALID_TOMBSTONE}')
"""


# Parameters: %(run)s.
_FULL = _unseen("r.run_id = %(run)s")
_TOMBSTONED = f"""
EXISTS (SELECT 1 FROM {_TOMBSTONES} d WHERE d.run_id = %(run)s AND d.customer_id = c.customer_id)
AND NOT EXISTS (SELECT 1 FROM {_STAGED} r WHERE r.run_id = %(run)s AND r.customer_id = c.customer_id)
"""
# A release acts later than its run: customers any later run read are alive (or were restored) since.
_RELEASE = {
    RunMode.FULL: _unseen("r.run_id >= %(run)s"),
    RunMode.INCREMENTAL: _TOMBSTONED.replace("r.run_id = %(run)s", "r.run_id >= %(run)s"),
}


def settle(run: IngestRun) -> IngestRun:
    """Apply (or hold) the deletions a succeeded run proved; return the run."""
    doomed = _FULL if run.mode == RunMode.FULL else _TOMBSTONED
    params = {"run": run.pk}
    with transaction.atomic(), connection.cursor() as cursor:
        count = merge.count_deletions(cursor, doomed=doomed, params=params)
        reason = hold_reason(run, count)
        if reason:
            changes = {"deletions_held": count, "deleted": 0}
            logger.warning("deletions held", extra={"run_id": run.pk, "held": count, "reason": reason})
        elif run.dry_run:
            changes = {"deleted": count, "deletions_held": 0}
        else:
            # A run resumed after it settled (its last read failed, say) settles again and finds
            # nothing left to delete: what an earlier attempt of it deleted still counts.
            before = 0
            if run.attempt > 1:
                before = Customer.objects.filter(deleted_at__isnull=False, deleted_by_run=run.pk).count()
            deleted = before + merge.delete_customers(cursor, doomed=doomed, params=params, run_id=run.pk)
            changes = {"deleted": deleted, "deletions_held": 0}
        # Set, not added: a run resumed after a crash here settles again from scratch.
        if not IngestRun.objects.owned_by(run.pk, run.attempt).update(**changes, heartbeat_at=timezone.now()):
            raise RunFenced(f"Run {run.pk} is no longer running under attempt {run.attempt}; deletions not applied.")
    run.refresh_from_db()
    return run


def hold_reason(run: IngestRun, count: int) -> str:
    """Why the guard holds `count` deletions of this run, or "" when they may go ahead."""
    if not count:
        return ""
    if run.mode == RunMode.FULL and not run.records_expected:
        return "the upstream listed no customers at all"
    if count > settings.INGESTION_MAX_DELETES:
        return f"more than INGESTION_MAX_DELETES ({settings.INGESTION_MAX_DELETES:,})"
    live = Customer.objects.live_count()
    if count > settings.INGESTION_MAX_DELETE_RATIO * live:
        return f"more than INGESTION_MAX_DELETE_RATIO ({settings.INGESTION_MAX_DELETE_RATIO:.0%}) of {live:,} customers"
    return ""


def held_notice(run: IngestRun) -> str:
    """`2,000 deletions held ...` for a run whose deletions wait for a release, else ""."""
    if not run.deletions_held or run.deletions_released_at:
        return ""
    return (
        f"{run.deletions_held:,} deletions held by the mass-deletion guard; release them with "
        f"`ingest_customers --release-deletions {run.pk}`, or the next complete full run recomputes them"
    )


def release(run_id: int, *, by: str) -> IngestRun:
    """Apply the deletions the guard held on a run, now; record who released them. Refuse when moot."""
    with transaction.atomic(), connection.cursor() as cursor:
        # The lock first: under it, no run commits a batch or settles while this decides.
        merge.lock_writers(cursor)
        run = IngestRun.objects.select_for_update().filter(pk=run_id).first()
        refusal = _release_refusal(run, run_id)
        if refusal:
            raise RunRefused(refusal)
        deleted = merge.delete_customers(cursor, doomed=_RELEASE[run.mode], params={"run": run.pk}, run_id=run.pk)
        IngestRun.objects.filter(pk=run.pk).update(
            deleted=F("deleted") + deleted, deletions_released_at=timezone.now(), deletions_released_by=by[:255]
        )
    run.refresh_from_db()
    logger.warning("held deletions released", extra={"run_id": run.pk, "deleted": deleted})
    return run


def _release_refusal(run: IngestRun | None, run_id: int) -> str:
    if run is None:
        return f"Run {run_id} does not exist."
    if run.status != RunStatus.SUCCEEDED or not run.deletions_held:
        return f"Run {run_id} holds no deletions."
    if run.deletions_released_at:
        return f"Run {run_id}'s deletions were already released, by {run.deletions_released_by}."
    if run.dry_run:
        return f"Run {run_id} was a dry run: it wrote nothing, and releases nothing."
    later = IngestRun.objects.filter(pk__gt=run.pk, mode=RunMode.FULL, status=RunStatus.SUCCEEDED, dry_run=False)
    if later.exists():
        return f"Run {later.order_by('pk').first().pk}, a later complete full run, recomputed run {run_id}'s deletions."
    if not StagedCustomer.objects.filter(run=run).exists() and run.fetched:
        return f"Run {run_id}'s staged rows were pruned; run a full ingestion to recompute its deletions."
    return ""


def pending() -> IngestRun | None:
    """The newest run whose held deletions still wait for a release (one query; for the metrics and the admin)."""
    last_full = (
        IngestRun.objects.filter(mode=RunMode.FULL, status=RunStatus.SUCCEEDED, dry_run=False)
        .order_by("-pk")
        .values("pk")[:1]
    )
    return (
        IngestRun.objects.filter(
            status=RunStatus.SUCCEEDED, dry_run=False, deletions_held__gt=0, deletions_released_at__isnull=True
        )
        .filter(pk__gte=Coalesce(Subquery(last_full), 0))
        .order_by("-pk")
        .first()
    )
