import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from decimal import Decimal
from unittest import mock

import psycopg
import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.renderers import BrowsableAPIRenderer
from rest_framework.settings import api_settings
from rest_framework.test import APIClient

from api import pagination
from customers.models import Customer
from tests.customers.factories import create_customer, create_customers
from tests.database import side_connection_kwargs

URL = "/api/customers"
RECORD_KEYS = [
    "customer_id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "address",
    "date_of_birth",
    "account_balance",
    "created_at",
    "updated_at",
]


def _detail_url(customer) -> str:
    return f"{URL}/{customer.customer_id}"


# --- Records ----------------------------------------------------------------------


def test_detail_returns_exactly_the_public_fields_in_upstream_format(reader_client):
    customer = create_customer(
        first_name="Ada",
        last_name="Lovelace",
        email="ada@example.com",
        phone="+44 20 7946 0000",
        address="12 St James's Square, London",
        date_of_birth=datetime(1815, 12, 10, tzinfo=UTC).date(),
        account_balance=Decimal("10.50"),
        created_at=datetime(2024, 1, 10, 17, 7, 1, tzinfo=UTC),
        updated_at=datetime(2024, 2, 1, 8, 0, 0, 999_999, tzinfo=UTC),
    )

    response = reader_client.get(_detail_url(customer))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert list(response.json()) == RECORD_KEYS
    assert response.json() == {
        "customer_id": str(customer.customer_id),
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "ada@example.com",
        "phone": "+44 20 7946 0000",
        "address": "12 St James's Square, London",
        "date_of_birth": "1815-12-10",
        "account_balance": 10.5,
        "created_at": "2024-01-10T17:07:01Z",
        "updated_at": "2024-02-01T08:00:00Z",
    }
    # The raw JSON carries the balance as a number with both decimals.
    assert '"account_balance":10.50,' in response.content.decode()


@pytest.mark.parametrize(
    ("balance", "literal"),
    [("0.00", "0.00"), ("-3.10", "-3.10"), ("1234567890123.45", "1234567890123.45"), ("7", "7.00")],
)
def test_balance_is_a_json_number_with_two_decimals(reader_client, balance, literal):
    customer = create_customer(account_balance=Decimal(balance))

    raw = reader_client.get(_detail_url(customer)).content.decode()

    assert f'"account_balance":{literal},' in raw
    assert json.loads(raw, parse_float=Decimal)["account_balance"] == Decimal(balance)


def test_nullable_fields_are_null(reader_client):
    customer = create_customer(phone=None, address=None, date_of_birth=None, account_balance=None)

    body = reader_client.get(_detail_url(customer)).json()

    assert [body[key] for key in ("phone", "address", "date_of_birth", "account_balance", "updated_at")] == [None] * 5


def test_timestamps_are_utc_with_z_in_list(reader_client):
    create_customers(3)

    body = reader_client.get(URL).json()

    for row in body["data"]:
        assert list(row) == RECORD_KEYS
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row["created_at"])
    assert "seq" not in json.dumps(body) and "ingested_at" not in json.dumps(body)


def test_list_balances_keep_two_decimals(reader_client):
    create_customers(2)  # balances 11.50 and 12.50

    raw = reader_client.get(URL).content.decode()

    assert raw.count('"account_balance":11.50,') == 1
    assert raw.count('"account_balance":12.50,') == 1


# --- Not found --------------------------------------------------------------------


@pytest.mark.parametrize("customer_id", [str(uuid.uuid4()), "not-a-uuid", "123", "0" * 40, "0.5", "a.b.c"])
def test_unknown_or_malformed_id_is_a_json_404(reader_client, customer_id):
    create_customer()

    response = reader_client.get(f"{URL}/{customer_id}")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert set(response.json()) == {"detail"}


def test_detail_ignores_list_filters(reader_client):
    customer = create_customer()

    response = reader_client.get(_detail_url(customer), {"email": "someone-else@example.com", "ordering": "bogus"})

    assert response.status_code == 200


# --- Deleted customers (soft-deleted when the upstream stops listing them) ---------

DELETED_AT = datetime(2026, 3, 1, 9, 30, 15, 250_000, tzinfo=UTC)


