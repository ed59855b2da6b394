"""OpenAPI descriptions of the project's error bodies (see config/api.py), for any endpoint to reuse."""

from drf_spectacular.utils import OpenApiExample, OpenApiResponse
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What went wrong, in a sentence.")


class ValidationErrorSerializer(ErrorSerializer):
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Each offending parameter or field, with the rules it broke.",
    )


_RESPONSES = {
    400: OpenApiResponse(
        ValidationErrorSerializer,
        description="A query parameter has an invalid value; `errors` names it.",
        examples=[
            OpenApiExample(
                "Invalid limit",
                value={
                    "detail": "Invalid value for: limit.",
                    "errors": {"limit": ["Must be an integer between 1 and 100."]},
                },
            )
        ],
    ),
    401: OpenApiResponse(
        ErrorSerializer,
        description="No valid credentials (`Authorization: Token ...` or a session).",
        examples=[OpenApiExample("No credentials", value={"detail": "Authentication credentials were not provided."})],
    ),
    403: OpenApiResponse(
        ErrorSerializer,
        description="Authenticated, without the permission this endpoint needs.",
        examples=[
            OpenApiExample("No permission", value={"detail": "You do not have permission to perform this action."})
        ],
    ),
    404: OpenApiResponse(
        ErrorSerializer,
        description="No such object (also for an identifier that is not well-formed).",
        examples=[OpenApiExample("Unknown", value={"detail": "No Customer matches the given query."})],
    ),
    429: OpenApiResponse(
        ErrorSerializer,
        description="Too many requests; `Retry-After` says how many seconds to wait.",
        examples=[
            OpenApiExample("Throttled", value={"detail": "Request was throttled. Expected available in 12 seconds."})
        ],
    ),
}


def error_responses(*status_codes: int) -> dict[int, OpenApiResponse]:
    """The documented error responses for `status_codes`, to merge into `extend_schema(responses=...)`."""
    return {code: _RESPONSES[code] for code in status_codes}
