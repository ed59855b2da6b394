"""An incremental run's second walk: the upstream's tombstones since the run's `updated_since`.

Tombstones are staged batch by batch, with the run's progress (`last_tombstone_page`) in
the same transaction, so a resumed run continues after its last committed page as the
records walk does. Nothing is deleted here: once both walks are complete,
ingestion/deletions.py applies the run's staged tombstones at once, behind the guard.
"""

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from ingestion.batches import Batch
from ingestion.failures import record_rejections
from ingestion.models import IngestRun, StagedTombstone
from ingestion.runs import RunFenced


def commit_tombstones(run: IngestRun, batch: Batch, *, retries: tuple[int, dict[str, int]] = (0, {})) -> IngestRun:
    """Stage one batch of tombstones (refused ones become failures) and count it, in one transaction."""
    with transaction.atomic():
        # Few rows per run (a share of a percent of the table): bulk_create, not COPY.
        StagedTombstone.objects.bulk_create(
            [
                StagedTombstone(run_id=run.pk, page=row.page, position=row.position, **row.record._asdict())
                for row in batch.valid
            ],
            batch_size=1000,
        )
        record_rejections(run.pk, batch.rejected)
        new_retries, retries_by_reason = retries
        changes = {
            "tombstones": F("tombstones") + batch.size,
            "retries": F("retries") + new_retries,
            "retries_by_reason": retries_by_reason,
            "heartbeat_at": timezone.now(),
        }
        if batch.pages:
            changes["last_tombstone_page"] = max(batch.last_page, run.last_tombstone_page)
        if not IngestRun.objects.owned_by(run.pk, run.attempt).update(**changes):
            raise RunFenced(f"Run {run.pk} is no longer running under attempt {run.attempt}; tombstones not committed.")
    run.refresh_from_db()
    return run
