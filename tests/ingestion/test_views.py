"""The ingestion API: start, wait, refuse overlaps, read runs and failures, resume."""

import json
import threading
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from procrastinate.contrib.django.models import ProcrastinateJob
from rest_framework.test import APIClient

from customers.models import Customer
from ingestion import pipeline, runs, tasks
from ingestion.models import IngestFailure, IngestRun
from mocksource.dataset import write_dataset
from tests.ingestion.fakes import FakeUpstream, Reply
from tests.ingestion.workers import worker_process
from tests.records import records
from tests.upstream import running_mocksource

READ_PERMISSIONS = ("view_ingestrun", "view_ingestfailure")


def user_with(*codenames: str, username: str = "operator") -> User:
    user = User.objects.create_user(username)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


def client_for(user: User | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


@pytest.fixture
def operator():
    return client_for(user_with(*READ_PERMISSIONS, "start_ingestion"))


def make_run(**fields) -> IngestRun:
    defaults = {"trigger": "api", "source_url": "http://upstream.test", "page_size": 100, "status": "succeeded"}
    return IngestRun.objects.create(**{**defaults, **fields})


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("post", "/api/ingest"),
        ("get", "/api/ingest/runs"),
        ("get", "/api/ingest/runs/1"),
        ("get", "/api/ingest/runs/1/failures"),
        ("post", "/api/ingest/runs/1/resume"),
        ("post", "/api/ingest/runs/1/cancel"),
        ("get", "/api/ingest/runs/0.5"),
        ("get", "/api/customers/0.5"),
    ],
)
def test_anonymous_requests_get_401(method, url):
    response = getattr(APIClient(), method)(url)
    assert response.status_code == 401
    assert response.json()["detail"]


@pytest.mark.django_db
def test_starting_a_run_needs_the_start_permission():
    reader = client_for(user_with(*READ_PERMISSIONS))
    response = reader.post("/api/ingest")
    assert response.status_code == 403
    assert "start ingestion" in response.json()["detail"]
    assert not IngestRun.objects.exists()


@pytest.mark.django_db
def test_reading_runs_needs_the_view_permission():
    assert client_for(user_with("start_ingestion")).get("/api/ingest/runs").status_code == 403


@pytest.mark.django_db
def test_post_ingest_queues_a_run_and_answers_202_with_location(operator):
    response = operator.post("/api/ingest")
    assert response.status_code == 202
    run = IngestRun.objects.get()
    assert response["Location"] == f"/api/ingest/runs/{run.pk}"
    body = response.json()
    assert (body["id"], body["status"], body["trigger"]) == (run.pk, "queued", "api")
    assert body["fetched"] == 0 and "records_per_second" in body
    assert ProcrastinateJob.objects.get(task_name="ingestion.execute_run").args == {"run_id": run.pk}


