"""accounts/throttling.py: one upsert per request, per caller and scope in fixed windows, shared by
every connection, pruned only when a window is over."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.request import Request
from rest_framework.test import APIClient, APIRequestFactory

from accounts import throttling
from accounts.models import RequestCount
from accounts.throttling import ScopedWindowThrottle
from tests.accounts.conftest import Clock

URL = "/api/customers"


@pytest.fixture
def clock(monkeypatch) -> Clock:
    # Twenty seconds into a minute, so a test's requests share one window and 40 s remain of it.
    clock = Clock(datetime(2026, 3, 2, 9, 0, 20, tzinfo=UTC))
    monkeypatch.setattr("accounts.throttling.now", clock)
    return clock


@pytest.fixture
def rates(monkeypatch):
    def set_rates(reads: str, ingest: str = "30/minute") -> None:
        monkeypatch.setattr(ScopedWindowThrottle, "THROTTLE_RATES", {"reads": reads, "ingest": ingest})

    return set_rates


def token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def hits(key: str) -> int:
    return sum(RequestCount.objects.filter(scope="reads", key=key).values_list("hits", flat=True))


def test_exactly_the_rate_passes_then_429_with_the_json_body_and_retry_after(reader, clock, rates):
    rates("3/minute")
    client = token_client(reader)

    statuses = [client.get(URL).status_code for _ in range(3)]
    refused = client.get(URL)

    assert statuses == [200, 200, 200]
    assert refused.status_code == 429
    assert refused["Content-Type"] == "application/json"
    assert refused.json() == {"detail": "Request was throttled. Expected available in 40 seconds."}
    assert refused["Retry-After"] == "40"


def test_the_next_window_lets_the_caller_through_again(reader, clock, rates):
    rates("2/minute")
    client = token_client(reader)
    assert [client.get(URL).status_code for _ in range(3)] == [200, 200, 429]

    clock.advance(seconds=39)
    assert client.get(URL)["Retry-After"] == "1"
    clock.advance(seconds=1)

    assert [client.get(URL).status_code for _ in range(3)] == [200, 200, 429]


def test_a_window_boundary_lets_at_most_twice_the_rate_through_in_a_short_time(reader, clock, rates):
    # The fixed-window trade-off, accepted and documented in accounts/throttling.py.
    rates("3/minute")
    client = token_client(reader)
    clock.now = datetime(2026, 3, 2, 9, 0, 59, tzinfo=UTC)
    before = [client.get(URL).status_code for _ in range(3)]
    clock.advance(seconds=1)

    after = [client.get(URL).status_code for _ in range(4)]

    assert before + after == [200] * 6 + [429]


def test_two_users_are_counted_apart(reader, django_user_model, clock, rates):
    rates("2/minute")
    other = django_user_model.objects.create_user("other")
    other.user_permissions.set(reader.user_permissions.all())
    first, second = token_client(reader), token_client(other)

    assert [first.get(URL).status_code for _ in range(3)] == [200, 200, 429]
    assert [second.get(URL).status_code for _ in range(3)] == [200, 200, 429]
    assert (hits(f"user:{reader.pk}"), hits(f"user:{other.pk}")) == (2, 2)


def test_a_users_token_and_session_share_one_count(reader, clock, rates):
    rates("2/minute")
    session = APIClient()
    session.force_login(reader)

    assert [token_client(reader).get(URL).status_code, session.get(URL).status_code] == [200, 200]
    assert session.get(URL).status_code == 429


def test_scopes_are_counted_apart(reader, clock):
    assert throttling.count_request(scope="ingest", key="user:1", limit=1, seconds=60) == 0
    assert throttling.count_request(scope="reads", key="user:1", limit=1, seconds=60) == 0
    assert throttling.count_request(scope="reads", key="user:1", limit=1, seconds=60) == 40


def test_an_anonymous_caller_is_counted_by_client_address(settings, db):
    settings.TRUSTED_PROXY_COUNT = 1
    request = Request(APIRequestFactory().get(URL, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7"))
    request.user = None

    assert throttling.caller_key(request) == "address:198.51.100.7"


def test_a_throttled_request_is_one_statement_that_deletes_nothing(reader, clock, rates):
    rates("100/minute")
    client = token_client(reader)
    client.get(URL)  # the window's first request inserts; the rest update

    for _ in range(2):
        with CaptureQueriesContext(connection) as queries:
            assert client.get(URL).status_code == 200
        # The upsert is the function of migration 0004 (accounts_requestcount's INSERT ... ON CONFLICT).
        counting = [query["sql"] for query in queries if "accounts_count_request" in query["sql"]]
        assert len(counting) == 1
        assert counting[0].lstrip().startswith("SELECT accounts_count_request(")
        # The listing's own total counts the deleted customers (api/pagination.py); the throttle counts nothing.
        others = [query["sql"] for query in queries if "customers_customer" not in query["sql"]]
        assert not any("DELETE" in sql or "COUNT(*)" in sql for sql in others)


def test_requests_never_delete_another_callers_rows(reader, clock, rates):
    rates("1000/minute")
    # More than Django's database cache kept (300 keys) before culling other callers' histories.
    start = throttling.window_start(clock(), 60)
    others = [
        RequestCount(
            scope="reads", key=f"user:{1000 + n}", window_start=start - timedelta(minutes=m), window_end=end, hits=5
        )
        for n in range(200)
        for m, end in ((0, start + timedelta(minutes=1)), (5, start - timedelta(minutes=4)))
    ]
    RequestCount.objects.bulk_create(others)
    client = token_client(reader)

    for _ in range(20):
        client.get(URL)

    assert RequestCount.objects.exclude(key=f"user:{reader.pk}").count() == 400
    assert hits(f"user:{reader.pk}") == 20


def test_prune_deletes_only_windows_that_are_over(clock, db):
    for key in ("user:1", "user:2"):
        throttling.count_request(scope="reads", key=key, limit=10, seconds=60)
    throttling.count_request(scope="ingest", key="user:1", limit=10, seconds=3600)
    clock.advance(seconds=40)  # 09:01:00: the minute windows are over, the hour's is not
    throttling.count_request(scope="reads", key="user:1", limit=10, seconds=60)

    assert throttling.prune() == 2
    assert sorted(RequestCount.objects.values_list("scope", "key", "window_start")) == [
        ("ingest", "user:1", datetime(2026, 3, 2, 9, tzinfo=UTC)),
        ("reads", "user:1", datetime(2026, 3, 2, 9, 1, tzinfo=UTC)),
    ]


def test_counters_live_in_an_unlogged_table(db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT relpersistence FROM pg_class WHERE oid = %s::regclass", [RequestCount._meta.db_table])
        assert cursor.fetchone() == ("u",)


def _concurrent_requests(user, *, threads: int, each: int) -> list[int]:
    barrier = threading.Barrier(threads)
    statuses = []

    def send():
        client = token_client(user)
        barrier.wait()
        try:
            statuses.extend(client.get(URL).status_code for _ in range(each))
        finally:
            connections.close_all()

    workers = [threading.Thread(target=send) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return statuses


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_on_many_connections_are_all_counted(reader, clock, rates):
    rates("1000/minute")
    token_client(reader)  # the token exists before the threads race to create it

    statuses = _concurrent_requests(reader, threads=8, each=10)

    assert statuses == [200] * 80
    assert hits(f"user:{reader.pk}") == 80
    connection.close()


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_never_pass_more_than_the_rate(reader, clock, rates):
    rates("50/minute")
    token_client(reader)

    statuses = _concurrent_requests(reader, threads=8, each=10)

    assert (statuses.count(200), statuses.count(429)) == (50, 30)
    assert hits(f"user:{reader.pk}") == 50
    connection.close()
