"""The OpenAPI schema and its Swagger page, for signed-in callers unless API_PUBLIC_DOCS opens them.

The setting is read per request (not when the URLs load), so one process can be switched
by a test or a settings override.
"""

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.urls import reverse
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework import exceptions
from rest_framework.permissions import BasePermission
from rest_framework.renderers import JSONRenderer


class DocsPermission(BasePermission):
    def has_permission(self, request, view) -> bool:
        return settings.API_PUBLIC_DOCS or bool(request.user and request.user.is_authenticated)


class SchemaView(SpectacularAPIView):
    permission_classes = [DocsPermission]

    def handle_exception(self, exc):
        response = super().handle_exception(exc)
        # The error in the project's JSON body, not dressed up as an OpenAPI document.
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return response


class DocsView(SpectacularSwaggerSplitView):
    """The Swagger page; an anonymous browser is sent to sign in first (the page then reads the
    schema with its session)."""

    permission_classes = [DocsPermission]

    def handle_exception(self, exc):
        if isinstance(exc, exceptions.NotAuthenticated):
            return redirect_to_login(self.request.get_full_path(), reverse("admin:login"))
        return super().handle_exception(exc)
