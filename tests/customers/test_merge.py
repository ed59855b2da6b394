"""customers/merge.py on staged rows: what is inserted, updated or left alone, and the write lock."""

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from customers.merge import CHANGEABLE, WRITE_LOCK_KEY, MergeCounts, lock_writers, merge_staged
from customers.models import Customer
from ingestion.models import IngestRun, RunStatus, StagedCustomer
from ingestion.staging import StagedRow, stage_rows
from ingestion.validation import ValidRecord, validate_record
from tests.customers.factories import create_customers
from tests.database import side_connection_kwargs
from tests.records import record, records

LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)
# A new value for each changeable field, different from what tests.records gives.
NEW_VALUES = {
    "first_name": "Renamed",
    "last_name": "Married-Name",
    "email": "moved@example.com",
    "phone": "+44 20 7946 0000",
    "address": "1 New Road\nElsewhere",
    "date_of_birth": "1999-09-09",
    "account_balance": Decimal("-1.23"),
}
NULLABLE = ("phone", "address", "date_of_birth", "account_balance")


def new_run() -> IngestRun:
    # Finished runs: any number may exist at once, and the merge does not look at the status.
    return IngestRun.objects.create(
        status=RunStatus.SUCCEEDED, trigger="command", source_url="http://upstream.test", page_size=100
    )


def stage(run: IngestRun, raws: list[dict], *, positions: list[int] | None = None) -> None:
    """Validate `raws` and COPY them into staging for `run`, at `positions` (default 1, 2, ...)."""
    positions = positions or list(range(1, len(raws) + 1))
    rows = []
    for position, raw in zip(positions, raws, strict=True):
        valid = validate_record(raw)
        assert isinstance(valid, ValidRecord), valid
        rows.append(StagedRow(page=1, position=position, record=valid))
    with connection.cursor() as cursor:
        stage_rows(cursor, run_id=run.pk, rows=rows, staged_at=timezone.now())


def merge(run: IngestRun, first: int = 1, last: int = 1_000, *, dry_run: bool = False) -> MergeCounts:
    with transaction.atomic(), connection.cursor() as cursor:
        return merge_staged(
            cursor, staged_table=StagedCustomer._meta.db_table, run_id=run.pk, first=first, last=last, dry_run=dry_run
        )


def load(raws: list[dict]) -> IngestRun:
    """Stage and merge `raws` in a run of their own (the customers exist afterwards)."""
    run = new_run()
    stage(run, raws)
    merge(run)
    return run


