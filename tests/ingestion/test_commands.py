"""`ingest_customers` end to end against the real mocksource served on a loopback port."""

import pytest
from django.core.management import CommandError, call_command

from customers.models import Customer
from ingestion.models import IngestFailure, IngestRun
from mocksource.dataset import generate_dataset, write_dataset
from mocksource.faults import FaultConfig
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
    from io import StringIO

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


def test_resume_option_continues_a_failed_run(tmp_path, settings):
    settings.INGESTION_MAX_RETRIES = 0
    settings.INGESTION_BATCH_SIZE = 50
    settings.INGESTION_CONCURRENCY = 1
    path = tmp_path / "customers.jsonl"
    write_dataset(records(200), path)
    with running_mocksource(path) as base_url:
        run = IngestRun.objects.create(trigger="command", source_url=base_url, page_size=50, status="failed")
        call_command("ingest_customers", "--resume", str(run.pk), "--quiet")
    run.refresh_from_db()
    assert (run.status, run.inserted, run.pages_done) == ("succeeded", 200, 4)


def test_unreachable_upstream_fails_with_a_sentence(settings):
    settings.INGESTION_MAX_RETRIES = 0
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
