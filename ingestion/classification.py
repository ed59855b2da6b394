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
2. `email_conflict`: the email (case-insensitively) belongs to another live customer
   that keeps it (a deleted customer holds no email, so restoring one whose email was
   taken meanwhile is a conflict too), or to an earlier row of the same batch. An owner in the table gives its
   email up when the batch also holds its winning read with another email: then the
   email is free, so swaps, rotations of any length, and a record taking an email a
   later record gives up are all applied by the one merge (customers.merge frees the
   emails first). Refusing a row means its owner keeps its old email, which can refuse
   another row in turn: the check repeats on the rows it just refused until it settles.
   Checking before writing matters: one missed conflict would fail the whole merge on
   the unique email index.
"""

from dataclasses import dataclass

from customers.merge import CUSTOMERS, row_of, staged_rows
from ingestion.models import IngestFailure, StagedCustomer

STAGED = StagedCustomer._meta.db_table


def _statements(listed: bool) -> dict[str, str]:
    batch = staged_rows("t", listed=listed)
    return {
        # For each row of the batch, the other reads of its id in the run up to the batch's
        # end, found through the (run, customer_id, position) index in one probe per row:
        # the cost follows the batch size, not the size of the run. Most ids are read once,
        # so the probe finds nothing and the row is left alone. Returned: the rows left to
        # merge that replace a read an earlier batch merged, with that read's position.
        "repeats": f"""
WITH others AS (
    SELECT b.id, b.position, o.overtaken, o.previous, o.merged_before
    FROM {STAGED} b
    CROSS JOIN LATERAL (
        SELECT bool_or(s.position > b.position AND {row_of("s")} IS DISTINCT FROM {row_of("b")}) AS overtaken,
               max(s.position) FILTER (WHERE s.position < b.position) AS previous,
               max(s.position) FILTER (WHERE s.position < %(first)s AND s.outcome IS NULL) AS merged_before
        FROM {STAGED} s
        WHERE s.run_id = b.run_id AND s.customer_id = b.customer_id AND s.position <> b.position
          AND s.position <= %(last)s
    ) o
    WHERE {staged_rows("b")} AND (o.previous IS NOT NULL OR o.overtaken)
), marked AS (
    UPDATE {STAGED} t
    SET outcome = CASE WHEN {row_of("t")} IS NOT DISTINCT FROM {row_of("p")} THEN 'duplicate' ELSE 'superseded' END,
        conflicting_customer_id = t.customer_id
    FROM others r LEFT JOIN {STAGED} p ON p.run_id = %(run)s AND p.position = r.previous
    WHERE t.id = r.id AND (r.overtaken OR {row_of("t")} IS NOT DISTINCT FROM {row_of("p")})
    RETURNING t.id
)
SELECT r.position, r.merged_before FROM others r
WHERE r.merged_before IS NOT NULL AND r.id NOT IN (SELECT id FROM marked)
""",
        # In a retry every row is the last read of its id: any merged read of it is earlier.
        "retried_repeats": f"""
SELECT t.position, m.position
FROM {STAGED} t
CROSS JOIN LATERAL (
    SELECT s.position FROM {STAGED} s
    WHERE s.run_id = t.run_id AND s.customer_id = t.customer_id AND s.position < t.position AND s.outcome IS NULL
    ORDER BY s.position DESC
    LIMIT 1
) m
WHERE {batch} AND t.outcome IS NULL
""",
        # A row whose email another customer holds: refused if the owner keeps it, else
        # marked with the owner (conflicting_customer_id, outcome still NULL), whose email
        # the merge frees first.
        "held": f"""
UPDATE {STAGED} t
SET outcome = CASE WHEN EXISTS (
        SELECT 1 FROM {STAGED} h
        WHERE {staged_rows("h", listed=listed)} AND h.outcome IS NULL
          AND h.customer_id = c.customer_id AND lower(h.email) <> lower(c.email)
    ) THEN NULL ELSE 'email_conflict' END,
    conflicting_customer_id = c.customer_id
FROM {CUSTOMERS} c
WHERE {batch} AND t.outcome IS NULL
  AND lower(c.email) = lower(t.email) AND c.deleted_at IS NULL AND c.customer_id <> t.customer_id
RETURNING t.outcome, t.customer_id
""",
        # A refused row's customer keeps its old email: the rows counting on it are refused too.
        "still_held": f"""
UPDATE {STAGED} t
SET outcome = 'email_conflict'
WHERE {batch} AND t.outcome IS NULL AND t.conflicting_customer_id = ANY(%(refused)s)
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
        # The merged reads that a row still left to merge replaces, if it differs from them.
        "overtaken": f"""
UPDATE {STAGED} e
SET outcome = 'superseded', conflicting_customer_id = e.customer_id
FROM unnest(%(winners)s::bigint[], %(earlier)s::bigint[]) AS w(winner, earlier)
JOIN {STAGED} t ON t.run_id = %(run)s AND t.position = w.winner
WHERE e.run_id = %(run)s AND e.position = w.earlier AND t.outcome IS NULL
  AND {row_of("e")} IS DISTINCT FROM {row_of("t")}
RETURNING e.position
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

    `positions` is the end-of-walk retry of email conflicts: each row is the last read of
    its id, so the repeated-read rule has nothing to decide.
    """
    sql = _RANGE if positions is None else _LISTED
    params = {"run": run_id, "first": first, "last": last, "positions": positions}
    cursor.execute(sql["repeats" if positions is None else "retried_repeats"], params)
    replacing = cursor.fetchall()
    cursor.execute(sql["held"], params)
    refused = [customer_id for outcome, customer_id in cursor.fetchall() if outcome]
    cursor.execute(sql["shared"], params)
    refused += [row[0] for row in cursor.fetchall()]
    while refused:
        cursor.execute(sql["still_held"], params | {"refused": refused})
        refused = [row[0] for row in cursor.fetchall()]
    overtaken = []
    if replacing:
        # Last: a row refused above leaves the read an earlier batch merged in place.
        winners, earlier = map(list, zip(*replacing, strict=True))
        cursor.execute(sql["overtaken"], params | {"winners": winners, "earlier": earlier})
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
  {{holder}}
ORDER BY t.position
"""
# Only conflicts with a customer the run itself deleted since (the email is free now).
_HOLDER_DELETED = f"""AND EXISTS (
      SELECT 1 FROM {CUSTOMERS} c
      WHERE c.customer_id = t.conflicting_customer_id AND c.deleted_at IS NOT NULL AND c.deleted_by_run = %(run)s)"""


def retryable_conflicts(cursor, *, run_id: int, holder_deleted: bool = False) -> list[int]:
    """Positions of the run's email conflicts that are the last read of their customer; with
    `holder_deleted`, only those whose email's holder the run has deleted."""
    cursor.execute(_RETRYABLE.format(holder=_HOLDER_DELETED if holder_deleted else ""), {"run": run_id})
    return [row[0] for row in cursor.fetchall()]
