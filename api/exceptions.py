"""Project-wide API conventions: one JSON error shape for every error response.

Every error body has a `detail` sentence; validation errors add `errors`, a mapping
from the offending parameter or field to the rules it broke.
"""

from rest_framework import exceptions
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc, context):
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = response.data if isinstance(response.data, dict) else {"non_field_errors": response.data}
        names = ", ".join(sorted(errors))
        response.data = {"detail": f"Invalid value for: {names}.", "errors": errors}
    elif isinstance(response.data, list):
        response.data = {"detail": " ".join(str(item) for item in response.data)}
    return response
