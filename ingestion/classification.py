"""Step 4 of a run: decide which staged rows of a batch the merge must not write.

A batch is the staged rows of one run with positions in [first, last]. The caller
holds the customers write lock (customers.merge.lock_writers) and one short
transaction around this and the merge, so the checks below cannot race another
writer. A refused row gets its `outcome` set; the rows left NULL go to
customers.merge.merge_staged, which counts them inserted, updated or unchanged.

1. duplicate / duplicate_id - its customer_id was already staged earlier in the run;
   the first occurrence counts, an identical repeat is a duplicate, a different one
   is rejected (`duplicate_id`).
2. email_conflict - its email (case-insensitively) belongs to another customer in the
   table, or to an earlier row of the same batch. Checking before writing matters: one
   such row would make the whole merge fail on the unique email index. Two customers
   swapping emails therefore both land here; the run goes on.
"""

from customers.merge import CHANGEABLE, CUSTOMERS, row_of
from ingestion.models import StagedCustomer

STAGED = StagedCustomer._meta.db_table

_BATCH = "t.run_id = %(run)s AND t.position BETWEEN %(first)s AND %(last)s"

# For each row of the batch, its first occurrence earlier in the run (if any), found
# through the (run, customer_id, position) index one row at a time: the cost follows
# the batch size, not the size of the run.
MARK_DUPLICATES = f"""
UPDATE {STAGED} t
SET outcome = CASE WHEN {row_of("t")} IS NOT DISTINCT FROM {row_of("f")} THEN 'duplicate' ELSE 'duplicate_id' END,
    conflicting_customer_id = t.customer_id
FROM {STAGED} b
CROSS JOIN LATERAL (
    SELECT {", ".join(f"s.{field}" for field in CHANGEABLE)}
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

COUNT_REFUSED = f"""
SELECT t.outcome, count(*) FROM {STAGED} t WHERE {_BATCH} AND t.outcome IS NOT NULL GROUP BY t.outcome
"""


def classify_batch(cursor, *, run_id: int, first: int, last: int) -> dict[str, int]:
    """Mark the refused rows of staged positions [first, last]; return how many per outcome."""
    params = {"run": run_id, "first": first, "last": last}
    for statement in (MARK_DUPLICATES, MARK_TABLE_EMAIL_CONFLICTS, MARK_BATCH_EMAIL_CONFLICTS, COUNT_REFUSED):
        cursor.execute(statement, params)
    return dict(cursor.fetchall())
