import pytest

from ingestion import pipeline, runs
from ingestion.models import IngestRun


@pytest.fixture
def ingest():
    """Run one ingestion against a fake upstream transport; return the finished run."""

    def run_once(fake, **options) -> IngestRun:
        run = runs.create_run(trigger=options.pop("trigger", "command"), source_url="http://upstream.test", **options)
        return pipeline.execute_run(run.pk, session=fake.session())

    return run_once


def counters(run: IngestRun) -> dict[str, int]:
    return {name: getattr(run, name) for name in IngestRun.COUNTERS}
