"""Faults a data loader meets, each ending in a known database state (fault-injection suite).

The transport-level faults (5xx, 429, timeouts, drips, resets, truncated or malformed
bodies, wrong envelopes) are covered one per test in test_source.py and, end to end
against mocksource, in test_commands.py; data faults (bad fields, duplicates, email
conflicts and swaps) in test_pipeline.py and test_properties.py; killed workers and
concurrent runs in test_tasks.py and test_views.py. This module adds what needs
more machinery: the database connection dying mid-run, readers paging while an
ingestion commits, and each fault of the real mocksource end to end over HTTP.
"""

import threading
import time

import psycopg
import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from rest_framework.test import APIClient

from customers.models import Customer
from ingestion import pipeline, runs
from ingestion.models import IngestRun
from mocksource.dataset import write_dataset
from mocksource.faults import FaultConfig
from tests.database import side_connection_kwargs
from tests.ingestion.fakes import FakeUpstream
from tests.records import records
from tests.upstream import running_mocksource


class KillConnectionOnPage(FakeUpstream):
    """Terminates the ingesting process's database session when `page` is requested."""

    def __init__(self, records, *, page: int, backend_pid: int):
        super().__init__(records)
        self.kill_page, self.backend_pid = page, backend_pid

    def send(self, request, **kwargs):
        if f"page={self.kill_page}&" in request.url and self.backend_pid:
            with psycopg.connect(**side_connection_kwargs(), autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", [self.backend_pid])
            self.backend_pid = None
        return super().send(request, **kwargs)


@pytest.mark.django_db(transaction=True)
def test_database_connection_killed_mid_run_fails_the_run_and_a_resume_completes(settings):
    settings.INGESTION_BATCH_SIZE = 20
    settings.INGESTION_CONCURRENCY = 1
    source = records(100)
    run = runs.create_run(trigger="command", source_url="http://upstream.test", page_size=10)
    connection.ensure_connection()
    upstream = KillConnectionOnPage(source, page=5, backend_pid=connection.connection.info.backend_pid)
    with pytest.raises(Exception, match=r"terminat|closed|server"):
        pipeline.execute_run(run.pk, session=upstream.session())
    connection.close()
    crashed = IngestRun.objects.get(pk=run.pk)
    assert crashed.status == "failed"
    # Django's wrapper names it, except during COPY (a raw psycopg cursor): then psycopg's AdminShutdown does.
    assert crashed.error.startswith(("OperationalError: ", "InterfaceError: ", "AdminShutdown: ")), crashed.error
    assert crashed.inserted == Customer.objects.count() == crashed.last_committed_page * 10
    runs.requeue(run.pk)
    resumed = pipeline.execute_run(run.pk, session=FakeUpstream(source).session())
    assert (resumed.status, resumed.fetched, resumed.inserted) == ("succeeded", 100, 100)
    assert Customer.objects.count() == 100


@pytest.mark.django_db(transaction=True)
def test_readers_paging_during_an_ingestion_see_self_consistent_pages(settings, monkeypatch):
    from accounts.throttling import ScopedWindowThrottle

    monkeypatch.setattr(ScopedWindowThrottle, "THROTTLE_RATES", {"reads": "100000/minute", "ingest": "10/minute"})
    settings.INGESTION_BATCH_SIZE = 25
    settings.INGESTION_CONCURRENCY = 2
    reader = User.objects.create_user("reader")
    reader.user_permissions.add(Permission.objects.get(codename="view_customer"))
    client = APIClient()
    client.force_authenticate(reader)

    done = threading.Event()
    outcome = {}

    def ingest():
        try:
            run = runs.create_run(trigger="command", source_url="http://upstream.test", page_size=25)
            outcome["run"] = pipeline.execute_run(run.pk, session=FakeUpstream(records(600)).session())
        finally:
            connection.close()
            done.set()

    thread = threading.Thread(target=ingest)
    thread.start()
    problems, pages_read = [], 0
    try:
        while not done.is_set() or pages_read < 5:
            for page, limit in ((1, 100), (3, 50), (7, 100)):
                response = client.get(f"/api/customers?page={page}&limit={limit}")
                pages_read += 1
                if response.status_code != 200:
                    problems.append((page, response.status_code))
                    continue
                body = response.json()
                expected = max(0, min(limit, body["total"] - (page - 1) * limit))
                if len(body["data"]) != expected:
                    problems.append((page, body["total"], len(body["data"])))
            time.sleep(0.01)  # leave the ingesting thread its share of this process
    finally:
        thread.join()
    assert problems == []
    assert outcome["run"].status == "succeeded"
    assert client.get("/api/customers").json()["total"] == 600


# --- The upstream misbehaving, end to end over HTTP: one fault per test, final state asserted ---

RECOVERABLE_FAULTS = {
    "5xx": FaultConfig(seed=11, error_rate=0.4),
    "429 with Retry-After seconds": FaultConfig(seed=12, rate_limit_rate=0.4),
    "429 with Retry-After date": FaultConfig(seed=13, rate_limit_rate=0.4, retry_after_format="http-date"),
    "truncated JSON": FaultConfig(seed=14, truncate_rate=0.4),
    "malformed body or wrong envelope": FaultConfig(seed=15, malformed_rate=0.4),
    "connection closed mid-body": FaultConfig(seed=16, disconnect_rate=0.4),
    "everything at once": FaultConfig(seed=17, error_rate=0.1, rate_limit_rate=0.1, truncate_rate=0.1,
                                      malformed_rate=0.1, disconnect_rate=0.1),
}  # fmt: skip


@pytest.mark.django_db
@pytest.mark.parametrize("fault", RECOVERABLE_FAULTS.values(), ids=RECOVERABLE_FAULTS.keys())
def test_transient_upstream_faults_are_retried_and_every_row_lands_once(fault, tmp_path, settings):
    settings.INGESTION_MAX_RETRIES = 10
    settings.INGESTION_RETRY_AFTER_CAP = 0  # honoured, but capped so the test does not sleep
    path = tmp_path / "customers.jsonl"
    write_dataset(records(250), path)
    with running_mocksource(path, faults=fault) as base_url:
        run = runs.create_run(trigger="command", source_url=base_url, page_size=25)
        run = pipeline.execute_run(run.pk)
    assert run.status == "succeeded", run.error
    assert (run.fetched, run.inserted, run.invalid, run.conflicts, run.duplicates) == (250, 250, 0, 0, 0)
    assert run.retries > 0 and sum(run.retries_by_reason.values()) == run.retries
    assert Customer.objects.count() == 250
    assert list(Customer.objects.order_by("seq").values_list("seq", flat=True)) == list(range(1, 251))


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fault", "limits", "reason"),
    [
        (FaultConfig(latency_ms=400), {"INGESTION_READ_TIMEOUT": 0.1}, "timed out"),
        (FaultConfig(drip_bytes_per_second=200), {"INGESTION_PAGE_DEADLINE": 0.3}, "not received within 0.3 s"),
    ],
    ids=["timeout", "slow drip"],
)
def test_an_upstream_too_slow_for_the_limits_fails_the_run_cleanly(fault, limits, reason, tmp_path, settings):
    settings.INGESTION_MAX_RETRIES = 1
    for name, value in limits.items():
        setattr(settings, name, value)
    path = tmp_path / "customers.jsonl"
    write_dataset(records(30), path)
    with running_mocksource(path, faults=fault) as base_url:
        run = runs.create_run(trigger="command", source_url=base_url, page_size=10)
        run = pipeline.execute_run(run.pk)
    assert run.status == "failed"
    assert reason in run.error
    assert (run.fetched, run.retries) == (0, 1)
    assert Customer.objects.count() == 0
