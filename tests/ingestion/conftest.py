import pytest

from ingestion import pipeline, runs
from ingestion.models import IngestRun


@pytest.fixture(autouse=True)
def _empty_task_queue(request):
    """Procrastinate's tables are not Django-managed, so a transactional test's flush keeps
    their rows; a job left "doing" by a killed worker would hold the ingestion lock."""
    yield
    marker = request.node.get_closest_marker("django_db")
    if marker and marker.kwargs.get("transaction"):
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_periodic_defers,"
                " procrastinate_workers CASCADE"
            )


@pytest.fixture(autouse=True)
def fake_upstream_host_is_allowed(settings):
    """`http://upstream.test` is the fake transport's host; it never reaches a network."""
    settings.INGESTION_ALLOWED_HOSTS = ["upstream.test"]


@pytest.fixture
def ingest():
    """Run one ingestion against a fake upstream transport; return the finished run."""

    def run_once(fake, **options) -> IngestRun:
        run = runs.create_run(trigger=options.pop("trigger", "command"), source_url="http://upstream.test", **options)
        return pipeline.execute_run(run.pk, session=fake.session())

    return run_once
