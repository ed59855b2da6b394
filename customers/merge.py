"""Every write to the customers table, and the invariants those writes keep.

`customers` owns its table: ingestion stages rows and decides which of them are
refused, then hands the rest to `merge_staged`, the only statement that inserts or
updates customers, and `delete_customers`, the only one that deletes. This module alone
keeps four promises:

- **One writer at a time.** Writers hold `WRITE_LOCK_KEY`, a transaction-scoped
  advisory lock. `merge_staged` takes it itself; a caller that must read the table
  consistently before writing (ingestion's email-conflict check) takes it first with
  `lock_writers`, in the same transaction.
- **`seq` is dense, 1..N in first-insert order.** New rows get the current max plus
  their order in the batch. That is dense because writers are serialised, a rolled-back
  batch takes its numbers with it, and nothing removes a row: deletion is soft
  (`delete_customers` sets `deleted_at`, the admin refuses real deletes), and a deleted
  customer the upstream lists again is restored in place, keeping its `seq`. The listing's
  O(1) total and its seq-range pages rely on it (api/pagination.py, `DenseKeyPagination`);
  the live listing counts and skips the few deleted rows through their own small index.
- **An update is a real change.** A known customer is rewritten only when a field in
  `CHANGEABLE` differs (IS DISTINCT FROM, so NULLs compare as values); then
  `updated_at` moves. `created_at` stays as first seen; an unchanged row is not touched.
- **Every change is an event, numbered in commit order.** The statement that inserts,
  updates, restores, deletes or erases customers also writes one `CustomerChange` per
  customer it changed (set-based, in the same statement), numbered from the current max
  cursor under the write lock: cursors are dense, 1..N, and a reader sees them commit in
  order, so a feed consumer asking for cursors after its last one misses and repeats none.
  An unchanged customer, a dry run and a refused record write no event.
- **Emails change hands in one step.** Within a batch, an email one customer gives up
  can go to another (swaps and rotations included): the merge frees such emails before
  writing, in the same transaction, so neither the unique email index nor a reader ever
  sees the intermediate state.
"""

from dataclasses import dataclass
from functools import cache

from customers.models import ChangeKind, Customer, CustomerChange

CUSTOMERS = Customer._meta.db_table
CHANGES = CustomerChange._meta.db_table

# Taken by every writer of the customers table, for the length of its transaction.
WRITE_LOCK_KEY = 7_401_553_001

# Fields compared and copied on update: everything the source owns except the key and created_at.
CHANGEABLE = tuple(name for name in Customer.SOURCE_FIELDS if name not in ("customer_id", "created_at"))


# Bit of each field in CustomerChange.changed; an insertion names them all.
_BITS = {name: 1 << bit for bit, name in enumerate(CustomerChange.CHANGE_FIELDS)}
_ALL_BITS = sum(_BITS.values())
_STATE = ", ".join(CustomerChange.STATE_FIELDS)
# The next cursor is this plus the change's rank in its statement; read under the write lock.
_HEAD = f"(SELECT coalesce(max(cursor), 0) AS top FROM {CHANGES}) head"


@dataclass(frozen=True, slots=True)
class MergeCounts:
    inserted: int
    updated: int  # restored included
    unchanged: int
    restored: int = 0


def lock_writers(cursor) -> None:
    """Wait for, then hold until the transaction ends, the customers write lock."""
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [WRITE_LOCK_KEY])


def row_of(alias: str) -> str:
    """`(alias.first_name, ..., alias.account_balance)`: the changeable fields as one row value."""
    return "(" + ", ".join(f"{alias}.{field}" for field in CHANGEABLE) + ")"


def staged_rows(alias: str, *, listed: bool = False) -> str:
    """SQL selecting a batch of staged rows: one run's rows at a range of positions or a list of them.

    Parameters: %(run)s, and %(first)s and %(last)s, or %(positions)s when `listed`.
    """
    where = f"{alias}.position = ANY(%(positions)s)" if listed else f"{alias}.position BETWEEN %(first)s AND %(last)s"
    return f"{alias}.run_id = %(run)s AND {where}"


