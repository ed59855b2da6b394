from django.urls import path
from rest_framework.routers import SimpleRouter

from ingestion.views import EraseCustomerView, IngestRunViewSet, IngestView

router = SimpleRouter(trailing_slash=False)
router.register("ingest/runs", IngestRunViewSet, basename="ingest-run")

urlpatterns = [
    path("ingest", IngestView.as_view(), name="ingest"),
    path("customers/<str:customer_id>/erase", EraseCustomerView.as_view(), name="customer-erase"),
    *router.urls,
]
