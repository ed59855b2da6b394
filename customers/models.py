from django.db import models
from django.db.models import F, Max, Q
from django.db.models.functions import Lower

LIVE = Q(deleted_at__isnull=True)
DELETED = Q(deleted_at__isnull=False)


class CustomerQuerySet(models.QuerySet):
    def for_listing(self, *, include_deleted: bool = False):
        """The API's listing: live customers (all, if asked) in the order they were first ingested."""
        customers = self.order_by("seq")
        return customers if include_deleted else customers.live()

    def live(self):
        """Customers the upstream still has: not soft-deleted."""
        return self.filter(LIVE)

    def deleted(self):
        return self.filter(DELETED)

    def live_count(self) -> int:
        """How many customers are live, without reading them: `seq` numbers every row densely
        (1..N, deleted ones included; customers/merge.py keeps it so), so it is max(seq) minus
        the deleted rows, which have their own small index. Two index reads at any table size,
        where counting the live rows reads a million of them. The whole table only."""
        if self.query.has_filters():
            raise TypeError("live_count() counts the whole table; use live().count() on a filtered queryset.")
        top = self.aggregate(top=Max("seq"))["top"] or 0
        return top - self.deleted().count()


class Customer(models.Model):
    """A customer as the upstream describes it, plus a little pipeline bookkeeping.

    Every write goes through customers/merge.py, which keeps the table's invariants:
    `seq` numbers rows densely (1..N) in the order they were first inserted, so
    `max(seq)` is the row count and a page of the whole table is a range of `seq`
    (no full count, no growing OFFSET scan: api/pagination.py, DenseKeyPagination).
    """

    customer_id = models.UUIDField(primary_key=True)
    first_name = models.CharField(max_length=100)
    last_name = models.CharField(max_length=100)
    email = models.EmailField(max_length=255)
    phone = models.CharField(max_length=20, null=True, blank=True)  # noqa: DJ001 - NULL mirrors the upstream's null
    address = models.TextField(null=True, blank=True)  # noqa: DJ001 - NULL mirrors the upstream's null
    date_of_birth = models.DateField(null=True, blank=True)
    account_balance = models.DecimalField(max_digits=15, decimal_places=2, null=True, blank=True)
    created_at = models.DateTimeField(help_text="The upstream's creation time, kept as first seen.")
    updated_at = models.DateTimeField(null=True, blank=True, help_text="Last real change; empty until then.")

    seq = models.BigIntegerField(unique=True, editable=False, help_text="Dense ingestion order, 1..N.")
    ingested_at = models.DateTimeField(editable=False, help_text="When the pipeline first inserted the row.")
    # Soft deletion: the row stays (and keeps its seq) so a customer who reappears upstream is
    # restored in place. The run is ingestion's; customers does not import ingestion, so it is a plain id.
    deleted_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When the pipeline saw the customer gone upstream."
    )
    deleted_by_run = models.PositiveBigIntegerField(
        null=True, blank=True, editable=False, help_text="The ingestion run that deleted it."
    )
    # An erased person's row stays as an anonymous deleted slot (a new random id, no personal
    # data) so `seq` stays dense; customers/merge.py, `erase_customer`.
    erased_at = models.DateTimeField(null=True, blank=True, editable=False, help_text="When its person was erased.")

    objects = CustomerQuerySet.as_manager()

    # The fields the upstream owns, in the upstream's order.
    SOURCE_FIELDS = (
        "customer_id",
        "first_name",
        "last_name",
        "email",
        "phone",
        "address",
        "date_of_birth",
        "account_balance",
        "created_at",
    )

    class Meta:
        ordering = ["seq"]
        permissions = [("erase_customer", "Can erase a customer's personal data")]
        constraints = [
            # Among live customers only: a deleted customer does not hold its email against a
            # live one (an account re-created upstream under a new id keeps its address).
            models.UniqueConstraint(Lower("email"), condition=LIVE, name="customer_email_ci_unique_live"),
        ]
        indexes = [
            # The API's orderings and filters; each ordering ends in a unique column so pages
            # are stable, and is one index scan. Every index costs a cold insert dearly when its
            # keys land at random places (per-index costs: docs/benchmarks.md), so the choice
            # of tie-breaker matters: new rows have updated_at NULL and a growing seq, so in
            # both updated_at indexes they are appended in ascending order at the end of the
            # NULL group instead of scattered. Email ordering uses the unique lower(email)
            # index of the constraint above.
            models.Index(fields=["created_at", "customer_id"], name="customer_created_idx"),
            models.Index(fields=["updated_at", "seq"], name="customer_updated_seq_idx"),
            # `-updated_at` keeps never-updated rows last too: this index read backward gives
            # updated_at DESC NULLS LAST, seq DESC. (An index declared in that descending order
            # would take new rows in descending order and split its pages half-empty.)
            models.Index(F("updated_at").asc(nulls_first=True), F("seq").asc(), name="customer_updated_nf_seq_idx"),
            models.Index(fields=["last_name", "customer_id"], name="customer_last_name_idx"),
            # Deleted rows only, so live inserts never touch them: the listing counts and skips
            # the holes deletions leave in `seq` (api/pagination.py), and an email lookup that
            # includes deleted customers reads this beside the live unique index.
            models.Index(fields=["seq"], condition=DELETED, name="customer_deleted_seq_idx"),
            models.Index(Lower("email"), condition=DELETED, name="customer_deleted_email_idx"),
            # Name search also has trigram GIN indexes on UPPER(first_name) and UPPER(last_name),
            # created in SQL by migration 0002: GinIndex here would require django.contrib.postgres
            # in INSTALLED_APPS.
        ]

    def __str__(self):
        return f"{self.first_name} {self.last_name} ({self.customer_id})"