# The staged rows to merge: a batch of a staging table whose `outcome` the caller left NULL
# (it marks the rows it refused). The table needs the source fields, `run_id`, `position`
# (the order new rows are numbered in), `outcome` and `conflicting_customer_id`.
def _pending(alias: str, listed: bool) -> str:
    return f"{staged_rows(alias, listed=listed)} AND {alias}.outcome IS NULL"


# An email the batch hands from one customer to another (a swap, a rotation, a customer
# giving up the email a new one takes) is first replaced by a placeholder no record can
# have (validation refuses control characters), so the merge never holds one email twice
# and the unique index cannot fail it. The merge then writes the real emails; both happen
# in the caller's transaction, so no reader ever sees a placeholder. The caller names the
# giver on the taking row (`conflicting_customer_id`): it has just looked the email up, so
# nothing here probes the email index again. Only a giver whose own pending row has
# another email is freed; any other clash still fails the statement loudly.
EMAIL_PLACEHOLDER = "chr(1) || c.customer_id::text"


@cache
def release_sql(staged_table: str, listed: bool = False) -> str:
    return f"""/* customers.merge_staged: free emails changing hands */
UPDATE {CUSTOMERS} c
SET email = {EMAIL_PLACEHOLDER}
FROM {staged_table} t
WHERE {_pending("t", listed)} AND t.conflicting_customer_id IS NOT NULL
  AND c.customer_id = t.conflicting_customer_id AND c.customer_id <> t.customer_id
  AND lower(c.email) = lower(t.email) AND c.deleted_at IS NULL
  AND EXISTS (
      SELECT 1 FROM {staged_table} h
      WHERE {_pending("h", listed)} AND h.customer_id = c.customer_id AND lower(h.email) <> lower(c.email))
"""


@cache
def merge_sql(staged_table: str, listed: bool = False) -> str:
    """The merge statement for `staged_table` (public so bench/indexes.py can EXPLAIN it)."""
    # `pending` probes the primary key once per staged row and keeps what it found (is the
    # customer known, does it differ); the update and the insert both work from that instead
    # of probing again (docs/benchmarks.md has the cost of each probe). Only changed rows are
    # looked up a second time, by the update itself.
    # `mask` says which fields differ (one bit each, CustomerChange.changed) and replaces the row
    # comparison. Every value an event needs is in `pending`: CTEs carry no statistics, and a
    # join of two of them (or of one with customers) is planned blind, quadratic at worst.
    # `new_rank` and `event_rank` number the new rows and the rows that get an event, in position
    # order, in `pending` itself: one sort of the batch, where a window in each of `inserted` and
    # `changes` sorted it three times (a tenth of the statement at 1M rows; docs/benchmarks.md).
    # An insertion's `seq` is base + new_rank in both.
    mask = " + ".join(
        f"CASE WHEN c.{field} IS DISTINCT FROM t.{field} THEN {_BITS[field]} ELSE 0 END" for field in CHANGEABLE
    )
    fields = ", ".join(f"p.{field}" for field in CHANGEABLE)
    base = f"(SELECT coalesce(max(seq), 0) AS max_seq FROM {CUSTOMERS}) base"
    return f"""/* customers.merge_staged */
WITH pending AS (
    SELECT r.*, count(*) FILTER (WHERE NOT r.known) OVER w AS new_rank,
           count(*) FILTER (WHERE r.changed OR NOT r.known) OVER w AS event_rank
    FROM (
        SELECT s.*, s.known AND (s.mask <> 0 OR s.restoring) AS changed
        FROM (
            SELECT t.*, c.customer_id IS NOT NULL AS known, c.deleted_at IS NOT NULL AS restoring,
                   c.seq AS known_seq, c.created_at AS first_created_at, {mask} AS mask
            FROM {staged_table} t LEFT JOIN {CUSTOMERS} c ON c.customer_id = t.customer_id
            WHERE {_pending("t", listed)}
        ) s
    ) r
    WINDOW w AS (ORDER BY r.position)
), updated AS (
    UPDATE {CUSTOMERS} c
    SET {", ".join(f"{field} = p.{field}" for field in CHANGEABLE)}, updated_at = now(),
        deleted_at = NULL, deleted_by_run = NULL
    FROM pending p
    WHERE p.changed AND c.customer_id = p.customer_id
    RETURNING 1
), inserted AS (
    INSERT INTO {CUSTOMERS} (customer_id, {", ".join(CHANGEABLE)}, created_at, updated_at, seq, ingested_at)
    SELECT p.customer_id, {fields}, p.created_at, NULL, base.max_seq + p.new_rank, now()
    FROM pending p CROSS JOIN {base}
    WHERE NOT p.known
    RETURNING 1
), changes AS (
    INSERT INTO {CHANGES} (cursor, kind, customer_id, seq, run_id, at, changed, {_STATE})
    SELECT head.top + p.event_rank,
           CASE WHEN NOT p.known THEN '{ChangeKind.INSERTED}' WHEN p.restoring THEN '{ChangeKind.RESTORED}'
                ELSE '{ChangeKind.UPDATED}' END,
           p.customer_id,
           CASE WHEN p.known THEN p.known_seq ELSE base.max_seq + p.new_rank END,
           p.run_id, statement_timestamp(), CASE WHEN p.known THEN p.mask ELSE {_ALL_BITS} END,
           {fields}, coalesce(p.first_created_at, p.created_at)
    FROM pending p CROSS JOIN {_HEAD} CROSS JOIN {base}
    WHERE p.changed OR NOT p.known
)
SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM updated), (SELECT count(*) FROM pending),
       (SELECT count(*) FROM pending WHERE restoring)
"""


