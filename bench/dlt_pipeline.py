"""The peer baseline: what a user would write with dlt instead of this project, run once.

A plain dlt resource over the upstream's page/limit listing, merged on `customer_id` into
PostgreSQL: the job the compared service does. It runs in bench/peers.py's own virtual
environment, so it imports nothing of the project. Prints one JSON line: seconds around
`pipeline.run`, peak RSS, CPU seconds, rows in the destination table.

    python bench/dlt_pipeline.py --source-url http://127.0.0.1:5000 --database-url postgres://... [--fresh]
"""

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dlt
import psycopg2
import requests

DATASET = "peers"
PIPELINE = "peers_customers"


@dlt.resource(name="customers", write_disposition="merge", primary_key="customer_id")
def customers(base_url: str, limit: int):
    """Every page of GET /api/customers, in order, until the announced total is read."""
    session = requests.Session()
    page = 1
    while True:
        response = session.get(f"{base_url}/api/customers", params={"page": page, "limit": limit}, timeout=60)
        response.raise_for_status()
        body = response.json()
        if body["data"]:
            yield body["data"]
        if not body["data"] or page * limit >= body["total"]:
            return
        page += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source-url", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--pipelines-dir", type=Path, default=Path(tempfile.gettempdir()) / "bench-dlt-pipelines")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--fresh", action="store_true", help="Drop the destination and the pipeline's state first.")
    args = parser.parse_args()
    if args.fresh:
        shutil.rmtree(args.pipelines_dir, ignore_errors=True)
        with psycopg2.connect(args.database_url) as conn, conn.cursor() as cursor:
            cursor.execute(f"DROP SCHEMA IF EXISTS {DATASET} CASCADE")
            cursor.execute(f"DROP SCHEMA IF EXISTS {DATASET}_staging CASCADE")
    credentials = args.database_url
    parts = urlsplit(credentials)
    if parts.password is None:
        # dlt insists on a password; a server with trust authentication ignores this one.
        credentials = urlunsplit(
            parts._replace(netloc=f"{parts.username}:unused@{parts.hostname}:{parts.port or 5432}")
        )
    pipeline = dlt.pipeline(
        pipeline_name=PIPELINE,
        pipelines_dir=str(args.pipelines_dir),
        destination=dlt.destinations.postgres(credentials=credentials),
        dataset_name=DATASET,
    )
    started = time.perf_counter()
    pipeline.run(customers(args.source_url, args.limit))
    seconds = time.perf_counter() - started
    with psycopg2.connect(args.database_url) as conn, conn.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {DATASET}.customers")  # noqa: S608 - a constant, no input
        rows = cursor.fetchone()[0]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rows": rows,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "peak_rss_mib": usage.ru_maxrss / 1024,
                "dlt": dlt.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
