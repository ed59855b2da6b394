"""What each secondary index on customers costs the merge of new rows, at a given table size.

Loads SIZE customers (bench/loader.py), stages NEW records with ids and emails the table
does not have, then times the MERGE statement of customers/merge.py with EXPLAIN ANALYZE:
as shipped, and with each group of secondary indexes dropped. Every variant runs in a
transaction that is rolled back, so the table and its indexes stay as they were.

    python bench/indexes.py --size 1000000 --new 10000 --repeat 3
"""

import argparse
import json
import os
import statistics
import sys
import uuid
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import datasets, environment, report

NEW_IDS = uuid.UUID("2f0c8a55-6d1e-4c55-9b6a-0d6f4c1f7e21")  # namespace of the staged new ids
# Groups of secondary indexes, named as the migrations create them.
VARIANTS = {
    "as shipped": [],
    "without (created_at, customer_id)": ["customer_created_idx"],
    "without (last_name, customer_id)": ["customer_last_name_idx"],
    "without the two trigram GIN (name search)": ["customer_first_name_trgm", "customer_last_name_trgm"],
    "without the two updated_at": ["customer_updated_seq_idx", "customer_updated_nf_seq_idx"],
}
VARIANTS["without all six"] = [name for names in VARIANTS.values() for name in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000, help="Customers in the table (default 1,000,000).")
    parser.add_argument("--new", type=int, default=10_000, help="New records merged (default 10,000).")
    parser.add_argument("--repeat", type=int, default=3, help="Runs per variant; the median is reported.")
    environment.add_database_url_argument(parser)
    args = parser.parse_args()
    database_url, env = environment.migrated(args.database_url)
    table_data = datasets.base_dataset(args.size, seed=42, env=env)
    new_data = datasets.base_dataset(args.new, seed=7, env=env)
    os.environ.update(env)

    import django

    django.setup()
    from bench.loader import load

    environment.empty_run_tables(database_url, customers=True)
    load(table_data)
    load_before = environment.load_average()
    try:
        params = stage_new_records(new_data)
        results = {label: [merge_ms(params, drop) for _ in range(args.repeat)] for label, drop in VARIANTS.items()}
    finally:
        environment.empty_run_tables(database_url, customers=True)
    saved = report.save("indexes", {"size": args.size, "new": params["count"], "results": results})
    print(f"\nload average before: {load_before}; after: {environment.load_average()}; raw: {saved.name}\n")
    rows = [(label, statistics.median(times), min(times), max(times)) for label, times in results.items()]
    print(f"MERGE of {params['count']:,} new customers into {args.size:,}, ms (EXPLAIN ANALYZE, rolled back):\n")
    print(report.table(("indexes on customers", "median ms", "min", "max"), rows))


def stage_new_records(path: Path) -> dict:
    """Stage the valid records of `path` under new ids and emails; return the MERGE parameters."""
    from django.db import connection, transaction
    from django.utils import timezone

    from ingestion.models import IngestRun, RunStatus
    from ingestion.staging import StagedRow, stage_rows
    from ingestion.validation import ValidRecord, validate_record

    run = IngestRun.objects.create(
        trigger="command", source_url="http://bench.invalid", page_size=100, status=RunStatus.SUCCEEDED
    )
    rows = []
    with path.open("rb") as lines:
        for index, line in enumerate(lines):
            record = validate_record(json.loads(line, parse_float=Decimal))
            if isinstance(record, ValidRecord):
                fresh = record._replace(customer_id=uuid.uuid5(NEW_IDS, str(index)), email=f"new{index}.{record.email}")
                rows.append(StagedRow(1, index + 1, fresh))
    with transaction.atomic(), connection.cursor() as cursor:
        stage_rows(cursor, run_id=run.pk, rows=rows, staged_at=timezone.now())
    return {"run": run.pk, "first": 1, "last": rows[-1].position, "count": len(rows)}


def merge_ms(params: dict, drop: list[str]) -> float:
    """Execution time of the MERGE statement with `drop` indexes gone, all rolled back."""
    from django.db import connection, transaction

    from customers.merge import merge_sql
    from ingestion.classification import classify_batch
    from ingestion.models import StagedCustomer

    query = {key: params[key] for key in ("run", "first", "last")}
    with transaction.atomic(), connection.cursor() as cursor:
        for name in drop:
            cursor.execute(f"DROP INDEX {name}")
        classify_batch(cursor, run_id=query["run"], first=query["first"], last=query["last"])
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + merge_sql(StagedCustomer._meta.db_table), query)
        elapsed = cursor.fetchone()[0][0]["Execution Time"]
        transaction.set_rollback(True)
    return elapsed


if __name__ == "__main__":
    main()
