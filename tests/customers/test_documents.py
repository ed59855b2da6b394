"""The JSON PostgreSQL writes for customers (customers/documents.py) says what the serializers say."""

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from api.renderers import DecimalLiteralJSONRenderer
from customers.models import Customer
from customers.serializers import CustomerSerializer, CustomerWithDeletionSerializer
from tests.customers.factories import create_customer

pytestmark = pytest.mark.django_db

URL = "/api/customers"
# Text JSON must escape, text it must not, numbers at the edges of numeric(15, 2), times with
# microseconds (dropped, not rounded) and far from now, and every field that may be null.
ODD = [
    {"first_name": 'Zoë "Z"', "last_name": "O'Brien\\", "address": "line 1\nline\t2 </script> \u2028 é 李"},
    {"phone": None, "address": None, "date_of_birth": None, "account_balance": None},
    {"account_balance": Decimal("-9999999999999.99"), "date_of_birth": datetime(1, 1, 1).date()},
    {"account_balance": Decimal("0.00"), "updated_at": datetime(2024, 5, 6, 7, 8, 9, 999999, tzinfo=UTC)},
    {"account_balance": Decimal("9999999999999.99"), "created_at": datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)},
    # Four digits of year, as ISO 8601 and the upstream write them (strftime's %Y writes "999").
    {"created_at": datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC), "updated_at": datetime(9, 1, 1, tzinfo=UTC)},
]


def as_pairs(body: bytes | str):
    """JSON as nested lists of (key, value) pairs, numbers exact: equal means same keys, same order, same values."""
    return json.loads(body, parse_float=Decimal, object_pairs_hook=list)


def rendered(data) -> bytes:
    return DecimalLiteralJSONRenderer().render(data)


@pytest.fixture
def client(reader) -> APIClient:
    client = APIClient()
    client.force_authenticate(reader)
    return client


@pytest.mark.parametrize("fields", ODD)
def test_a_customer_by_id_reads_as_the_serializer_writes_it(client, fields):
    customer = create_customer(**fields)

    response = client.get(f"{URL}/{customer.customer_id}")

    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert as_pairs(response.content) == as_pairs(rendered(CustomerSerializer(customer).data))


def test_a_deleted_customer_reads_as_the_serializer_writes_it_when_asked_for(client):
    customer = create_customer(**ODD[0], deleted_at=timezone.now())

    response = client.get(f"{URL}/{customer.customer_id}", {"include_deleted": "true"})

    assert as_pairs(response.content) == as_pairs(rendered(CustomerWithDeletionSerializer(customer).data))


@pytest.mark.parametrize("include_deleted", [False, True])
def test_a_listing_page_reads_as_the_serializer_writes_it(client, include_deleted):
    for fields in ODD:
        create_customer(**fields)
    create_customer(deleted_at=timezone.now())
    serializer = CustomerWithDeletionSerializer if include_deleted else CustomerSerializer
    shown = Customer.objects.for_listing(include_deleted=include_deleted)

    response = client.get(URL, {"limit": 100, "include_deleted": str(include_deleted).lower()})

    expected = {"data": serializer(shown, many=True).data, "total": shown.count(), "page": 1, "limit": 100}
    assert as_pairs(response.content) == as_pairs(rendered(expected))


def test_the_browsable_api_still_renders_through_the_serializer(client):
    customer = create_customer(**ODD[0])

    page = client.get(f"{URL}/{customer.customer_id}", HTTP_ACCEPT="text/html")

    assert page.status_code == 200 and page["Content-Type"].startswith("text/html")
    assert "O&#x27;Brien" in page.content.decode() or "O'Brien" in page.content.decode()