def _delete(*customers) -> None:
    Customer.objects.filter(pk__in=[c.pk for c in customers]).update(deleted_at=DELETED_AT, deleted_by_run=7)


def test_the_listing_leaves_deleted_customers_out_of_rows_and_total(reader_client):
    first, gone, last = create_customers(3)
    _delete(gone)

    body = reader_client.get(URL).json()

    assert [row["customer_id"] for row in body["data"]] == [str(first.pk), str(last.pk)]
    assert body["total"] == 2
    assert list(body["data"][0]) == RECORD_KEYS


@pytest.mark.parametrize("params", [{"search": "First"}, {"email": "customer2@example.com"}, {"ordering": "-email"}])
def test_filtered_and_ordered_listings_leave_deleted_customers_out(reader_client, params):
    _, gone, _ = create_customers(3)
    _delete(gone)

    body = reader_client.get(URL, params).json()

    assert str(gone.pk) not in {row["customer_id"] for row in body["data"]}
    assert body["total"] == len(body["data"])


def test_include_deleted_lists_every_customer_with_its_deleted_at(reader_client):
    first, gone = create_customers(2)
    _delete(gone)

    body = reader_client.get(URL, {"include_deleted": "true"}).json()

    assert body["total"] == 2
    assert [(row["customer_id"], row["deleted_at"]) for row in body["data"]] == [
        (str(first.pk), None),
        (str(gone.pk), "2026-03-01T09:30:15Z"),
    ]
    assert list(body["data"][0]) == [*RECORD_KEYS, "deleted_at"]


def test_a_deleted_customer_is_a_404_unless_asked_for(reader_client):
    gone = create_customer()
    _delete(gone)

    hidden = reader_client.get(_detail_url(gone))
    shown = reader_client.get(_detail_url(gone), {"include_deleted": "1"})

    assert (hidden.status_code, hidden.json()) == (404, {"detail": "No Customer matches the given query."})
    assert shown.status_code == 200
    assert shown.json()["deleted_at"] == "2026-03-01T09:30:15Z"


@pytest.mark.parametrize("path", ["", "/00000000-0000-0000-0000-000000000000"])
def test_a_bad_include_deleted_is_a_400_naming_it(reader_client, path):
    response = reader_client.get(URL + path, {"include_deleted": "maybe"})

    assert response.status_code == 400
    assert response.json()["errors"] == {"include_deleted": ["Must be a valid boolean."]}


@pytest.mark.django_db
def test_a_stranger_with_a_bad_include_deleted_is_still_a_401():
    response = APIClient().get(URL, {"include_deleted": "maybe"})

    assert response.status_code == 401


# --- Authentication and permission ------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("path", [URL, f"{URL}/{uuid.uuid4()}"])
def test_anonymous_is_401_with_a_token_challenge(path):
    response = APIClient().get(path)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json() == {"detail": "Authentication credentials were not provided."}


@pytest.mark.django_db
def test_a_bad_token_is_401():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    assert client.get(URL).status_code == 401


@pytest.mark.django_db
@pytest.mark.parametrize("path", [URL, f"{URL}/{uuid.uuid4()}"])
def test_authenticated_without_view_permission_is_403(path):
    client = APIClient()
    client.force_authenticate(User.objects.create_user("nobody"))

    response = client.get(path)

    assert response.status_code == 403
    assert response.json() == {"detail": "You do not have permission to perform this action."}


@pytest.mark.django_db
def test_session_login_with_permission_can_read(reader):
    client = APIClient()
    client.force_login(reader)

    assert client.get(URL).status_code == 200


def test_the_api_is_read_only(reader_client):
    customer = create_customer()
    superuser = APIClient()
    superuser.force_authenticate(User.objects.create_superuser("root"))

    # Writing needs add/delete permissions a reader lacks; and there is no write endpoint at all.
    assert reader_client.post(URL, {}).status_code == 403
    assert superuser.post(URL, {}).status_code == 405
    assert superuser.delete(_detail_url(customer)).status_code == 405


# --- Query counts -----------------------------------------------------------------


