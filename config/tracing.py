"""Tracing with OpenTelemetry: off unless the standard OTEL_* variables ask for it.

At start-up (config/apps.py) `configure` installs the SDK with the exporters that
settings.TRACING_EXPORTERS names, looked up by name among the exporters installed (the SDK's
`opentelemetry_traces_exporter` entry points: `otlp`, `console`, any other installed), and the
contrib instrumentations of Django (a span per request), psycopg (a span per SQL statement)
and requests (a span per HTTP attempt). The pipeline's own spans (`ingestion.run`, `.page`,
`.batch` and its steps) use the API only, which does nothing while tracing is off.

Trace context crosses into a background job as a W3C `traceparent` carried in the job's
arguments (`carrier`, then `continued` in the worker), so one trace runs from the request
that queued a run to the batches the worker commits.
"""

import contextlib
from collections.abc import Iterator, Sequence
from importlib.metadata import entry_points

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased

EXPORTERS = "opentelemetry_traces_exporter"
# "otlp" is the exporter of the protocol asked for; only HTTP's is a dependency of ours.
_OTLP_BY_PROTOCOL = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}

_provider: TracerProvider | None = None


class OperationsOnly(Sampler):
    """Samples the roots of operations (a request, a run, a job) with `operations`; never a root of kind CLIENT.

    A root span of kind CLIENT is a call made outside any operation: the run's heartbeat
    thread, the worker polling for jobs. They would be thousands of one-span traces an hour.
    """

    def __init__(self, operations: Sampler = ALWAYS_ON):
        self.operations = operations

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None, trace_state=None):
        sampler = ALWAYS_OFF if kind == trace.SpanKind.CLIENT else self.operations
        return sampler.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"OperationsOnly{{{self.operations.get_description()}}}"


def sampler(name: str, ratio: float) -> Sampler:
    """OTEL_TRACES_SAMPLER's choice for the roots of operations; every child follows its parent's decision."""
    operations = {"always_on": ALWAYS_ON, "always_off": ALWAYS_OFF}.get(name) or TraceIdRatioBased(ratio)
    return ParentBased(root=OperationsOnly(operations))


def configure() -> None:
    """Trace this process when settings.TRACING_EXPORTERS names exporters; otherwise do nothing."""
    if settings.TRACING_EXPORTERS:
        exporters = exporter_classes(settings.TRACING_EXPORTERS, settings.TRACING_OTLP_PROTOCOL)
        start([BatchSpanProcessor(exporter()) for exporter in exporters])


def exporter_classes(names: Sequence[str], protocol: str) -> list[type]:
    """The installed exporter classes `names` (OTEL_TRACES_EXPORTER) stand for; a sentence if one is missing."""
    installed = {point.name: point for point in entry_points(group=EXPORTERS)}
    classes = []
    for name in names:
        key = _OTLP_BY_PROTOCOL.get(protocol) if name == "otlp" else name
        if key is None:
            raise ImproperlyConfigured(f"OTEL_EXPORTER_OTLP_PROTOCOL must be http/protobuf or grpc, not {protocol!r}.")
        if key not in installed:
            known = ", ".join(sorted({"otlp", *installed}))
            raise ImproperlyConfigured(
                f"OTEL_TRACES_EXPORTER names {name!r} ({key}), which is not installed; installed: {known}. "
                "An exporter is a package of its own (OTLP over gRPC: opentelemetry-exporter-otlp-proto-grpc)."
            )
        classes.append(installed[key].load())
    return classes


def start(processors: Sequence[SpanProcessor]) -> TracerProvider:
    """Install the SDK with `processors` and instrument Django, psycopg and requests; once per process.

    Called again (a test adding its in-memory exporter), it adds `processors` to the provider already there.
    """
    global _provider
    if _provider is None:
        resource = Resource.create({SERVICE_NAME: settings.TRACING_SERVICE_NAME})
        chosen = sampler(settings.TRACING_SAMPLER, settings.TRACING_SAMPLER_RATIO)
        _provider = TracerProvider(sampler=chosen, resource=resource)
        trace.set_tracer_provider(_provider)
    for processor in processors:
        _provider.add_span_processor(processor)
    instrument(_provider)
    return _provider


def instrument(provider: TracerProvider) -> None:
    """Turn on the contrib instrumentations (each does nothing if it is on already)."""
    # Imported here: a process that does not trace never loads them.
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    # Django's middleware is read when the first request handler is built; this runs before (apps' ready()).
    DjangoInstrumentor().instrument(tracer_provider=provider, excluded_urls=settings.TRACING_EXCLUDED_URLS)
    PsycopgInstrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
    RequestsInstrumentor().instrument(tracer_provider=provider)


def uninstrument() -> None:
    """Turn the instrumentations off again (tests); spans of our own keep going to the provider."""
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    for instrumentor in (DjangoInstrumentor(), PsycopgInstrumentor(), RequestsInstrumentor()):
        instrumentor.uninstrument()


def carrier() -> dict[str, str]:
    """The current trace context as W3C headers (`traceparent`, `tracestate`): empty when no span is recording."""
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


@contextlib.contextmanager
def continued(headers: dict[str, str] | None) -> Iterator[None]:
    """Make the context in `headers` (from `carrier`, in another process) the parent of the spans started inside."""
    if not headers:
        yield
        return
    token = context.attach(propagate.extract(headers))
    try:
        yield
    finally:
        context.detach(token)


def current_ids() -> tuple[str, str] | None:
    """The active span's trace and span ids in hexadecimal, or None outside a recorded span."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return trace.format_trace_id(span_context.trace_id), trace.format_span_id(span_context.span_id)


def trace_url(trace_id: str) -> str | None:
    """Where the trace can be opened (OTEL_TRACES_URL_TEMPLATE), or None when not set or no trace."""
    if not trace_id or not settings.TRACING_URL_TEMPLATE:
        return None
    return settings.TRACING_URL_TEMPLATE.replace("{trace_id}", trace_id)
