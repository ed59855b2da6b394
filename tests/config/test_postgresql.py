"""The database backend's health check: no statement on a healthy connection, a dead one replaced."""

import os
import resource
import time

import psycopg
import pytest
from django.db import close_old_connections, connection

from customers.models import Customer
from tests.database import side_connection_kwargs

pytestmark = pytest.mark.django_db(transaction=True)


def _last_statement_of(pid: int) -> str:
    with psycopg.connect(**side_connection_kwargs(), autocommit=True) as side:
        return side.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[0]


def _end_session(pid: int) -> None:
    with psycopg.connect(**side_connection_kwargs(), autocommit=True) as side:
        assert side.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)


def _check_as_a_request_starts() -> None:
    """What Django does at the start of each request: forget the last check, check before the first statement."""
    close_old_connections()
    connection.close_if_health_check_failed()


def test_the_backend_is_ours_with_health_checks_on():
    assert connection.settings_dict["ENGINE"] == "config.postgresql"
    assert connection.settings_dict["CONN_HEALTH_CHECKS"] is True


def test_a_healthy_connection_passes_the_check_without_a_statement():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 'the last statement'")
        pid = connection.connection.info.backend_pid

    _check_as_a_request_starts()

    assert connection.connection is not None and connection.connection.info.backend_pid == pid
    assert _last_statement_of(pid) == "SELECT 'the last statement'"


def test_a_connection_the_server_ended_is_replaced_before_the_first_statement():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        pid = connection.connection.info.backend_pid
    _end_session(pid)
    time.sleep(0.2)  # the server's goodbye reaches the socket

    _check_as_a_request_starts()

    assert Customer.objects.count() == 0  # no OperationalError: a new session answered
    assert connection.connection.info.backend_pid != pid


def test_a_connection_psycopg_saw_break_is_not_usable():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    connection.connection.close()

    assert connection.is_usable() is False
    _check_as_a_request_starts()
    assert Customer.objects.count() == 0


def test_a_connection_on_a_descriptor_above_1023_is_checked_like_any_other():
    # select() refuses such descriptors: the check would then call every connection of a busy
    # process broken and reconnect on every request.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1200, hard), hard))
    connection.close()  # its descriptor is a low one, which the new connection would reuse
    fillers = [os.open(os.devnull, os.O_RDONLY) for _ in range(1030)]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 'on a high descriptor'")
            pid = connection.connection.info.backend_pid
        assert connection.connection.fileno() > 1023

        _check_as_a_request_starts()

        assert connection.connection.info.backend_pid == pid
        assert _last_statement_of(pid) == "SELECT 'on a high descriptor'"
    finally:
        connection.close()
        for descriptor in fillers:
            os.close(descriptor)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
