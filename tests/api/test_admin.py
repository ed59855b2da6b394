"""api/admin.py: the admin paginator that does not count a large unfiltered table."""

import pytest
from django.db import connection

from api.admin import EstimatedCountPaginator
from customers.models import Customer
from tests.customers.factories import create_customers

pytestmark = pytest.mark.django_db


def test_estimated_paginator_counts_exactly_for_small_or_filtered_tables():
    create_customers(5)

    assert EstimatedCountPaginator(Customer.objects.order_by("seq"), 2).count == 5
    assert EstimatedCountPaginator(Customer.objects.filter(seq__gt=3).order_by("seq"), 2).count == 2


def test_estimated_paginator_uses_the_planner_estimate_for_a_large_unfiltered_table(django_assert_num_queries):
    create_customers(30)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE customers_customer")
    paginator = EstimatedCountPaginator(Customer.objects.order_by("seq"), 10)
    paginator.exact_below = 10

    with django_assert_num_queries(1) as captured:
        assert paginator.count == 30
    assert "reltuples" in captured.captured_queries[0]["sql"]