@pytest.mark.django_db
def test_post_while_a_run_is_active_is_409_naming_it(operator):
    active = make_run(status="running")
    response = operator.post("/api/ingest")
    assert response.status_code == 409
    assert response.json()["detail"] == f"An ingestion is already in progress: run {active.pk} is running."
    assert response.json()["active_run"]["id"] == active.pk
    assert IngestRun.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "name"),
    [("wait=-1", "wait"), ("wait=abc", "wait"), ("page_size=101", "page_size"), ("page_size=0", "page_size")],
)
def test_invalid_ingest_parameters_are_400_naming_them(operator, query, name):
    response = operator.post(f"/api/ingest?{query}")
    assert response.status_code == 400
    assert name in response.json()["errors"]
    assert not IngestRun.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_posts_make_exactly_one_run():
    user = user_with(*READ_PERMISSIONS, "start_ingestion")
    barrier = threading.Barrier(2)
    statuses = []

    def post():
        from django.db import connection

        barrier.wait()
        statuses.append(client_for(user).post("/api/ingest").status_code)
        connection.close()

    threads = [threading.Thread(target=post) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [202, 409]
    assert IngestRun.objects.count() == 1
    assert ProcrastinateJob.objects.filter(task_name="ingestion.execute_run").count() == 1


@pytest.mark.django_db(transaction=True)
def test_post_with_wait_returns_the_finished_run(tmp_path, settings):
    path = tmp_path / "customers.jsonl"
    write_dataset(records(150), path)
    operator = client_for(user_with(*READ_PERMISSIONS, "start_ingestion"))
    with running_mocksource(path) as base_url:
        settings.INGESTION_SOURCE_URL = base_url
        worker = worker_process()
        try:
            response = operator.post("/api/ingest?wait=60")
        finally:
            worker.terminate()
            worker.wait(15)
    assert response.status_code == 200
    assert "Location" not in response
    body = response.json()
    assert (body["status"], body["inserted"], body["fetched"]) == ("succeeded", 150, 150)
    assert Customer.objects.count() == 150


@pytest.mark.django_db
def test_runs_are_listed_newest_first_in_the_page_envelope(operator):
    runs = [make_run() for _ in range(3)]
    response = operator.get("/api/ingest/runs?limit=2")
    assert response.status_code == 200
    body = response.json()
    assert (body["total"], body["page"], body["limit"]) == (3, 1, 2)
    assert [run["id"] for run in body["data"]] == [runs[2].pk, runs[1].pk]


@pytest.mark.django_db
def test_invalid_page_on_runs_is_400(operator):
    response = operator.get("/api/ingest/runs?page=0")
    assert response.status_code == 400
    assert "page" in response.json()["errors"]


@pytest.mark.django_db
def test_run_detail_and_unknown_run(operator):
    run = make_run(fetched=10, inserted=9, invalid=1)
    body = operator.get(f"/api/ingest/runs/{run.pk}").json()
    assert (body["fetched"], body["inserted"], body["invalid"]) == (10, 9, 1)
    missing = operator.get("/api/ingest/runs/999999")
    assert missing.status_code == 404
    assert missing.json()["detail"]


@pytest.mark.django_db
def test_runs_show_which_attempt_executes_them(operator):
    run = make_run(attempt=2)

    assert operator.get(f"/api/ingest/runs/{run.pk}").json()["attempt"] == 2
    assert operator.get("/api/ingest/runs").json()["data"][0]["attempt"] == 2


@pytest.mark.django_db
def test_each_execution_of_a_run_is_a_new_attempt_in_the_api(operator):
    run = runs.create_run(trigger="api", source_url="http://upstream.test")
    session = FakeUpstream(records(3), script={1: [Reply(500)] * 6}).session()
    assert pipeline.execute_run(run.pk, session=session).status == "failed"
    runs.requeue(run.pk)
    pipeline.execute_run(run.pk, session=FakeUpstream(records(3)).session())

    body = operator.get(f"/api/ingest/runs/{run.pk}").json()

    assert (body["status"], body["attempt"]) == ("succeeded", 2)


@pytest.mark.django_db
def test_failures_are_paged_and_mask_personal_data_without_permission(operator):
    run = make_run()
    raw = {"customer_id": "x", "email": "jane.doe@example.com", "phone": "+1-555-0100-7788", "first_name": "Jane"}
    for position in (1, 2, 3):
        IngestFailure.objects.create(run=run, page=1, position=position, reason="invalid_email", errors={}, raw=raw)
    body = operator.get(f"/api/ingest/runs/{run.pk}/failures?limit=2").json()
    assert (body["total"], len(body["data"])) == (3, 2)
    assert body["data"][0]["raw"]["email"] == "j***@example.com"
    assert body["data"][0]["raw"]["phone"] == "***88"
    trusted = client_for(user_with(*READ_PERMISSIONS, "view_personal_data", username="trusted"))
    assert trusted.get(f"/api/ingest/runs/{run.pk}/failures").json()["data"][0]["raw"]["email"] == raw["email"]


EXACT_NUMBERS = {
    "past-a-double's-precision": "0.1000000000000000055511151231257827",
    "long-exact-decimal": "-12345678901234567890.123456789",
    "below-a-double's-range": "0.0000000000000000000000000000000000000000000000000000000000000000000000000000001",
    # Longer than Python's int-string conversion limit, as PostgreSQL writes 1e5000 back.
    "5001-digit-integer": "1" + "0" * 5000,
}


@pytest.mark.django_db
@pytest.mark.parametrize("text", EXACT_NUMBERS.values(), ids=EXACT_NUMBERS.keys())
def test_failures_api_writes_raw_numbers_with_every_digit(operator, text):
    run = make_run()
    failure = IngestFailure.objects.create(run=run, page=1, position=1, reason="invalid_decimal", errors={})
    with connection.cursor() as cursor:
        raw = f'{{"account_balance": {text}, "nested": [{text}]}}'
        cursor.execute("UPDATE ingestion_ingestfailure SET raw = %s::jsonb WHERE id = %s", [raw, failure.pk])

    response = operator.get(f"/api/ingest/runs/{run.pk}/failures")

    assert response.status_code == 200
    [row] = json.loads(response.content, parse_float=Decimal, parse_int=Decimal)["data"]
    assert row["raw"] == {"account_balance": Decimal(text), "nested": [Decimal(text)]}
    text_of_body = response.content.decode()
    assert f'"account_balance":{text}' in text_of_body and f"[{text}]" in text_of_body


@pytest.mark.django_db
def test_failures_need_their_own_view_permission():
    run = make_run()
    client = client_for(user_with("view_ingestrun"))
    assert client.get(f"/api/ingest/runs/{run.pk}/failures").status_code == 403


@pytest.mark.django_db
def test_resume_queues_a_failed_run_again(operator):
    run = make_run(status="failed", error="boom", last_committed_page=3)
    response = operator.post(f"/api/ingest/runs/{run.pk}/resume")
    assert response.status_code == 202
    assert response["Location"] == f"/api/ingest/runs/{run.pk}"
    run.refresh_from_db()
    assert run.status == "queued"
    assert ProcrastinateJob.objects.get(task_name="ingestion.execute_run").args == {"run_id": run.pk}


@pytest.mark.django_db
def test_resuming_a_succeeded_run_is_409(operator):
    run = make_run(status="succeeded")
    response = operator.post(f"/api/ingest/runs/{run.pk}/resume")
    assert response.status_code == 409
    assert response.json() == {
        "detail": f"Run {run.pk} is succeeded; only failed, abandoned or cancelled runs can be resumed."
    }


@pytest.mark.django_db
def test_resume_while_another_run_is_active_is_409(operator):
    failed = make_run(status="failed")
    make_run(status="running")
    response = operator.post(f"/api/ingest/runs/{failed.pk}/resume")
    assert response.status_code == 409
    assert response.json()["active_run"]["status"] == "running"


@pytest.mark.django_db
def test_the_upstream_url_cannot_be_chosen_by_a_request(operator, settings):
    settings.INGESTION_SOURCE_URL = "http://127.0.0.1:5000"
    operator.post("/api/ingest?source_url=http://169.254.169.254/latest")
    assert IngestRun.objects.get().source_url == "http://127.0.0.1:5000"


@pytest.mark.django_db
def test_starting_runs_is_throttled_per_user(operator, monkeypatch):
    from accounts.throttling import ScopedWindowThrottle

    monkeypatch.setattr(ScopedWindowThrottle, "THROTTLE_RATES", {"reads": "1000/minute", "ingest": "2/minute"})
    statuses = [operator.post("/api/ingest").status_code for _ in range(3)]
    assert statuses == [202, 409, 429]


@pytest.mark.django_db
def test_malformed_run_id_is_a_json_404(operator):
    response = operator.get("/api/ingest/runs/0.5")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"


@pytest.mark.django_db
def test_a_refused_configured_upstream_is_409_not_500(operator, settings):
    settings.INGESTION_SOURCE_URL = "http://127.0.0.1:9"
    settings.INGESTION_ALLOW_PRIVATE_NETWORKS = False
    response = operator.post("/api/ingest")
    assert response.status_code == 409
    assert "non-public address 127.0.0.1" in response.json()["detail"]
    assert response.json()["active_run"] is None
    assert not IngestRun.objects.exists()


@pytest.mark.django_db
def test_cancel_answers_the_cancelled_run_and_cancels_its_job(operator):
    run = tasks.start_in_background(trigger="api")

    response = operator.post(f"/api/ingest/runs/{run.pk}/cancel")

    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["status"], body["error"]) == (run.pk, "cancelled", "Cancelled by API user operator.")
    assert body["finished_at"] is not None
    assert IngestRun.objects.get(pk=run.pk).status == "cancelled"
    assert ProcrastinateJob.objects.get(task_name="ingestion.execute_run").status == "cancelled"


