from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, viewsets

from api.pagination import DenseKeyPagination
from api.permissions import ViewModelPermission
from api.renderers import exact_decimal_renderers
from customers.filters import CustomerFilter
from customers.models import Customer
from customers.serializers import CustomerSerializer


@extend_schema_view(
    list=extend_schema(
        summary="List customers",
        description=(
            "Customers in the order they were first ingested (`seq`) unless `ordering` says otherwise. "
            "`total` and `data` are read from one database snapshot."
        ),
    ),
    retrieve=extend_schema(
        summary="Get one customer",
        description="One customer by its upstream id. An unknown or malformed id is a 404.",
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
    filterset_class = CustomerFilter
    # `seq` is dense (customers/merge.py keeps it so): the unfiltered listing pages by ranges of it.
    pagination_class = DenseKeyPagination
    throttle_scope = "reads"
    # The project's renderers, with balances written as exact two-decimal numbers.
    renderer_classes = exact_decimal_renderers()

    def filter_queryset(self, queryset):
        # Filters describe the listing; a customer's own URL ignores them.
        if self.action != "list":
            return queryset
        return super().filter_queryset(queryset)
