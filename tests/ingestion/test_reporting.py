from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from ingestion.models import IngestRun
from ingestion.reporting import progress_line, summary_line
from mocksource.dataset import write_dataset
from tests.records import records
from tests.upstream import running_mocksource


def make_run(**fields) -> IngestRun:
    started = timezone.now() - timedelta(seconds=4)
    defaults = {"trigger": "command", "source_url": "http://x", "page_size": 100, "started_at": started}
    return IngestRun(pk=7, **{**defaults, **fields})


def test_progress_line_shows_pages_records_and_rate():
    run = make_run(last_committed_page=25, pages_expected=100, fetched=2500, heartbeat_at=timezone.now())
    line = progress_line(run)
    assert line.startswith("[" + "#" * 7 + "-" * 23 + "] page 25/100  2,500 records ")
    assert line.endswith(" rec/s")


def test_progress_line_before_the_total_is_known():
    assert "page 0/?" in progress_line(make_run())


def test_summary_line_adds_up_and_names_the_error():
    run = make_run(
        status="failed", fetched=10, inserted=6, unchanged=1, invalid=2, conflicts=1, last_committed_page=1,
        pages_expected=2, retries=3, error="Page 2: gave up", finished_at=timezone.now(),
    )  # fmt: skip
    assert summary_line(run) == (
        "Run 7 failed in 4.0 s: fetched 10 = inserted 6 + updated 0 + unchanged 1 + invalid 2 + conflicts 1"
        " + duplicates 0 + suppressed 0; pages 1/2; retries 3. Error: Page 2: gave up"
    )


def test_summary_line_of_a_cancelled_run_says_it_was_cancelled_and_when():
    run = make_run(
        status="cancelled", fetched=20, inserted=20, last_committed_page=2, pages_expected=5,
        error="Cancelled by an operator.", finished_at=timezone.now(),
    )  # fmt: skip
    assert summary_line(run) == (
        "Run 7 was cancelled after 4.0 s: fetched 20 = inserted 20 + updated 0 + unchanged 0 + invalid 0"
        " + conflicts 0 + duplicates 0 + suppressed 0; pages 2/5; retries 0. Error: Cancelled by an operator."
    )
    never_started = make_run(status="cancelled", started_at=None, error="Cancelled by an operator.")
    assert summary_line(never_started).startswith("Run 7 was cancelled before it started: fetched 0 = ")


class Terminal(StringIO):
    def isatty(self):
        return True


@pytest.mark.django_db
def test_command_draws_a_progress_bar_on_a_terminal(tmp_path, settings):
    settings.INGESTION_BATCH_SIZE = 20
    path = tmp_path / "customers.jsonl"
    write_dataset(records(60), path)
    out = Terminal()
    with running_mocksource(path) as base_url:
        call_command("ingest_customers", "--source-url", base_url, "--page-size", "20", stdout=out)
    text = out.getvalue()
    assert "\r[" + "#" * 10 + "-" * 20 + "] page 1/3  20 records" in text
    assert "page 3/3  60 records" in text
    assert text.rstrip().splitlines()[-1].startswith("Run ")


@pytest.mark.django_db
def test_quiet_or_piped_output_has_no_progress_bar(tmp_path):
    path = tmp_path / "customers.jsonl"
    write_dataset(records(5), path)
    out = StringIO()
    with running_mocksource(path) as base_url:
        call_command("ingest_customers", "--source-url", base_url, stdout=out)
    assert "[" not in out.getvalue()
