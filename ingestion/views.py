"""HTTP doors onto the pipeline: start, resume, cancel and read runs and their failures; erase a customer."""

from django.conf import settings
from django.urls import reverse
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from api.pagination import PageLimitPagination
from api.permissions import ViewModelPermission
from api.renderers import exact_decimal_renderers
from api.schema import ErrorSerializer
from ingestion import deletions, erasure, runs, tasks
from ingestion.models import ACTIVE_STATUSES, ErasureDoor, IngestFailure, IngestRun, RunTrigger
from ingestion.permissions import CanEraseCustomers, CanStartIngestion
from ingestion.serializers import (
    ErasureRequestSerializer,
    ErasureSerializer,
    IngestFailureSerializer,
    IngestRequestSerializer,
    IngestRunSerializer,
)

_CONFLICT = inline_serializer(
    "ActiveRunConflict",
    {"detail": serializers.CharField(), "active_run": IngestRunSerializer(allow_null=True)},
)
# A resume is also refused when the run itself cannot be resumed: then the body has no `active_run`.
_RESUME_CONFLICT = inline_serializer(
    "ResumeConflict",
    {
        "detail": serializers.CharField(),
        "active_run": IngestRunSerializer(
            required=False, allow_null=True, help_text="The run in progress, when that is why the resume was refused."
        ),
    },
)
_WAIT = OpenApiParameter(
    "wait",
    {"type": "integer", "minimum": 0, "maximum": 3600},
    description="Seconds to wait for the run to finish (0-3600), capped by INGESTION_MAX_WAIT_SECONDS.",
)


def _accepted(request, run: IngestRun, wait: int | None) -> Response:
    """202 with Location, or 200 with the finished run when the caller chose to wait."""
    if wait:
        run = runs.wait_for_run(run.pk, timeout=min(wait, settings.INGESTION_MAX_WAIT_SECONDS))
    body = IngestRunSerializer(run).data
    if run.status in ACTIVE_STATUSES:
        location = reverse("ingest-run-detail", kwargs={"pk": run.pk})
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": location})
    return Response(body, status=status.HTTP_200_OK)


def _conflict(refused: runs.RunAlreadyActive) -> Response:
    active = IngestRunSerializer(refused.active).data if refused.active else None
    return Response({"detail": str(refused), "active_run": active}, status=status.HTTP_409_CONFLICT)


class IngestView(APIView):
    """POST /api/ingest: queue an ingestion run (one at a time)."""

    permission_classes = [CanStartIngestion]
    throttle_scope = "ingest"

    @extend_schema(
        summary="Start an ingestion run",
        parameters=[IngestRequestSerializer],
        request=None,
        responses={
            200: OpenApiResponse(IngestRunSerializer, description="Finished within `wait` seconds."),
            202: OpenApiResponse(IngestRunSerializer, description="Queued or running; see the Location header."),
            409: OpenApiResponse(_CONFLICT, description="Another run is queued or running."),
        },
    )
    def post(self, request):
        params = IngestRequestSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        try:
            run = tasks.start_in_background(
                trigger=RunTrigger.API,
                page_size=params.validated_data.get("page_size"),
                dry_run=params.validated_data["dry_run"],
                mode=params.validated_data["mode"],
            )
        except runs.RunAlreadyActive as refused:
            return _conflict(refused)
        except runs.RunRefused as refused:  # e.g. the configured upstream is not an allowed host
            return Response({"detail": str(refused), "active_run": None}, status=status.HTTP_409_CONFLICT)
        return _accepted(request, run, params.validated_data.get("wait"))


