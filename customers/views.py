import uuid

from django.http import Http404, HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view, inline_serializer
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from api.pagination import DenseKeyPagination, PageLimitPagination
from api.permissions import ViewModelPermission
from api.renderers import exact_decimal_renderers
from api.schema import ErrorSerializer
from customers import changes, documents
from customers.filters import CustomerFilter
from customers.models import DELETED, LIVE, Customer, CustomerChange
from customers.serializers import (
    CustomerChangeSerializer,
    CustomerDetailOptions,
    CustomerReadOptions,
    CustomerSerializer,
    CustomerWithDeletionSerializer,
)

VIEW_CHANGES = "customers.view_customerchange"


class Gone(exceptions.APIException):
    status_code = status.HTTP_410_GONE
    default_detail = "Gone."
    default_code = "gone"


class CanViewChanges(BasePermission):
    """Customers' history needs the change feed's permission (`changes:read` for an API key) on top of reading them."""

    message = "Reading customers' history needs the permission to read the change feed."

    def has_permission(self, request, view):
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm(VIEW_CHANGES))


class CustomerPagination(DenseKeyPagination):
    # `seq` is dense (customers/merge.py keeps it so) and a deleted customer keeps its seq:
    # the live listing pages by ranges of it, skipping the deleted rows' holes.
    listed = LIVE
    holes = DELETED