@pytest.mark.django_db
def test_cancel_of_a_running_run_answers_its_committed_counters(operator):
    run = make_run(status="running", fetched=300, inserted=290, invalid=10, last_committed_page=3)

    body = operator.post(f"/api/ingest/runs/{run.pk}/cancel").json()

    assert (body["status"], body["pages_done"], body["fetched"], body["inserted"], body["invalid"]) == (
        "cancelled", 3, 300, 290, 10,
    )  # fmt: skip


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["succeeded", "failed", "abandoned", "cancelled"])
def test_cancelling_a_run_that_is_not_queued_or_running_is_409_naming_its_status(operator, status):
    run = make_run(status=status)

    response = operator.post(f"/api/ingest/runs/{run.pk}/cancel")

    assert response.status_code == 409
    assert response.json() == {"detail": f"Run {run.pk} is {status}; only queued or running runs can be cancelled."}
    assert IngestRun.objects.get(pk=run.pk).status == status


@pytest.mark.django_db
def test_a_second_cancel_is_409(operator):
    run = make_run(status="running")
    assert operator.post(f"/api/ingest/runs/{run.pk}/cancel").status_code == 200

    second = operator.post(f"/api/ingest/runs/{run.pk}/cancel")

    assert second.status_code == 409
    assert "is cancelled" in second.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize("run_id", ["999999", "abc", "0.5"])
