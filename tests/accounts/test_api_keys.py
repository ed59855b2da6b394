"""accounts/api_keys.py and ApiKeyAuthentication: hashed, prefixed, scoped, expiring, revocable and
rotatable keys, checked in one statement, with `last_used_at` written at most once a minute."""

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from accounts import api_keys
from accounts.models import ApiKey, RequestCount, Scope
from tests.accounts.conftest import Clock
from tests.customers.factories import create_customer, create_customers

pytestmark = pytest.mark.django_db

URL = "/api/customers"
READ = [Scope.CUSTOMERS_READ, Scope.RUNS_READ]
INVALID = {"detail": "Invalid API key."}
MALFORMED = {"detail": "Malformed API key: send 'Authorization: Bearer cdp_<key id>_<secret>'."}


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock(datetime(2026, 3, 2, 9, 0, 20, tzinfo=UTC))
    for where in ("accounts.api_keys.now", "accounts.lockout.now", "accounts.windows.now", "accounts.throttling.now"):
        monkeypatch.setattr(where, clock)
    return clock


def get(key: str, path: str = URL, address: str = "203.0.113.5"):
    return APIClient().get(path, HTTP_AUTHORIZATION=f"Bearer {key}", REMOTE_ADDR=address)


def ingest(key: str):
    return APIClient().post("/api/ingest?dry_run=true", HTTP_AUTHORIZATION=f"Bearer {key}")


def test_a_created_key_authenticates_as_its_owner(clock, reader):
    issued = api_keys.create_key(user=reader, name="reporting", scopes=READ)

    response = get(issued.secret)

    assert response.status_code == 200
    assert issued.secret.startswith(f"cdp_{issued.key.key_id}_")
    assert issued.key.expires_at == clock.now + timedelta(days=90)


def test_the_stored_row_holds_only_a_hash_of_the_secret(clock, reader):
    issued = api_keys.create_key(user=reader, name="reporting", scopes=READ)
    secret_part = issued.secret.split("_", 2)[2]

    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM accounts_apikey")
        [row] = cursor.fetchall()

    stored = " ".join(str(value) for value in row)
    assert secret_part not in stored
    assert issued.secret not in stored
    assert ApiKey.objects.get().secret_hash == hashlib.sha256(issued.secret.encode()).hexdigest()


def test_a_wrong_secret_and_an_unknown_key_id_get_the_same_401(clock, reader):
    issued = api_keys.create_key(user=reader, name="reporting", scopes=READ)
    key_id = issued.key.key_id
    wrong_secret = f"cdp_{key_id}_{'A' * 43}"
    unknown_id = f"cdp_{'z' * 12}_{issued.secret.split('_', 2)[2]}"

    for attempt in (wrong_secret, unknown_id):
        response = get(attempt)
        assert response.status_code == 401
        assert response.json() == INVALID
        assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer two parts", "Bearer caf\u00e9", "Bearer not-a-key", f"Bearer cdp_short_{'A' * 43}"],
)
def test_a_malformed_key_is_401_saying_the_expected_shape(clock, header):
    response = APIClient().get(URL, HTTP_AUTHORIZATION=header, REMOTE_ADDR="203.0.113.5")

    assert response.status_code == 401
    assert response.json() == MALFORMED


def test_an_expired_key_is_401_saying_when_it_expired(clock, reader):
    issued = api_keys.create_key(user=reader, name="reporting", scopes=READ, days=1)
    assert get(issued.secret).status_code == 200

    clock.advance(days=1)
    response = get(issued.secret)

    assert response.status_code == 401
    assert response.json() == {"detail": "This API key expired at 2026-03-03T09:00:20Z."}


def test_a_revoked_key_is_401_saying_it_was_revoked(clock, reader):
    issued = api_keys.create_key(user=reader, name="reporting", scopes=READ)

    assert api_keys.revoke_keys(ApiKey.objects.filter(key_id=issued.key.key_id)) == 1
    response = get(issued.secret)

    assert response.status_code == 401
    assert response.json() == {"detail": "This API key was revoked."}


def test_a_key_of_an_inactive_owner_is_refused(clock, reader):
    issued = api_keys.create_key(user=reader, name="reporting", scopes=READ)
    reader.is_active = False
    reader.save()

    assert get(issued.secret).json() == {"detail": "User inactive or deleted."}


def test_failed_keys_count_towards_the_address_lockout(clock, reader):
    issued = api_keys.create_key(user=reader, name="reporting", scopes=READ)
    for _ in range(5):
        assert get(f"cdp_{issued.key.key_id}_{'A' * 43}").status_code == 401

    assert get(issued.secret).status_code == 429
    assert get(issued.secret, address="192.0.2.1").status_code == 200


