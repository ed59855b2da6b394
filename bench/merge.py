"""The database side of an ingestion alone: batch commits of pre-validated records.

Reads a generated dataset from disk (no HTTP), validates it outside the clock, and
times only `batches.commit_batch` (stage with COPY, record rejections, classify, merge, count),
batch by batch, exactly as a run calls it. Per repeat: a cold pass into an empty
customers table, then a warm pass of the same records. This isolates what the
PostgreSQL server and the index set cost per row from reading and validation.

    python bench/merge.py --size 1000000 --repeat 1
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import datasets, environment, report

PAGE = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000, help="Records (default 1,000,000).")
    parser.add_argument("--repeat", type=int, default=1, help="Cold + warm passes; medians are reported (default 1).")
    parser.add_argument("--seed", type=int, default=42, help="Dataset seed (default 42).")
    environment.add_database_url_argument(parser)
    args = parser.parse_args()
    database_url, env = environment.migrated(args.database_url)
    dataset = datasets.base_dataset(args.size, seed=args.seed, env=env)
    os.environ.update(env)

    import django

    django.setup()
    load_before = environment.load_average()
    passes = {"cold": [], "warm": []}
    for _ in range(args.repeat):
        environment.empty_run_tables(database_url, customers=True)
        for name in passes:
            environment.empty_run_tables(database_url, customers=False)
            passes[name].append(commit_all(dataset))
            print(f"{name}: {passes[name][-1]['summary']}", flush=True)
    environment.empty_run_tables(database_url, customers=True)
    saved = report.save(
        "merge",
        {
            "machine": environment.machine(database_url),
            "load_before": load_before,
            "load_after": environment.load_average(),
            "size": args.size,
            "passes": passes,
        },
    )
    print(f"\nload average before: {load_before}; after: {environment.load_average()}")
    print(f"raw results: {saved.relative_to(environment.ROOT)}\n")
    print(render(args.size, passes))


def commit_all(dataset: Path) -> dict:
    """Commit every record of `dataset` in batches as one run; time the commits only."""
    from django.conf import settings
    from django.db import connection

    from customers import indexes
    from ingestion import runs
    from ingestion.batches import Batch, commit_batch
    from ingestion.models import IngestRun, RunStatus
    from ingestion.source import Page
    from ingestion.validation import validate_page

    run = IngestRun.objects.create(
        trigger="command", source_url="http://bench.invalid", page_size=PAGE, status=RunStatus.RUNNING
    )
    batch_seconds: list[float] = []
    statements: list[dict[str, float]] = []  # per batch: seconds per SQL statement
    batch = Batch(first_position=1)

    def timed(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            elapsed = time.perf_counter() - started
            name = _statement_name(sql)
            statements[-1][name] = statements[-1].get(name, 0.0) + elapsed

    total = sum(1 for _ in dataset.open("rb"))

    # COPY goes through the raw psycopg cursor, which execute_wrapper does not see: the
    # commit's own step timing gives it.
    def copy_step(name: str, seconds: float) -> None:
        if name == "copy":
            statements[-1]["COPY"] = statements[-1].get("COPY", 0.0) + seconds

    def commit() -> None:
        nonlocal run, batch
        statements.append({})
        started = time.perf_counter()
        with connection.execute_wrapper(timed):
            run = commit_batch(run, batch, on_step=copy_step)
        # Whatever no timed step accounts for: COMMIT and the Python around the statements.
        statements[-1]["COMMIT and the rest"] = time.perf_counter() - started - sum(statements[-1].values())
        batch_seconds.append(time.perf_counter() - started)
        batch = Batch(first_position=run.fetched + 1)

    with dataset.open("rb") as lines:
        number, records = 0, []
        for line in lines:
            records.append(json.loads(line))
            if len(records) == PAGE:
                number += 1
                batch.add(validate_page(Page(number, PAGE, total, records)))
                records = []
                if batch.size >= settings.INGESTION_BATCH_SIZE:
                    commit()
        if records:
            batch.add(validate_page(Page(number + 1, PAGE, total, records)))
        commit()
    # A cold pass is a first load: its first batch deferred the readers' indexes, which the
    # pipeline would build when the walk ends (customers/indexes.py). Timed apart from the commits.
    started = time.perf_counter()
    built = indexes.restore_reader_indexes()
    build_seconds = time.perf_counter() - started if built else 0.0
    run = runs.mark_finished(run.pk, RunStatus.SUCCEEDED)
    connection.close()
    seconds = sum(batch_seconds)
    tenth = max(1, len(batch_seconds) // 10)
    counters = run.counters()
    return {
        "seconds": seconds,
        "rows_per_second": run.fetched / seconds,
        "batches": len(batch_seconds),
        "first_tenth_ms": 1000 * statistics.mean(batch_seconds[:tenth]),
        "last_tenth_ms": 1000 * statistics.mean(batch_seconds[-tenth:]),
        "counters": counters,
        "statements_first_tenth_ms": _mean_per_statement(statements[:tenth]),
        "statements_last_tenth_ms": _mean_per_statement(statements[-tenth:]),
        "index_build_seconds": build_seconds,
        "summary": f"{seconds:.2f} s in commits, {build_seconds:.2f} s building deferred indexes, "
        f"{run.fetched / seconds:,.0f} rows/s, {counters}",
    }


def _statement_name(sql: str) -> str:
    """A short name for a statement: the constant it came from, its leading comment, else its first words."""
    from ingestion import classification, failures

    for module in (classification, failures):
        for name, value in vars(module).items():
            if name.isupper() and value == sql:
                return name
    if sql.startswith("/*"):
        return sql[2 : sql.index("*/")].strip()
    return " ".join(sql.split()[:3])


def _mean_per_statement(batches: list[dict[str, float]]) -> dict[str, float]:
    names = {name for batch in batches for name in batch}
    return {name: round(1000 * sum(b.get(name, 0.0) for b in batches) / len(batches), 2) for name in sorted(names)}


def render(size: int, passes: dict[str, list[dict]]) -> str:
    lines = [
        "| records | pass | commit seconds | index build s | rows/s | ms per batch, first tenth | last tenth |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, results in passes.items():
        for part in ("first", "last"):
            print(f"{name}, ms per statement, {part} tenth of batches: {results[-1][f'statements_{part}_tenth_ms']}")
        median = {
            key: statistics.median(r[key] for r in results)
            for key, value in results[0].items()
            if isinstance(value, int | float)
        }
        lines.append(
            f"| {size:,} | {name} | {median['seconds']:.2f} | {median['index_build_seconds']:.2f} "
            f"| {median['rows_per_second']:,.0f} "
            f"| {median['first_tenth_ms']:.1f} | {median['last_tenth_ms']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