@extend_schema_view(
    list=extend_schema(
        summary="List customers",
        description=(
            "Live customers in the order they were first ingested (`seq`) unless `ordering` says otherwise. "
            "`total` and `data` are read from one database snapshot."
        ),
        parameters=[CustomerReadOptions],
    ),
    retrieve=extend_schema(
        summary="Get one customer",
        description=(
            "One customer by its upstream id. An unknown or malformed id is a 404, "
            "and so is a deleted customer's unless `include_deleted=true`. With `as_of`, the customer as it was then."
        ),
        parameters=[CustomerDetailOptions],
        responses={
            200: CustomerSerializer,
            410: OpenApiResponse(ErrorSerializer, description="That version was pruned."),
        },
    ),
)
class CustomerViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Read-only access to the customers the pipeline has loaded."""

    # The model, for the permission check (api/permissions.py); the rows come from get_queryset.
    queryset = Customer.objects.none()
    lookup_field = "customer_id"
    # Any path segment reaches the view, so a malformed id gets our JSON 404 (and an
    # anonymous caller its 401), not Django's HTML page.
    lookup_value_regex = "[^/]+"
    permission_classes = [ViewModelPermission]
    filterset_class = CustomerFilter
    pagination_class = CustomerPagination
    throttle_scope = "reads"
    # The project's renderers, with balances written as exact two-decimal numbers.
    renderer_classes = exact_decimal_renderers()
    include_deleted = False

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        # Read after authentication, permissions and throttling: a stranger's bad value is still a 401.
        options_class = CustomerDetailOptions if self.action == "retrieve" else CustomerReadOptions
        if request.query_params.keys().isdisjoint(options_class._declared_fields):
            # None given (a customer's URL, a plain page): the defaults, without building a serializer.
            self.read_options = {"include_deleted": False}
        else:
            options = options_class(data=request.query_params)
            options.is_valid(raise_exception=True)
            self.read_options = options.validated_data
        self.include_deleted = self.read_options["include_deleted"]

    def get_queryset(self):
        return Customer.objects.for_listing(include_deleted=self.include_deleted)

    def list(self, request, *args, **kwargs):
        # The listing in key order (the default, and how consumers read it all) as JSON that
        # PostgreSQL writes, total and page in one statement; anything else through the serializer.
        if self._json_asked(request):
            fields = documents.WITH_DELETION if self.include_deleted else documents.FIELDS
            queryset = self.get_queryset() if self._unfiltered(request) else self.filter_queryset(self.get_queryset())
            body = self.paginator.page_json(queryset, request, row_json=documents.customer_object("r", fields))
            if body is not None:
                return HttpResponse(body, content_type="application/json")
        return super().list(request, *args, **kwargs)

    def _unfiltered(self, request) -> bool:
        # No filter asked for: the filter set, built and validated per request, would change nothing.
        return self.filterset_class.base_filters.keys().isdisjoint(request.query_params.keys())

    def retrieve(self, request, *args, **kwargs):
        moment = self.read_options.get("as_of")
        if moment is None:
            if not self._json_asked(request):
                return super().retrieve(request, *args, **kwargs)
            try:
                customer_id = uuid.UUID(kwargs["customer_id"])
            except ValueError:
                raise Http404 from None  # as get_object_or_404 says it for a malformed id
            body = documents.customer(customer_id, include_deleted=self.include_deleted)
            if body is None:
                raise Http404(f"No {Customer._meta.object_name} matches the given query.")
            return HttpResponse(body, content_type="application/json")
        if not CanViewChanges().has_permission(request, self):
            raise exceptions.PermissionDenied(CanViewChanges.message)
        try:
            state = changes.version_at(_customer_id(kwargs["customer_id"]), moment)
        except changes.VersionGone as gone:
            raise Gone(str(gone)) from None
        if state is None:
            raise exceptions.NotFound("No such customer at that time.")
        return Response(CustomerSerializer(state).data)

    @extend_schema(
        summary="A customer's history",
        description=(
            "The customer's versions, oldest first: the change that made each (`kind`, `run_id`, `at`, "
            "`changed_fields`) and its source fields after it (`customer`, null for a deletion). Versions older "
            "than INGESTION_CHANGES_RETENTION_DAYS are pruned. 404 when nothing is known of the id."
        ),
        responses={200: CustomerChangeSerializer(many=True)},
    )
    @action(
        detail=True,
        permission_classes=[ViewModelPermission, CanViewChanges],
        pagination_class=PageLimitPagination,
        serializer_class=CustomerChangeSerializer,
        filterset_class=None,
    )
    def history(self, request, customer_id=None):
        customer_id = _customer_id(customer_id)
        page = self.paginate_queryset(changes.history_of(customer_id))
        if not page and not Customer.objects.filter(customer_id=customer_id).exists():
            raise exceptions.NotFound("No such customer.")
        return self.get_paginated_response(CustomerChangeSerializer(page, many=True).data)

    def get_serializer_class(self):
        return CustomerWithDeletionSerializer if self.include_deleted else CustomerSerializer

    @staticmethod
    def _json_asked(request) -> bool:
        """Whether the response is JSON (the browsable API renders through the serializer)."""
        return request.accepted_renderer.format == "json"

    def filter_queryset(self, queryset):
        # Filters describe the listing; a customer's own URL ignores them.
        if self.action != "list":
            return queryset
        return super().filter_queryset(queryset)


def _customer_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise exceptions.NotFound("No such customer.") from None


class ChangeFeedOptions(serializers.Serializer):
    after = serializers.RegexField(
        r"^(latest|[0-9]{1,18})$",
        default="0",
        help_text=(
            "The cursor of the last event you have (the `next` of your last page); 0 (the default) for the "
            "feed's start, `latest` for the newest cursor, with no events."
        ),
        error_messages={"invalid": "A cursor is a whole number from 0, or `latest`."},
    )
    limit = serializers.IntegerField(min_value=1, max_value=1000, default=100, help_text="Events per page, 1 to 1000.")


class ChangeFeedView(APIView):
    """The change feed: every change to customers, once each, in commit order."""

    permission_classes = [ViewModelPermission]
    queryset = CustomerChange.objects.none()
    throttle_scope = "changes"

    @extend_schema(
        summary="Follow the change feed",
        parameters=[ChangeFeedOptions],
        responses={
            200: inline_serializer(
                "ChangeFeedPage",
                {
                    "data": CustomerChangeSerializer(many=True),
                    "next": serializers.IntegerField(min_value=0, help_text="The cursor to ask after next time."),
                    "limit": serializers.IntegerField(),
                },
            ),
            410: OpenApiResponse(ErrorSerializer, description="Events after the cursor were pruned: start over."),
        },
    )
    def get(self, request):
        options = ChangeFeedOptions(data=request.query_params)
        options.is_valid(raise_exception=True)
        after, limit = options.validated_data["after"], options.validated_data["limit"]
        if after == "latest":
            return Response({"data": [], "next": changes.head(), "limit": limit})
        try:
            page = changes.feed_page(after=int(after), limit=limit)
        except changes.CursorUnknown as unknown:
            raise exceptions.ValidationError({"after": [str(unknown)]}) from None
        except changes.CursorGone as gone:
            raise Gone(str(gone)) from None
        # PostgreSQL wrote the JSON (customers/changes.py): no serializer on the hot path.
        return HttpResponse(page.body, content_type="application/json")
