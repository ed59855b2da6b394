"""The API's hot statements are prepared once per connection (api/statements.py); Django's own never are."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from api.statements import prepared_cursor

pytestmark = pytest.mark.django_db

# A statement of each test's own: prepared statements outlive a test's transaction on its connection.
STATEMENTS = {name: f"SELECT %s::int + {number}" for number, name in enumerate(("often", "django", "off"), start=1)}


def prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def test_a_statement_run_often_is_prepared_once_and_then_only_executed():
    with CaptureQueriesContext(connection) as queries, prepared_cursor() as cursor:
        for number in range(8):
            cursor.execute(STATEMENTS["often"], [number])
            assert cursor.fetchone() == (number + 1,)

    assert prepared_statements().count("SELECT $1::int + 1") == 1
    assert len(queries) == 8  # logged like any other statement (the statement counts of the API tests see them)


def test_djangos_own_cursors_never_prepare():
    with connection.cursor() as cursor:
        for number in range(8):
            cursor.execute(STATEMENTS["django"], [number])

    assert not [text for text in prepared_statements() if text.endswith("+ 2")]


def test_prepared_statements_can_be_turned_off_for_a_pooler(monkeypatch):
    # API_PREPARED_STATEMENTS=false sets the connection's prepare_threshold to None (config/settings/base.py).
    connection.ensure_connection()
    monkeypatch.setattr(connection.connection, "prepare_threshold", None)

    with prepared_cursor() as cursor:
        for number in range(8):
            cursor.execute(STATEMENTS["off"], [number])

    assert "SELECT $1::int + 3" not in prepared_statements()