@extend_schema_view(
    list=extend_schema(
        summary="List ingestion runs",
        description="Runs, newest first.",
    ),
    retrieve=extend_schema(
        summary="Get one ingestion run",
        description="A run with its status, counters and error.",
    ),
)
class IngestRunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Runs, newest first, with their failures; queued or running runs can be cancelled, stopped ones resumed."""

    queryset = IngestRun.objects.order_by("-id")
    lookup_value_regex = "[^/]+"  # a malformed id gets the JSON 404, not Django's HTML one
    serializer_class = IngestRunSerializer
    pagination_class = PageLimitPagination
    permission_classes = [ViewModelPermission]
    filter_backends = []
    throttle_scope = "reads"

    def get_permissions(self):
        if self.action in ("resume", "cancel", "release_deletions"):
            return [CanStartIngestion()]
        return super().get_permissions()

    @extend_schema(
        summary="List the records a run rejected",
        description=(
            "In the order the upstream sent them. `email` and `phone` in `raw` are masked unless the user "
            "holds `ingestion.view_personal_data`."
        ),
        # A detail action is not taken for a list by drf-spectacular: say so, and it pages it.
        responses={200: IngestFailureSerializer(many=True)},
    )
    # `raw` holds the upstream's numbers with all their digits; DRF's renderer would write them as floats.
    @action(
        detail=True,
        methods=["get"],
        serializer_class=IngestFailureSerializer,
        renderer_classes=exact_decimal_renderers(),
    )
    def failures(self, request, pk=None):
        run = self.get_object()
        if not request.user.has_perm("ingestion.view_ingestfailure"):
            self.permission_denied(request, message="Viewing failures needs the 'view ingest failure' permission.")
        page = self.paginate_queryset(IngestFailure.objects.filter(run=run).order_by("position"))
        return self.get_paginated_response(IngestFailureSerializer(page, many=True, context={"request": request}).data)

    @extend_schema(
        summary="Resume a failed, abandoned or cancelled run",
        description="The run continues after its last committed page.",
        request=None,
        parameters=[_WAIT],
        responses={
            200: OpenApiResponse(IngestRunSerializer, description="Finished within `wait` seconds."),
            202: OpenApiResponse(IngestRunSerializer, description="Queued again; see the Location header."),
            409: OpenApiResponse(
                _RESUME_CONFLICT,
                description="Another run is active, or this run is not failed, abandoned or cancelled, "
                "or its cancelled execution has not stopped yet.",
            ),
        },
    )
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        params = IngestRequestSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        run = self.get_object()
        try:
            run = tasks.resume_in_background(run.pk)
        except runs.RunAlreadyActive as refused:
            return _conflict(refused)
        except runs.RunRefused as refused:
            return Response({"detail": str(refused)}, status=status.HTTP_409_CONFLICT)
        return _accepted(request, run, params.validated_data.get("wait"))

    @extend_schema(
        summary="Cancel a queued or running run",
        description=(
            "A queued run never starts. A running run stops at its next page and keeps every batch it committed; "
            "the counters in the answer are final, and a resume continues after them."
        ),
        request=None,
        responses={
            200: OpenApiResponse(IngestRunSerializer, description="The run, now cancelled."),
            409: OpenApiResponse(ErrorSerializer, description="The run is neither queued nor running."),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        run = self.get_object()
        try:
            run = runs.cancel(run.pk, by=f"API user {request.user.get_username()}")
        except runs.RunRefused as refused:
            return Response({"detail": str(refused)}, status=status.HTTP_409_CONFLICT)
        return Response(IngestRunSerializer(run).data)

    @extend_schema(
        summary="Release the deletions the mass-deletion guard held on a run",
        description=(
            "Soft-deletes the customers the run found gone, except those a later run has read since. Refused when "
            "the run holds none, was released already, was a dry run, or a later complete full run recomputed them."
        ),
        request=None,
        responses={
            200: OpenApiResponse(IngestRunSerializer, description="The run, with `deleted` and who released it."),
            409: OpenApiResponse(ErrorSerializer, description="Nothing to release; `detail` says why."),
        },
    )
    @action(detail=True, methods=["post"], url_path="release-deletions")
    def release_deletions(self, request, pk=None):
        run = self.get_object()
        try:
            run = deletions.release(run.pk, by=f"API user {request.user.get_username()}")
        except runs.RunRefused as refused:
            return Response({"detail": str(refused)}, status=status.HTTP_409_CONFLICT)
        return Response(IngestRunSerializer(run).data)


class EraseCustomerView(APIView):
    """Erase a customer's personal data everywhere the pipeline keeps it, and suppress the id."""

    permission_classes = [CanEraseCustomers]
    throttle_scope = "erasures"

    @extend_schema(
        summary="Erase a customer",
        description=(
            "Removes the customer's row, staged rows, the personal data in its failure rows, history and change-feed "
            "events (which stay as tombstones; the feed gains an `erased` event), records an audit entry and "
            "suppresses the id: later ingestions skip it, counted as `suppressed`. Idempotent; an id we never "
            "held is suppressed too. Needs the erase permission (`customers:erase` for an API key)."
        ),
        request=ErasureRequestSerializer,
        responses={
            200: ErasureSerializer,
            400: OpenApiResponse(ErrorSerializer, description="A malformed id or body."),
        },
    )
    def post(self, request, customer_id: str):
        if not isinstance(request.data, dict):
            raise serializers.ValidationError({"non_field_errors": ["The body must be a JSON object."]})
        body = ErasureRequestSerializer(data={**request.data, "customer_id": customer_id})
        body.is_valid(raise_exception=True)
        entry = erasure.erase(
            body.validated_data["customer_id"],
            by=request.user.get_username(),
            door=ErasureDoor.API,
            reason=body.validated_data["reason"],
        )
        return Response(ErasureSerializer(entry).data)
