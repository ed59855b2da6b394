import pytest
from django.contrib.auth.models import Group
from django.db import connection
from hypothesis import given
from hypothesis import strategies as st
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from api.admin import EstimatedCountPaginator
from api.pagination import PageLimitPagination
from customers.models import Customer
from tests.customers.factories import create_customers

URL = "/api/customers"

INVALID_VALUES = ["0", "-1", "abc", "1.5", "", " 5", "5 ", "+5", "1e2", "٣", "9" * 5000]


def _paginate(queryset, **params):
    paginator = PageLimitPagination()
    request = Request(APIRequestFactory().get("/things", params))
    rows = paginator.paginate_queryset(queryset, request)
    return paginator.get_paginated_response([row.name for row in rows]).data


@pytest.mark.parametrize("value", INVALID_VALUES)
def test_invalid_page_is_a_400_naming_page(reader_client, value):
    response = reader_client.get(URL, {"page": value})

    assert response.status_code == 400
    assert response.json() == {
        "detail": "Invalid value for: page.",
        "errors": {"page": ["Must be an integer of at least 1."]},
    }


@pytest.mark.parametrize("value", [*INVALID_VALUES, "101", "1000"])
def test_invalid_limit_is_a_400_naming_limit(reader_client, value):
    response = reader_client.get(URL, {"limit": value})

    assert response.status_code == 400
    assert response.json() == {
        "detail": "Invalid value for: limit.",
        "errors": {"limit": ["Must be an integer between 1 and 100."]},
    }


def test_both_invalid_are_reported_together(reader_client):
    response = reader_client.get(URL, {"page": "0", "limit": "0"})

    assert response.status_code == 400
    assert response.json()["detail"] == "Invalid value for: limit, page."
    assert set(response.json()["errors"]) == {"page", "limit"}


def test_defaults_are_page_1_limit_10(reader_client):
    customers = create_customers(15)

    body = reader_client.get(URL).json()

    assert (body["total"], body["page"], body["limit"]) == (15, 1, 10)
    assert [row["customer_id"] for row in body["data"]] == [str(c.customer_id) for c in customers[:10]]


@pytest.mark.parametrize("limit", ["1", "100"])
def test_limit_bounds_are_accepted(reader_client, limit):
    create_customers(3)

    response = reader_client.get(URL, {"limit": limit})

    assert response.status_code == 200
    assert response.json()["limit"] == int(limit)
    assert len(response.json()["data"]) == min(3, int(limit))


@pytest.mark.parametrize("params", [{}, {"ordering": "last_name"}, {"search": "first"}])
def test_page_past_the_end_is_empty_with_the_true_total(reader_client, params):
    create_customers(12)

    response = reader_client.get(URL, {**params, "page": "3", "limit": "10"})

    assert response.status_code == 200
    assert response.json() == {"data": [], "total": 12, "page": 3, "limit": 10}


def test_a_huge_page_number_is_just_past_the_end(reader_client):
    create_customers(2)

    response = reader_client.get(URL, {"page": "9" * 40, "email": "customer1@example.com"})

    assert response.status_code == 200
    assert response.json()["data"] == []
    assert response.json()["total"] == 1


def test_empty_table_has_total_0(reader_client):
    assert reader_client.get(URL).json() == {"data": [], "total": 0, "page": 1, "limit": 10}


@pytest.mark.parametrize(
    ("params", "expected_order"),
    [
        ({}, lambda rows: rows),
        ({"ordering": "-seq"}, lambda rows: rows[::-1]),
        ({"ordering": "email"}, lambda rows: sorted(rows, key=lambda c: c.email)),
        ({"ordering": "-created_at", "created_after": "2000-01-01T00:00:00Z"}, lambda rows: rows[::-1]),
    ],
    ids=["seq-range", "reverse-seq-range", "offset", "offset-filtered"],
)
def test_walking_every_page_yields_every_row_once_in_order(reader_client, params, expected_order):
    customers = create_customers(53)
    seen = []

    for page in range(1, 7):
        body = reader_client.get(URL, {**params, "page": page, "limit": 10}).json()
        assert body["total"] == 53
        assert len(body["data"]) == (3 if page == 6 else 10)
        seen += [row["customer_id"] for row in body["data"]]

    assert seen == [str(c.customer_id) for c in expected_order(customers)]


@pytest.mark.django_db
def test_reusable_on_any_ordered_queryset():
    Group.objects.bulk_create(Group(name=f"group-{n:02}") for n in range(1, 26))

    body = _paginate(Group.objects.order_by("name"), page="3", limit="10")

    assert body == {"data": [f"group-{n}" for n in range(21, 26)], "total": 25, "page": 3, "limit": 10}


@pytest.mark.django_db
def test_reusable_paginator_rejects_bad_values_by_name():
    with pytest.raises(ValidationError) as raised:
        _paginate(Group.objects.order_by("name"), page="x", limit="200")

    assert set(raised.value.detail) == {"page", "limit"}


def test_schema_describes_the_envelope_and_bounds():
    paginator = PageLimitPagination()

    schema = paginator.get_paginated_response_schema({"type": "array"})
    parameters = {p["name"]: p["schema"] for p in paginator.get_schema_operation_parameters(view=None)}

    assert schema["required"] == ["data", "total", "page", "limit"]
    assert schema["properties"]["data"] == {"type": "array"}
    assert parameters == {
        "page": {"type": "integer", "minimum": 1, "default": 1},
        "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
    }


@pytest.mark.django_db
def test_estimated_paginator_counts_exactly_for_small_or_filtered_tables():
    create_customers(5)

    assert EstimatedCountPaginator(Customer.objects.order_by("seq"), 2).count == 5
    assert EstimatedCountPaginator(Customer.objects.filter(seq__gt=3).order_by("seq"), 2).count == 2


@pytest.mark.django_db
def test_estimated_paginator_uses_the_planner_estimate_for_a_large_unfiltered_table(django_assert_num_queries):
    create_customers(30)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE customers_customer")
    paginator = EstimatedCountPaginator(Customer.objects.order_by("seq"), 10)
    paginator.exact_below = 10

    with django_assert_num_queries(1) as captured:
        assert paginator.count == 30
    assert "reltuples" in captured.captured_queries[0]["sql"]


@given(value=st.text(max_size=8) | st.integers(min_value=-5, max_value=205).map(str))
def test_limit_is_accepted_exactly_when_it_is_a_plain_integer_from_1_to_100(value):
    request = Request(APIRequestFactory().get("/things", {"limit": value}))

    try:
        page, limit = PageLimitPagination().get_page_and_limit(request)
    except ValidationError as error:
        assert list(error.detail) == ["limit"]
        assert not (value.isascii() and value.isdigit() and 1 <= int(value) <= 100)
    else:
        assert (page, limit) == (1, int(value))
        assert value.isascii() and value.isdigit()
