"""`ingest_customers` end to end against the real mocksource served on a loopback port."""

import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from procrastinate.contrib.django.models import ProcrastinateJob

from customers.models import Customer
from ingestion import runs, tasks
from ingestion.models import IngestFailure, IngestRun
from mocksource.dataset import generate_dataset, write_dataset
from mocksource.faults import FaultConfig
from tests.ingestion.fakes import FakeUpstream
from tests.records import records
from tests.upstream import running_mocksource

pytestmark = pytest.mark.django_db

INVALID = ("malformed_email", "missing_field", "invalid_date_of_birth", "non_numeric_balance", "phone_too_long")
CONFLICTING = ("duplicate_email",)
# The same customer_id again with other content, in the same batch: the later read wins.
SUPERSEDED = ("duplicate_customer_id",)


@pytest.fixture(scope="module")
def demo_dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("upstream") / "customers.jsonl"
    return generate_dataset(path, count=2000, seed=7, invalid_ratio=0.005)


def ingest(base_url, *args):
    out = StringIO()
    call_command("ingest_customers", "--source-url", base_url, *args, stdout=out)
    return out.getvalue()


def test_demo_dataset_loads_with_exact_counters_that_add_up(demo_dataset):
    with running_mocksource(demo_dataset.path) as base_url:
        output = ingest(base_url, "--quiet")
    run = IngestRun.objects.get()
    invalid = sum(demo_dataset.invalid[kind] for kind in INVALID)
    conflicts = sum(demo_dataset.invalid[kind] for kind in CONFLICTING)
    superseded = sum(demo_dataset.invalid[kind] for kind in SUPERSEDED)
    assert run.status == "succeeded"
    assert (run.fetched, run.invalid, run.conflicts, run.duplicates) == (2000, invalid, conflicts, superseded)
    assert run.inserted == 2000 - invalid - conflicts - superseded == Customer.objects.count()
    assert run.fetched == run.inserted + run.updated + run.unchanged + run.invalid + run.conflicts + run.duplicates
    assert IngestFailure.objects.count() == invalid + conflicts + superseded
    assert set(IngestFailure.objects.values_list("reason", flat=True)) == {
        "invalid_email", "missing_field", "invalid_date", "invalid_decimal", "too_long", "email_conflict",
        "superseded",
    }  # fmt: skip
    assert output.startswith(f"Run {run.pk} succeeded in ")
    assert f"fetched 2,000 = inserted {run.inserted:,}" in output


def test_rerun_inserts_and_updates_nothing_and_moves_no_updated_at(demo_dataset):
    with running_mocksource(demo_dataset.path) as base_url:
        ingest(base_url, "--quiet")
        output = ingest(base_url, "--quiet")
    second = IngestRun.objects.order_by("-id").first()
    assert (second.inserted, second.updated) == (0, 0)
    assert second.unchanged == Customer.objects.count()
    assert not Customer.objects.filter(updated_at__isnull=False).exists()
    assert "inserted 0 + updated 0" in output


def test_changed_field_propagates_and_keeps_created_at(tmp_path):
    path = tmp_path / "customers.jsonl"
    source = records(30)
    write_dataset(source, path)
    with running_mocksource(path) as base_url:
        ingest(base_url, "--quiet")
    source[7]["last_name"] = "Married-Name"
    original_created = source[7]["created_at"]
    source[7]["created_at"] = "2031-05-05T05:05:05Z"
    write_dataset(source, path)
    with running_mocksource(path) as base_url:
        ingest(base_url, "--quiet")
    customer = Customer.objects.get(customer_id=source[7]["customer_id"])
    assert customer.last_name == "Married-Name"
    assert customer.created_at.strftime("%Y-%m-%dT%H:%M:%SZ") == original_created
    assert customer.updated_at is not None
    assert IngestRun.objects.order_by("-id").first().updated == 1


def test_upstream_500s_are_retried_and_the_run_still_completes(tmp_path, settings):
    settings.INGESTION_MAX_RETRIES = 8
    path = tmp_path / "customers.jsonl"
    write_dataset(records(300), path)
    with running_mocksource(path, faults=FaultConfig(error_rate=0.3, seed=3)) as base_url:
        ingest(base_url, "--quiet", "--page-size", "50")
    run = IngestRun.objects.get()
    assert run.status == "succeeded"
    assert run.inserted == 300
    assert run.retries > 0


def test_failed_run_exits_non_zero_with_the_summary_and_keeps_rows(tmp_path, settings):
    settings.INGESTION_MAX_RETRIES = 0
    path = tmp_path / "customers.jsonl"
    write_dataset(records(300), path)
    failing = pytest.raises(CommandError, match=r"Run \d+ failed in .* Error: Page 1: gave up")
    with running_mocksource(path, faults=FaultConfig(error_rate=1.0, seed=1)) as base_url, failing:
        ingest(base_url, "--quiet")
    assert IngestRun.objects.get().status == "failed"


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_resume_option_continues_a_failed_or_cancelled_run(tmp_path, settings, status):
    settings.INGESTION_MAX_RETRIES = 0
    settings.INGESTION_BATCH_SIZE = 50
    settings.INGESTION_CONCURRENCY = 1
    path = tmp_path / "customers.jsonl"
    write_dataset(records(200), path)
    with running_mocksource(path) as base_url:
        run = IngestRun.objects.create(trigger="command", source_url=base_url, page_size=50, status=status)
        call_command("ingest_customers", "--resume", str(run.pk), "--quiet")
    run.refresh_from_db()
    assert (run.status, run.inserted, run.pages_done) == ("succeeded", 200, 4)


