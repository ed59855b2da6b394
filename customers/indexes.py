"""A first load into an empty customers table builds the readers' indexes once, at the end.

Keeping an index up to date row by row costs a cold load more than building it once from the
loaded rows, as pg_restore does (the figures are in docs/benchmarks.md). The indexes that only
readers use can wait: the API's orderings and name search. Every write keeps its own: the
primary key and the unique indexes (the merge looks customers up by id, classification and the
unique constraint by email, the dense `seq` by its maximum), and the partial ones on deleted
rows, which an insert never touches. So the rule is "not unique, not partial".

`defer_reader_indexes` drops them inside the first batch's transaction, and only while the table
is empty; `DeferredIndex` rows remember each definition, in the same transaction, so a process
killed halfway leaves the way back in the database. `restore_reader_indexes` builds whatever is
remembered and forgets it. Ingestion calls it when the load's walk ends, when its run stops
early, and, for a run that died, from the periodic sweep and at the start of any other run;
meanwhile the API answers from the table without those indexes (slower sorts and searches,
the same answers).
"""

import logging

from django.db import OperationalError, connection, transaction

from customers.merge import CUSTOMERS, lock_writers
from customers.models import DeferredIndex

logger = logging.getLogger(__name__)

# Non-unique, non-partial indexes of the customers table, with the statement that creates each.
_READER_INDEXES = f"""
SELECT i.relname, pg_get_indexdef(x.indexrelid)
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
WHERE x.indrelid = '{CUSTOMERS}'::regclass AND NOT x.indisunique AND NOT x.indisprimary AND x.indpred IS NULL
ORDER BY i.relname
"""


def defer_reader_indexes(cursor, *, run_id: int) -> list[str]:
    """Drop the readers' indexes while customers is empty, remembering them; the names dropped.

    Call inside the transaction of the load's first batch, before it writes: a rollback
    brings the indexes back with everything else. Takes the write lock. Drops nothing when
    the table has a row (deleted ones count) or a reader holds it past a short lock wait.
    """
    lock_writers(cursor)
    cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {CUSTOMERS})")
    if cursor.fetchone()[0]:
        return []
    cursor.execute(_READER_INDEXES)
    indexes = cursor.fetchall()
    # DROP INDEX waits for readers of the table, and every new reader waits behind it: give up
    # quickly instead (the load then keeps its indexes, as any other does).
    try:
        with transaction.atomic():
            cursor.execute("SET LOCAL lock_timeout = '2s'")
            for name, _definition in indexes:
                cursor.execute(f'DROP INDEX "{name}"')
            cursor.execute("SET LOCAL lock_timeout TO DEFAULT")
    except OperationalError as exc:
        logger.warning("readers' indexes kept: the table is busy", extra={"run_id": run_id, "error": str(exc)})
        return []
    DeferredIndex.objects.bulk_create(
        [DeferredIndex(name=name, definition=definition, run_id=run_id) for name, definition in indexes]
    )
    return [name for name, _definition in indexes]


def deferred_by() -> int | None:
    """The run whose load deferred the readers' indexes, or None when none waits to be built."""
    return DeferredIndex.objects.values_list("run_id", flat=True).first()


def restore_reader_indexes() -> list[str]:
    """Build every deferred index, in one transaction under the write lock; the names built.

    Readers go on meanwhile (CREATE INDEX blocks writes only). An index that exists already
    (created by hand, say) is left as it is.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        lock_writers(cursor)
        deferred = list(DeferredIndex.objects.select_for_update().order_by("name"))
        if not deferred:
            return []
        for index in deferred:
            cursor.execute(index.definition.replace("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1))
        DeferredIndex.objects.filter(pk__in=[index.pk for index in deferred]).delete()
        # The statistics the planner has are the empty table's: readers' plans need the loaded one's.
        cursor.execute(f"ANALYZE {CUSTOMERS}")
    names = [index.name for index in deferred]
    logger.info("readers' indexes built", extra={"indexes": names})
    return names
