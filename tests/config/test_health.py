from contextlib import contextmanager

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


@contextmanager
def database_down():
    """The default connection points at a server nobody listens on: the same failure as a database that went away."""
    original = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(HOST="127.0.0.1", PORT="9", OPTIONS={**original["OPTIONS"], "connect_timeout": 2})
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(original)


@pytest.mark.django_db(transaction=True)
def test_ready_fails_with_503_when_the_database_is_down():
    with database_down():
        response = Client().get("/api/ready")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"


@pytest.mark.django_db
def test_a_flood_of_ready_calls_costs_one_query_per_cache_window(settings, clock, django_assert_num_queries):
    settings.API_READY_CACHE_SECONDS = 1
    client = Client()

    with django_assert_num_queries(1):
        responses = []
        for _ in range(50):
            responses.append(client.get("/api/ready"))
            clock.advance(0.019)
    clock.advance(0.1)  # past the window that the first call opened
    with django_assert_num_queries(1):
        responses.append(client.get("/api/ready"))
        responses.append(client.get("/api/ready"))

    # The flood is answered, never refused: load balancers poll this and a 429 would read as "not ready".
    assert {response.status_code for response in responses} == {200}
    assert all(response.json() == {"status": "ok", "database": "ok", "queue": "ok"} for response in responses)


@pytest.mark.django_db(transaction=True)
def test_a_database_outage_is_reported_once_the_cache_window_has_passed(settings, clock):
    settings.API_READY_CACHE_SECONDS = 1
    client = Client()
    assert client.get("/api/ready").status_code == 200

    with database_down():
        clock.advance(0.5)
        within_window = client.get("/api/ready")
        clock.advance(0.5)
        after_window = client.get("/api/ready")

    assert within_window.status_code == 200  # the answer of 0.5 s ago, at most one window old
    assert after_window.status_code == 503
    assert after_window.json()["status"] == "unavailable"


@pytest.mark.django_db(transaction=True)
def test_during_an_outage_a_flood_tries_the_database_once_per_window(settings, clock, monkeypatch):
    settings.API_READY_CACHE_SECONDS = 1
    attempts = []
    real_cursor = connection.cursor
    monkeypatch.setattr(connection, "cursor", lambda: attempts.append(1) or real_cursor())
    client = Client()

    with database_down():
        statuses = {client.get("/api/ready").status_code for _ in range(20)}

    # Each attempt can wait for the connect time-out: repeating it per request would pile up the threads.
    assert statuses == {503}
    assert len(attempts) == 1


def test_health_refuses_other_methods():
    assert Client().post("/api/health").status_code == 405
