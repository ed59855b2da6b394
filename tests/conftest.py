import pytest
from rest_framework.test import APIClient

# The headless browser's fixtures (`browser`), for the admin's browser tests.
pytest_plugins = ["tests.browser"]


@pytest.fixture
def api_client():
    return APIClient()


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    """The monotonic clock of the in-process caches (config/cached.py), moved by hand; the caches start empty."""
    from config import cached

    fake = _Clock()
    monkeypatch.setattr("config.cached.monotonic", fake)
    cached.clear_all()
    yield fake
    cached.clear_all()


def _recorder_class():
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    class Recorder(SpanProcessor):
        """A span processor that keeps finished spans while a test records, none otherwise."""

        def __init__(self):
            self.exporter = InMemorySpanExporter()
            self.recording = False

        def on_end(self, span):
            if self.recording:
                self.exporter.export([span])

    return Recorder


_recorder = None


@pytest.fixture
def spans(request):
    """Tracing on for one test, into the SDK's in-memory exporter (config/tracing.py's set-up otherwise).

    The SDK's provider can be installed once per process, so one recorder stays on it and
    records only during the tests that ask; the instrumentations are turned off after each.
    """
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    from config import tracing

    global _recorder
    first = _recorder is None
    if first:
        _recorder = _recorder_class()()
    provider = tracing.start([_recorder] if first else [])
    # The test database's connection was opened before tracing started (a process's are opened after).
    database = None
    marker = request.node.get_closest_marker("django_db")
    if marker:
        from django.db import connection

        request.getfixturevalue("transactional_db" if marker.kwargs.get("transaction") else "db")
        connection.ensure_connection()
        database = PsycopgInstrumentor().instrument_connection(connection.connection, tracer_provider=provider)
    _recorder.exporter.clear()
    _recorder.recording = True
    try:
        yield _recorder.exporter
    finally:
        _recorder.recording = False
        tracing.uninstrument()
        if database is not None and not database.closed:
            PsycopgInstrumentor().uninstrument_connection(database)
            # uninstrument_connection leaves the flag set, and the next test's instrument_connection would skip it.
            database._is_instrumented_by_opentelemetry = False
