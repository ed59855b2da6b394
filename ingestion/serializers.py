from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from config import tracing
from ingestion.deletions import held_notice
from ingestion.models import Erasure, IngestFailure, IngestRun, RunMode


class IngestRunSerializer(serializers.ModelSerializer):
    pages_done = serializers.IntegerField(read_only=True)
    duration_seconds = serializers.FloatField(read_only=True, allow_null=True)
    records_per_second = serializers.FloatField(read_only=True, allow_null=True)
    attempt = serializers.IntegerField(
        read_only=True, help_text="Executions of the run so far: each start, and each resume, is a new attempt."
    )
    notice = serializers.SerializerMethodField(
        help_text='What an operator must act on, such as "2,000 deletions held by the mass-deletion guard ..."; '
        "empty when nothing."
    )
    trace_id = serializers.CharField(
        read_only=True, help_text="The OpenTelemetry trace of the run's latest execution; empty when it was not traced."
    )
    trace_url = serializers.SerializerMethodField(
        help_text="Where that trace opens (OTEL_TRACES_URL_TEMPLATE); null when not set or not traced."
    )

    class Meta:
        model = IngestRun
        fields = [
            "id",
            "status",
            "attempt",
            "trigger",
            "source_url",
            "page_size",
            "dry_run",
            "mode",
            "updated_since",
            "pages_done",
            "pages_expected",
            "records_expected",
            *IngestRun.COUNTERS,
            "deleted",
            "restored",
            "tombstones",
            "deletions_held",
            "deletions_released_at",
            "deletions_released_by",
            "retries",
            "records_per_second",
            "created_at",
            "started_at",
            "finished_at",
            "duration_seconds",
            "error",
            "notice",
            "trace_id",
            "trace_url",
        ]
        read_only_fields = fields

    def get_notice(self, run) -> str:
        return held_notice(run)

    def get_trace_url(self, run) -> str | None:
        return tracing.trace_url(run.trace_id)


# Fields of a failed record that identify a person; masked unless the user may see them.
PERSONAL_FIELDS = ("email", "phone")


def mask(value):
    if not isinstance(value, str) or not value:
        return value
    if "@" in value:
        local, _, domain = value.rpartition("@")
        return f"{local[:1]}***@{domain}"
    return "***" + value[-2:] if len(value) > 4 else "***"


class IngestFailureSerializer(serializers.ModelSerializer):
    raw = serializers.SerializerMethodField()

    class Meta:
        model = IngestFailure
        fields = [
            "id",
            "run",
            "page",
            "position",
            "customer_id",
            "reason",
            "errors",
            "raw",
            "conflicting_customer_id",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.ANY)  # whatever the upstream sent: object, list, number...
    def get_raw(self, failure):
        request = self.context.get("request")
        if request is not None and request.user.has_perm("ingestion.view_personal_data"):
            return failure.raw
        if not isinstance(failure.raw, dict):
            return failure.raw
        return {key: mask(value) if key in PERSONAL_FIELDS else value for key, value in failure.raw.items()}


class IngestRequestSerializer(serializers.Serializer):
    """Query parameters of POST /api/ingest. The upstream URL is deliberately not one of them."""

    wait = serializers.IntegerField(required=False, min_value=0, max_value=3600)
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=100)
    dry_run = serializers.BooleanField(required=False, default=False)
    mode = serializers.ChoiceField(
        choices=RunMode.choices,
        required=False,
        default=RunMode.FULL,
        help_text="`full` walks every record and then deletes what the upstream no longer lists; `incremental` "
        "reads what changed since the watermark, and the upstream's tombstones (without a watermark: full).",
    )


class ErasureRequestSerializer(serializers.Serializer):
    customer_id = serializers.UUIDField(help_text="The customer's upstream id.")
    reason = serializers.CharField(
        required=False, default="", allow_blank=True, max_length=1000, help_text="Why, for the audit entry."
    )


class ErasureSerializer(serializers.ModelSerializer):
    """The audit entry of an erasure: no personal data, the id only as its keyed hash."""

    class Meta:
        model = Erasure
        fields = ["id", "action", "subject", "requested_by", "door", "reason", "at", "removed"]
        read_only_fields = fields
