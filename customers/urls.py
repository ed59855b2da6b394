from django.urls import path
from rest_framework.routers import SimpleRouter

from customers.views import ChangeFeedView, CustomerViewSet

router = SimpleRouter(trailing_slash=False)
router.register("customers", CustomerViewSet, basename="customer")

urlpatterns = [path("changes", ChangeFeedView.as_view(), name="changes"), *router.urls]
