"""api/pagination.py on querysets of its own: the page/limit contract and the seq-range shortcut."""

import pytest
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from api.pagination import DenseKeyPagination, PageLimitPagination
from customers.models import DELETED, LIVE, Customer
from tests.customers.factories import create_customers


def _request(**params) -> Request:
    return Request(APIRequestFactory().get("/things", params))


def _paginate(queryset, **params):
    paginator = PageLimitPagination()
    rows = paginator.paginate_queryset(queryset, _request(**params))
    return paginator.get_paginated_response([row.name for row in rows]).data


@pytest.mark.django_db
def test_reusable_on_any_ordered_queryset():
    Group.objects.bulk_create(Group(name=f"group-{n:02}") for n in range(1, 26))

    body = _paginate(Group.objects.order_by("name"), page="3", limit="10")

    assert body == {"data": [f"group-{n}" for n in range(21, 26)], "total": 25, "page": 3, "limit": 10}


@pytest.mark.django_db
def test_reusable_paginator_rejects_bad_values_by_name():
    with pytest.raises(ValidationError) as raised:
        _paginate(Group.objects.order_by("name"), page="x", limit="200")

    assert set(raised.value.detail) == {"page", "limit"}


def test_schema_describes_the_envelope_and_bounds():
    paginator = PageLimitPagination()

    schema = paginator.get_paginated_response_schema({"type": "array"})
    parameters = {p["name"]: p["schema"] for p in paginator.get_schema_operation_parameters(view=None)}

    assert schema["required"] == ["data", "total", "page", "limit"]
    assert schema["properties"]["data"] == {"type": "array"}
    assert parameters == {
        "page": {"type": "integer", "minimum": 1, "default": 1},
        "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
    }


@given(value=st.text(max_size=8) | st.integers(min_value=-5, max_value=205).map(str))
def test_limit_is_accepted_exactly_when_it_is_a_plain_integer_from_1_to_100(value):
    try:
        page, limit = PageLimitPagination().get_page_and_limit(_request(limit=value))
    except ValidationError as error:
        assert list(error.detail) == ["limit"]
        assert not (value.isascii() and value.isdigit() and 1 <= int(value) <= 100)
    else:
        assert (page, limit) == (1, int(value))
        assert value.isascii() and value.isdigit()


# --- DenseKeyPagination: it asks the queryset, and only a whole table ordered by seq is a seq range.

SEQ_RANGE = {
    "seq": lambda: Customer.objects.order_by("seq"),
    "-seq": lambda: Customer.objects.order_by("-seq"),
    "F(seq).asc()": lambda: Customer.objects.order_by(F("seq").asc()),
    "F(seq).desc()": lambda: Customer.objects.order_by(F("seq").desc()),
    "Meta.ordering": lambda: Customer.objects.all(),
}
# Whole table, other order: max(seq) is still the total, but a page needs OFFSET.
WHOLE_TABLE_OFFSET = {
    "email": lambda: Customer.objects.order_by("email"),
    "F(email).desc()": lambda: Customer.objects.order_by(F("email").desc()),
    "seq, email": lambda: Customer.objects.order_by("seq", "email"),
}
# Narrowed, even by a filter every row passes, or combined: a count and OFFSET.
NARROWED = {
    "filtered by seq": lambda: Customer.objects.filter(seq__gte=1).order_by("seq"),
    "filtered, -seq": lambda: Customer.objects.filter(email__endswith="@example.com").order_by("-seq"),
    # The combined query keeps the first part's WHERE; this first part has none.
    "union": lambda: Customer.objects.all().union(Customer.objects.filter(seq__gte=21)).order_by("seq"),
}


def _dense_page(queryset, django_assert_num_queries, *, page=2, limit=10) -> tuple[list[int], str, str]:
    """Page `page` of `queryset` through DenseKeyPagination: its seqs, and the SQL of the total and of the rows."""
    paginator = DenseKeyPagination()
    with django_assert_num_queries(2) as captured:
        rows = paginator.paginate_queryset(queryset, _request(page=str(page), limit=str(limit)))
    assert paginator.total == 53
    total_sql, rows_sql = (query["sql"] for query in captured.captured_queries)
    return [row.seq for row in rows], total_sql, rows_sql


@pytest.mark.django_db
@pytest.mark.parametrize("make_queryset", SEQ_RANGE.values(), ids=SEQ_RANGE.keys())
def test_dense_key_pages_a_whole_table_ordered_by_seq_by_seq_range(make_queryset, django_assert_num_queries):
    create_customers(53)
    expected = [customer.seq for customer in make_queryset()][10:20]

    seqs, total_sql, rows_sql = _dense_page(make_queryset(), django_assert_num_queries)

    assert seqs == expected
    assert 'MAX("customers_customer"."seq")' in total_sql
    assert "COUNT(" not in total_sql
    assert '"customers_customer"."seq" > ' in rows_sql
    assert "OFFSET" not in rows_sql


