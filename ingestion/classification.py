"""Step 4 of a run: decide which staged rows of a batch the merge must not write.

A batch is the staged rows of one run at some positions: a range [first, last] as the
walk commits them, or a list of positions when the run retries its email conflicts at
the end of the walk (batches.retry_conflicts). The caller holds the customers write
lock (customers.merge.lock_writers) and one short transaction around this and the
merge, so the checks below cannot race another writer. A refused row gets its
`outcome` set; the rows left NULL go to customers.merge.merge_staged, which counts them
inserted, updated or unchanged.

1. Repeated reads of one customer_id in the run (a page/limit walk over a changing
   upstream reads a record again after it moved; a record that was updated moves later,
   so the later read is the newer one):
   - `duplicate`: identical to the previous read of the id; it says nothing new.
   - `superseded`: a later read of the same batch differs from it. Only the last read
     of an id in a batch is merged, so the later read wins. When the winner replaces a
     read an earlier batch merged, that earlier row is marked `superseded` too (its
     counter stays what it did then); failures.record_conflicts records both kinds.
2. `email_conflict`: the email (case-insensitively) belongs to another customer that
   keeps it, or to an earlier row of the same batch. An owner in the table gives its
   email up when the batch also holds its winning read with another email: then the
   email is free, so swaps, rotations of any length, and a record taking an email a
   later record gives up are all applied by the one merge (customers.merge frees the
   emails first). Refusing a row means its owner keeps its old email, which can refuse
   another row in turn: the check repeats on the rows it just refused until it settles.
   Checking before writing matters: one missed conflict would fail the whole merge on
   the unique email index.
"""

from dataclasses import dataclass

from customers.merge import CHANGEABLE, CUSTOMERS, row_of, staged_rows
from ingestion.models import IngestFailure, StagedCustomer

STAGED = StagedCustomer._meta.db_table


def _statements(listed: bool) -> dict[str, str]:
    batch = staged_rows("t", listed=listed)
    held_by = f"""
FROM {CUSTOMERS} c
WHERE {batch} AND t.outcome IS NULL
  AND lower(c.email) = lower(t.email) AND c.customer_id <> t.customer_id
  -- The owner keeps the email unless the batch's winning read of it has another one.
  AND NOT EXISTS (
      SELECT 1 FROM {STAGED} h
      WHERE {staged_rows("h", listed=listed)} AND h.outcome IS NULL
        AND h.customer_id = c.customer_id AND lower(h.email) <> lower(c.email))"""
    return {
        # For each row of the batch, the other reads of its id in the run up to the batch's
        # end, found through the (run, customer_id, position) index in one probe per row:
        # the cost follows the batch size, not the size of the run. Most ids are read once,
        # so the probe finds nothing and the row is left alone.
        "repeats": f"""
UPDATE {STAGED} t
SET outcome = CASE WHEN {row_of("b")} IS NOT DISTINCT FROM {row_of("p")} THEN 'duplicate' ELSE 'superseded' END,
    conflicting_customer_id = t.customer_id
FROM {STAGED} b
CROSS JOIN LATERAL (
    SELECT bool_or(s.position > b.position AND {row_of("s")} IS DISTINCT FROM {row_of("b")}) AS overtaken,
           max(s.position) FILTER (WHERE s.position < b.position) AS previous
    FROM {STAGED} s
    WHERE s.run_id = b.run_id AND s.customer_id = b.customer_id AND s.position <> b.position
      AND s.position <= %(last)s
) o
LEFT JOIN {STAGED} p ON p.run_id = b.run_id AND p.position = o.previous
WHERE t.id = b.id AND {staged_rows("b", listed=False)}
  AND (o.overtaken OR {row_of("b")} IS NOT DISTINCT FROM {row_of("p")})
""",
        # The merged read (of an earlier batch) of an id whose winning read in this batch differs.
        "overtaken": f"""
UPDATE {STAGED} e
SET outcome = 'superseded', conflicting_customer_id = e.customer_id
FROM {STAGED} t
CROSS JOIN LATERAL (
    SELECT s.id, {", ".join(f"s.{field}" for field in CHANGEABLE)}
    FROM {STAGED} s
    WHERE s.run_id = t.run_id AND s.customer_id = t.customer_id AND s.position < t.position AND s.outcome IS NULL
    ORDER BY s.position DESC
    LIMIT 1
) m
WHERE e.id = m.id AND {batch} AND t.outcome IS NULL AND {row_of("m")} IS DISTINCT FROM {row_of("t")}
RETURNING e.position
""",
        "held": f"""
UPDATE {STAGED} t
SET outcome = 'email_conflict', conflicting_customer_id = c.customer_id
{held_by}
RETURNING t.customer_id
""",
        # Again, only for the rows wanting an email of a customer whose row was just refused.
        "still_held": f"""
UPDATE {STAGED} t
SET outcome = 'email_conflict', conflicting_customer_id = c.customer_id
{held_by} AND c.customer_id = ANY(%(refused)s)
RETURNING t.customer_id
""",
        # Within the batch the remaining rows have distinct ids; of several sharing an email
        # the earliest wins, the way it would had they arrived in separate batches.
        "shared": f"""
WITH ranked AS (
    SELECT t.id, first_value(t.customer_id) OVER w AS first_id, row_number() OVER w AS rank
    FROM {STAGED} t
    WHERE {batch} AND t.outcome IS NULL
    WINDOW w AS (PARTITION BY lower(t.email) ORDER BY t.position)
)
UPDATE {STAGED} t
SET outcome = 'email_conflict', conflicting_customer_id = r.first_id
FROM ranked r
WHERE t.id = r.id AND r.rank > 1
RETURNING t.customer_id
""",
        "count": f"""
SELECT t.outcome, count(*) FROM {STAGED} t WHERE {batch} AND t.outcome IS NOT NULL GROUP BY t.outcome
""",
    }


