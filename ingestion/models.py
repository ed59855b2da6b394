from django.db import models

from ingestion.exact_json import ExactJSONDecoder, ExactJSONEncoder


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    # The walk reached its end, but the upstream's total changed on the way: records may
    # have moved between pages unread, so the run cannot say it holds them all.
    INCOMPLETE = "incomplete"
    FAILED = "failed"
    ABANDONED = "abandoned"
    CANCELLED = "cancelled"


ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)
# Stopped before the end, keeping every batch committed: a resume continues after the last one.
RESUMABLE_STATUSES = (RunStatus.FAILED, RunStatus.ABANDONED, RunStatus.CANCELLED)


class RunMode(models.TextChoices):
    # Walk the whole listing; when it is complete, customers it did not see are deleted.
    FULL = "full"
    # Read what changed since the source's watermark (minus the lookback), and its tombstones.
    INCREMENTAL = "incremental"


class RunTrigger(models.TextChoices):
    COMMAND = "command"
    API = "api"
    ADMIN = "admin"
    SCHEDULE = "schedule"


class FailureReason(models.TextChoices):
    MISSING_FIELD = "missing_field"
    INVALID_TYPE = "invalid_type"
    INVALID_UUID = "invalid_uuid"
    INVALID_EMAIL = "invalid_email"
    INVALID_DATE = "invalid_date"
    INVALID_DATETIME = "invalid_datetime"
    INVALID_DECIMAL = "invalid_decimal"
    TOO_LONG = "too_long"
    INVALID_CHARACTERS = "invalid_characters"
    NOT_AN_OBJECT = "not_an_object"
    EMAIL_CONFLICT = "email_conflict"
    SUPERSEDED = "superseded"
    INVALID_TOMBSTONE = "invalid_tombstone"
    # Recorded by runs before a later read of an id won over an earlier one; kept so their failures still read.
    DUPLICATE_ID = "duplicate_id"


class IngestRunQuerySet(models.QuerySet):
    def active(self):
        return self.filter(status__in=ACTIVE_STATUSES)

    def owned_by(self, run_id: int, attempt: int):
        """The run while it is still running under `attempt`: every write of an execution is conditional on it."""
        return self.filter(pk=run_id, status=RunStatus.RUNNING, attempt=attempt)