def test_unreachable_upstream_fails_with_a_sentence(settings):
    settings.INGESTION_MAX_RETRIES = 0
    settings.INGESTION_ALLOWED_PORTS = [9]
    with pytest.raises(CommandError, match="connection failed"):
        ingest("http://127.0.0.1:9", "--quiet")


def test_page_size_over_100_is_a_command_error():
    with pytest.raises(CommandError, match="Page size must be between 1 and 100"):
        call_command("ingest_customers", "--page-size", "101")
    assert not IngestRun.objects.exists()


def test_a_second_run_is_refused_while_one_is_active():
    active = IngestRun.objects.create(trigger="api", source_url="http://x", page_size=10, status="running")
    with pytest.raises(CommandError, match=f"already in progress: run {active.pk} is running"):
        call_command("ingest_customers")


def test_dry_run_writes_nothing(tmp_path):
    path = tmp_path / "customers.jsonl"
    write_dataset(records(40), path)
    with running_mocksource(path) as base_url:
        output = ingest(base_url, "--dry-run", "--quiet")
    assert Customer.objects.count() == 0
    assert IngestRun.objects.get().inserted == 40
    assert "dry run: nothing written to customers" in output


def cancel(*args) -> str:
    out = StringIO()
    call_command("ingest_customers", "--cancel", *args, stdout=out)
    return out.getvalue()


def test_cancel_option_cancels_a_queued_run_and_its_job_and_says_what_it_keeps():
    run = tasks.start_in_background(trigger="api")

    output = cancel(str(run.pk))

    assert (
        output
        == f"Run {run.pk} cancelled; it keeps the 0 pages (0 records) it committed. Resume it with --resume {run.pk}.\n"
    )
    run.refresh_from_db()
    assert (run.status, run.error) == ("cancelled", "Cancelled by an operator on the command line.")
    assert ProcrastinateJob.objects.get(task_name="ingestion.execute_run").status == "cancelled"


def test_cancel_option_stops_a_running_run_keeping_its_pages():
    run = IngestRun.objects.create(
        trigger="api", source_url="http://x", page_size=100, status="running", last_committed_page=1, fetched=100
    )

    assert "it keeps the 1 page (100 records) it committed" in cancel(str(run.pk))
    assert IngestRun.objects.get(pk=run.pk).status == "cancelled"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["999999"], "Run 999999 does not exist."),
        (["0"], "Run 0 does not exist."),
        (["abc"], "Error: argument --cancel: invalid int value: 'abc'"),
        (["1", "--resume", "1"], "Error: argument --resume: not allowed with argument --cancel"),
        (["1", "--background"], "--cancel takes only the run's id; drop the other options."),
        (["1", "--page-size", "0"], "--cancel takes only the run's id; drop the other options."),
    ],
)
def test_cancel_option_refuses_bad_input_with_a_sentence(args, message):
    with pytest.raises(CommandError) as refused:
        cancel(*args)
    assert str(refused.value) == message


def test_resume_option_with_run_id_0_is_refused_not_taken_for_a_new_run():
    with pytest.raises(CommandError, match=r"^Run 0 does not exist\.$"):
        call_command("ingest_customers", "--resume", "0")
    assert not IngestRun.objects.exists()


def test_cancel_option_refuses_a_finished_run_and_leaves_it():
    run = IngestRun.objects.create(trigger="api", source_url="http://x", page_size=10, status="succeeded")

    with pytest.raises(CommandError) as refused:
        cancel(str(run.pk))

    assert str(refused.value) == f"Run {run.pk} is succeeded; only queued or running runs can be cancelled."
    assert IngestRun.objects.get(pk=run.pk).status == "succeeded"


def test_a_foreground_run_cancelled_while_it_runs_exits_non_zero_saying_so(monkeypatch, fake_upstream_host_is_allowed):
    def cancel_while_page_one_is_fetched(page):
        if page == 1:  # fetched on the command's own thread
            runs.cancel(IngestRun.objects.get().pk, by="an operator")

    fake = FakeUpstream(records(30), on_request=cancel_while_page_one_is_fetched)
    monkeypatch.setattr("ingestion.source._session_for", lambda url, addresses: fake.session())

    with pytest.raises(CommandError) as cancelled:
        ingest("http://upstream.test", "--quiet")

    run = IngestRun.objects.get()
    assert run.status == "cancelled"
    assert re.fullmatch(
        rf"Run {run.pk} was cancelled after [0-9.]+ s: fetched 0 = .*; pages 0/0; retries 0\. "
        r"Error: Cancelled by an operator\.",
        str(cancelled.value),
    )
    assert Customer.objects.count() == 0


def test_a_foreground_run_that_ends_incomplete_exits_non_zero_saying_why(monkeypatch, fake_upstream_host_is_allowed):
    fake = FakeUpstream(records(30), total=lambda page: 30 if page == 1 else 20)
    monkeypatch.setattr("ingestion.source._session_for", lambda url, addresses: fake.session())

    with pytest.raises(CommandError) as incomplete:
        ingest("http://upstream.test", "--quiet", "--page-size", "10")

    run = IngestRun.objects.get()
    assert run.status == "incomplete"
    assert str(incomplete.value).startswith(f"Run {run.pk} incomplete in ")
    assert "Error: The upstream's total changed during the walk (first page: 30, last page: 20)" in str(
        incomplete.value
    )


def test_a_source_url_on_a_port_not_allowed_is_a_command_error_naming_the_setting():
    with pytest.raises(
        CommandError, match="Port 22 is not an allowed upstream port; add it to INGESTION_ALLOWED_PORTS"
    ):
        ingest("http://127.0.0.1:22", "--quiet")
    assert not IngestRun.objects.exists()
