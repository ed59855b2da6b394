"""Customers as the API writes them, in JSON built by PostgreSQL.

The busiest reads (a customer by id, a page of the listing, the change feed) send the JSON the
database wrote straight out: no model instances, no serializer, no encoder, a fraction of the
time per request (docs/benchmarks.md). The objects are the serializers' (customers/serializers.py),
field for field and in their order: times in UTC to the second with a `Z`, the balance an exact
number with both decimals (numeric's JSON is its text). A test holds the two to the same values.
"""

from api.statements import prepared_cursor
from customers.models import Customer

CUSTOMERS = Customer._meta.db_table
# The fields a customer object has (CustomerSerializer), then the one include_deleted adds.
FIELDS = (*Customer.SOURCE_FIELDS, "updated_at")
WITH_DELETION = (*FIELDS, "deleted_at")
_TIMES = frozenset({"created_at", "updated_at", "deleted_at"})


def utc(column: str, fraction: str = "") -> str:
    """SQL writing a timestamptz as the API does: UTC, ISO 8601, a `Z` (NULL stays NULL)."""
    return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS{fraction}"Z"')"""


def customer_object(alias: str, fields: tuple[str, ...] = FIELDS) -> str:
    """SQL of one customer's JSON object as text, from the columns of `alias` (a customers row or a
    change event). Written out rather than json_build_object's `{"a" : 1}`, so it is as compact as
    the serializers' JSON: `{"a":1}`."""
    values = (utc(f"{alias}.{name}") if name in _TIMES else f"{alias}.{name}" for name in fields)
    parts = (
        f"""'{"{" if index == 0 else ","}"{name}":' || coalesce(to_json({value})::text, 'null')"""
        for index, (name, value) in enumerate(zip(fields, values, strict=True))
    )
    return "(" + " || ".join(parts) + " || '}')"


def _one(fields: tuple[str, ...], condition: str) -> str:
    return f"""/* customers.documents.customer */
SELECT {customer_object("c", fields)} FROM {CUSTOMERS} c WHERE c.customer_id = %s{condition}
"""


# By include_deleted: a deleted customer is shown, with when, only when asked for.
_ONE = {True: _one(WITH_DELETION, ""), False: _one(FIELDS, " AND c.deleted_at IS NULL")}


def customer(customer_id, *, include_deleted: bool = False) -> str | None:
    """One customer's JSON object as text (with `deleted_at` when `include_deleted`), or None:
    unknown, or deleted and not asked for. One statement."""
    with prepared_cursor() as cursor:
        cursor.execute(_ONE[include_deleted], [customer_id])
        row = cursor.fetchone()
    return row[0] if row else None
