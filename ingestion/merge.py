"""Step 4 of a run: merge one staged batch into the customers table, set-based.

A batch is the staged rows of one run with positions in [first, last]. The caller
holds the merge lock and one short transaction around all statements here, so the
classification below cannot race another writer. Every staged row of the batch ends
with exactly one outcome, counted on the run (staging keeps it only for 1 and 2):

1. duplicate / duplicate_id - its customer_id was already staged earlier in the run;
   the first occurrence counts, an identical repeat is a duplicate, a different one
   is rejected (`duplicate_id`).
2. email_conflict - its email (case-insensitively) belongs to another customer in the
   table, or to an earlier row of the same batch. Checking before writing matters: one
   such row would make the whole INSERT/UPDATE fail on the unique email index.
   Two customers swapping emails therefore both land here; the run goes on.
3. inserted / updated / unchanged - decided and written by one statement. An update
   happens only when a source-owned field really differs (IS DISTINCT FROM), so an
   unchanged row is not rewritten and its `updated_at` does not move; `created_at`
   stays as first seen. These are counted from the statement's own CTEs and are not
   written back to staging: those staged rows keep `outcome` NULL. Writing it back
   was a second, non-HOT write of every staged row, a sixth of a cold batch's
   database time and a third of a warm one's (docs/benchmarks.md).
"""

from customers.models import Customer
from ingestion.models import StagedCustomer

CUSTOMERS = Customer._meta.db_table
STAGED = StagedCustomer._meta.db_table

# Fields compared and copied on update: everything the source owns except the key and created_at.
CHANGEABLE = ("first_name", "last_name", "email", "phone", "address", "date_of_birth", "account_balance")

_BATCH = "t.run_id = %(run)s AND t.position BETWEEN %(first)s AND %(last)s"


def _row(alias: str) -> str:
    return "(" + ", ".join(f"{alias}.{field}" for field in CHANGEABLE) + ")"


# For each row of the batch, its first occurrence earlier in the run (if any), found
# through the (run, customer_id, position) index one row at a time: the cost follows
# the batch size, not the size of the run.
MARK_DUPLICATES = f"""
UPDATE {STAGED} t
SET outcome = CASE WHEN {_row("t")} IS NOT DISTINCT FROM {_row("f")} THEN 'duplicate' ELSE 'duplicate_id' END,
    conflicting_customer_id = t.customer_id
FROM {STAGED} b
CROSS JOIN LATERAL (
    SELECT {_row("s")[1:-1]}
    FROM {STAGED} s
    WHERE s.run_id = b.run_id AND s.customer_id = b.customer_id AND s.position < b.position
    ORDER BY s.position
    LIMIT 1
) f
WHERE t.id = b.id AND b.run_id = %(run)s AND b.position BETWEEN %(first)s AND %(last)s
"""

MARK_TABLE_EMAIL_CONFLICTS = f"""
UPDATE {STAGED} t
SET outcome = 'email_conflict', conflicting_customer_id = c.customer_id
FROM {CUSTOMERS} c
WHERE {_BATCH} AND t.outcome IS NULL
  AND lower(c.email) = lower(t.email) AND c.customer_id <> t.customer_id
"""

# Within the batch the remaining rows have distinct ids; of several sharing an email
# the earliest wins, the way it would had they arrived in separate batches.
MARK_BATCH_EMAIL_CONFLICTS = f"""
WITH ranked AS (
    SELECT t.id, first_value(t.customer_id) OVER w AS first_id, row_number() OVER w AS rank
    FROM {STAGED} t
    WHERE {_BATCH} AND t.outcome IS NULL
    WINDOW w AS (PARTITION BY lower(t.email) ORDER BY t.position)
)
UPDATE {STAGED} t
SET outcome = 'email_conflict', conflicting_customer_id = r.first_id
FROM ranked r
WHERE t.id = r.id AND r.rank > 1
"""

# `pending` probes the primary key once per staged row and keeps what it found (does
# the customer exist, does it differ); the update and the insert both work from that
# instead of probing again, which is a tenth of a batch. Only changed rows are
# looked up a second time, by the update itself. New rows get `seq` = current max +
# their order in the batch: dense, because the merge lock serialises writers and a
# rolled-back batch takes its numbers with it.
MERGE = f"""
WITH pending AS (
    SELECT t.*, c.customer_id IS NOT NULL AS known,
           c.customer_id IS NOT NULL AND {_row("c")} IS DISTINCT FROM {_row("t")} AS changed
    FROM {STAGED} t LEFT JOIN {CUSTOMERS} c ON c.customer_id = t.customer_id
    WHERE {_BATCH} AND t.outcome IS NULL
), updated AS (
    UPDATE {CUSTOMERS} c
    SET {", ".join(f"{field} = p.{field}" for field in CHANGEABLE)}, updated_at = now()
    FROM pending p
    WHERE p.changed AND c.customer_id = p.customer_id
    RETURNING 1
), inserted AS (
    INSERT INTO {CUSTOMERS} (customer_id, {", ".join(CHANGEABLE)}, created_at, updated_at, seq, ingested_at)
    SELECT p.customer_id, {", ".join(f"p.{field}" for field in CHANGEABLE)}, p.created_at, NULL,
           base.max_seq + row_number() OVER (ORDER BY p.position), now()
    FROM pending p CROSS JOIN (SELECT coalesce(max(seq), 0) AS max_seq FROM {CUSTOMERS}) base
    WHERE NOT p.known
    RETURNING 1
)
SELECT (SELECT count(*) FROM pending), (SELECT count(*) FROM inserted), (SELECT count(*) FROM updated)
"""

# A dry run classifies the same way but writes nothing to customers.
CLASSIFY_ONLY = f"""
UPDATE {STAGED} t
SET outcome = CASE
    WHEN c.customer_id IS NULL THEN 'inserted'
    WHEN {_row("c")} IS DISTINCT FROM {_row("t")} THEN 'updated'
    ELSE 'unchanged' END
FROM {STAGED} p LEFT JOIN {CUSTOMERS} c ON c.customer_id = p.customer_id
WHERE t.id = p.id AND {_BATCH} AND t.outcome IS NULL
"""

COUNT_OUTCOMES = f"""
SELECT t.outcome, count(*) FROM {STAGED} t WHERE {_BATCH} AND t.outcome IS NOT NULL GROUP BY t.outcome
"""


def merge_batch(cursor, *, run_id: int, first: int, last: int, dry_run: bool = False) -> dict[str, int]:
    """Classify and merge staged positions [first, last] of a run; return counts per outcome."""
    params = {"run": run_id, "first": first, "last": last}
    for statement in (MARK_DUPLICATES, MARK_TABLE_EMAIL_CONFLICTS, MARK_BATCH_EMAIL_CONFLICTS):
        cursor.execute(statement, params)
    merged = {}
    if dry_run:
        cursor.execute(CLASSIFY_ONLY, params)
    else:
        cursor.execute(MERGE, params)
        pending, inserted, updated = cursor.fetchone()
        merged = {"inserted": inserted, "updated": updated, "unchanged": pending - inserted - updated}
    cursor.execute(COUNT_OUTCOMES, params)
    return dict(cursor.fetchall()) | merged
