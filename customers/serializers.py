from datetime import UTC

from rest_framework import serializers

from customers.models import Customer


class UTCDateTimeField(serializers.DateTimeField):
    """ISO 8601 in UTC to the second with a `Z`, like the upstream: 2024-01-10T17:07:01Z.

    Sub-second digits are dropped (rounded down), so a value read back as `updated_since`
    never skips the row it came from.
    """

    def to_representation(self, value):
        if value is None:
            return None
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


class CustomerReadOptions(serializers.Serializer):
    """Query parameters every customer read accepts, the listing and a customer's own URL alike."""

    include_deleted = serializers.BooleanField(
        default=False,
        help_text=(
            "`true` also returns customers the upstream no longer has (soft-deleted), with their "
            "`deleted_at`; by default they are left out, and a deleted customer's URL is a 404."
        ),
    )
