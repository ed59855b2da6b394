from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from api.docs import DocsView, SchemaView
from config import health, metrics

urlpatterns = [
    path("api/health", health.health, name="health"),
    path("api/ready", health.ready, name="ready"),
    path("metrics", metrics.metrics, name="metrics"),
    path("api/schema", SchemaView.as_view(), name="schema"),
    path("api/docs", DocsView.as_view(url_name="schema"), name="api-docs"),
    path("api/", include("customers.urls")),
    path("api/", include("ingestion.urls")),
    path(settings.ADMIN_URL, admin.site.urls),
]
