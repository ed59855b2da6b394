from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, viewsets

from api.pagination import DenseKeyPagination
from api.permissions import ViewModelPermission
from api.renderers import exact_decimal_renderers
from customers.filters import CustomerFilter
from customers.models import DELETED, LIVE, Customer
from customers.serializers import CustomerReadOptions, CustomerSerializer, CustomerWithDeletionSerializer


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
            "and so is a deleted customer's unless `include_deleted=true`."
        ),
        parameters=[CustomerReadOptions],
    ),
)
class CustomerViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Read-only access to the customers the pipeline has loaded."""

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
        options = CustomerReadOptions(data=request.query_params)
        options.is_valid(raise_exception=True)
        self.include_deleted = options.validated_data["include_deleted"]

    def get_queryset(self):
        return Customer.objects.for_listing(include_deleted=self.include_deleted)

    def get_serializer_class(self):
        return CustomerWithDeletionSerializer if self.include_deleted else CustomerSerializer

    def filter_queryset(self, queryset):
        # Filters describe the listing; a customer's own URL ignores them.
        if self.action != "list":
            return queryset
        return super().filter_queryset(queryset)
