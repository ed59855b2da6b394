"""The change feed as customers/merge.py writes it and customers/changes.py serves it: one event per
real change, numbered densely in commit order, served by keyset; customers' history and `as_of`."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from customers import changes
from customers.merge import delete_customers
from customers.models import Customer, CustomerChange
from tests.customers.test_merge import merge, new_run, stage
from tests.records import record, records

pytestmark = pytest.mark.django_db

FEED = "/api/changes"


def _events() -> list[tuple]:
    return list(CustomerChange.objects.order_by("cursor").values_list("cursor", "kind", "customer_id", "run_id"))


def _delete(run, ids) -> int:
    with transaction.atomic(), connection.cursor() as cursor:
        return delete_customers(
            cursor, doomed="c.customer_id = ANY(%(ids)s)", params={"ids": [uuid.UUID(i) for i in ids]}, run_id=run.pk
        )


@pytest.fixture
def feed_client(db):
    """A client of a user who may read customers and the change feed."""
    user = User.objects.create_user("follower", password="pw")
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_customer", "view_customerchange"]))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


# --- Writing: customers/merge.py ------------------------------------------------------------


def test_inserts_write_one_event_each_numbered_in_batch_order_with_the_full_state():
    run = new_run()
    stage(run, records(3))
    merge(run)
    assert _events() == [(n + 1, "inserted", uuid.UUID(record(n)["customer_id"]), run.pk) for n in range(3)]
    first = CustomerChange.objects.get(cursor=1)
    assert first.changed_fields == list(CustomerChange.CHANGE_FIELDS)
    assert (first.first_name, first.email, first.account_balance) == ("First0", "customer0@example.com", Decimal("0"))
    assert first.created_at == datetime(2024, 1, 1, tzinfo=UTC)


def test_an_update_names_exactly_the_fields_it_changed_and_an_unchanged_row_writes_nothing():
    first = new_run()
    stage(first, records(3))
    merge(first)
    second = new_run()
    stage(second, [record(0), record(1, last_name="Married", phone=None), record(2)])
    merge(second)
    assert _events()[3:] == [(4, "updated", uuid.UUID(record(1)["customer_id"]), second.pk)]
    event = CustomerChange.objects.get(cursor=4)
    assert event.changed_fields == ["last_name", "phone"]
    # The version keeps every field after the change, created_at as first seen.
    assert (event.first_name, event.last_name, event.phone) == ("First1", "Married", None)
    assert event.created_at == Customer.objects.get(customer_id=record(1)["customer_id"]).created_at


def test_an_unchanged_run_and_a_dry_run_write_no_events():
    first = new_run()
    stage(first, records(5))
    merge(first)
    again = new_run()
    stage(again, records(5))
    merge(again)
    dry = new_run()
    stage(dry, [record(n, first_name="Dry") for n in range(5)])
    merge(dry, dry_run=True)
    assert CustomerChange.objects.count() == 5


def test_a_deletion_and_a_restore_are_events_and_a_restore_names_what_it_changed():
    first = new_run()
    stage(first, records(3))
    merge(first)
    deleting = new_run()
    assert _delete(deleting, [record(0)["customer_id"], record(2)["customer_id"]]) == 2
    restoring = new_run()
    stage(restoring, [record(0), record(2, first_name="Back")])
    merge(restoring)
    kinds = [(cursor, kind, run) for cursor, kind, _, run in _events()[3:]]
    assert kinds == [
        (4, "deleted", deleting.pk),
        (5, "deleted", deleting.pk),
        (6, "restored", restoring.pk),
        (7, "restored", restoring.pk),
    ]
    deleted = CustomerChange.objects.get(cursor=4)
    assert (deleted.has_state, deleted.changed_fields) == (False, [])
    assert CustomerChange.objects.get(cursor=6).changed_fields == []
    assert CustomerChange.objects.get(cursor=7).changed_fields == ["first_name"]


def test_a_rolled_back_batch_takes_its_cursors_with_it():
    first = new_run()
    stage(first, records(2))
    merge(first)
    second = new_run()
    stage(second, records(2, start=2))
    with pytest.raises(RuntimeError), transaction.atomic():
        merge(second)
        raise RuntimeError("crash before commit")
    third = new_run()
    stage(third, records(1, start=9))
    merge(third)
    assert [cursor for cursor, *_ in _events()] == [1, 2, 3]


# --- Reading the feed: GET /api/changes -----------------------------------------------------


def _ingest(raws) -> None:
    run = new_run()
    stage(run, raws)
    merge(run)


def test_the_feed_pages_by_cursor_and_next_resumes_where_the_last_page_ended(feed_client):
    _ingest(records(5))
    page = feed_client.get(FEED, {"limit": 2})
    assert page.status_code == 200
    body = page.json()
    assert [event["cursor"] for event in body["data"]] == [1, 2]
    assert (body["next"], body["limit"]) == (2, 2)
    rest = feed_client.get(FEED, {"after": body["next"], "limit": 10}).json()
    assert [event["cursor"] for event in rest["data"]] == [3, 4, 5]
    caught_up = feed_client.get(FEED, {"after": rest["next"]}).json()
    assert caught_up == {"data": [], "next": 5, "limit": 100}


def test_an_event_carries_the_customer_as_the_api_shows_it(feed_client):
    _ingest([record(0, account_balance=Decimal("10.50"))])
    [event] = feed_client.get(FEED).json()["data"]
    assert list(event) == ["cursor", "kind", "customer_id", "run_id", "at", "customer", "changed_fields"]
    detail = feed_client.get(f"/api/customers/{record(0)['customer_id']}").json()
    assert event["customer"] == {key: value for key, value in detail.items() if key != "updated_at"}
    assert event["kind"] == "inserted"
    assert event["changed_fields"] == list(CustomerChange.CHANGE_FIELDS)
    assert datetime.fromisoformat(event["at"]) == CustomerChange.objects.get().at
    # The balance exactly as written, two decimals.
    assert b'"account_balance":10.50' in feed_client.get(FEED).content


def test_latest_returns_the_newest_cursor_without_events(feed_client):
    _ingest(records(3))
    assert feed_client.get(FEED, {"after": "latest"}).json() == {"data": [], "next": 3, "limit": 100}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"after": "abc"}, "after"),
        ({"after": "-1"}, "after"),
        ({"after": "1.5"}, "after"),
        ({"after": "9" * 30}, "after"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "x"}, "limit"),
    ],
)
def test_a_malformed_cursor_or_limit_is_a_400_naming_it(feed_client, params, field):
    response = feed_client.get(FEED, params)
    assert response.status_code == 400
    assert list(response.json()["errors"]) == [field]


def test_a_cursor_never_issued_is_a_400_naming_the_newest(feed_client):
    _ingest(records(2))
    response = feed_client.get(FEED, {"after": 3})
    assert response.status_code == 400
    assert response.json()["errors"] == {"after": ["Cursor 3 was never issued: the newest is 2."]}


def test_a_cursor_older_than_what_is_kept_is_a_410_saying_to_start_over(feed_client):
    _ingest(records(4))
    CustomerChange.objects.filter(cursor__lte=2).update(at=timezone.now() - timedelta(days=40))
    assert changes.prune_changes(older_than=timezone.now() - timedelta(days=30)) == 2
    gone = feed_client.get(FEED, {"after": 1})
    assert gone.status_code == 410
    assert "Start over" in gone.json()["detail"] and "GET /api/customers" in gone.json()["detail"]
    # Right behind what is kept is still whole.
    assert [e["cursor"] for e in feed_client.get(FEED, {"after": 2}).json()["data"]] == [3, 4]


def test_pruning_keeps_the_newest_event_so_numbering_goes_on(feed_client):
    _ingest(records(3))
    CustomerChange.objects.update(at=timezone.now() - timedelta(days=40))
    assert changes.prune_changes(older_than=timezone.now()) == 2
    assert feed_client.get(FEED, {"after": 3}).json()["next"] == 3
    _ingest(records(1, start=7))
    assert [e["cursor"] for e in feed_client.get(FEED, {"after": 3}).json()["data"]] == [4]


def test_pruning_removes_a_prefix_even_when_the_clock_stepped_back():
    _ingest(records(4))
    old = timezone.now() - timedelta(days=40)
    CustomerChange.objects.filter(cursor__in=[1, 3]).update(at=old)
    changes.prune_changes(older_than=old + timedelta(days=1))
    assert list(CustomerChange.objects.values_list("cursor", flat=True)) == [2, 3, 4]


def test_reading_the_feed_needs_its_own_permission(reader_client):
    response = reader_client.get(FEED)
    assert response.status_code == 403


def test_a_feed_page_is_one_statement_past_authentication_whatever_the_feed_size(feed_client):
    _ingest(records(50))
    with CaptureQueriesContext(connection) as queries:
        assert feed_client.get(FEED, {"after": 40, "limit": 5}).status_code == 200
    feed = [q["sql"] for q in queries.captured_queries if "customers.changes.feed_page" in q["sql"]]
    assert len(feed) == 1
    assert "OFFSET" not in feed[0].upper() and "count(" not in feed[0].lower()


# --- History and as_of ---------------------------------------------------------------------


def test_history_lists_each_version_with_the_run_that_made_it(feed_client):
    first, second = new_run(), new_run()
    stage(first, records(1))
    merge(first)
    stage(second, [record(0, email="new@example.com")])
    merge(second)
    body = feed_client.get(f"/api/customers/{record(0)['customer_id']}/history").json()
    assert body["total"] == 2
    assert [(v["kind"], v["run_id"], v["changed_fields"]) for v in body["data"]] == [
        ("inserted", first.pk, list(CustomerChange.CHANGE_FIELDS)),
        ("updated", second.pk, ["email"]),
    ]
    assert body["data"][1]["customer"]["email"] == "new@example.com"


def test_history_of_an_unknown_id_is_a_404_and_needs_the_feed_permission(feed_client, reader_client):
    assert feed_client.get(f"/api/customers/{uuid.uuid4()}/history").status_code == 404
    assert feed_client.get("/api/customers/not-an-id/history").status_code == 404
    _ingest(records(1))
    assert reader_client.get(f"/api/customers/{record(0)['customer_id']}/history").status_code == 403


def test_as_of_returns_the_customer_as_it_was_then(feed_client):
    _ingest(records(1))
    inserted_at = CustomerChange.objects.get().at
    run = new_run()
    stage(run, [record(0, first_name="Later")])
    merge(run)
    CustomerChange.objects.filter(cursor=2).update(at=inserted_at + timedelta(hours=1))
    url = f"/api/customers/{record(0)['customer_id']}"
    before = feed_client.get(url, {"as_of": (inserted_at - timedelta(seconds=1)).isoformat()})
    assert before.status_code == 404
    then = feed_client.get(url, {"as_of": (inserted_at + timedelta(minutes=1)).isoformat()}).json()
    assert (then["first_name"], then["updated_at"]) == ("First0", None)
    now = feed_client.get(url, {"as_of": (inserted_at + timedelta(hours=2)).isoformat()}).json()
    assert now["first_name"] == "Later"
    assert list(now) == list(feed_client.get(url).json())


def test_as_of_a_time_the_customer_was_deleted_is_a_404(feed_client):
    _ingest(records(1))
    _delete(new_run(), [record(0)["customer_id"]])
    url = f"/api/customers/{record(0)['customer_id']}"
    assert feed_client.get(url, {"as_of": timezone.now().isoformat()}).status_code == 404


def test_as_of_before_what_history_keeps_is_a_410(feed_client):
    _ingest(records(2))
    CustomerChange.objects.filter(cursor=1).update(at=timezone.now() - timedelta(days=40))
    changes.prune_changes(older_than=timezone.now() - timedelta(days=30))
    url = f"/api/customers/{record(1)['customer_id']}"
    assert feed_client.get(url, {"as_of": (timezone.now() - timedelta(days=35)).isoformat()}).status_code == 410
    # A customer unchanged since its events were pruned is what it is now.
    unchanged = f"/api/customers/{record(0)['customer_id']}"
    assert feed_client.get(unchanged, {"as_of": timezone.now().isoformat()}).json()["first_name"] == "First0"


def test_as_of_needs_the_feed_permission_and_a_valid_time(feed_client, reader_client):
    _ingest(records(1))
    url = f"/api/customers/{record(0)['customer_id']}"
    assert reader_client.get(url, {"as_of": timezone.now().isoformat()}).status_code == 403
    bad = feed_client.get(url, {"as_of": "yesterday"})
    assert bad.status_code == 400
    assert list(bad.json()["errors"]) == ["as_of"]


def test_the_feed_body_is_valid_json_with_no_serializer_in_between(feed_client):
    _ingest(records(3))
    response = feed_client.get(FEED)
    assert response["Content-Type"] == "application/json"
    assert len(json.loads(response.content)["data"]) == 3


def test_a_feed_page_with_an_api_key_is_two_statements_in_all():
    from accounts import api_keys

    user = User.objects.create_superuser("consumer", password="pw")
    secret = api_keys.create_key(user=user, name="feed", scopes=["changes:read"]).secret
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    _ingest(records(20))
    client.get(FEED, {"limit": 5})  # the throttle window's first request and the key's first use write more
    with CaptureQueriesContext(connection) as queries:
        response = client.get(FEED, {"after": 5, "limit": 5})
    assert response.status_code == 200 and response.json()["next"] == 10
    assert len(queries.captured_queries) == 2