class ChangeKind(models.TextChoices):
    INSERTED = "inserted"
    UPDATED = "updated"
    DELETED = "deleted"
    RESTORED = "restored"
    ERASED = "erased"


class CustomerChange(models.Model):
    """One change to one customer: the change feed's event and the customer's version after it.

    Written only by customers/merge.py, in the statement that makes the change, under the
    write lock: `cursor` numbers changes densely (1..N) in commit order, so a consumer that
    asks for cursors after the last one it saw never misses or repeats one. The state
    columns hold every source field after the change (none for a deletion or an erasure).
    Once its person is erased, an event keeps its cursor, kind and time and loses the rest.
    """

    cursor = models.BigIntegerField(primary_key=True)
    kind = models.CharField(max_length=8, choices=ChangeKind)
    customer_id = models.UUIDField(null=True, blank=True, help_text="Empty once its person was erased.")
    # The customer's `seq`, which never changes: a customer's history is read by it. Indexed
    # instead of the random id, so a cold load appends to the index instead of scattering.
    seq = models.BigIntegerField(null=True, blank=True, help_text="The customer's seq; empty once erased.")
    run_id = models.PositiveBigIntegerField(null=True, blank=True, help_text="The ingestion run that made it.")
    at = models.DateTimeField(help_text="When the change was written.")
    # Bit i is CHANGE_FIELDS[i]: one small integer instead of an array of names on every row.
    changed = models.PositiveSmallIntegerField(default=0)
    first_name = models.CharField(max_length=100, null=True)  # noqa: DJ001 - NULL: no state (deleted, erased)
    last_name = models.CharField(max_length=100, null=True)  # noqa: DJ001
    email = models.CharField(max_length=255, null=True)  # noqa: DJ001
    phone = models.CharField(max_length=20, null=True)  # noqa: DJ001
    address = models.TextField(null=True)  # noqa: DJ001
    date_of_birth = models.DateField(null=True)
    account_balance = models.DecimalField(max_digits=15, decimal_places=2, null=True)
    created_at = models.DateTimeField(null=True)

    # The fields a change can name, in bit order: what an update may change, then created_at (set once).
    CHANGE_FIELDS = (
        *(name for name in Customer.SOURCE_FIELDS if name not in ("customer_id", "created_at")),
        "created_at",
    )
    STATE_FIELDS = CHANGE_FIELDS

    class Meta:
        ordering = ["cursor"]
        indexes = [models.Index(fields=["seq", "cursor"], name="customerchange_seq_idx")]

    def __str__(self):
        return f"{self.cursor}: {self.kind} {self.customer_id or '(erased)'}"

    @property
    def changed_fields(self) -> list[str]:
        return [name for bit, name in enumerate(self.CHANGE_FIELDS) if self.changed & (1 << bit)]

    @property
    def has_state(self) -> bool:
        return self.created_at is not None


class DeferredIndex(models.Model):
    """An index of the customers table dropped for a first load, and how to build it again.

    Written and read only by customers/indexes.py, in the transaction that drops the index and
    the one that builds it: a row here means the index is missing.
    """

    name = models.CharField(max_length=63, primary_key=True)
    definition = models.TextField(help_text="The CREATE INDEX statement, as PostgreSQL gave it.")
    run_id = models.PositiveBigIntegerField(help_text="The ingestion run whose load dropped it.")
    deferred_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"{self.name} (deferred by run {self.run_id})"