def test_cancelling_an_unknown_or_malformed_run_is_a_json_404(operator, run_id):
    response = operator.post(f"/api/ingest/runs/{run_id}/cancel")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["detail"]


@pytest.mark.django_db
def test_cancelling_needs_the_start_permission():
    run = make_run(status="running")
    reader = client_for(user_with(*READ_PERMISSIONS))

    response = reader.post(f"/api/ingest/runs/{run.pk}/cancel")

    assert response.status_code == 403
    assert "start ingestion" in response.json()["detail"]
    assert IngestRun.objects.get(pk=run.pk).status == "running"


@pytest.mark.django_db
def test_a_cancelled_run_resumes_through_the_api(operator):
    run = make_run(status="running", last_committed_page=2)
    operator.post(f"/api/ingest/runs/{run.pk}/cancel")

    response = operator.post(f"/api/ingest/runs/{run.pk}/resume")

    assert response.status_code == 202
    assert (response.json()["status"], response.json()["pages_done"]) == ("queued", 2)
    assert ProcrastinateJob.objects.get(task_name="ingestion.execute_run").args == {"run_id": run.pk}


@pytest.mark.django_db
def test_a_run_names_its_trace_and_where_it_opens(operator, settings):
    run = make_run(trace_id="cd" * 16)
    assert operator.get(f"/api/ingest/runs/{run.pk}").json()["trace_url"] is None
    settings.TRACING_URL_TEMPLATE = "https://traces.example/trace/{trace_id}"
    body = operator.get(f"/api/ingest/runs/{run.pk}").json()
    assert (body["trace_id"], body["trace_url"]) == ("cd" * 16, f"https://traces.example/trace/{'cd' * 16}")
    assert operator.get(f"/api/ingest/runs/{make_run().pk}").json()["trace_url"] is None
