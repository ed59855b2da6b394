"""Reads of the change feed and of customers' history, and its pruning.

customers/merge.py writes every `CustomerChange`, numbering them 1..N in commit order under
the write lock. So a page of the feed is a range of cursors read by the primary key
(keyset, never OFFSET or COUNT), and its cost does not grow with the feed. Pruning removes
the oldest events only, and always keeps the newest, so the numbering goes on from it: a
cursor below what is kept is "gone" (the consumer must start over from a full listing),
and one above the newest was never issued.
"""

from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction
from django.db.models import Max, Min, Subquery

from customers import documents
from customers.models import ChangeKind, Customer, CustomerChange

CHANGES = CustomerChange._meta.db_table
BATCH = 10_000


class CursorUnknown(Exception):
    """A cursor the feed never issued."""


class CursorGone(Exception):
    """A cursor whose next events were pruned."""


class VersionGone(Exception):
    """The version asked for was pruned."""


@dataclass(frozen=True, slots=True)
class FeedPage:
    body: str  # the envelope as JSON text, built by PostgreSQL
    next: int


# An event's customer: its state after the change (customers/documents.py writes it as the API
# does everywhere), none for a deletion or an erasure.
_CUSTOMER_JSON = (
    "CASE WHEN e.created_at IS NULL THEN NULL ELSE "
    + documents.customer_object("e", ("customer_id", *CustomerChange.STATE_FIELDS))
    + " END"
)
_CHANGED_FIELDS = (
    "array_remove(ARRAY["
    + ", ".join(
        f"CASE WHEN e.changed & {1 << bit} <> 0 THEN '{field}' END"
        for bit, field in enumerate(CustomerChange.CHANGE_FIELDS)
    )
    + "]::text[], NULL)"
)
# One statement: the feed's bounds (two ends of the primary key) and the page, as JSON.
_PAGE_SQL = f"""/* customers.changes.feed_page */
WITH page AS (
    SELECT * FROM {CHANGES} WHERE cursor > %(after)s ORDER BY cursor LIMIT %(limit)s
)
SELECT (SELECT min(cursor) FROM {CHANGES}), (SELECT max(cursor) FROM {CHANGES}), (SELECT max(cursor) FROM page),
       (SELECT coalesce(json_agg(json_build_object(
            'cursor', e.cursor, 'kind', e.kind, 'customer_id', e.customer_id, 'run_id', e.run_id,
            'at', {documents.utc("e.at", ".US")}, 'customer', ({_CUSTOMER_JSON})::json,
            'changed_fields', {_CHANGED_FIELDS}
        ) ORDER BY e.cursor), '[]'::json) FROM page e)::text
"""


def feed_page(*, after: int, limit: int) -> FeedPage:
    """Up to `limit` events after cursor `after`, oldest first, with the cursor to ask after next."""
    with connection.cursor() as cursor:
        cursor.execute(_PAGE_SQL, {"after": after, "limit": limit})
        first, head, last, events = cursor.fetchone()
    if after > (head or 0):
        raise CursorUnknown(f"Cursor {after} was never issued: the newest is {head or 0}.")
    if first is not None and after < first - 1:
        raise CursorGone(
            f"Events after cursor {after} were pruned (the oldest kept is {first}). Start over: "
            "read the full listing (GET /api/customers), then follow the feed from the cursor "
            "GET /api/changes?after=latest returns."
        )
    next_cursor = last if last is not None else after
    return FeedPage(body=f'{{"data":{events},"next":{next_cursor},"limit":{limit}}}', next=next_cursor)


def head() -> int:
    """The newest cursor issued (0 before any change)."""
    return CustomerChange.objects.aggregate(head=Max("cursor"))["head"] or 0


def history_of(customer_id):
    """The customer's retained versions, oldest first (found by its `seq`, which the events index)."""
    seq = Customer.objects.filter(customer_id=customer_id).values("seq")[:1]
    return CustomerChange.objects.filter(seq=Subquery(seq)).order_by("cursor")


def version_at(customer_id, moment: datetime) -> dict | None:
    """The customer's source fields as they were at `moment`, plus `updated_at`; None if it did not exist then.

    Raises VersionGone when the version in force then was pruned.
    """
    versions = history_of(customer_id)
    before = versions.filter(at__lte=moment).last()
    if before is not None:
        if before.kind in (ChangeKind.DELETED, ChangeKind.ERASED) or not before.has_state:
            return None
        return _state_of(before)
    oldest = CustomerChange.objects.order_by("cursor").values("cursor", "at").first()
    pruned = oldest is not None and oldest["cursor"] > 1
    if pruned and moment < oldest["at"]:
        raise VersionGone(f"History before {oldest['at'].isoformat()} is not kept (INGESTION_CHANGES_RETENTION_DAYS).")
    later = versions.first()
    if later is not None:
        if later.kind != ChangeKind.INSERTED and pruned:
            raise VersionGone(f"The version of {customer_id} in force then was pruned.")
        return None
    # No event since the horizon: unchanged since before it, so what it is now is what it was then.
    current = Customer.objects.live().filter(customer_id=customer_id).first()
    if current is None:
        return None
    return {field: getattr(current, field) for field in Customer.SOURCE_FIELDS} | {"updated_at": current.updated_at}


def _state_of(change: CustomerChange) -> dict:
    state = {"customer_id": change.customer_id} | {field: getattr(change, field) for field in change.STATE_FIELDS}
    # The customers row's updated_at is null until a real change; a version's is when it was written.
    return state | {"updated_at": None if change.kind == ChangeKind.INSERTED else change.at}


def prune_changes(*, older_than: datetime) -> int:
    """Delete the oldest events, up to the first written at or after `older_than`, in batches.

    Always a prefix of the cursors (a clock that stepped back cannot punch a hole in the
    middle of the feed), and never the newest event: the numbering goes on from it.
    """
    newest = head()
    stop = CustomerChange.objects.filter(at__gte=older_than).aggregate(stop=Min("cursor"))["stop"] or newest
    stop = min(stop, newest)
    deleted = 0
    while True:
        first = CustomerChange.objects.aggregate(first=Min("cursor"))["first"]
        if first is None or first >= stop:
            return deleted
        with transaction.atomic():
            deleted += CustomerChange.objects.filter(cursor__lt=min(stop, first + BATCH)).delete()[0]
