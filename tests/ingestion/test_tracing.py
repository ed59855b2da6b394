"""A run as one OpenTelemetry trace: run, pages (with their retries and HTTP attempts), batches and their SQL."""

import io
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from procrastinate.contrib.django.models import ProcrastinateJob

from config.logging import JsonFormatter
from ingestion import pipeline, runs
from ingestion.models import IngestRun
from mocksource.dataset import write_dataset
from tests.ingestion.fakes import FakeUpstream, Reply
from tests.ingestion.test_views import READ_PERMISSIONS, client_for, user_with
from tests.ingestion.workers import wait_until, worker_process
from tests.records import records
from tests.upstream import running_mocksource


def _children(spans, parent):
    return [span for span in spans if span.parent is not None and span.parent.span_id == parent.context.span_id]


def _named(spans, name):
    return [span for span in spans if span.name == name]


@pytest.mark.django_db
def test_a_run_is_one_trace_of_its_pages_and_batches_down_to_the_sql(spans, ingest, settings):
    settings.INGESTION_BATCH_SIZE = 100
    settings.INGESTION_CONCURRENCY = 2
    fake = FakeUpstream(records(250), script={2: [Reply(503)]})

    run = ingest(fake, page_size=50)

    finished = spans.get_finished_spans()
    (root,) = _named(finished, "ingestion.run")
    assert root.parent is None
    assert {span.context.trace_id for span in finished} == {root.context.trace_id}
    assert run.trace_id == f"{root.context.trace_id:032x}"
    assert root.attributes["ingestion.run.id"] == run.pk
    assert (root.attributes["ingestion.run.status"], root.attributes["ingestion.run.inserted"]) == ("succeeded", 250)
    assert root.attributes["ingestion.run.fetched"] == 250

    pages = sorted(_named(finished, "ingestion.page"), key=lambda span: span.attributes["ingestion.page.number"])
    assert [page.attributes["ingestion.page.number"] for page in pages] == [1, 2, 3, 4, 5]
    assert all(page.parent.span_id == root.context.span_id for page in pages)  # fetched on pool threads, too
    assert [page.attributes["ingestion.page.records"] for page in pages] == [50] * 5
    assert all(page.attributes["ingestion.page.bytes"] > 1000 for page in pages)
    retried = pages[1]
    assert retried.attributes["ingestion.attempts"] == 2
    assert retried.attributes["ingestion.retry_reasons"] == ("server_error",)
    assert [(event.name, event.attributes["reason"]) for event in retried.events] == [("retry", "server_error")]
    attempts = _children(finished, retried)
    assert [attempt.attributes.get("http.status_code") for attempt in attempts] == [503, 200]
    assert pages[0].attributes["ingestion.attempts"] == 1

    after_the_walk = [
        span.name for span in _children(finished, root) if span.name in ("ingestion.conflicts", "ingestion.deletions")
    ]
    assert after_the_walk == ["ingestion.conflicts", "ingestion.deletions"]  # retried together, then applied

    batches = _named(finished, "ingestion.batch")
    assert all(batch.parent.span_id == root.context.span_id for batch in batches)
    assert (
        sum(
            batch.attributes["ingestion.batch.rows"]
            for batch in batches
            if batch.attributes.get("ingestion.batch.rows")
        )
        == 250
    )
    full = [batch for batch in batches if batch.attributes["ingestion.batch.rows"]]
    assert [batch.attributes["ingestion.batch.inserted"] for batch in full] == [100, 100, 50]
    for batch in full:
        steps = {span.name: span for span in _children(finished, batch)}
        assert {"ingestion.batch.copy", "ingestion.batch.rejections", "ingestion.batch.classify"} <= set(steps)
        assert {"ingestion.batch.merge", "ingestion.batch.conflicts"} <= set(steps)
        statements = _children(finished, steps["ingestion.batch.merge"])
        assert statements, "the merge's SQL is traced under the merge step"
        assert all(statement.attributes["db.system"] == "postgresql" for statement in statements)
    # Statements are traced with their placeholders, never their parameters: no person's data in a span.
    texts = json.dumps([[span.name, dict(span.attributes)] for span in finished], default=str)
    assert not [value for value in fake.records if value["email"] in texts or value["last_name"] in texts]


@pytest.mark.django_db
def test_a_page_the_upstream_gives_up_on_ends_its_span_in_error_and_the_run_span_failed(spans, ingest, settings):
    settings.INGESTION_MAX_RETRIES = 1
    fake = FakeUpstream(records(60), script={2: [Reply(503), Reply(503)]})

    run = ingest(fake, page_size=50)

    assert run.status == "failed"
    finished = spans.get_finished_spans()
    (page,) = [span for span in _named(finished, "ingestion.page") if span.attributes["ingestion.page.number"] == 2]
    assert (page.status.status_code.name, page.attributes["ingestion.attempts"]) == ("ERROR", 2)
    assert page.attributes["ingestion.retry_reasons"] == ("server_error", "server_error")
    (root,) = _named(finished, "ingestion.run")
    assert (root.status.status_code.name, root.attributes["ingestion.run.status"]) == ("ERROR", "failed")


