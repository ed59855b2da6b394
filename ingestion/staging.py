"""Step 3 of a run: put validated records into the staging table with COPY.

COPY is the fastest way into PostgreSQL (several times `bulk_create`), and the merge
that follows works on the staged rows set-based.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from ingestion.models import StagedCustomer
from ingestion.validation import ValidRecord

STAGED_COLUMNS = (
    "run_id",
    "page",
    "position",
    "customer_id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "address",
    "date_of_birth",
    "account_balance",
    "created_at",
    "staged_at",
)


@dataclass(frozen=True, slots=True)
class StagedRow:
    page: int
    position: int
    record: ValidRecord


def stage_rows(cursor, *, run_id: int, rows: Iterable[StagedRow], staged_at) -> int:
    """COPY `rows` into the staging table on the given (Django) cursor; return how many."""
    table = StagedCustomer._meta.db_table
    columns = ", ".join(STAGED_COLUMNS)
    count = 0
    with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for row in rows:
            r = row.record
            copy.write_row(
                (
                    run_id,
                    row.page,
                    row.position,
                    r.customer_id,
                    r.first_name,
                    r.last_name,
                    r.email,
                    r.phone,
                    r.address,
                    r.date_of_birth,
                    r.account_balance,
                    r.created_at,
                    staged_at,
                )
            )
            count += 1
    return count
