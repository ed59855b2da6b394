"""Step 3 of a run: put validated records into the staging table with COPY.

COPY is the fastest way into PostgreSQL (several times `bulk_create`), and the merge
that follows works on the staged rows set-based.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from ingestion.models import StagedCustomer
from ingestion.validation import ValidRecord

# A walk that staged at least this many rows has the table's statistics refreshed at its end.
REFRESH_STATISTICS_FROM = 50_000

# A ValidRecord is a named tuple whose fields are the staging columns of the same names,
# so a row is written as the record itself, in the record's own field order.
STAGED_COLUMNS = ("run_id", "page", "position", *ValidRecord._fields, "staged_at")


@dataclass(frozen=True, slots=True)
class StagedRow:
    page: int
    position: int
    record: ValidRecord


def stage_rows(cursor, *, run_id: int, rows: Iterable[StagedRow], staged_at) -> int:
    """COPY `rows` into the staging table on the given (Django) cursor; return how many."""
    table = StagedCustomer._meta.db_table
    columns = ", ".join(STAGED_COLUMNS)
    types = _column_types(cursor, table)
    count = 0
    # Binary COPY: less client CPU than text COPY (no formatting of UUIDs, decimals and
    # timestamps into text; measured in docs/benchmarks.md), and no parsing on the server.
    with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row((run_id, row.page, row.position, *row.record, staged_at))
            count += 1
    return count


def _column_types(cursor, table: str) -> list[int]:
    """The type OIDs of STAGED_COLUMNS as the table has them now (binary COPY needs exact types).

    Asked once per batch, not cached for the life of the process: a migration that changes
    a column's type under running workers must not leave them sending the old one.
    """
    cursor.execute("SELECT attname, atttypid FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0", [table])
    by_name = dict(cursor.fetchall())
    return [by_name[column] for column in STAGED_COLUMNS]


def refresh_statistics(cursor, *, staged: int) -> None:
    """ANALYZE the staging table after a walk that staged `staged` rows, if that is many.

    What follows the walk picks rows by lists of positions (the conflict retries) and joins
    the run's rows against customers (deletions). Planned with statistics from before a walk of a
    million rows, one retry took 20 s instead of 0.15 s (docs/benchmarks.md); autovacuum
    catches up later, or never where it is off. ANALYZE reads a sample: half a second at a
    million rows.
    """
    if staged >= REFRESH_STATISTICS_FROM:
        cursor.execute(f"ANALYZE {StagedCustomer._meta.db_table}")
