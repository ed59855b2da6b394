from datetime import UTC, datetime, timedelta

import pytest

from customers.filters import ORDERINGS
from tests.customers.factories import BASE_CREATED_AT, create_customer, create_customers

URL = "/api/customers"


def _emails(client, **params) -> list[str]:
    response = client.get(URL, {"limit": 100, **params})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["total"] == len(body["data"])
    return [row["email"] for row in body["data"]]


# --- email ------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["Ada.Lovelace@Example.com", "ada.lovelace@example.com", "ADA.LOVELACE@EXAMPLE.COM"])
def test_email_matches_exactly_ignoring_case(reader_client, value):
    create_customers(3)
    create_customer(email="Ada.Lovelace@example.com")

    assert _emails(reader_client, email=value) == ["Ada.Lovelace@example.com"]


def test_email_is_not_a_substring_match(reader_client):
    create_customer(email="ada@example.com")

    assert _emails(reader_client, email="ada@example") == []
    assert _emails(reader_client, email="da@example.com") == []


# --- search -----------------------------------------------------------------------


@pytest.fixture
def people(db):
    names = [("Ada", "Lovelace"), ("Grace", "Hopper"), ("Alan", "Turing"), ("Adele", "Goldberg"), ("Bo", "Li")]
    return {
        first: create_customer(first_name=first, last_name=last, email=f"{first}@example.com") for first, last in names
    }


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("lovelace", ["Ada@example.com"]),
        ("LOVE", ["Ada@example.com"]),
        ("race", ["Grace@example.com"]),  # infix, in a first name
        ("ad", ["Ada@example.com", "Adele@example.com"]),  # short words match the start of a name
        ("e", []),
        ("l", ["Ada@example.com", "Bo@example.com"]),
        ("ada love", ["Ada@example.com"]),  # every word must match, in either name
        ("ada turing", []),
        ("  grace  ", ["Grace@example.com"]),
        ("50%", []),
        ("_", []),
    ],
)
def test_search_finds_words_in_first_or_last_name(reader_client, people, search, expected):
    assert _emails(reader_client, search=search) == expected


def test_blank_search_does_not_filter(reader_client, people):
    assert len(_emails(reader_client, search="   ")) == len(people)


def test_search_longer_than_100_characters_is_a_400(reader_client):
    response = reader_client.get(URL, {"search": "a" * 101})

    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["search"]


# --- created_at / updated_at ------------------------------------------------------


@pytest.fixture
def dated(db):
    """Four customers created an hour apart from 18:07:01; the last two updated later."""
    customers = create_customers(4)
    for customer, updated in zip(customers[2:], ["2024-03-01T00:00:00Z", "2024-04-01T00:00:00Z"], strict=True):
        customer.updated_at = datetime.fromisoformat(updated)
        customer.save(update_fields=["updated_at"])
    return customers


@pytest.mark.parametrize(
    ("params", "expected_seqs"),
    [
        ({"created_after": "2024-01-10T19:07:01Z"}, [2, 3, 4]),  # inclusive
        ({"created_before": "2024-01-10T19:07:01Z"}, [1]),  # exclusive
        ({"created_after": "2024-01-10T19:07:01Z", "created_before": "2024-01-10T21:07:01Z"}, [2, 3]),
        ({"created_after": "2024-01-10T20:07:01+01:00"}, [2, 3, 4]),  # offsets are honoured
        ({"created_after": "2024-01-10T19:07:01"}, [2, 3, 4]),  # no offset: UTC
        ({"created_after": "2024-01-11"}, []),  # a date is its midnight
        ({"created_before": "2024-01-11"}, [1, 2, 3, 4]),
        ({"updated_since": "2024-03-01T00:00:00Z"}, [3, 4]),  # inclusive; never-updated rows are left out
        ({"updated_since": "2024-03-01T00:00:01Z"}, [4]),
    ],
)
def test_date_filters(reader_client, dated, params, expected_seqs):
    assert _emails(reader_client, **params) == [f"customer{seq}@example.com" for seq in expected_seqs]


@pytest.mark.parametrize("name", ["created_after", "created_before", "updated_since"])
@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "2024-13-01",
        "2024-01-10T25:00:00Z",
        "1704906421",
        "2024-01-10T10:00:00+99:00",
        "2024-01-01T00:00:00+16:00",
        "2024-01-01T00:00:00-23:59",  # valid in Python, not in PostgreSQL
    ],
)
def test_invalid_dates_are_a_400_naming_the_parameter(reader_client, name, value):
    response = reader_client.get(URL, {name: value})

    assert response.status_code == 400
    body = response.json()
    assert body["detail"] == f"Invalid value for: {name}."
    assert list(body["errors"]) == [name]