@pytest.mark.parametrize(
    "params", [{}, {"ordering": "-created_at"}, {"search": "first", "updated_since": "2000-01-01"}]
)
@pytest.mark.parametrize("limit", [1, 100])
def test_list_queries_are_bounded_whatever_the_page_size(reader_client, django_assert_max_num_queries, params, limit):
    create_customers(120)

    # Token, the user's permissions (2), the throttle's upsert, total, page.
    with django_assert_max_num_queries(6):
        response = reader_client.get(URL, {**params, "limit": limit})

    assert response.status_code == 200


def page_statement(captured) -> str:
    """The one statement that read a listing page (its total and its rows, as JSON)."""
    [sql] = [query["sql"] for query in captured.captured_queries if "string_agg" in query["sql"]]
    return sql


def test_unfiltered_list_reads_the_top_seq_and_a_seq_range_in_one_statement(
    reader_client, django_assert_max_num_queries
):
    create_customers(30)

    with django_assert_max_num_queries(5) as captured:
        body = reader_client.get(URL, {"page": 2, "limit": 10, "include_deleted": "true"}).json()

    sql = page_statement(captured)
    # The total is the top seq (a backward index read); the rows a range of it. Nothing is counted or offset.
    assert 'coalesce((SELECT "seq" FROM "customers_customer" ORDER BY "seq" DESC LIMIT 1), 0),' in sql
    assert 'WHERE "seq" >= $1 AND "seq" < $1 + $2 ORDER BY "seq" LIMIT $2' in sql  # bound on the server
    assert "count(" not in sql.lower() and "OFFSET" not in sql
    assert body["total"] == 30
    assert [row["first_name"] for row in body["data"]] == [f"First{n}" for n in range(11, 21)]


def test_live_list_counts_only_the_deleted_and_seeks_a_seq_range(reader_client, django_assert_max_num_queries):
    create_customers(30)
    Customer.objects.filter(seq__in=[3, 12, 13]).update(deleted_at=timezone.now(), deleted_by_run=1)

    with django_assert_max_num_queries(5) as captured:
        body = reader_client.get(URL, {"page": 2, "limit": 10}).json()

    sql = page_statement(captured)
    # The top seq, minus a count of the deleted rows only (their partial index), never of the table.
    assert 'coalesce((SELECT "seq" FROM "customers_customer" ORDER BY "seq" DESC LIMIT 1), 0)' in sql
    assert '- (SELECT count(*) FROM "customers_customer" WHERE "customers_customer"."deleted_at" IS NOT NULL)' in sql
    assert '"customers_customer"."deleted_at" IS NULL AND "seq" >= (SELECT $1 + count(*)' in sql
    assert "OFFSET" not in sql
    assert body["total"] == 27
    # Live seqs 1, 2, 4..11, 14...: the second page of ten starts at 14.
    assert [row["first_name"] for row in body["data"]] == [f"First{n}" for n in range(14, 24)]


@pytest.mark.django_db(transaction=True)
def test_list_queries_are_bounded_with_the_snapshot_transaction(reader_client, django_assert_max_num_queries):
    create_customers(30)

    # Token, permissions (2), the throttle's upsert, then BEGIN, SET TRANSACTION, total, page, COMMIT.
    with django_assert_max_num_queries(9) as captured:
        response = reader_client.get(URL, {"search": "first"})

    assert response.status_code == 200
    sql = [query["sql"] for query in captured.captured_queries]
    assert "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY" in sql


@pytest.mark.skipif(BrowsableAPIRenderer not in api_settings.DEFAULT_RENDERER_CLASSES, reason="API_BROWSABLE is off")
def test_browsable_api_renders(reader_client):
    create_customers(3)

    response = reader_client.get(URL, HTTP_ACCEPT="text/html")

    assert response.status_code == 200
    assert "Customer List" in response.content.decode()


def test_detail_queries_are_bounded(reader_client, django_assert_max_num_queries):
    customer = create_customer()

    # Token, permissions (2), the throttle's upsert, the customer.
    with django_assert_max_num_queries(5):
        assert reader_client.get(_detail_url(customer)).status_code == 200


# --- One snapshot for total and data ----------------------------------------------

