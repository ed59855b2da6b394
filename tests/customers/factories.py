"""Customers as the ingestion merge leaves them: dense seq 1..N in insert order, ingested_at set."""

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db.models import Max
from django.utils import timezone

from customers.models import Customer

BASE_CREATED_AT = datetime(2024, 1, 10, 17, 7, 1, tzinfo=UTC)


def build_customer(seq: int, **fields) -> Customer:
    """An unsaved customer numbered `seq`; `fields` override the defaults."""
    defaults = {
        "customer_id": uuid.uuid4(),
        "first_name": f"First{seq}",
        "last_name": f"Last{seq}",
        "email": f"customer{seq}@example.com",
        "phone": "+1-555-0100",
        "address": f"{seq} Main Street",
        "date_of_birth": datetime(1990, 1, 1, tzinfo=UTC).date() + timedelta(days=seq),
        "account_balance": Decimal("10.50") + seq,
        "created_at": BASE_CREATED_AT + timedelta(hours=seq),
        "updated_at": None,
        "seq": seq,
        "ingested_at": timezone.now(),
    }
    return Customer(**{**defaults, **fields})


def create_customers(count: int, **fields) -> list[Customer]:
    """Insert `count` customers after the existing ones, continuing the dense seq."""
    start = (Customer.objects.aggregate(top=Max("seq"))["top"] or 0) + 1
    return Customer.objects.bulk_create(build_customer(seq, **fields) for seq in range(start, start + count))


def create_customer(**fields) -> Customer:
    """Insert one customer after the existing ones."""
    [customer] = create_customers(1, **fields)
    return customer
