"""accounts/lockout.py: one row per (kind, key, window), one statement per failure, pruned when over."""

import logging
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, connections

from accounts import lockout
from accounts.models import AuthFailure

pytestmark = pytest.mark.django_db


def rows() -> list[tuple]:
    return list(
        AuthFailure.objects.order_by("kind", "key", "window_start").values_list(
            "kind", "key", "window_start", "failures", "locked_until"
        )
    )


def test_a_failure_counts_once_per_kind_and_key_in_the_window(clock):
    lockout.record_failure(door="admin", address="203.0.113.5", username="Alice")
    lockout.record_failure(door="api", address="203.0.113.5")
    window = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    # Usernames count case-insensitively: "alice" and "ALICE" share one counter.
    assert rows() == [("address", "203.0.113.5", window, 2, None), ("username", "alice", window, 1, None)]


def test_one_failure_is_one_statement(clock, django_assert_num_queries):
    with django_assert_num_queries(1):
        lockout.record_failure(door="admin", address="203.0.113.5", username="alice")


def test_the_fifth_failure_locks_for_a_window_from_then(clock):
    for _ in range(4):
        assert lockout.record_failure(door="api", address="203.0.113.5") == 0
    clock.advance(minutes=3)

    assert lockout.record_failure(door="api", address="203.0.113.5") == 900
    assert rows()[0][3:] == (5, clock.now + timedelta(minutes=15))
    assert lockout.retry_after(address="203.0.113.5") == 900
    clock.advance(seconds=899.5)
    assert lockout.retry_after(address="203.0.113.5") == 1  # rounded up: never "retry after 0"


def test_failures_in_different_windows_are_counted_apart(clock):
    for _ in range(3):
        lockout.record_failure(door="api", address="203.0.113.5")
    clock.advance(minutes=15)
    for _ in range(3):
        lockout.record_failure(door="api", address="203.0.113.5")

    assert [row[3] for row in rows()] == [3, 3]
    assert lockout.retry_after(address="203.0.113.5") == 0


def test_the_limit_and_window_come_from_settings(clock, settings):
    settings.ACCOUNTS_LOCKOUT_FAILURES = 2
    settings.ACCOUNTS_LOCKOUT_MINUTES = 60
    lockout.record_failure(door="api", address="203.0.113.5")

    assert lockout.record_failure(door="api", address="203.0.113.5") == 3600
    assert rows()[0][2] == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_prune_deletes_only_rows_whose_window_and_lockout_are_over(clock):
    for _ in range(5):
        lockout.record_failure(door="api", address="203.0.113.5")  # window 09:00-09:15, locked until 09:17
    clock.advance(minutes=14)
    lockout.record_failure(door="api", address="192.0.2.1")  # window 09:15-09:30

    assert lockout.prune() == 0  # 09:16: the first window is over, its lockout is not
    clock.advance(minutes=2)

    assert lockout.prune() == 1
    assert [row[1] for row in rows()] == ["192.0.2.1"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_failures_from_many_workers_are_all_counted_and_lock_once(clock, caplog):
    caplog.set_level(logging.INFO, logger="accounts")
    barrier = threading.Barrier(8)

    def fail():
        barrier.wait()
        try:
            lockout.record_failure(door="api", address="203.0.113.5")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=fail) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert rows()[0][3] == 8
    assert [record.getMessage() for record in caplog.records if record.getMessage().startswith("locked out")] == [
        "locked out: address=203.0.113.5 for 900 s after 5 failures"
    ]
    connection.close()