# What a concurrent ingestion commits: three more matching customers, or a name that stops matching.
INSERT_SQL = """
    INSERT INTO customers_customer (customer_id, first_name, last_name, email, created_at, seq, ingested_at)
    SELECT gen_random_uuid(), 'First', 'Late' || n, 'late' || n || '@example.com', now(), n, now()
    FROM generate_series(6, 8) AS n
"""
UPDATE_SQL = "UPDATE customers_customer SET first_name = 'Renamed', updated_at = now() WHERE seq = 3"
# The query that reads a page's total: count(*) for a filtered listing, max(seq) for the whole table.
TOTAL_QUERY = re.compile(r'COUNT\(\*\)|MAX\("customers_customer"\."seq"\)')
# Listing, concurrent change, and how many rows the page would show if it read them after the change.
# (The listing in key order reads its total and rows in one statement: test_key_order_listing_*.)
CONCURRENT_CHANGES = {
    "filtered-insert": ({"search": "first"}, INSERT_SQL, 8),
    "filtered-update": ({"search": "first"}, UPDATE_SQL, 4),
    "ordered-insert": ({"ordering": "last_name"}, INSERT_SQL, 8),
}


@contextmanager
def committed_elsewhere_right_after_the_total(change_sql: str) -> Iterator[list[str]]:
    """Commit `change_sql` on a second connection the moment the page's total query has run.

    Yields the total queries that set it off (one), so a test knows the change landed between
    the total and the rows.
    """
    other = psycopg.connect(**side_connection_kwargs(), autocommit=True)
    fired: list[str] = []

    def commit_after_the_total(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if not fired and TOTAL_QUERY.search(sql):
            other.execute(change_sql)
            fired.append(sql)
        return result

    try:
        with connection.execute_wrapper(commit_after_the_total):
            yield fired
    finally:
        other.close()


# Transactional: the other connection's commit must be visible to anything that reads after it.
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("params", "change", "rows_after"), CONCURRENT_CHANGES.values(), ids=CONCURRENT_CHANGES)
def test_total_and_rows_come_from_one_snapshot_while_another_connection_commits(
    reader_client, params, change, rows_after
):
    create_customers(5)

    with committed_elsewhere_right_after_the_total(change) as fired:
        body = reader_client.get(URL, {**params, "limit": 100}).json()

    assert len(fired) == 1
    assert body["total"] == len(body["data"]) == 5
    assert [row["first_name"] for row in body["data"]] == [f"First{n}" for n in range(1, 6)]
    # The change did commit: the next read sees it.
    after = reader_client.get(URL, {**params, "limit": 100}).json()
    assert after["total"] == len(after["data"]) == rows_after


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("params", "change", "rows_after"), CONCURRENT_CHANGES.values(), ids=CONCURRENT_CHANGES)
def test_without_the_snapshot_the_commit_between_total_and_rows_shows(reader_client, params, change, rows_after):
    """Guards the test above: its change does land between the total and the rows."""
    create_customers(5)

    without_snapshot = mock.patch.object(pagination, "read_only_snapshot", lambda using: nullcontext())
    with without_snapshot, committed_elsewhere_right_after_the_total(change):
        body = reader_client.get(URL, {**params, "limit": 100}).json()

    assert (body["total"], len(body["data"])) == (5, rows_after)


# --- Statements per request -------------------------------------------------------

_CACHES = {
    "database": {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "django_cache"}},
    "locmem": {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
}


# The figures in docs/benchmarks.md ("Statements per API request"). Token: the token, its user
# and the address's lockout in one statement; session: the session, then the user. Two for the
# permission check, one for the throttle's upsert, then the view's own: the row, or the page's
# total and rows in one statement.
@pytest.mark.parametrize("backend", ["database", "locmem"])
@pytest.mark.parametrize(
    ("caller", "path", "statements"),
    [("token", "detail", 5), ("token", "list", 5), ("session", "detail", 6)],
)
def test_a_read_costs_the_same_statements_whatever_the_cache(
    reader, reader_client, settings, backend, caller, path, statements
):
    settings.CACHES = _CACHES[backend]
    if backend == "database":
        call_command("createcachetable")
    [customer, *_] = create_customers(20)
    client = reader_client
    if caller == "session":
        client = APIClient()
        client.force_login(reader)
    url = _detail_url(customer) if path == "detail" else f"{URL}?page=2"
    client.get(url)  # the window's first request inserts its counter; the measured one updates it

    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200

    assert len(queries) == statements, [query["sql"][:80] for query in queries]