def versions() -> dict[uuid.UUID, tuple[str, str]]:
    """Each customer's row version: (xmin, ctid) change whenever the row is written, even to the same values."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT customer_id, xmin::text, ctid::text FROM customers_customer")
        return {customer_id: (xmin, ctid) for customer_id, xmin, ctid in cursor.fetchall()}


def customer(raw: dict) -> Customer:
    return Customer.objects.get(customer_id=raw["customer_id"])


@pytest.mark.django_db
def test_new_rows_get_seq_after_the_current_max_in_position_order():
    create_customers(3)  # seq 1..3
    run = new_run()
    # Staged out of position order: the numbering follows positions, not the order rows arrived in.
    stage(run, [record(10), record(11), record(12)], positions=[3, 1, 2])

    counts = merge(run)

    assert counts == MergeCounts(inserted=3, updated=0, unchanged=0)
    assert [customer(raw).seq for raw in (record(11), record(12), record(10))] == [4, 5, 6]
    assert list(Customer.objects.order_by("seq").values_list("seq", flat=True)) == [1, 2, 3, 4, 5, 6]


@pytest.mark.django_db
def test_new_rows_carry_the_source_fields_no_updated_at_and_an_ingested_at():
    raw = record(7, address="7 Main Street\nSpringfield")

    load([raw])

    row = customer(raw)
    assert (row.first_name, row.last_name, row.email, row.phone) == (
        raw["first_name"], raw["last_name"], raw["email"], raw["phone"],
    )  # fmt: skip
    assert row.address == "7 Main Street\nSpringfield"
    assert row.date_of_birth.isoformat() == raw["date_of_birth"]
    assert row.account_balance == raw["account_balance"]
    assert row.created_at == datetime.fromisoformat(raw["created_at"])
    assert row.updated_at is None
    assert row.ingested_at is not None and row.ingested_at <= timezone.now()


@pytest.mark.django_db
@pytest.mark.parametrize("field", CHANGEABLE)
def test_a_change_in_any_changeable_field_updates_the_row_and_keeps_created_at(field):
    original = record(1)
    load([original])
    Customer.objects.update(updated_at=LONG_AGO)
    first_seen = customer(original)
    run = new_run()
    stage(run, [record(1, **{field: NEW_VALUES[field]}, created_at="2030-01-01T00:00:00Z")])

    counts = merge(run)

    assert counts == MergeCounts(inserted=0, updated=1, unchanged=0)
    row = customer(original)
    assert str(getattr(row, field)) == str(NEW_VALUES[field])
    assert row.updated_at > LONG_AGO
    assert row.created_at == first_seen.created_at  # kept as first seen, though the upstream's changed
    assert (row.seq, row.ingested_at) == (first_seen.seq, first_seen.ingested_at)


@pytest.mark.django_db
def test_only_the_changed_row_is_rewritten():
    source = records(5)
    load(source)
    Customer.objects.update(updated_at=LONG_AGO)
    before = versions()
    run = new_run()
    stage(run, [*source[:2], record(2, last_name="Married-Name"), *source[3:]])

    counts = merge(run)

    assert counts == MergeCounts(inserted=0, updated=1, unchanged=4)
    after = versions()
    changed = uuid.UUID(source[2]["customer_id"])
    assert after[changed] != before[changed]
    assert {k: v for k, v in after.items() if k != changed} == {k: v for k, v in before.items() if k != changed}
    assert list(Customer.objects.filter(updated_at__gt=LONG_AGO).values_list("customer_id", flat=True)) == [changed]


@pytest.mark.django_db
def test_an_identical_row_is_unchanged_and_not_written_at_all():
    source = records(3)
    load(source)
    before = versions()
    run = new_run()
    # A new created_at alone is no change: created_at is kept as first seen, never compared.
    stage(run, [source[0], source[1], record(2, created_at="2030-01-01T00:00:00Z")])

    counts = merge(run)

    assert counts == MergeCounts(inserted=0, updated=0, unchanged=3)
    assert versions() == before
    assert not Customer.objects.filter(updated_at__isnull=False).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("field", NULLABLE)
def test_a_value_becoming_null_is_a_change(field):
    load([record(1)])
    run = new_run()
    stage(run, [record(1, **{field: None})])

    assert merge(run) == MergeCounts(inserted=0, updated=1, unchanged=0)
    assert getattr(customer(record(1)), field) is None


@pytest.mark.django_db
@pytest.mark.parametrize("field", NULLABLE)
def test_null_becoming_a_value_is_a_change(field):
    load([record(1, **{field: None})])
    run = new_run()
    stage(run, [record(1)])

    assert merge(run) == MergeCounts(inserted=0, updated=1, unchanged=0)
    assert getattr(customer(record(1)), field) is not None


@pytest.mark.django_db
@pytest.mark.parametrize("field", NULLABLE)
def test_null_staying_null_is_unchanged(field):
    load([record(1, **{field: None})])
    before = versions()
    run = new_run()
    stage(run, [record(1, **{field: None})])

    assert merge(run) == MergeCounts(inserted=0, updated=0, unchanged=1)
    assert versions() == before


@pytest.mark.django_db
def test_rows_the_caller_refused_are_skipped():
    load([record(1)])
    run = new_run()
    stage(run, [record(1, first_name="Refused"), record(2), record(3)])
    StagedCustomer.objects.filter(run=run, position__in=[1, 2]).update(outcome="duplicate")

    counts = merge(run)

    assert counts == MergeCounts(inserted=1, updated=0, unchanged=0)
    assert customer(record(1)).first_name == "First1"
    assert not Customer.objects.filter(customer_id=record(2)["customer_id"]).exists()
    assert customer(record(3)).seq == 2


@pytest.mark.django_db
def test_only_the_runs_rows_in_the_position_range_are_merged():
    load([record(1), record(5)])
    run, other = new_run(), new_run()
    stage(run, [record(1, first_name="Before"), record(2), record(3), record(4), record(5, first_name="After")])
    stage(other, [record(3), record(20), record(21)], positions=[2, 3, 4])

    counts = merge(run, first=2, last=4)

    assert counts == MergeCounts(inserted=3, updated=0, unchanged=0)
    assert set(Customer.objects.values_list("customer_id", flat=True)) == {
        uuid.UUID(raw["customer_id"]) for raw in (record(1), record(2), record(3), record(4), record(5))
    }
    assert (customer(record(1)).first_name, customer(record(5)).first_name) == ("First1", "First5")


@pytest.mark.django_db
def test_an_empty_range_merges_nothing():
    run = new_run()
    stage(run, records(3))

    assert merge(run, first=4, last=10) == MergeCounts(inserted=0, updated=0, unchanged=0)
    assert not Customer.objects.exists()


@pytest.mark.django_db
def test_dry_run_writes_nothing_and_counts_what_the_merge_then_does():
    source = records(4)
    load(source)
    Customer.objects.filter(customer_id=source[3]["customer_id"]).update(phone=None)
    before = versions()
    run = new_run()
    # Unchanged, changed, NULL to a value, new, new.
    stage(run, [source[0], record(1, email="moved@example.com"), source[3], record(10), record(11)])

    dry = merge(run, dry_run=True)

    assert dry == MergeCounts(inserted=2, updated=2, unchanged=1)
    assert versions() == before
    assert not Customer.objects.filter(updated_at__isnull=False).exists()
    assert merge(run) == dry
    assert Customer.objects.count() == 6


class CallerFailed(Exception):
    pass


@pytest.mark.django_db
def test_a_rolled_back_merge_leaves_no_gap_in_seq():
    create_customers(2)
    refused = new_run()
    stage(refused, records(3, start=10))
    with pytest.raises(CallerFailed), transaction.atomic():
        assert merge(refused).inserted == 3
        raise CallerFailed  # the caller's transaction fails after the merge: the merge goes with it
    assert Customer.objects.count() == 2
    run = new_run()
    stage(run, records(3, start=20))

    merge(run)

    assert list(Customer.objects.order_by("seq").values_list("seq", flat=True)) == [1, 2, 3, 4, 5]
    assert customer(record(20)).seq == 3


def _swap_emails(raws: list[dict]) -> list[dict]:
    """Each record takes the next one's email, the last the first's: a rotation (a swap for two)."""
    return [dict(raw, email=raws[(index + 1) % len(raws)]["email"]) for index, raw in enumerate(raws)]


def _name_givers(run: IngestRun, raws: list[dict]) -> None:
    """Do what the caller (ingestion.classification) does: name on each taking row who gives the email up."""
    owners = {raw["email"]: raw["customer_id"] for raw in records(len(raws) + 1)}
    for raw in raws:
        StagedCustomer.objects.filter(run=run, customer_id=raw["customer_id"]).update(
            conflicting_customer_id=owners.get(raw["email"])
        )


def _emails() -> dict[uuid.UUID, str]:
    return dict(Customer.objects.values_list("customer_id", "email"))


@pytest.mark.django_db
@pytest.mark.parametrize("size", [2, 3, 7])
def test_emails_changing_hands_within_the_batch_are_applied_by_one_merge(size):
    load(records(size + 1))
    run = new_run()
    rotated = _swap_emails(records(size))
    stage(run, [*rotated, record(size)])
    _name_givers(run, rotated)

    assert merge(run) == MergeCounts(inserted=0, updated=size, unchanged=1)
    assert _emails() == {uuid.UUID(raw["customer_id"]): raw["email"] for raw in [*rotated, record(size)]}


@pytest.mark.django_db
def test_an_email_whose_owner_keeps_it_fails_the_merge_rather_than_moving_it():
    # The caller must refuse such a row (ingestion.classification does): the merge frees only
    # emails their owner's own row in the batch gives up, never one the batch does not touch,
    # even when the row names the owner.
    load(records(2))
    run = new_run()
    stage(run, [record(0, email="customer1@example.com")])
    _name_givers(run, [record(0, email="customer1@example.com")])

    with pytest.raises(IntegrityError, match="customer_email_ci_unique"), transaction.atomic():
        merge(run)
    assert _emails() == {uuid.UUID(raw["customer_id"]): raw["email"] for raw in records(2)}


@pytest.mark.django_db(transaction=True)
def test_readers_never_see_an_email_in_between_while_a_swap_commits():
    load(records(2))
    run = new_run()
    stage(run, _swap_emails(records(2)))
    _name_givers(run, _swap_emails(records(2)))
    seen = []

    def read_after_each_statement(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        with psycopg.connect(**side_connection_kwargs(), autocommit=True) as side:
            seen.append(sorted(email for (email,) in side.execute("SELECT email FROM customers_customer")))
        return result

    with connection.execute_wrapper(read_after_each_statement):
        merge(run)

    assert seen and all(emails == ["customer0@example.com", "customer1@example.com"] for emails in seen)
    assert _emails() == {uuid.UUID(raw["customer_id"]): raw["email"] for raw in _swap_emails(records(2))}


def _side_connection_gets_the_write_lock() -> bool:
    with psycopg.connect(**side_connection_kwargs(), autocommit=True) as side:
        return side.execute("SELECT pg_try_advisory_xact_lock(%s)", [WRITE_LOCK_KEY]).fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_lock_writers_holds_the_write_lock_until_the_transaction_ends():
    with transaction.atomic(), connection.cursor() as cursor:
        lock_writers(cursor)
        assert not _side_connection_gets_the_write_lock()

    assert _side_connection_gets_the_write_lock()


@pytest.mark.django_db(transaction=True)
def test_merge_takes_the_write_lock_itself():
    run = new_run()
    stage(run, records(2))

    with transaction.atomic(), connection.cursor() as cursor:
        merge_staged(cursor, staged_table=StagedCustomer._meta.db_table, run_id=run.pk, first=1, last=2)
        assert not _side_connection_gets_the_write_lock()

    assert _side_connection_gets_the_write_lock()


def test_changeable_fields_are_the_source_fields_but_the_key_and_created_at():
    assert CHANGEABLE == (
        "first_name", "last_name", "email", "phone", "address", "date_of_birth", "account_balance",
    )  # fmt: skip
    assert set(CHANGEABLE) == set(Customer.SOURCE_FIELDS) - {"customer_id", "created_at"}
