from rest_framework.permissions import BasePermission


class CanStartIngestion(BasePermission):
    """Starting, resuming or cancelling a run needs `ingestion.start_ingestion` (superusers have it;
    `create_api_token --staff` grants it to the staff accounts it makes)."""

    message = "Starting, resuming or cancelling an ingestion needs the 'start ingestion' permission."

    def has_permission(self, request, view):
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm("ingestion.start_ingestion"))


class CanEraseCustomers(BasePermission):
    """Erasing a customer needs `customers.erase_customer` (`customers:erase` for an API key)."""

    message = "Erasing a customer needs the 'erase customer' permission."

    def has_permission(self, request, view):
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm("customers.erase_customer"))