@cache
def compare_sql(staged_table: str, listed: bool = False) -> str:
    """What the merge would do, counted without writing (a dry run)."""
    return f"""/* customers.merge_staged dry run */
SELECT count(*) FILTER (WHERE c.customer_id IS NULL),
       count(*) FILTER (WHERE c.customer_id IS NOT NULL
                        AND ({row_of("c")} IS DISTINCT FROM {row_of("t")} OR c.deleted_at IS NOT NULL)),
       count(*),
       count(*) FILTER (WHERE c.deleted_at IS NOT NULL)
FROM {staged_table} t LEFT JOIN {CUSTOMERS} c ON c.customer_id = t.customer_id
WHERE {_pending("t", listed)}
"""


# A soft deletion of the live customers `doomed` (SQL on alias `c`, the caller's) picks out.
# Set-based: the caller's condition is an anti-join or a join against its staged ids, never a
# list of ids held in Python.
def _deletion_sql(doomed: str, *, count: bool) -> str:
    if count:
        return f"""/* customers.delete_customers dry run */
SELECT count(*) FROM {CUSTOMERS} c WHERE c.deleted_at IS NULL AND ({doomed})
"""
    return f"""/* customers.delete_customers */
WITH gone AS (
    UPDATE {CUSTOMERS} c SET deleted_at = now(), deleted_by_run = %(deleting_run)s
    WHERE c.deleted_at IS NULL AND ({doomed})
    RETURNING c.customer_id, c.seq
), changes AS (
    INSERT INTO {CHANGES} (cursor, kind, customer_id, seq, run_id, at, changed)
    SELECT head.top + row_number() OVER (ORDER BY g.seq), '{ChangeKind.DELETED}', g.customer_id, g.seq,
           %(deleting_run)s, statement_timestamp(), 0
    FROM gone g CROSS JOIN {_HEAD}
)
SELECT count(*) FROM gone
"""


