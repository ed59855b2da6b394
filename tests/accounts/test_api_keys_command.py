"""accounts/management/commands/api_keys.py: create (the secret printed once), list, rotate, revoke."""

from datetime import UTC, datetime
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from accounts.models import ApiKey, Scope
from tests.accounts.conftest import Clock

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def clock(monkeypatch) -> Clock:
    clock = Clock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    monkeypatch.setattr("accounts.api_keys.now", clock)
    return clock


@pytest.fixture
def owner(db) -> User:
    return User.objects.create_superuser("ops")


def run(*args: str) -> str:
    out = StringIO()
    call_command("api_keys", *args, stdout=out)
    return out.getvalue()


def fields(output: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in output.splitlines() if ": " in line)


def test_create_prints_the_key_once_and_stores_its_hash(owner):
    output = fields(run("create", "ops", "--name", "nightly", "--scope", "ingestion:run", "--days", "30"))

    key = ApiKey.objects.get()
    assert output == {
        "id": key.key_id,
        "name": "nightly",
        "user": "ops",
        "scopes": "ingestion:run",
        "expires": "2026-04-01T09:00:00Z",
        "key": output["key"],
    }
    assert output["key"].startswith(f"cdp_{key.key_id}_")
    assert key.scopes == [Scope.INGESTION_RUN]
    response = APIClient().get("/api/customers", HTTP_AUTHORIZATION=f"Bearer {output['key']}")
    assert response.status_code == 403  # authenticated, but an ingestion key does not read


def test_create_defaults_to_the_read_scopes(owner):
    run("create", "ops", "--name", "dashboards")

    assert ApiKey.objects.get().scopes == [Scope.CUSTOMERS_READ, Scope.RUNS_READ]


def test_list_shows_keys_without_any_secret(owner):
    created = fields(run("create", "ops", "--name", "dashboards"))

    output = run("list")

    assert created["id"] in output and "dashboards" in output and "active" in output
    assert created["key"].split("_", 2)[2] not in output
    assert ApiKey.objects.get().secret_hash not in output


def test_rotate_prints_a_new_key_and_says_until_when_the_old_one_works(owner):
    old = fields(run("create", "ops", "--name", "dashboards"))

    output = fields(run("rotate", old["id"], "--overlap-hours", "2"))

    assert output["key"] != old["key"]
    assert output["rotated"] == old["id"]
    assert output["old key expires"] == "2026-03-02T11:00:00Z"
    assert ApiKey.objects.count() == 2


def test_revoke_refuses_the_key_at_once(owner):
    created = fields(run("create", "ops", "--name", "dashboards"))

    assert run("revoke", created["id"]).strip() == f"revoked: {created['id']}"
    response = APIClient().get("/api/customers", HTTP_AUTHORIZATION=f"Bearer {created['key']}")
    assert response.json() == {"detail": "This API key was revoked."}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "nobody", "--name", "x"], "No user 'nobody'."),
        (["create", "ops", "--name", "x", "--scope", "admin"], "invalid choice: 'admin'"),
        (["create", "ops", "--name", "x", "--days", "9999"], "at most 365 days"),
        (["revoke", "unknownkey12"], "No API key 'unknownkey12'."),
        (["rotate", "unknownkey12"], "No API key 'unknownkey12'."),
    ],
)
def test_bad_arguments_are_a_command_error_saying_why(owner, args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)