def test_filters_combine_and_total_counts_only_matches(reader_client, dated):
    response = reader_client.get(
        URL, {"created_after": "2024-01-10T19:07:01Z", "updated_since": "2024-01-01", "limit": 1}
    )

    assert response.json()["total"] == 2
    assert len(response.json()["data"]) == 1


# --- ordering ---------------------------------------------------------------------


@pytest.fixture
def shuffled(db):
    """Customers whose seq, created_at, updated_at, last name and email orders all differ."""
    rows = [
        # seq 1..4: (created hours after base, updated hours after base or None, last name, email)
        (3, None, "Brown", "d@example.com"),
        (1, 10, "Adams", "c@example.com"),
        (4, 5, "Clark", "a@example.com"),
        (2, None, "Brown", "b@example.com"),
    ]
    return [
        create_customer(
            created_at=BASE_CREATED_AT + timedelta(hours=created),
            updated_at=None if updated is None else BASE_CREATED_AT + timedelta(hours=updated),
            last_name=last,
            email=email,
        )
        for created, updated, last, email in rows
    ]


@pytest.mark.parametrize(
    ("ordering", "expected_seqs"),
    [
        ("seq", [1, 2, 3, 4]),
        ("-seq", [4, 3, 2, 1]),
        ("created_at", [2, 4, 1, 3]),
        ("-created_at", [3, 1, 4, 2]),
        ("updated_at", [3, 2, 1, 4]),  # never-updated last, in ingestion order
        ("-updated_at", [2, 3, 4, 1]),  # never-updated last, last ingested first
        ("email", [3, 4, 2, 1]),
        ("-email", [1, 2, 4, 3]),
    ],
)
def test_ordering_whitelist(reader_client, shuffled, ordering, expected_seqs):
    emails = _emails(reader_client, ordering=ordering)

    assert emails == [shuffled[seq - 1].email for seq in expected_seqs]


@pytest.mark.parametrize("ordering", ["last_name", "-last_name"])
def test_equal_sort_keys_are_tie_broken_by_customer_id(reader_client, shuffled, ordering):
    emails = _emails(reader_client, ordering=ordering)

    browns = sorted([shuffled[0], shuffled[3]], key=lambda c: c.customer_id, reverse=ordering.startswith("-"))
    expected_middle = [c.email for c in browns]
    assert emails[1:3] == expected_middle
    assert emails[0] == ("c@example.com" if ordering == "last_name" else "a@example.com")


def test_every_documented_ordering_is_accepted(reader_client, shuffled):
    for ordering in ORDERINGS:
        assert reader_client.get(URL, {"ordering": ordering}).status_code == 200


@pytest.mark.parametrize("value", ["first_name", "seq,email", "ingested_at", "-", "SEQ", "customer_id"])
def test_unknown_ordering_is_a_400_naming_ordering(reader_client, value):
    response = reader_client.get(URL, {"ordering": value})

    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["ordering"]


def test_unknown_parameters_are_ignored(reader_client):
    create_customers(2)

    response = reader_client.get(URL, {"colour": "blue", "first_name": "nobody"})

    assert response.status_code == 200
    assert response.json()["total"] == 2


def test_blank_filters_are_ignored(reader_client):
    create_customers(2)

    response = reader_client.get(URL, {"email": "", "created_after": "", "ordering": ""})

    assert response.status_code == 200
    assert response.json()["total"] == 2


def test_several_invalid_filters_are_reported_together(reader_client):
    response = reader_client.get(URL, {"created_after": "soon", "ordering": "nope"})

    assert response.status_code == 400
    assert response.json()["detail"] == "Invalid value for: created_after, ordering."


def test_naive_dates_in_the_future_filter_nothing(reader_client):
    create_customers(1)

    later = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    assert _emails(reader_client, created_after=later) == []


@pytest.mark.parametrize("ordering", ["email", "-email"])
def test_email_order_ignores_case(reader_client, db, ordering):
    for email in ("b@example.com", "C@example.com", "A@example.com"):
        create_customer(email=email)

    expected = ["A@example.com", "b@example.com", "C@example.com"]
    assert _emails(reader_client, ordering=ordering) == (expected[::-1] if ordering.startswith("-") else expected)
