"""Fast set-up for the read benchmark: COPY a dataset straight into customers.

    python -m bench.loader DATASET.jsonl

Not the pipeline: records are validated with `validate_record`, the first occurrence of
each customer_id and of each email (ignoring case) is kept, `seq` is numbered 1..N in
file order, and everything goes in with one COPY. The table ends as a cold ingestion of
the same file leaves it (same rows, same seq), several times faster, so the read
benchmark can set up a million rows in well under a minute of ingestion time.
"""

import argparse
import json
import os
import time
from decimal import Decimal
from pathlib import Path

import django


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    django.setup()
    started = time.perf_counter()
    loaded = load(args.dataset)
    print(f"loaded {loaded} customers in {time.perf_counter() - started:.1f} s")


def load(path: Path) -> int:
    from django.db import connection, transaction
    from django.utils import timezone

    from customers.models import Customer
    from ingestion.validation import ValidRecord, validate_record

    table = Customer._meta.db_table
    now = timezone.now()
    seen_ids, seen_emails = set(), set()
    seq = 0
    with transaction.atomic(), connection.cursor() as cursor, path.open("rb") as lines:
        columns = (*Customer.SOURCE_FIELDS, "seq", "ingested_at")
        with cursor.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for line in lines:
                record = validate_record(json.loads(line, parse_float=Decimal))
                if not isinstance(record, ValidRecord):
                    continue
                email = record.email.lower()
                if record.customer_id in seen_ids or email in seen_emails:
                    continue
                seen_ids.add(record.customer_id)
                seen_emails.add(email)
                seq += 1
                copy.write_row([getattr(record, name) for name in Customer.SOURCE_FIELDS] + [seq, now])
        cursor.execute(f"ANALYZE {table}")
    return seq


if __name__ == "__main__":
    main()
