import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from customers import selectors
from customers.filters import ORDERINGS
from customers.models import Customer
from tests.customers.factories import build_customer, create_customer, create_customers

pytestmark = pytest.mark.django_db


def test_email_is_unique_ignoring_case():
    create_customer(email="Ada@Example.com")

    with pytest.raises(IntegrityError), transaction.atomic():
        create_customer(email="ada@example.COM")


def test_seq_is_unique():
    create_customer()

    with pytest.raises(IntegrityError), transaction.atomic():
        Customer.objects.bulk_create([build_customer(1)])


def test_default_order_is_seq():
    customers = create_customers(3)

    assert list(Customer.objects.for_listing()) == customers


def test_str_names_the_customer():
    customer = create_customer(first_name="Ada", last_name="Lovelace")

    assert str(customer) == f"Ada Lovelace ({customer.customer_id})"


def _plan(queryset) -> str:
    """The plan with sequential scans discouraged: shows whether an index can serve the query at all."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
    return queryset.explain()


@pytest.mark.parametrize(
    ("queryset", "index"),
    [
        (lambda qs: selectors.matching_name(qs, "lovelace"), "customer_last_name_trgm"),
        (lambda qs: selectors.matching_name(qs, "lovelace"), "customer_first_name_trgm"),
        (lambda qs: selectors.matching_name(qs, "a"), "customer_first_name_trgm"),
        (lambda qs: selectors.with_email(qs, "ADA@example.com"), "customer_email_ci_unique_live"),
        (lambda qs: selectors.with_email(qs, "ADA@example.com"), "customer_deleted_email_idx"),
    ],
)
def test_searches_can_use_their_index(queryset, index):
    create_customers(3)

    assert index in _plan(queryset(Customer.objects.order_by()))


@pytest.mark.parametrize(
    ("ordering", "index"),
    [
        ("seq", "customers_customer_seq_key"),
        ("-seq", "customers_customer_seq_key"),
        ("created_at", "customer_created_idx"),
        ("-created_at", "customer_created_idx"),
        ("updated_at", "customer_updated_seq_idx"),
        ("-updated_at", "customer_updated_nf_seq_idx"),
        ("last_name", "customer_last_name_idx"),
        ("-last_name", "customer_last_name_idx"),
        ("email", "customer_email_ci_unique_live"),
        ("-email", "customer_email_ci_unique_live"),
    ],
)
def test_every_api_ordering_is_one_index_scan(ordering, index):
    create_customers(3)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_sort = off")

    # The listing's default: live customers (deleted ones only on request).
    plan = _plan(Customer.objects.live().order_by(*ORDERINGS[ordering])[:100])

    assert index in plan
    assert "Sort" not in plan


def test_the_live_count_is_the_top_seq_minus_the_deleted_rows_and_reads_no_live_row():
    assert Customer.objects.live_count() == 0
    customers = create_customers(10)
    Customer.objects.filter(seq__in=[1, 5, 10]).update(deleted_at=timezone.now())

    with CaptureQueriesContext(connection) as queries:
        count = Customer.objects.live_count()

    assert count == Customer.objects.live().count() == 7 == len(customers) - 3
    # max(seq) (its unique index) and the deleted rows (their partial index): never "deleted_at IS NULL".
    assert len(queries) == 2
    assert not any('"deleted_at" IS NULL' in query["sql"] for query in queries)


def test_the_live_count_refuses_a_filtered_queryset():
    with pytest.raises(TypeError, match="counts the whole table"):
        Customer.objects.filter(first_name="Ada").live_count()
