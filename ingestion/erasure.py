"""Erasure: remove a person from every copy the pipeline keeps, and keep them from coming back.

One operation behind three doors (`erase_customer`, `POST /api/customers/{id}/erase`, the
admin's action). In one transaction, under the customers write lock (so no batch commits
between the steps, and none after them can bring the person back unseen), it:

- anonymises the customer's row and scrubs its change events (customers.merge.erase_customer;
  the feed gains an `erased` event so consumers erase their copies);
- deletes its staged rows and tombstones, and scrubs the raw payload of its failure rows and of any other
  record that carried its email (a record refused for taking it, say);
- puts the id on the suppression list, as a keyed hash (INGESTION_SUPPRESSION_KEY), and
  records an audit entry: who, when, why, what was removed; no personal data.

Every batch reads the suppression list under the same lock (`without_suppressed`) and skips
those records before staging or recording them, counted as `suppressed`, until an operator
lifts the suppression (`lift`).
"""

import hashlib
import logging
import uuid
from collections.abc import Sequence
from functools import cache

from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import connection, transaction
from django.db.models import Q
from django.db.models.fields.json import KT
from django.db.models.functions import Lower

from customers import changes, merge
from customers.models import Customer
from ingestion.failures import RejectedRecord
from ingestion.models import Erasure, ErasureAction, IngestFailure, StagedCustomer, StagedTombstone, Suppression
from ingestion.staging import StagedRow

logger = logging.getLogger(__name__)


class ErasureRefused(Exception):
    """The request cannot be carried out as asked; the message says why."""


@cache
def _key(secret: str) -> bytes:
    return hashlib.sha256(b"suppression:" + secret.encode()).digest()


def subject_of(customer_id: uuid.UUID) -> str:
    """The keyed hash that stands for a customer id on the suppression list and in the audit."""
    key = _key(settings.INGESTION_SUPPRESSION_KEY or settings.SECRET_KEY)
    return hashlib.blake2b(customer_id.bytes, key=key, digest_size=32).hexdigest()


def erase(customer_id: uuid.UUID, *, by: str, door: str, reason: str = "") -> Erasure:
    """Erase the person `customer_id` names everywhere we keep them; suppress the id; return the audit entry."""
    subject = subject_of(customer_id)
    with transaction.atomic(), connection.cursor() as cursor:
        merge.lock_writers(cursor)
        emails = _emails_of(customer_id)
        removed = merge.erase_customer(cursor, customer_id=customer_id)
        removed["staged"] = StagedCustomer.objects.filter(customer_id=customer_id).delete()[0]
        removed["tombstones"] = StagedTombstone.objects.filter(customer_id=customer_id).delete()[0]
        # Another record that carried the email (refused for taking it) keeps its row, not the email.
        carried = Q(customer_id=customer_id) | Q(conflicting_customer_id=customer_id)
        if emails:
            carried |= Q(raw_email__in=emails)
            removed["staged_others"] = (
                StagedCustomer.objects.annotate(lowered=Lower("email"))
                .filter(lowered__in=emails)
                .update(email="", conflicting_customer_id=None)
            )
        removed["failures"] = (
            IngestFailure.objects.alias(raw_email=Lower(KT("raw__email")))
            .filter(carried)
            .update(raw=None, errors={}, customer_id=None, conflicting_customer_id=None)
        )
        removed["admin_log"] = LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(Customer), object_id=str(customer_id)
        ).update(object_id=None, object_repr="(erased)", change_message="")
        erasure = Erasure.objects.create(
            subject=subject, requested_by=by[:255], door=door, reason=reason, removed=removed
        )
        Suppression.objects.get_or_create(subject=subject, defaults={"erasure": erasure})
    # The subject only: logs never carry the person's id or data.
    logger.warning("customer erased", extra={"erasure_id": erasure.pk, "subject": subject[:12], **removed})
    return erasure


def lift(customer_id: uuid.UUID, *, by: str, door: str, reason: str = "") -> Erasure:
    """Let ingestions bring an erased id in again (the person asked, or the erasure was a mistake)."""
    subject = subject_of(customer_id)
    with transaction.atomic():
        if not Suppression.objects.filter(subject=subject).delete()[0]:
            raise ErasureRefused(f"Customer {customer_id} is not suppressed.")
        erasure = Erasure.objects.create(
            action=ErasureAction.LIFTED, subject=subject, requested_by=by[:255], door=door, reason=reason
        )
    logger.warning("suppression lifted", extra={"erasure_id": erasure.pk, "subject": subject[:12]})
    return erasure


def without_suppressed(
    valid: Sequence[StagedRow], rejected: Sequence[RejectedRecord]
) -> tuple[list[StagedRow], list[RejectedRecord], int]:
    """The batch's records minus those of suppressed ids, and how many those were.

    Call under the write lock: an erasure committed before it is seen, one after it removes
    what the batch wrote. Hashes nothing while the list is empty.
    """
    subjects = set(Suppression.objects.values_list("subject", flat=True))
    if not subjects:
        return list(valid), list(rejected), 0
    kept_valid = [row for row in valid if subject_of(row.record.customer_id) not in subjects]
    kept_rejected = [record for record in rejected if _raw_subject(record.raw) not in subjects]
    return kept_valid, kept_rejected, len(valid) + len(rejected) - len(kept_valid) - len(kept_rejected)


def _raw_subject(raw) -> str | None:
    """The subject of a rejected record's id, when it has one that parses (any spelling of it)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("customer_id"), str):
        return None
    try:
        return subject_of(uuid.UUID(raw["customer_id"]))
    except ValueError:
        return None


def _emails_of(customer_id: uuid.UUID) -> set[str]:
    """Every email the person had in a copy we keep, lower-cased."""
    found = set(Customer.objects.filter(customer_id=customer_id).values_list("email", flat=True))
    found |= set(changes.history_of(customer_id).values_list("email", flat=True))
    found |= set(StagedCustomer.objects.filter(customer_id=customer_id).values_list("email", flat=True))
    for raw in IngestFailure.objects.filter(customer_id=customer_id).values_list("raw", flat=True):
        if isinstance(raw, dict) and isinstance(raw.get("email"), str):
            found.add(raw["email"])
    return {email.lower() for email in found if email}
