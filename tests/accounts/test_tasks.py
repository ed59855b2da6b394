"""The worker's hourly upkeep of the accounts tables."""

from datetime import UTC, datetime

import pytest

from accounts import tasks
from accounts.models import AuthFailure, RequestCount

LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


def test_the_prune_is_registered_to_run_every_hour():
    assert any(
        periodic.task is tasks.prune_job and periodic.cron == "41 * * * *"
        for periodic in tasks.app.periodic_registry.periodic_tasks.values()
    )


@pytest.mark.django_db(transaction=True)  # the job closes its connection, as on a worker thread
def test_the_prune_empties_both_tables_of_what_is_over_and_keeps_the_rest():
    AuthFailure.objects.create(kind="address", key="192.0.2.1", window_start=LONG_AGO, failures=5)
    AuthFailure.objects.create(kind="address", key="192.0.2.2", window_start=datetime.now(UTC), failures=1)
    RequestCount.objects.create(scope="reads", key="user:1", window_start=LONG_AGO, window_end=LONG_AGO, hits=3)
    RequestCount.objects.create(
        scope="reads", key="user:2", window_start=LONG_AGO, window_end=datetime(2999, 1, 1, tzinfo=UTC), hits=1
    )

    tasks.prune_job.func(timestamp=0)

    assert list(AuthFailure.objects.values_list("key", flat=True)) == ["192.0.2.2"]
    assert list(RequestCount.objects.values_list("key", flat=True)) == ["user:2"]