class IngestRun(models.Model):
    """One ingestion run: its status, progress and counters.

    Every fetched record ends in exactly one counter, so
    fetched == inserted + updated + unchanged + invalid + conflicts + duplicates + suppressed.
    Counters and `last_committed_page` are written in the same transaction as the
    rows they describe, which is what makes a resumed run exact.
    """

    status = models.CharField(max_length=16, choices=RunStatus, default=RunStatus.QUEUED, db_index=True)
    trigger = models.CharField(max_length=16, choices=RunTrigger)
    source_url = models.CharField(max_length=2048)
    page_size = models.PositiveIntegerField()
    dry_run = models.BooleanField(default=False)
    mode = models.CharField(max_length=16, choices=RunMode, default=RunMode.FULL)
    updated_since = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Incremental: the upstream time the run reads changes from."
    )

    pages_expected = models.PositiveIntegerField(null=True, blank=True)
    last_committed_page = models.PositiveIntegerField(default=0)
    records_expected = models.PositiveBigIntegerField(null=True, blank=True)
    first_total = models.PositiveBigIntegerField(
        null=True, blank=True, editable=False, help_text="The total the run's first page announced."
    )
    total_changed = models.BooleanField(
        default=False, editable=False, help_text="A page announced another total than the first page did."
    )

    fetched = models.PositiveBigIntegerField(default=0)
    inserted = models.PositiveBigIntegerField(default=0)
    updated = models.PositiveBigIntegerField(default=0)
    unchanged = models.PositiveBigIntegerField(default=0)
    invalid = models.PositiveBigIntegerField(default=0)
    conflicts = models.PositiveBigIntegerField(default=0)
    duplicates = models.PositiveBigIntegerField(default=0)
    suppressed = models.PositiveBigIntegerField(default=0, help_text="Records of erased customers, skipped.")
    retries = models.PositiveIntegerField(default=0)
    # Beside the records' invariant: `restored` customers are also counted in `updated`.
    deleted = models.PositiveBigIntegerField(default=0)
    restored = models.PositiveBigIntegerField(default=0)
    tombstones = models.PositiveBigIntegerField(default=0, help_text="Incremental: tombstones read.")
    deletions_held = models.PositiveBigIntegerField(
        default=0, help_text="Deletions the mass-deletion guard held back, waiting for a release."
    )
    deletions_released_at = models.DateTimeField(null=True, blank=True, editable=False)
    deletions_released_by = models.CharField(max_length=255, blank=True, default="", editable=False)
    # What the walk proved (ingestion/watermarks.py): the newest upstream `updated_at` it read,
    # and the upstream's own clock (its Date header) when the run's first page was served.
    high_water = models.DateTimeField(null=True, blank=True, editable=False)
    upstream_started_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Incremental: the records walk reached its end, and the tombstone pages committed since.
    records_walked = models.BooleanField(default=False, editable=False)
    last_tombstone_page = models.PositiveIntegerField(default=0, editable=False)
    # Keys are ingestion.source.RetryReason values.
    retries_by_reason = models.JSONField(default=dict, blank=True, help_text="Upstream retries per reason.")

    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Which execution owns the run: each start adds one, and every commit, heartbeat and
    # finish of an execution applies only while the run is still running under its attempt.
    attempt = models.PositiveIntegerField(default=0, editable=False)
    error = models.TextField(blank=True, default="")
    # The OpenTelemetry trace of the latest execution (config/tracing.py); blank when it was not traced.
    trace_id = models.CharField(max_length=32, blank=True, default="", editable=False)

    objects = IngestRunQuerySet.as_manager()

    COUNTERS = ("fetched", "inserted", "updated", "unchanged", "invalid", "conflicts", "duplicates", "suppressed")
    # What each fetched record became: they add up to `fetched`.
    OUTCOMES = COUNTERS[1:]

    class Meta:
        ordering = ["-id"]
        permissions = [("start_ingestion", "Can start or resume an ingestion run")]
        constraints = [
            # At most one queued or running run, enforced by the database: two requests
            # racing to start a run cannot both insert one.
            models.UniqueConstraint(
                models.Value(True),
                condition=models.Q(status__in=["queued", "running"]),
                name="ingestrun_one_active",
            ),
        ]

    def __str__(self):
        return f"Run {self.pk} ({self.status})"

    def counters(self) -> dict[str, int]:
        """`fetched` and the outcome counters, by name, in COUNTERS order."""
        return {name: getattr(self, name) for name in self.COUNTERS}

    @property
    def pages_done(self) -> int:
        return self.last_committed_page

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or self.heartbeat_at or self.started_at
        return (end - self.started_at).total_seconds()

    @property
    def records_per_second(self) -> float | None:
        duration = self.duration_seconds
        if not duration:
            return None
        return round(self.fetched / duration, 1)


class IngestFailure(models.Model):
    """A record the pipeline refused, with why and the record as it arrived."""

    run = models.ForeignKey(IngestRun, on_delete=models.CASCADE, related_name="failures")
    page = models.PositiveIntegerField()
    position = models.PositiveBigIntegerField(help_text="Ordinal of the record within its run, from 1.")
    customer_id = models.UUIDField(null=True, blank=True, db_index=True)
    reason = models.CharField(max_length=32, choices=FailureReason, db_index=True)
    errors = models.JSONField(default=dict, help_text="Field name -> list of problems.")
    raw = models.JSONField(
        null=True,
        encoder=ExactJSONEncoder,
        decoder=ExactJSONDecoder,
        help_text="The record exactly as the upstream sent it.",
    )
    conflicting_customer_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["run_id", "position"]
        permissions = [("view_personal_data", "Can see unmasked email and phone of failed records")]
        indexes = [models.Index(fields=["run", "position"], name="ingestfailure_run_pos_idx")]

    def __str__(self):
        return f"{self.reason} in run {self.run_id}, page {self.page}"


class SyncCursor(models.Model):
    """Per upstream: how far incremental runs have proven the copy complete.

    Moved only by a run that succeeded, and only forward (ingestion/watermarks.py).
    """

    source_url = models.CharField(max_length=2048, unique=True)
    watermark = models.DateTimeField(help_text="Upstream changes before this time are in the copy.")
    run = models.ForeignKey(IngestRun, null=True, on_delete=models.SET_NULL, related_name="+")
    advanced_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"{self.source_url} @ {self.watermark.isoformat()}"


