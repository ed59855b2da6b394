"""The live customer listing's total and pages at 1M rows as deletions leave holes in `seq`.

Fills the customers table with `--size` synthetic rows (seq 1..N) in SQL, soft-deletes a
random set of them for each hole count, vacuums, then times the paginator the API uses
(customers/views.py, CustomerPagination) in-process, page 1, the middle page and the last
page of 100, each `--repeat` times, medians in ms:

  live      the default listing: total = max(seq) - deleted rows, pages seek past the holes
  whole     include_deleted=true: the whole table, total = max(seq), pages are seq ranges
  offset    the live listing counted and offset, as any other filtered listing is: the
            design the seek replaces

and the mass-deletion guard's count of live customers (`Customer.objects.live_count()`)
against `live().count()`.

    python bench/live_listing.py --size 1000000 --holes 0,1000,10000,100000
"""

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import environment, report

LIMIT = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--holes", default="0,1000,10000,100000", help="Comma-separated deleted-row counts.")
    parser.add_argument("--repeat", type=int, default=15)
    environment.add_database_url_argument(parser)
    args = parser.parse_args()
    database_url, env = environment.migrated(args.database_url)
    os.environ.update(env)

    import django

    django.setup()
    load_before = environment.load_average()
    fill(database_url, args.size)
    results = {}
    for holes in [int(value) for value in args.holes.split(",")]:
        punch(database_url, args.size, holes)
        results[holes] = measure(args.repeat)
        print(f"{holes:>7} holes: {results[holes]}", flush=True)
    environment.empty_run_tables(database_url, customers=True)
    machine = environment.machine(database_url)
    saved = report.save("live_listing", {"machine": machine, "load_before": load_before, "results": results})
    print(f"\nload average before: {load_before}; after: {environment.load_average()}")
    print(f"raw results: {saved.relative_to(environment.ROOT)}\n")
    print(render(args.size, results))


def fill(database_url: str, size: int) -> None:
    environment.empty_run_tables(database_url, customers=True)
    with environment.connect(database_url) as conn:
        conn.execute(
            """
            INSERT INTO customers_customer (customer_id, first_name, last_name, email, created_at, seq, ingested_at)
            SELECT gen_random_uuid(), 'First' || n, 'Last' || n, 'customer' || n || '@example.com', now(), n, now()
            FROM generate_series(1, %s) AS n
            """,
            [size],
        )


def punch(database_url: str, size: int, holes: int) -> None:
    """Soft-delete `holes` random rows (and only those), then vacuum so index-only scans apply."""
    doomed = random.Random(holes).sample(range(1, size + 1), holes)
    with environment.connect(database_url) as conn:
        conn.execute("UPDATE customers_customer SET deleted_at = NULL WHERE deleted_at IS NOT NULL")
        conn.execute("UPDATE customers_customer SET deleted_at = now() WHERE seq = ANY(%s)", [doomed])
    with environment.connect(database_url) as conn:
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE customers_customer")


def measure(repeat: int) -> dict[str, dict[str, float]]:
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from api.pagination import PageLimitPagination
    from customers.models import Customer
    from customers.views import CustomerPagination

    total = Customer.objects.live().count()
    pages = {"first": 1, "middle": max(total // LIMIT // 2, 1), "last": max((total + LIMIT - 1) // LIMIT, 1)}
    variants = {
        "live": (CustomerPagination, lambda: Customer.objects.for_listing()),
        "whole": (CustomerPagination, lambda: Customer.objects.for_listing(include_deleted=True)),
        "offset": (PageLimitPagination, lambda: Customer.objects.for_listing()),
    }
    timings = {f"{name} {page}": [] for name in variants for page in pages}
    # The mass-deletion guard's count of live customers (ingestion/deletions.py), and counting them.
    counts = {"guard live_count": Customer.objects.live_count, "live count(*)": Customer.objects.live().count}
    timings |= {name: [] for name in counts}
    for _ in range(repeat):
        for name, count in counts.items():
            started = time.perf_counter()
            assert count() == total
            timings[name].append((time.perf_counter() - started) * 1000)
        for name, (paginator_class, queryset) in variants.items():
            for page_name, page in pages.items():
                request = Request(APIRequestFactory().get("/", {"page": page, "limit": LIMIT}))
                started = time.perf_counter()
                rows = paginator_class().paginate_queryset(queryset(), request)
                timings[f"{name} {page_name}"].append((time.perf_counter() - started) * 1000)
                assert len(rows) > 0
    return {key: round(statistics.median(values), 2) for key, values in timings.items()}


def render(size: int, results: dict[int, dict[str, float]]) -> str:
    columns = list(next(iter(results.values())))
    lines = [
        f"Listing of {size:,} customers, page of {LIMIT}: median ms (total + page, in-process)",
        "",
        "| deleted rows | " + " | ".join(columns) + " |",
        "| --- |" + " --- |" * len(columns),
    ]
    for holes, row in results.items():
        lines.append(f"| {holes:,} | " + " | ".join(f"{row[column]:.2f}" for column in columns) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