_RANGE, _LISTED = _statements(listed=False), _statements(listed=True)


@dataclass(frozen=True, slots=True)
class Classified:
    refused: dict[str, int]  # outcome -> rows of the batch
    overtaken: list[int]  # positions, before the batch, of merged reads this batch supersedes


def classify_batch(
    cursor, *, run_id: int, first: int = 0, last: int = 0, positions: list[int] | None = None
) -> Classified:
    """Mark the refused rows of staged positions [first, last] (or `positions`); count them by outcome.

    With `positions` (the end-of-walk retry of email conflicts, whose rows are each the
    last read of their id) only the email checks run.
    """
    sql = _RANGE if positions is None else _LISTED
    params = {"run": run_id, "first": first, "last": last, "positions": positions}
    if positions is None:
        cursor.execute(sql["repeats"], params)
    cursor.execute(sql["held"], params)
    refused = [row[0] for row in cursor.fetchall()]
    cursor.execute(sql["shared"], params)
    refused += [row[0] for row in cursor.fetchall()]
    while refused:
        cursor.execute(sql["still_held"], params | {"refused": refused})
        refused = [row[0] for row in cursor.fetchall()]
    # Last: a winner refused above leaves the read an earlier batch merged in place.
    cursor.execute(sql["overtaken"], params)
    overtaken = [row[0] for row in cursor.fetchall()]
    cursor.execute(sql["count"], params)
    return Classified(refused=dict(cursor.fetchall()), overtaken=overtaken)


# Through the run's failures (few, and indexed by run) rather than its staged rows (all of them).
_RETRYABLE = f"""
SELECT t.position
FROM {IngestFailure._meta.db_table} f
JOIN {STAGED} t ON t.run_id = f.run_id AND t.position = f.position AND t.outcome = 'email_conflict'
WHERE f.run_id = %(run)s AND f.reason = 'email_conflict'
  AND NOT EXISTS (
      SELECT 1 FROM {STAGED} s WHERE s.run_id = t.run_id AND s.customer_id = t.customer_id AND s.position > t.position)
ORDER BY t.position
"""


def retryable_conflicts(cursor, *, run_id: int) -> list[int]:
    """Positions of the run's email conflicts that are the last read of their customer."""
    cursor.execute(_RETRYABLE, {"run": run_id})
    return [row[0] for row in cursor.fetchall()]