class StagedTombstone(models.Model):
    """An upstream deletion an incremental run read, kept like staged rows until retention prunes it."""

    run = models.ForeignKey(IngestRun, on_delete=models.CASCADE, related_name="tombstones_staged", db_index=False)
    page = models.PositiveIntegerField()
    position = models.PositiveBigIntegerField()
    customer_id = models.UUIDField()
    deleted_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "position"], name="tombstone_run_position_unique")]
        indexes = [models.Index(fields=["run", "customer_id"], name="tombstone_run_customer_idx")]

    def __str__(self):
        return f"{self.customer_id} deleted (run {self.run_id})"


class StageOutcome(models.TextChoices):
    """Why ingestion.classification refused a staged row; rows it let through keep NULL."""

    DUPLICATE = "duplicate"
    SUPERSEDED = "superseded"
    EMAIL_CONFLICT = "email_conflict"


class StagedCustomer(models.Model):
    """A validated record waiting for (or done with) the set-based merge.

    Staged rows are kept after the merge: they are the run's memory of which ids it
    has already seen (the duplicate rule) and they are pruned with the failures.
    """

    # No index of its own: both indexes below start with run_id, and every index filled
    # costs each cold batch (docs/benchmarks.md). No foreign-key constraint in the database
    # either: PostgreSQL checks one at commit for every row a COPY staged, which cost a batch
    # of 10,000 rows about 90 ms (docs/benchmarks.md). Rows are staged only by their own run
    # while it runs, and Django still deletes them with their run (on_delete).
    run = models.ForeignKey(
        IngestRun, on_delete=models.CASCADE, related_name="staged", db_index=False, db_constraint=False
    )
    page = models.PositiveIntegerField()
    position = models.PositiveBigIntegerField()
    customer_id = models.UUIDField()
    first_name = models.CharField(max_length=100)
    last_name = models.CharField(max_length=100)
    email = models.CharField(max_length=255)
    phone = models.CharField(max_length=20, null=True)  # noqa: DJ001
    address = models.TextField(null=True)  # noqa: DJ001
    date_of_birth = models.DateField(null=True)
    account_balance = models.DecimalField(max_digits=15, decimal_places=2, null=True)
    created_at = models.DateTimeField()
    # Why a row was refused (NULL: handed to the merge; its count is on the run). conflicting_customer_id
    # names, for a conflict, the email's owner; for a repeated read, its own id; for a merged row,
    # the customer that gave it its email, if one did.
    outcome = models.CharField(max_length=16, choices=StageOutcome, null=True)  # noqa: DJ001
    conflicting_customer_id = models.UUIDField(null=True)
    staged_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "position"], name="staged_run_position_unique")]
        indexes = [models.Index(fields=["run", "customer_id", "position"], name="staged_run_customer_idx")]

    def __str__(self):
        return f"{self.customer_id} (run {self.run_id}, page {self.page})"


class ErasureAction(models.TextChoices):
    ERASED = "erased"
    LIFTED = "lifted"


class ErasureDoor(models.TextChoices):
    COMMAND = "command"
    API = "api"
    ADMIN = "admin"


class Erasure(models.Model):
    """The audit entry of an erasure, or of the lifting of its suppression: who, when, why; no personal data.

    The person is named only by `subject`, the keyed hash the suppression list uses.
    """

    action = models.CharField(max_length=8, choices=ErasureAction, default=ErasureAction.ERASED)
    subject = models.CharField(max_length=64, db_index=True, help_text="Keyed hash of the customer id.")
    requested_by = models.CharField(max_length=255)
    door = models.CharField(max_length=8, choices=ErasureDoor)
    reason = models.TextField(blank=True)
    at = models.DateTimeField(auto_now_add=True)
    removed = models.JSONField(default=dict, help_text="Rows removed or scrubbed, by table.")

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"{self.action} {self.subject[:12]}… by {self.requested_by}"


class Suppression(models.Model):
    """A customer id (as a keyed hash) that ingestions skip, counted as `suppressed`, until it is lifted."""

    subject = models.CharField(max_length=64, primary_key=True)
    erasure = models.ForeignKey(Erasure, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"suppressed {self.subject[:12]}…"