@pytest.mark.django_db
@pytest.mark.parametrize("make_queryset", WHOLE_TABLE_OFFSET.values(), ids=WHOLE_TABLE_OFFSET.keys())
def test_dense_key_counts_a_whole_table_by_max_seq_but_pages_another_order_by_offset(
    make_queryset, django_assert_num_queries
):
    create_customers(53)
    expected = [customer.seq for customer in make_queryset()][10:20]

    seqs, total_sql, rows_sql = _dense_page(make_queryset(), django_assert_num_queries)

    assert seqs == expected
    assert 'MAX("customers_customer"."seq")' in total_sql
    assert "OFFSET 10" in rows_sql
    assert '"customers_customer"."seq" > ' not in rows_sql


@pytest.mark.django_db
@pytest.mark.parametrize("make_queryset", NARROWED.values(), ids=NARROWED.keys())
def test_dense_key_counts_and_offsets_a_narrowed_queryset(make_queryset, django_assert_num_queries):
    create_customers(53)
    expected = [customer.seq for customer in make_queryset()][10:20]

    seqs, total_sql, rows_sql = _dense_page(make_queryset(), django_assert_num_queries)

    assert seqs == expected
    assert "COUNT(*)" in total_sql
    assert "MAX(" not in total_sql
    assert "OFFSET 10" in rows_sql
    assert '"customers_customer"."seq" > ' not in rows_sql


@pytest.mark.django_db
@pytest.mark.parametrize("make_queryset", SEQ_RANGE.values(), ids=SEQ_RANGE.keys())
def test_dense_key_last_partial_page_and_past_the_end(make_queryset, django_assert_num_queries):
    create_customers(53)
    everything = [customer.seq for customer in make_queryset()]

    last, _, _ = _dense_page(make_queryset(), django_assert_num_queries, page=6)
    paginator = DenseKeyPagination()
    past = paginator.paginate_queryset(make_queryset(), _request(page="7", limit="10"))

    assert last == everything[50:]
    assert (past, paginator.total) == ([], 53)


# --- DenseKeyPagination with holes: a listing that leaves rows out (soft-deleted customers).


class LivePagination(DenseKeyPagination):
    listed = LIVE
    holes = DELETED


@pytest.mark.django_db
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    size=st.integers(min_value=0, max_value=30),
    data=st.data(),
    limit=st.integers(min_value=1, max_value=12),
    descending=st.booleans(),
)
def test_a_listing_with_holes_pages_exactly_like_offset_wherever_the_holes_are(size, data, limit, descending):
    with transaction.atomic():
        create_customers(size)
        holes = data.draw(st.sets(st.integers(min_value=1, max_value=max(size, 1))), label="holes")
        Customer.objects.filter(seq__in=holes).update(deleted_at=timezone.now())
        expected = [customer.seq for customer in _live(descending)]
        page = data.draw(st.integers(min_value=1, max_value=len(expected) // limit + 2), label="page")
        paginator = LivePagination()

        # A wrapper, not CaptureQueriesContext: the examples fill Django's capped query log.
        sent = []
        with connection.execute_wrapper(lambda execute, sql, *args: sent.append(sql) or execute(sql, *args)):
            rows = paginator.paginate_queryset(_live(descending), _request(page=str(page), limit=str(limit)))

        assert paginator.total == len(expected)
        assert [row.seq for row in rows] == expected[(page - 1) * limit : page * limit]
        assert 1 <= len(sent) <= 2  # the total, and the page unless it is past the end
        assert not any("OFFSET" in sql for sql in sent)
        transaction.set_rollback(True)


def _live(descending: bool):
    return Customer.objects.live().order_by("-seq" if descending else "seq")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "make_queryset",
    [
        lambda: Customer.objects.deleted().order_by("seq"),
        lambda: Customer.objects.live().filter(seq__gte=1).order_by("seq"),
    ],
    ids=["the holes themselves", "live and narrowed"],
)
def test_a_listing_with_holes_counts_and_offsets_anything_but_exactly_the_listed_rows(
    make_queryset, django_assert_num_queries
):
    create_customers(60)
    Customer.objects.filter(seq__in=[2, 30, 31]).update(deleted_at=timezone.now())
    expected = [customer.seq for customer in make_queryset()]
    paginator = LivePagination()

    with django_assert_num_queries(2) as captured:
        rows = paginator.paginate_queryset(make_queryset(), _request(page="2", limit="2"))

    total_sql, rows_sql = (query["sql"] for query in captured.captured_queries)
    assert [row.seq for row in rows] == expected[2:4]
    assert paginator.total == len(expected)
    assert total_sql.startswith("SELECT COUNT(*)")
    assert "OFFSET 2" in rows_sql
    assert "row_number" not in rows_sql


@pytest.mark.django_db
def test_the_listed_rows_in_another_order_are_counted_from_the_holes_but_offset(django_assert_num_queries):
    create_customers(60)
    Customer.objects.filter(seq__in=[2, 30, 31]).update(deleted_at=timezone.now())
    expected = [customer.seq for customer in Customer.objects.live().order_by("email")]
    paginator = LivePagination()

    with django_assert_num_queries(2) as captured:
        rows = paginator.paginate_queryset(Customer.objects.live().order_by("email"), _request(page="2", limit="2"))

    total_sql, rows_sql = (query["sql"] for query in captured.captured_queries)
    assert [row.seq for row in rows] == expected[2:4]
    assert paginator.total == 57
    assert total_sql.endswith('WHERE "customers_customer"."deleted_at" IS NOT NULL')
    assert "OFFSET 2" in rows_sql
