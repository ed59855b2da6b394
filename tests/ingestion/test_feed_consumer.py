"""A consumer following GET /api/changes while ingestions commit, a worker is killed with SIGKILL and
its run resumed: it collects every change exactly once, in order, and rebuilds the customers table."""

import json
import signal
import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
import requests
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token

from customers.models import Customer
from customers.serializers import CustomerStateSerializer
from ingestion import pipeline, runs, tasks
from ingestion.models import IngestRun
from mocksource.dataset import write_dataset
from mocksource.faults import FaultConfig
from tests.ingestion.workers import wait_until, worker_process
from tests.records import record, records
from tests.upstream import running_mocksource

pytestmark = pytest.mark.django_db(transaction=True)


class Consumer(threading.Thread):
    """Polls the feed with the cursor it last saw, as the README's loop does, until told to stop and caught up."""

    def __init__(self, url: str, token: str):
        super().__init__(daemon=True)
        self.url, self.session = url, requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"
        self.events, self.after, self.polls, self.errors = [], 0, 0, []
        self.stopping = threading.Event()

    def run(self):
        # Closing the session ends its kept-alive connection, and with it the live server's
        # thread and that thread's database session, even when the test fails and keeps us.
        with self.session:
            self._follow()

    def _follow(self):
        # No deadline while the test is writing (a slow machine only makes that longer); once
        # told to stop it has a minute to catch up, and says so if it gives up.
        deadline = None
        while deadline is None or time.monotonic() < deadline:
            if deadline is None and self.stopping.is_set():
                deadline = time.monotonic() + 60
            response = self.session.get(self.url, params={"after": self.after, "limit": 37}, timeout=10)
            self.polls += 1
            if response.status_code != 200:
                self.errors.append((response.status_code, response.text))
                return
            page = json.loads(response.content, parse_float=Decimal)
            self.events += page["data"]
            self.after = page["next"]
            if not page["data"]:
                if self.stopping.is_set():
                    return
                time.sleep(0.05)
        self.errors.append("gave up catching up a minute after being told to stop")

    def rebuilt(self) -> dict[str, dict]:
        table = {}
        for event in self.events:
            if event["kind"] in ("deleted", "erased"):
                table.pop(event["customer_id"], None)
            elif event["customer_id"] is not None:
                table[event["customer_id"]] = event["customer"]
        return table


def _table() -> dict[str, dict]:
    return {str(c.customer_id): CustomerStateSerializer(c).data for c in Customer.objects.live()}


def test_a_polling_consumer_sees_every_change_once_through_a_killed_worker_and_a_resume(tmp_path, live_server):
    user = User.objects.create_superuser("consumer", password="unused")
    consumer = Consumer(f"{live_server.url}/api/changes", Token.objects.create(user=user).key)
    consumer.start()
    path = tmp_path / "customers.jsonl"
    write_dataset(records(300), path)
    with running_mocksource(path, faults=FaultConfig(latency_ms=100)) as base_url:
        run = runs.create_run(trigger="api", source_url=base_url, page_size=20)
        worker = worker_process(INGESTION_BATCH_SIZE="20", INGESTION_CONCURRENCY="1")
        try:
            tasks.execute_run_job.defer(run_id=run.pk)
            assert wait_until(lambda: IngestRun.objects.get(pk=run.pk).last_committed_page >= 3)
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
        finally:
            worker.kill()
        assert runs.abandon_stale_runs(stale_after=timedelta(seconds=0)) == [run.pk]
        runs.requeue(run.pk)
        assert pipeline.execute_run(run.pk).status == "succeeded"

        # The next generation: some changed, some gone, some new; a full run applies it all.
        changed = records(300)
        for index in range(0, 300, 7):
            changed[index] = record(index, last_name=f"Changed{index}")
        del changed[250:260]
        write_dataset([*changed, *records(5, start=900)], path)
        second = runs.create_run(trigger="api", source_url=base_url, page_size=20)
        assert pipeline.execute_run(second.pk).status == "succeeded"

    consumer.stopping.set()
    consumer.join(60)
    assert not consumer.is_alive() and consumer.errors == []
    cursors = [event["cursor"] for event in consumer.events]
    assert cursors == list(range(1, len(cursors) + 1)), "a gap or a repeat"
    assert consumer.polls > 3  # it followed along, not one read at the end
    kinds = {kind: sum(e["kind"] == kind for e in consumer.events) for kind in ("inserted", "updated", "deleted")}
    # Every 7th of 300 changed (43), but 252 and 259, which are among the 10 deleted.
    assert kinds == {"inserted": 305, "updated": 41, "deleted": 10}
    assert consumer.rebuilt() == _table()
