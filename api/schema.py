"""OpenAPI descriptions of the project's error bodies (api/exceptions.py), added to every operation by `AutoSchema`."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiExample, OpenApiResponse
from rest_framework import serializers
from rest_framework.permissions import AllowAny


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
        description=(
            "No valid credentials (`Authorization: Bearer cdp_...`, a legacy `Authorization: Token ...`, "
            "or a session); `detail` says why: a malformed, invalid, expired or revoked key."
        ),
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


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """The API keys of accounts/api_keys.py as an HTTP bearer scheme (named by path: api imports no app)."""

    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key, `cdp_<key id>_<secret>`, from `manage.py api_keys create`.",
        }


class AutoSchema(SpectacularAutoSchema):
    """drf-spectacular's AutoSchema, adding the project's error bodies each operation can answer.

    Decided from the operation itself, so views declare only their own responses:
    400 when it takes query parameters, 404 when its path has parameters, 401 and 403
    unless it is open to anyone, 429 when it is throttled. A view's own `extend_schema`
    response for one of these codes wins.
    """

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        responses = operation["responses"]
        for code in self._error_codes(operation):
            if str(code) not in responses:
                # The same builder drf-spectacular uses for declared responses, so examples and refs match.
                responses[str(code)] = self._get_response_for_code(_RESPONSES[code], str(code))
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    def _error_codes(self, operation: dict) -> list[int]:
        places = {parameter["in"] for parameter in operation.get("parameters", [])}
        codes = []
        if "query" in places:
            codes.append(400)
        if not all(isinstance(permission, AllowAny) for permission in self.view.get_permissions()):
            codes += [401, 403]
        if "path" in places:
            codes.append(404)
        if getattr(self.view, "throttle_scope", None):
            codes.append(429)
        return codes
