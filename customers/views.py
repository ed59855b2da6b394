from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, viewsets
from rest_framework.renderers import JSONRenderer
from rest_framework.settings import api_settings

from customers.filters import CustomerFilter, FilterBackend
from customers.models import Customer
from customers.pagination import SeqRangePagination
from customers.permissions import ViewModelPermission
from customers.renderers import DecimalLiteralJSONRenderer
from customers.schema import error_responses
from customers.serializers import CustomerSerializer


@extend_schema_view(
    list=extend_schema(
        summary="List customers",
        description=(
            "Customers in the order they were first ingested (`seq`) unless `ordering` says otherwise. "
            "`total` and `data` are read from one database snapshot."
        ),
        responses={200: CustomerSerializer, **error_responses(400, 401, 403, 429)},
    ),
    retrieve=extend_schema(
        summary="Get one customer",
        description="One customer by its upstream id. An unknown or malformed id is a 404.",
        responses={200: CustomerSerializer, **error_responses(401, 403, 404, 429)},
    ),
)
class CustomerViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Read-only access to the customers the pipeline has loaded."""

    queryset = Customer.objects.for_listing()
    serializer_class = CustomerSerializer
    lookup_field = "customer_id"
    # Any path segment reaches the view, so a malformed id gets our JSON 404 (and an
    # anonymous caller its 401), not Django's HTML page.
    lookup_value_regex = "[^/]+"
    permission_classes = [ViewModelPermission]
    filter_backends = [FilterBackend]
    filterset_class = CustomerFilter
    pagination_class = SeqRangePagination
    throttle_scope = "reads"
    # The project's renderers, with balances written as exact two-decimal numbers.
    renderer_classes = [
        DecimalLiteralJSONRenderer if renderer is JSONRenderer else renderer
        for renderer in api_settings.DEFAULT_RENDERER_CLASSES
    ]

    def filter_queryset(self, queryset):
        # Filters describe the listing; a customer's own URL ignores them.
        if self.action != "list":
            return queryset
        return super().filter_queryset(queryset)
