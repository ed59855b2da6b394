"""The last read of an incremental run: records refused earlier, read again by id.

An incremental run reads only what changed upstream. A record an earlier run refused for an
email conflict does not change when its email's holder lets the email go (changes it, or is
deleted), so no incremental walk would read it again, and it would stay out of the copy until
the next full run. So once its walks are complete and its deletions settled, an incremental run
reads again, through the upstream's detail route, each record refused for an email conflict
with a customer this run read or tombstoned, or that was deleted since (a release of held
deletions, say), and commits them as one more batch through the same validation,
classification and merge. Reading one whose email is still taken costs a
request and leaves another conflict row; one the upstream no longer has (a 404) is skipped.

Idempotent, for resumes: a record this run has already read (staged or refused) is not read
again.
"""

import logging
import uuid

from django.conf import settings
from django.db.models import Exists, OuterRef, Q

from customers.models import Customer
from ingestion.batches import Batch, commit_batch
from ingestion.failures import RejectedRecord
from ingestion.models import FailureReason, IngestFailure, IngestRun, StagedCustomer, StagedTombstone
from ingestion.source import UpstreamClient
from ingestion.staging import StagedRow
from ingestion.validation import Rejection, validate_record

logger = logging.getLogger(__name__)

# Records read by id have no page; their staged and failure rows say page 0.
NO_PAGE = 0


def refused_behind(run: IngestRun) -> list[uuid.UUID]:
    """Ids earlier runs refused for an email conflict whose holder this run read or tombstoned,
    or was deleted since (by a release of held deletions, say), unless a later read took the
    record or this run read it; at most INGESTION_BATCH_SIZE of them, in id order."""
    # EXISTS, each an index probe ((run, customer_id) on staging and tombstones; customer_id on
    # failures; the customers' primary key), whatever the number of rows this run staged.
    holder_read = StagedCustomer.objects.filter(run=run, customer_id=OuterRef("conflicting_customer_id"))
    holder_tombstoned = StagedTombstone.objects.filter(run=run, customer_id=OuterRef("conflicting_customer_id"))
    holder_deleted_since = Customer.objects.filter(
        customer_id=OuterRef("conflicting_customer_id"), deleted_at__gt=OuterRef("created_at")
    )
    # Inserted or changed after the refusal: a later read settled it (and keeps it off this list).
    taken_since = Customer.objects.live().filter(
        Q(ingested_at__gt=OuterRef("created_at")) | Q(updated_at__gt=OuterRef("created_at")),
        customer_id=OuterRef("customer_id"),
    )
    staged_here = StagedCustomer.objects.filter(run=run, customer_id=OuterRef("customer_id"))
    refused_here = IngestFailure.objects.filter(run=run, customer_id=OuterRef("customer_id"))
    return list(
        IngestFailure.objects.filter(reason=FailureReason.EMAIL_CONFLICT, customer_id__isnull=False)
        .exclude(run=run)
        .filter(Exists(holder_read) | Exists(holder_tombstoned) | Exists(holder_deleted_since))
        .exclude(Exists(taken_since))
        .exclude(Exists(staged_here))
        .exclude(Exists(refused_here))
        .order_by("customer_id")
        .values_list("customer_id", flat=True)
        .distinct()[: settings.INGESTION_BATCH_SIZE]
    )


def read_refused_again(run: IngestRun, client: UpstreamClient, *, retries) -> IngestRun:
    """Read `refused_behind(run)` by id and commit them as one batch; return the run.

    `client` is the records listing's (its URL is the detail routes' prefix); `retries` the
    run's retry counter, whose count goes with the commit. Raises UpstreamError as a page does.
    """
    ids = refused_behind(run)
    if not ids:
        return run
    batch = Batch(first_position=run.fetched + 1)
    for customer_id in ids:
        raw = client.fetch_record(str(customer_id))
        if raw is None:
            continue  # gone upstream: a tombstone will say so, and it holds no email
        outcome = validate_record(raw)
        if outcome.customer_id not in (None, customer_id):
            # Asked for one customer, given another: not the record we asked about, so it proves nothing.
            logger.warning("re-read answered another customer", extra={"run_id": run.pk})
            continue
        position = batch.first_position + batch.size
        if isinstance(outcome, Rejection):
            batch.rejected.append(RejectedRecord(NO_PAGE, position, outcome, raw))
        else:
            batch.valid.append(StagedRow(NO_PAGE, position, outcome))
    run = commit_batch(run, batch, retries=retries.take())
    logger.info("refused records read again", extra={"run_id": run.pk, "asked": len(ids), "read": batch.size})
    return run
