from datetime import UTC

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from customers.models import Customer, CustomerChange


class UTCDateTimeField(serializers.DateTimeField):
    """ISO 8601 in UTC to the second with a `Z`, like the upstream: 2024-01-10T17:07:01Z.

    Sub-second digits are dropped (rounded down), so a value read back as `updated_since`
    never skips the row it came from.
    """

    def __init__(self, *args, precise: bool = False, **kwargs):
        self.timespec = "microseconds" if precise else "seconds"
        super().__init__(*args, **kwargs)

    def to_representation(self, value):
        if value is None:
            return None
        # isoformat, not strftime: %Y writes the year 999 as "999", ISO 8601 as "0999".
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec=self.timespec) + "Z"


class CustomerSerializer(serializers.ModelSerializer):
    """A customer as the upstream describes it, plus `updated_at`; pipeline bookkeeping stays out."""

    # A JSON number; api.renderers writes it with both decimals (10.50, not 10.5).
    account_balance = serializers.DecimalField(
        max_digits=15,
        decimal_places=2,
        coerce_to_string=False,
        allow_null=True,
        read_only=True,
        help_text="A number written with exactly two decimals, e.g. 10.50.",
    )
    created_at = UTCDateTimeField(read_only=True, help_text="The upstream's creation time, UTC, to the second.")
    updated_at = UTCDateTimeField(
        read_only=True, allow_null=True, help_text="When the pipeline last saw a change; null until then."
    )

    class Meta:
        model = Customer
        # The upstream's nine fields, in its order, then ours; bookkeeping never leaves.
        fields = [*Customer.SOURCE_FIELDS, "updated_at"]
        read_only_fields = fields


class CustomerWithDeletionSerializer(CustomerSerializer):
    """A customer as above, plus when the pipeline saw it gone upstream: for `include_deleted=true`."""

    deleted_at = UTCDateTimeField(
        read_only=True, allow_null=True, help_text="When the upstream stopped listing it, UTC; null while live."
    )

    class Meta(CustomerSerializer.Meta):
        fields = [*CustomerSerializer.Meta.fields, "deleted_at"]
        read_only_fields = fields


class CustomerStateSerializer(CustomerSerializer):
    """A customer's source fields as one version left them (the change feed's `customer`)."""

    class Meta(CustomerSerializer.Meta):
        fields = list(Customer.SOURCE_FIELDS)
        read_only_fields = fields


class CustomerChangeSerializer(serializers.ModelSerializer):
    """One version of a customer: the change that made it, and the source fields after it."""

    at = UTCDateTimeField(
        precise=True, read_only=True, help_text="When the change was written, UTC, to the microsecond."
    )
    changed_fields = serializers.ListField(child=serializers.CharField(), read_only=True)
    customer = serializers.SerializerMethodField()

    class Meta:
        model = CustomerChange
        fields = ["cursor", "kind", "customer_id", "run_id", "at", "customer", "changed_fields"]
        read_only_fields = fields

    @extend_schema_field(CustomerStateSerializer(allow_null=True))
    def get_customer(self, change):
        if not change.has_state:
            return None
        return CustomerStateSerializer(
            {"customer_id": change.customer_id, **{f: getattr(change, f) for f in change.STATE_FIELDS}}
        ).data


class CustomerReadOptions(serializers.Serializer):
    """Query parameters every customer read accepts, the listing and a customer's own URL alike."""

    include_deleted = serializers.BooleanField(
        default=False,
        help_text=(
            "`true` also returns customers the upstream no longer has (soft-deleted), with their "
            "`deleted_at`; by default they are left out, and a deleted customer's URL is a 404."
        ),
    )


class CustomerDetailOptions(CustomerReadOptions):
    """Query parameters of a customer's own URL: those of every read, and `as_of`."""

    as_of = serializers.DateTimeField(
        required=False,
        help_text=(
            "A customer's own URL only: the customer as it was at this time (ISO 8601; UTC unless it says), "
            "from its history. 404 if it did not exist then or was deleted then; 410 if that version was "
            "pruned (INGESTION_CHANGES_RETENTION_DAYS). Needs the change feed's permission."
        ),
    )
