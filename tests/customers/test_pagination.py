"""Paging `GET /api/customers`: the page/limit contract as the customers endpoint answers it."""

import pytest

from tests.customers.factories import create_customers

URL = "/api/customers"

INVALID_VALUES = ["0", "-1", "abc", "1.5", "", " 5", "5 ", "+5", "1e2", "٣", "9" * 5000]


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
