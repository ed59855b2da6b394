"""How long pipeline records are kept.

Staged rows only matter while their run may still resume; failures are kept
INGESTION_RETENTION_DAYS for staff to read; the change feed and customers' history
INGESTION_CHANGES_RETENTION_DAYS (customers/changes.py prunes them). Deletes go in batches so a large prune
never holds long locks or one huge transaction.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from customers import changes
from ingestion.models import RESUMABLE_STATUSES, IngestFailure, IngestRun, RunStatus, StagedCustomer

BATCH = 10_000


@dataclass(frozen=True, slots=True)
class Pruned:
    staged: int
    failures: int
    changes: int = 0


def prune(*, days: int | None = None, changes_days: int | None = None, now=None) -> Pruned:
    """Delete old failures, and staging no run needs: of runs nothing resumes, and of runs finished before the cutoff.

    Succeeded and incomplete runs are never resumed; a failed, abandoned or cancelled one may be, until the cutoff.
    """
    days = settings.INGESTION_RETENTION_DAYS if days is None else days
    changes_days = settings.INGESTION_CHANGES_RETENTION_DAYS if changes_days is None else changes_days
    now = now or timezone.now()
    cutoff = now - timedelta(days=days)
    done_with_staging = IngestRun.objects.filter(
        Q(status__in=[RunStatus.SUCCEEDED, RunStatus.INCOMPLETE])
        | Q(finished_at__lt=cutoff, status__in=RESUMABLE_STATUSES)
    )
    staged = _delete_in_batches(StagedCustomer.objects.filter(run__in=done_with_staging))
    failures = _delete_in_batches(IngestFailure.objects.filter(run__finished_at__lt=cutoff))
    pruned_changes = changes.prune_changes(older_than=now - timedelta(days=changes_days))
    return Pruned(staged=staged, failures=failures, changes=pruned_changes)


def _delete_in_batches(queryset) -> int:
    deleted = 0
    while True:
        ids = list(queryset.values_list("pk", flat=True)[:BATCH])
        if not ids:
            return deleted
        deleted += queryset.model.objects.filter(pk__in=ids).delete()[0]
