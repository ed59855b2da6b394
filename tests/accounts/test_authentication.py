"""API token authentication: failures count per client address, and a locked address gets 429."""

import logging

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.customers.factories import create_customer

pytestmark = pytest.mark.django_db

URL = "/api/customers"
LOCKED = {"detail": "Too many failed authentication attempts from this address. Expected available in 900 seconds."}


def get(token: str, address: str = "203.0.113.5", path: str = URL, **headers):
    client = APIClient()
    return client.get(path, HTTP_AUTHORIZATION=f"Token {token}", REMOTE_ADDR=address, **headers)


@pytest.fixture
def reader_token(reader) -> str:
    return Token.objects.create(user=reader).key


def test_after_five_unknown_tokens_the_address_gets_429_with_a_json_detail_and_retry_after(clock):
    for number in range(5):
        response = get(f"unknown-{number}")
        assert response.status_code == 401
        assert response.json() == {"detail": "Invalid token."}

    response = get("unknown-6")

    assert response.status_code == 429
    assert response["Content-Type"] == "application/json"
    assert response["Retry-After"] == "900"
    assert response.json() == LOCKED


def test_a_valid_token_from_a_locked_address_is_refused_too(clock, reader_token):
    for number in range(5):
        get(f"unknown-{number}")

    assert get(reader_token).status_code == 429


def test_other_addresses_are_not_affected(clock, reader_token):
    for number in range(5):
        get(f"unknown-{number}", address="203.0.113.5")

    assert get(reader_token, address="192.0.2.1").status_code == 200
    assert get("unknown", address="192.0.2.1").status_code == 401


def test_the_lockout_ends_after_the_window(clock, reader_token):
    for number in range(5):
        get(f"unknown-{number}")
    clock.advance(minutes=14)
    assert get(reader_token).status_code == 429

    clock.advance(minutes=1)

    assert get(reader_token).status_code == 200


@pytest.mark.parametrize("header", ["Token", "Token two parts", "Token caf\u00e9"])
def test_a_malformed_token_header_counts_as_a_failure(clock, header):
    for _ in range(5):
        assert APIClient().get(URL, HTTP_AUTHORIZATION=header, REMOTE_ADDR="203.0.113.5").status_code == 401

    assert get("unknown").status_code == 429


def test_a_token_of_an_inactive_user_counts_as_a_failure(clock, reader, reader_token):
    reader.is_active = False
    reader.save()
    for _ in range(5):
        assert get(reader_token).json() == {"detail": "User inactive or deleted."}

    assert get(reader_token).status_code == 429


def test_requests_without_credentials_count_nothing(clock):
    for _ in range(10):
        assert APIClient().get(URL, REMOTE_ADDR="203.0.113.5").status_code == 401

    assert get("unknown").status_code == 401


def test_each_failure_and_the_lockout_are_logged_without_the_token(clock, caplog):
    caplog.set_level(logging.INFO, logger="accounts")
    for number in range(5):
        get(f"secret-token-{number}")

    messages = [record.getMessage() for record in caplog.records if record.name == "accounts.lockout"]
    assert messages == [
        *(f"authentication failed: door=api address=203.0.113.5 failures={n}" for n in range(1, 6)),
        "locked out: address=203.0.113.5 for 900 s after 5 failures",
    ]
    assert "secret-token" not in caplog.text


def test_a_token_detail_request_reads_the_lockout_inside_its_token_lookup(clock, reader_token):
    customer = create_customer()

    with CaptureQueriesContext(connection) as queries:
        response = get(reader_token, path=f"{URL}/{customer.customer_id}")

    assert response.status_code == 200
    # As many statements as before the lockout: the token lookup, two permission reads, the
    # throttle's upsert, the customer.
    assert len(queries) == 5
    [token_lookup] = [query["sql"] for query in queries if "accounts_authfailure" in query["sql"]]
    assert token_lookup.startswith('SELECT "authtoken_token"')


def test_a_session_request_reads_no_lockout_state(clock, reader):
    customer = create_customer()
    client = APIClient()
    client.force_login(reader)

    with CaptureQueriesContext(connection) as queries:
        response = client.get(f"{URL}/{customer.customer_id}", REMOTE_ADDR="203.0.113.5")

    assert response.status_code == 200
    assert len(queries) == 6  # session, user, two permission reads, the throttle's upsert, the customer
    assert not [query for query in queries if "accounts_authfailure" in query["sql"]]