def test_a_read_key_of_a_superuser_cannot_start_an_ingestion(clock):
    root = User.objects.create_superuser("root")
    issued = api_keys.create_key(user=root, name="dashboards", scopes=READ)

    response = ingest(issued.secret)

    assert response.status_code == 403
    assert response.json() == {
        "detail": "Starting, resuming or cancelling an ingestion needs the 'start ingestion' permission."
    }
    assert get(issued.secret).status_code == 200


def test_an_ingestion_key_without_the_read_scopes_cannot_read(clock):
    root = User.objects.create_superuser("root")
    issued = api_keys.create_key(user=root, name="scheduler", scopes=[Scope.INGESTION_RUN])

    assert get(issued.secret).status_code == 403
    assert get(issued.secret, path="/api/ingest/runs").status_code == 403


def test_a_key_never_has_a_permission_its_owner_lacks(clock, reader):
    issued = api_keys.create_key(user=reader, name="too-wide", scopes=[*READ, Scope.INGESTION_RUN])

    assert ingest(issued.secret).status_code == 403  # the reader may not start runs
    assert get(issued.secret, path="/api/ingest/runs").status_code == 403  # nor read them
    assert get(issued.secret).status_code == 200


def test_an_ingestion_key_of_an_owner_who_may_start_runs_gets_past_the_permission(clock, reader):
    reader.user_permissions.add(Permission.objects.get(codename="start_ingestion"))
    issued = api_keys.create_key(user=reader, name="scheduler", scopes=[Scope.INGESTION_RUN])

    assert ingest(issued.secret).status_code not in (401, 403)


def test_an_expiry_past_the_maximum_is_refused(clock, reader, settings):
    settings.ACCOUNTS_API_KEY_MAX_DAYS = 30

    with pytest.raises(api_keys.KeyRefused, match="at most 30 days"):
        api_keys.create_key(user=reader, name="forever", scopes=READ, days=31)


def test_a_key_needs_a_known_scope(clock, reader):
    with pytest.raises(api_keys.KeyRefused, match="Unknown scope: 'admin'"):
        api_keys.create_key(user=reader, name="bad", scopes=["admin"])
    with pytest.raises(api_keys.KeyRefused, match="at least one scope"):
        api_keys.create_key(user=reader, name="bad", scopes=[])


def test_rotation_keeps_the_old_key_working_until_the_overlap_ends(clock, reader):
    old = api_keys.create_key(user=reader, name="reporting", scopes=READ)

    new = api_keys.rotate_key(old.key, overlap=timedelta(hours=24))

    assert new.key.rotated_from_id == old.key.pk
    assert (new.key.name, new.key.scopes, new.key.user_id) == ("reporting", READ, reader.pk)
    assert get(old.secret).status_code == get(new.secret).status_code == 200
    clock.advance(hours=23, minutes=59)
    assert get(old.secret).status_code == 200
    clock.advance(minutes=1)
    assert get(old.secret).status_code == 401
    assert get(new.secret).status_code == 200


def test_rotation_never_lengthens_the_old_keys_life(clock, reader):
    old = api_keys.create_key(user=reader, name="reporting", scopes=READ, days=1)

    api_keys.rotate_key(old.key, overlap=timedelta(days=7))

    old.key.refresh_from_db()
    assert old.key.expires_at == clock.now + timedelta(days=1)


def test_a_revoked_key_cannot_be_rotated(clock, reader):
    old = api_keys.create_key(user=reader, name="reporting", scopes=READ)
    api_keys.revoke_keys(ApiKey.objects.all())

    with pytest.raises(api_keys.KeyRefused, match="revoked"):
        api_keys.rotate_key(old.key)


def reads_the_key(sql: str) -> bool:
    return sql.lstrip().startswith("SELECT") and "FROM accounts_apikey k" in sql


@pytest.mark.parametrize("page", [1, 30], ids=["first-page", "deep-page"])
def test_a_key_list_request_is_two_statements_in_all(clock, reader, page):
    issued = api_keys.create_key(user=reader, name="reporting", scopes=READ)
    create_customers(3000)

    with CaptureQueriesContext(connection) as queries:
        response = get(issued.secret, path=f"{URL}?limit=100&page={page}")

    assert response.status_code == 200 and len(response.json()["data"]) == 100
    # The key, its owner, permissions, lockout and throttle in one statement; the page (its
    # total and its rows, as JSON) in one more, by seq: no OFFSET scan, and nothing counted but
    # the deleted rows (customers/models.py: the total is max(seq) minus them).
    sql = [query["sql"] for query in queries]
    assert len(sql) == 2, sql
    assert reads_the_key(sql[0]) and "accounts_count_request" in sql[0]
    assert not [statement for statement in sql if "OFFSET" in statement.upper()]
    counted = [statement for statement in sql if "COUNT(*)" in statement.upper()]
    assert all('"deleted_at" IS NOT NULL' in statement for statement in counted)


