"""Upstream customer records for tests, deterministic in their index.

`record(7)` has the id mocksource's generator gives record 7 (its CUSTOMER_ID_NAMESPACE),
a unique email, and a Decimal balance that `write_dataset` and `FakeUpstream` send as a
two-decimal JSON number. Every other field is plain and predictable, not generated.
"""

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from mocksource.dataset import CUSTOMER_ID_NAMESPACE

_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def record(index: int, **overrides) -> dict:
    """A valid record in the upstream's format; `overrides` replace fields."""
    data = {
        "customer_id": str(uuid.uuid5(CUSTOMER_ID_NAMESPACE, str(index))),
        "first_name": f"First{index}",
        "last_name": f"Last{index}",
        "email": f"customer{index}@example.com",
        "phone": f"+1-555-{index // 10000 % 1000:03d}-{index % 10000:04d}",
        "address": f"{index + 1} Main Street, Springfield, IL 62701",
        "date_of_birth": (date(1950, 1, 1) + timedelta(days=index % 20000)).isoformat(),
        "account_balance": Decimal(index * 12345 % 10_000_000).scaleb(-2),
        "created_at": (_EPOCH + timedelta(minutes=index)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    data.update(overrides)
    return data


def records(count: int, start: int = 0) -> list[dict]:
    """`count` valid records for indexes start..start+count-1."""
    return [record(index) for index in range(start, start + count)]
