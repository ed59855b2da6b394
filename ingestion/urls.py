from django.urls import path
from rest_framework.routers import SimpleRouter

from ingestion.views import IngestRunViewSet, IngestView

router = SimpleRouter(trailing_slash=False)
router.register("ingest/runs", IngestRunViewSet, basename="ingest-run")

urlpatterns = [
    path("ingest", IngestView.as_view(), name="ingest"),
    *router.urls,
]