def count_deletions(cursor, *, doomed: str, params: dict) -> int:
    """How many live customers `doomed` would delete, under the write lock (so the count stays true)."""
    lock_writers(cursor)
    cursor.execute(_deletion_sql(doomed, count=True), params)
    return cursor.fetchone()[0]


def delete_customers(cursor, *, doomed: str, params: dict, run_id: int) -> int:
    """Soft-delete the live customers `doomed` picks out, on behalf of `run_id`; return how many.

    The rows stay, with their `seq`: a deleted customer is a hole in the live listing, and
    one the upstream lists again is restored in place by `merge_staged`.
    """
    lock_writers(cursor)
    cursor.execute(_deletion_sql(doomed, count=False), params | {"deleting_run": run_id})
    return cursor.fetchone()[0]


def merge_staged(
    cursor,
    *,
    staged_table: str,
    run_id: int,
    first: int = 0,
    last: int = 0,
    positions: list[int] | None = None,
    dry_run: bool = False,
) -> MergeCounts:
    """Insert or update customers from the staged rows of `run_id` at positions [first, last] (or `positions`).

    The rows must have distinct customer ids, and none may take an email another customer
    keeps (the caller refuses those). A row may take an email a customer of the batch gives
    up, naming that customer in `conflicting_customer_id`.
    Runs on the caller's cursor, inside the caller's transaction, and takes the write
    lock. With `dry_run` nothing is written; the counts say what would have been.
    """
    lock_writers(cursor)
    listed = positions is not None
    params = {"run": run_id, "first": first, "last": last, "positions": positions}
    if not dry_run:
        cursor.execute(release_sql(staged_table, listed), params)
    statement = compare_sql(staged_table, listed) if dry_run else merge_sql(staged_table, listed)
    cursor.execute(statement, params)
    inserted, updated, pending, restored = cursor.fetchone()
    return MergeCounts(inserted=inserted, updated=updated, unchanged=pending - inserted - updated, restored=restored)


_NO_STATE = ", ".join(f"{field} = NULL" for field in CustomerChange.STATE_FIELDS)

# What an erased person's row keeps: its `seq` (the listing's dense key) and `created_at`, under
# a new random id, as a deleted slot nobody's data is in; every event of the person loses all
# but its cursor, kind and time. Parameters: %(id)s.
_ERASE_SQL = (
    # Events first, found by the row's `seq` (their index) while the row still has the id.
    f"""/* customers.erase_customer: events */
UPDATE {CHANGES} SET customer_id = NULL, seq = NULL, changed = 0, {_NO_STATE}
WHERE seq = (SELECT seq FROM {CUSTOMERS} WHERE customer_id = %(id)s)
""",
    f"""/* customers.erase_customer */
UPDATE {CUSTOMERS} SET customer_id = gen_random_uuid(), first_name = '', last_name = '', email = '',
    phone = NULL, address = NULL, date_of_birth = NULL, account_balance = NULL, updated_at = now(),
    deleted_at = coalesce(deleted_at, now()), deleted_by_run = NULL, erased_at = now()
WHERE customer_id = %(id)s
""",
)
_ERASED_EVENT_SQL = f"""/* customers.erase_customer: the erased event */
INSERT INTO {CHANGES} (cursor, kind, customer_id, at, changed)
SELECT head.top + 1, '{ChangeKind.ERASED}', %(id)s, statement_timestamp(), 0 FROM {_HEAD}
"""


def erase_customer(cursor, *, customer_id) -> dict[str, int]:
    """Remove a person from the customers table and every change event; the rows changed in each.

    The feed keeps the events as tombstones (so cursors stay gapless) and gains one `erased`
    event naming the id, which tells consumers to erase their copies. Takes the write lock.
    """
    lock_writers(cursor)
    params = {"id": customer_id}
    removed = {}
    for table, statement in zip(("events", "customers"), _ERASE_SQL, strict=True):
        cursor.execute(statement, params)
        removed[table] = cursor.rowcount
    if any(removed.values()):
        cursor.execute(_ERASED_EVENT_SQL, params)
    return removed
