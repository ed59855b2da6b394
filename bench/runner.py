"""One benchmarked operation in a fresh process, so its peak RSS is its own.

    python -m bench.runner {ingest,read,bulk-create} --source-url URL --output RESULT.json

- ingest: `ingestion.pipeline.ingest`, exactly what `manage.py ingest_customers` runs
  (`--mode incremental` as `ingest_customers --mode incremental`).
- read: the plain read of the same pages, with the same client, settings and concurrency
  (`source.fetch_pages` over an `UpstreamClient` built as a run builds it).
- bulk-create: the ORM baseline, the same pages validated the same way and written with
  `Customer.objects.bulk_create` in batches of 2000 (conflicting rows skipped).

The result (seconds, counters, peak RSS) is written as JSON to --output.
"""

import argparse
import cProfile
import json
import os
import resource
import sys
import time
from pathlib import Path

import django

BULK_BATCH = 2000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("operation", choices=sorted(OPERATIONS))
    parser.add_argument("--source-url", required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--profile", type=Path, help="Write a cProfile of the operation here.")
    parser.add_argument(
        "--switch-interval", type=float, help="sys.setswitchinterval for this process (GIL hand-over, seconds)."
    )
    parser.add_argument(
        "--trace-batches", action="store_true", help="Time every batch commit and its steps (ingest only)."
    )
    parser.add_argument("--mode", choices=("full", "incremental"), default="full", help="Run mode (ingest only).")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    django.setup()
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    operation = OPERATIONS[args.operation]
    profiler = cProfile.Profile() if args.profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    options = {"mode": args.mode} if args.operation == "ingest" else {}
    result = operation(args.source_url, trace=args.trace_batches, **options)
    if profiler:
        profiler.disable()
        profiler.dump_stats(args.profile)
    result["seconds"] = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    result["peak_rss_mib"] = peak_rss_mib()
    args.output.write_text(json.dumps(result))


def ingest(source_url: str, *, trace: bool, mode: str = "full") -> dict:
    from ingestion import pipeline
    from ingestion.models import RunTrigger

    batch_seconds: list[float] = []
    step_seconds: dict[str, float] = {}

    def on_step(name: str, seconds: float) -> None:
        if name == "batch":
            batch_seconds.append(round(seconds, 4))
        else:
            step_seconds[name] = step_seconds.get(name, 0.0) + seconds

    run = pipeline.ingest(
        trigger=RunTrigger.COMMAND, source_url=source_url, mode=mode, on_step=on_step if trace else None
    )
    result = run.counters() | {
        "status": run.status,
        "error": run.error,
        "rows": run.fetched,
        "mode": run.mode,
        "deleted": run.deleted,
        "restored": run.restored,
        "tombstones": run.tombstones,
        "deletions_held": run.deletions_held,
    }
    if trace:
        result["batch_seconds"], result["step_seconds"] = batch_seconds, step_seconds
    return result


def read(source_url: str, *, trace: bool) -> dict:
    from django.conf import settings

    from ingestion import pipeline
    from ingestion.source import UpstreamClient, fetch_pages

    page_size = settings.INGESTION_PAGE_SIZE
    client = UpstreamClient(source_url, page_size=page_size, settings=pipeline.client_settings(page_size))
    pages = rows = 0
    for page in fetch_pages(client, first=1):
        pages += 1
        rows += len(page.records)
    return {"status": "succeeded", "pages": pages, "rows": rows}


def bulk_create(source_url: str, *, trace: bool) -> dict:
    from django.conf import settings
    from django.db import transaction
    from django.utils import timezone

    from customers.models import Customer
    from ingestion import pipeline
    from ingestion.source import UpstreamClient, fetch_pages
    from ingestion.validation import ValidRecord, validate_record

    page_size = settings.INGESTION_PAGE_SIZE
    client = UpstreamClient(source_url, page_size=page_size, settings=pipeline.client_settings(page_size))
    fields = ValidRecord._fields
    rows = seq = 0
    write_seconds = 0.0
    batch: list[Customer] = []
    now = timezone.now()

    def write() -> float:
        started = time.perf_counter()
        with transaction.atomic():
            Customer.objects.bulk_create(batch, batch_size=BULK_BATCH, ignore_conflicts=True)
        batch.clear()
        return time.perf_counter() - started

    for page in fetch_pages(client, first=1):
        for raw in page.records:
            rows += 1
            record = validate_record(raw)
            if isinstance(record, ValidRecord):
                seq += 1
                values = {name: getattr(record, name) for name in fields}
                batch.append(Customer(**values, seq=seq, ingested_at=now))
        if len(batch) >= BULK_BATCH:
            write_seconds += write()
    if batch:
        write_seconds += write()
    return {"status": "succeeded", "rows": rows, "written": Customer.objects.count(), "write_seconds": write_seconds}


OPERATIONS = {"ingest": ingest, "read": read, "bulk-create": bulk_create}


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM), which exec resets; ru_maxrss as a fallback."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