@pytest.mark.django_db
def test_a_resumed_run_records_the_trace_of_its_latest_execution(spans, ingest, settings):
    fake = FakeUpstream(records(10))
    first = ingest(fake, page_size=50)
    assert first.trace_id
    IngestRun.objects.filter(pk=first.pk).update(status="failed")
    runs.requeue(first.pk)

    again = pipeline.execute_run(first.pk, session=fake.session())

    assert again.trace_id and again.trace_id != first.trace_id


@pytest.mark.django_db
def test_json_log_lines_inside_a_run_name_its_trace_and_span(spans, ingest):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("ingestion")
    logger.addHandler(handler)
    try:
        run = ingest(FakeUpstream(records(10)), page_size=50)
    finally:
        logger.removeHandler(handler)

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    committed = next(line for line in lines if line["message"] == "batch committed")
    assert committed["trace_id"] == run.trace_id
    assert len(committed["span_id"]) == 16


class _Collector:
    """An OTLP/HTTP trace receiver on loopback: what the exporters of other processes send."""

    def __init__(self):
        self.spans, collector = [], self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
                for resource in request.resource_spans:
                    service = next(
                        a.value.string_value for a in resource.resource.attributes if a.key == "service.name"
                    )
                    for scope in resource.scope_spans:
                        collector.spans += [(service, span) for span in scope.spans]
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()
                self.wfile.write(trace_service_pb2.ExportTraceServiceResponse().SerializeToString())

            def log_message(self, format, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"

    def named(self, name):
        return [span for _, span in self.spans if span.name == name]


@pytest.mark.django_db(transaction=True)
def test_a_run_queued_over_the_api_continues_the_requests_trace_in_the_worker_process(spans, tmp_path, settings):
    path = tmp_path / "customers.jsonl"
    write_dataset(records(120), path)
    collector = _Collector()
    operator = client_for(user_with(*READ_PERMISSIONS, "start_ingestion"))
    with running_mocksource(path) as base_url:
        settings.INGESTION_SOURCE_URL = base_url
        response = operator.post("/api/ingest")
        assert response.status_code == 202
        finished = spans.get_finished_spans()
        (request_span,) = [span for span in finished if span.kind.name == "SERVER"]
        queued = [span for span in finished if span.parent and span.parent.span_id == request_span.context.span_id]
        assert any("procrastinate_defer" in span.attributes.get("db.statement", "") for span in queued)
        worker = worker_process(
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint, OTEL_SERVICE_NAME="worker", OTEL_BSP_SCHEDULE_DELAY="100"
        )
        try:
            assert wait_until(lambda: collector.named("ingestion.run"), timeout=60)
        finally:
            worker.terminate()
            worker.wait(15)
            collector.server.shutdown()

    run = IngestRun.objects.get()
    assert (run.status, run.inserted) == ("succeeded", 120)
    trace_id = request_span.context.trace_id
    assert run.trace_id == f"{trace_id:032x}"
    (job,) = collector.named("ingestion.job")
    assert int.from_bytes(job.trace_id) == trace_id
    assert int.from_bytes(job.parent_span_id) == request_span.context.span_id  # across the job queue
    (run_span,) = collector.named("ingestion.run")
    assert (run_span.trace_id, run_span.parent_span_id) == (job.trace_id, job.span_id)
    assert {service for service, _ in collector.spans} == {"worker"}
    pages = collector.named("ingestion.page")
    assert len(pages) == 2 and all(page.parent_span_id == run_span.span_id for page in pages)
    assert collector.named("ingestion.batch") and collector.named("ingestion.batch.merge")
    body = operator.get(f"/api/ingest/runs/{run.pk}").json()
    assert (body["trace_id"], body["trace_url"]) == (run.trace_id, None)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "headers",
    [
        {"HTTP_TRACEPARENT": "00-zzzz-not-a-trace-01", "HTTP_TRACESTATE": "x=" + "y" * 10_000},
        {
            "HTTP_TRACEPARENT": f"00-{'a' * 32}-{'b' * 16}-01",
            "HTTP_TRACESTATE": ",".join(f"k{i}=v" for i in range(500)),
        },
    ],
    ids=["malformed-parent", "oversized-state"],
)
def test_trace_headers_a_client_sends_cannot_bloat_or_break_the_queued_job(spans, headers):
    operator = client_for(user_with(*READ_PERMISSIONS, "start_ingestion"))
    response = operator.post("/api/ingest", **headers)

    assert response.status_code == 202
    carried = ProcrastinateJob.objects.get(task_name="ingestion.execute_run").args["trace_context"]
    assert set(carried) <= {"traceparent", "tracestate"}
    assert len(json.dumps(carried)) < 2_000  # W3C bounds: 32 list members at most, each checked
    (request_span,) = [span for span in spans.get_finished_spans() if span.kind.name == "SERVER"]
    assert carried["traceparent"].split("-")[1] == f"{request_span.context.trace_id:032x}"