def test_last_used_at_is_written_at_most_once_a_minute(clock, reader):
    issued = api_keys.create_key(user=reader, name="reporting", scopes=READ)
    first_use = clock.now

    def last_used():
        return ApiKey.objects.get().last_used_at

    get(issued.secret)
    assert last_used() == first_use
    clock.advance(seconds=59)
    with CaptureQueriesContext(connection) as queries:
        get(issued.secret)
    assert last_used() == first_use
    assert not [query for query in queries if query["sql"].startswith('UPDATE "accounts_apikey"')]
    clock.advance(seconds=1)
    get(issued.secret)
    assert last_used() == first_use + timedelta(minutes=1)


def test_a_key_detail_request_is_two_statements_in_all(clock, reader):
    issued = api_keys.create_key(user=reader, name="reporting", scopes=READ)
    customer = create_customer()
    path = f"{URL}/{customer.customer_id}"

    with CaptureQueriesContext(connection) as first:
        assert get(issued.secret, path=path).status_code == 200
    clock.advance(seconds=1)
    with CaptureQueriesContext(connection) as second:
        assert get(issued.secret, path=path).status_code == 200

    # The key with its owner, the owner's permissions and the address's lockout, the throttle's
    # count and (the first time in a minute) last_used_at, in one statement; then the customer.
    for queries in (first, second):
        sql = [query["sql"] for query in queries]
        assert len(sql) == 2, sql
        assert reads_the_key(sql[0])
        assert "accounts_count_request" in sql[0] and "accounts_touch_key" in sql[0]
        assert "accounts_authfailure" in sql[0] and "auth_permission" in sql[0]
    counter = RequestCount.objects.get()
    assert (counter.scope, counter.key, counter.hits) == ("reads", f"key:{issued.key.key_id}", 2)
    assert ApiKey.objects.get().last_used_at == clock.now - timedelta(seconds=1)


@pytest.mark.parametrize("refusal", ["wrong secret", "revoked", "expired", "inactive owner"])
def test_a_refused_key_spends_no_budget_and_is_not_marked_used(clock, reader, refusal):
    issued = api_keys.create_key(user=reader, name="reporting", scopes=READ)
    presented = issued.secret
    if refusal == "wrong secret":
        # The key id is public (it is in every list): knowing it must not let anyone spend its budget.
        presented = issued.secret[:-4] + ("AAAA" if not issued.secret.endswith("AAAA") else "BBBB")
    elif refusal == "revoked":
        api_keys.revoke_keys(ApiKey.objects.all())
    elif refusal == "expired":
        clock.advance(seconds=91 * 24 * 3600)
    else:
        User.objects.filter(pk=reader.pk).update(is_active=False)

    assert get(presented).status_code == 401

    assert not RequestCount.objects.exists()
    assert ApiKey.objects.get().last_used_at is None


def test_a_key_over_its_budget_is_refused_without_rewriting_its_counter(clock, reader, monkeypatch):
    from accounts.throttling import ScopedWindowThrottle

    monkeypatch.setattr(ScopedWindowThrottle, "THROTTLE_RATES", {"reads": "2/minute", "ingest": "30/minute"})
    issued = api_keys.create_key(user=reader, name="reporting", scopes=READ)

    statuses = [get(issued.secret).status_code for _ in range(4)]
    refused = get(issued.secret)

    assert statuses == [200, 200, 429, 429]
    assert refused.status_code == 429
    assert refused["Retry-After"] == "40"  # the minute's window started 20 s before the clock's time
    assert RequestCount.objects.get().hits == 2


def test_each_key_is_throttled_on_its_own_read_budget(clock, reader, monkeypatch):
    from accounts.throttling import ScopedWindowThrottle

    monkeypatch.setattr(ScopedWindowThrottle, "THROTTLE_RATES", {"reads": "2/minute", "ingest": "30/minute"})
    first = api_keys.create_key(user=reader, name="one", scopes=READ)
    second = api_keys.create_key(user=reader, name="two", scopes=READ)

    assert [get(first.secret).status_code for _ in range(3)] == [200, 200, 429]
    assert get(second.secret).status_code == 200
    counters = dict(RequestCount.objects.filter(scope="reads").values_list("key", "hits"))
    assert counters == {f"key:{first.key.key_id}": 2, f"key:{second.key.key_id}": 1}


def test_with_legacy_tokens_off_a_token_is_refused_saying_how_to_move(clock, reader, settings):
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=reader).key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get(URL).status_code == 200

    settings.ACCOUNTS_LEGACY_TOKENS = False
    response = client.get(URL)

    assert response.status_code == 401
    assert response.json() == {
        "detail": "Token keys are no longer accepted: create an API key (manage.py api_keys create) "
        "and send 'Authorization: Bearer cdp_<key id>_<secret>'."
    }
