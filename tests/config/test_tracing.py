"""Tracing is off unless the standard OTEL_* variables ask for it; when on, what it records and leaves out."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from django.core.exceptions import ImproperlyConfigured
from opentelemetry import trace

from config import tracing

ROOT = Path(__file__).resolve().parents[2]

PROBE = (
    "import django; django.setup(); from django.conf import settings; from opentelemetry import trace; "
    "provider = trace.get_tracer_provider(); "
    "print(type(provider).__name__, settings.MIDDLEWARE[0].rsplit('.', 1)[-1], "
    "[type(p.span_exporter).__name__ for p in getattr(provider, '_active_span_processor', None)._span_processors] "
    "if hasattr(provider, '_active_span_processor') else [])"
)


def _start(code=PROBE, **env):
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "OTEL_"))}
    environment |= {"DJANGO_SETTINGS_MODULE": "config.settings.base", "DJANGO_DEBUG": "true", **env}
    environment.setdefault("DATABASE_URL", "postgres://u@127.0.0.1:1/x")
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120
    )


def test_without_otel_variables_a_process_installs_no_sdk_and_no_middleware():
    result = _start()
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "ProxyTracerProvider"
    assert "_DjangoMiddleware" not in result.stdout


def test_an_otlp_endpoint_alone_turns_tracing_on_with_the_otlp_http_exporter():
    result = _start(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["TracerProvider", "_DjangoMiddleware", "['OTLPSpanExporter']"]


def test_the_exporter_is_chosen_by_name_without_a_code_change():
    result = _start(OTEL_TRACES_EXPORTER="console")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "['ConsoleSpanExporter']"


def test_sdk_disabled_wins_over_an_exporter():
    result = _start(OTEL_TRACES_EXPORTER="otlp", OTEL_SDK_DISABLED="true")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "ProxyTracerProvider"


def test_an_exporter_that_is_not_installed_stops_the_start_with_a_sentence():
    result = _start(OTEL_TRACES_EXPORTER="zipkin")
    assert result.returncode != 0
    assert "OTEL_TRACES_EXPORTER names 'zipkin' (zipkin), which is not installed; installed: " in result.stderr
    assert "console, otlp, otlp_proto_http" in result.stderr


def test_otlp_over_grpc_names_the_package_it_needs():
    with pytest.raises(ImproperlyConfigured, match="opentelemetry-exporter-otlp-proto-grpc"):
        tracing.exporter_classes(["otlp"], "grpc")
    with pytest.raises(ImproperlyConfigured, match="must be http/protobuf or grpc, not 'http/json'"):
        tracing.exporter_classes(["otlp"], "http/json")


@pytest.mark.parametrize("template", ["http://viewer/trace/", "javascript:alert({trace_id})"])
def test_a_trace_url_template_must_be_an_http_address_with_the_trace_id(template):
    result = _start(OTEL_TRACES_URL_TEMPLATE=template)
    assert result.returncode != 0
    assert "OTEL_TRACES_URL_TEMPLATE must be an http(s) address with {trace_id} in it" in result.stderr


def test_none_beside_another_exporter_is_refused():
    result = _start(OTEL_TRACES_EXPORTER="none,console")
    assert result.returncode != 0
    assert "OTEL_TRACES_EXPORTER lists 'none' beside other exporters" in result.stderr


def test_calls_made_outside_any_operation_are_not_recorded_but_inside_one_they_are(spans):
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("heartbeat", kind=trace.SpanKind.CLIENT):
        pass  # a root CLIENT span: a call of no operation's (the heartbeat thread, the job poller)
    with tracer.start_as_current_span("operation"), tracer.start_as_current_span("call", kind=trace.SpanKind.CLIENT):
        pass
    assert sorted(span.name for span in spans.get_finished_spans()) == ["call", "operation"]


def test_the_trace_context_crosses_into_another_process_through_its_carrier(spans):
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("request") as request:
        headers = tracing.carrier()
    assert headers["traceparent"].startswith(f"00-{request.context.trace_id:032x}-{request.context.span_id:016x}-")
    assert tracing.carrier() == {}  # outside any span there is nothing to carry

    with tracing.continued(headers), tracer.start_as_current_span("job") as job:
        pass
    assert (job.context.trace_id, job.parent.span_id) == (request.context.trace_id, request.context.span_id)
    with tracing.continued(None), tracer.start_as_current_span("alone") as alone:
        pass
    assert alone.parent is None


def test_a_json_log_line_names_the_active_span_and_none_outside_one(spans, log):
    logger, lines = log

    logger.warning("outside")
    with trace.get_tracer("tests").start_as_current_span("operation") as span:
        logger.warning("inside")

    outside, inside = lines()
    assert "trace_id" not in outside and "span_id" not in outside
    assert (inside["trace_id"], inside["span_id"]) == (f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}")


@pytest.mark.django_db
def test_requests_to_health_and_metrics_are_not_traced_and_api_requests_are(spans, api_client):
    api_client.get("/api/health")
    api_client.get("/api/ready")
    api_client.get("/metrics")
    api_client.get("/api/customers?search=/metrics")
    servers = [span for span in spans.get_finished_spans() if span.kind == trace.SpanKind.SERVER]
    assert [span.attributes["http.route"] for span in servers] == ["api/customers$"]  # the router's pattern


@pytest.mark.django_db
def test_a_request_with_a_host_we_do_not_serve_is_still_a_400_when_traced(spans, client):
    response = client.get("/api/customers", HTTP_HOST="evil.example")
    assert response.status_code == 400


def test_outgoing_requests_carry_the_trace_to_the_upstream(spans, monkeypatch):
    sent = {}

    def fake_send(adapter, request, **kwargs):
        sent.update(request.headers)
        response = requests.Response()
        response.status_code, response.request = 204, request
        return response

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", fake_send)
    with trace.get_tracer("tests").start_as_current_span("page") as page:
        requests.get("http://upstream.test/api/customers")
    (attempt,) = [span for span in spans.get_finished_spans() if span.kind == trace.SpanKind.CLIENT]
    assert attempt.parent.span_id == page.context.span_id
    assert sent["traceparent"].split("-")[1] == f"{page.context.trace_id:032x}"


def _decision(chosen, *, kind=trace.SpanKind.INTERNAL, parent=None):
    context = None if parent is None else trace.set_span_in_context(trace.NonRecordingSpan(parent))
    return chosen.should_sample(context, 0x1234, "operation", kind).decision.is_sampled()


@pytest.mark.parametrize(
    ("name", "ratio", "sampled"),
    [("always_on", 1.0, True), ("always_off", 1.0, False), ("traceidratio", 0.0, False), ("traceidratio", 1.0, True)],
)
def test_the_sampler_chooses_operations_as_otel_traces_sampler_says_and_never_an_orphan_call(name, ratio, sampled):
    chosen = tracing.sampler(name, ratio)
    assert _decision(chosen) is sampled
    assert _decision(chosen, kind=trace.SpanKind.CLIENT) is False
    # A job whose request was traced is traced, whatever this process samples on its own.
    parent = trace.SpanContext(0x1234, 0x99, is_remote=True, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))
    assert _decision(chosen, parent=parent) is True
    unsampled = trace.SpanContext(0x1234, 0x99, is_remote=True, trace_flags=trace.TraceFlags(0))
    assert _decision(chosen, parent=unsampled) is False


def test_an_otel_sampler_we_do_not_offer_or_a_ratio_past_one_stops_the_start_with_a_sentence():
    unknown = _start(OTEL_TRACES_EXPORTER="console", OTEL_TRACES_SAMPLER="jaeger_remote")
    assert unknown.returncode != 0
    assert "OTEL_TRACES_SAMPLER must be always_on, always_off or traceidratio" in unknown.stderr
    past_one = _start(OTEL_TRACES_EXPORTER="console", OTEL_TRACES_SAMPLER="traceidratio", OTEL_TRACES_SAMPLER_ARG="2")
    assert past_one.returncode != 0
    assert "OTEL_TRACES_SAMPLER_ARG must be between 0 and 1, not 2.0." in past_one.stderr
    described = PROBE.split("provider = ")[0] + "print(trace.get_tracer_provider().sampler.get_description())"
    ratio = _start(
        described,
        OTEL_TRACES_EXPORTER="console",
        OTEL_TRACES_SAMPLER="parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG="0.25",
    )
    assert ratio.returncode == 0, ratio.stderr
    assert "OperationsOnly{TraceIdRatioBased{0.25}}" in ratio.stdout
