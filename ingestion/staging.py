"""Step 3 of a run: put validated records into the staging table with COPY.

COPY is the fastest way into PostgreSQL (several times `bulk_create`), and the merge
that follows works on the staged rows set-based.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from operator import attrgetter

from customers.models import Customer
from ingestion.models import StagedCustomer
from ingestion.validation import ValidRecord

STAGED_COLUMNS = ("run_id", "page", "position", *Customer.SOURCE_FIELDS, "staged_at")
_source_values = attrgetter(*Customer.SOURCE_FIELDS)


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
            copy.write_row((run_id, row.page, row.position, *_source_values(row.record), staged_at))
            count += 1
    return count
