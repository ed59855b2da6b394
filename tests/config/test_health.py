import pytest
from django.db import connection
from django.test import Client


def test_health_answers_without_touching_the_database():
    # No django_db mark: pytest-django would fail this test on any database access.
    response = Client().get("/api/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.django_db
def test_ready_when_database_and_queue_answer():
    response = Client().get("/api/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "queue": "ok"}


@pytest.mark.django_db(transaction=True)
def test_ready_fails_with_503_when_the_database_is_down():
    original = dict(connection.settings_dict)
    connection.close()
    # A server nobody listens on: the same failure as a database that went away.
    connection.settings_dict.update(HOST="127.0.0.1", PORT="9", OPTIONS={**original["OPTIONS"], "connect_timeout": 2})
    try:
        response = Client().get("/api/ready")
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(original)
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"


def test_health_refuses_other_methods():
    assert Client().post("/api/health").status_code == 405
