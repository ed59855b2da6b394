"""Records per second of `ingestion.validation.validate_record` alone, on the 10k dataset.

The dataset is decoded once, as the client decodes it (Decimals kept exact); each run
validates every record. The median of --repeat runs is reported, so we can compare it
with the end-to-end ingestion rate and see whether validation is the bottleneck.

    python bench/validation.py --count 10000 --repeat 5
"""

import argparse
import json
import os
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import datasets, environment, report

MAX_SECONDS = 300


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000, help="Dataset size (default 10000).")
    parser.add_argument("--seed", type=int, default=42, help="Dataset seed (default 42).")
    parser.add_argument("--repeat", type=int, default=5, help="Runs; the median is reported (default 5).")
    args = parser.parse_args()
    env = environment.process_env(environment.DEFAULT_DATABASE_URL)
    # Validation touches no database; settings are needed for the imports alone.
    for name in ("DJANGO_SETTINGS_MODULE", "DJANGO_SECRET_KEY", "DATABASE_URL"):
        os.environ.setdefault(name, env[name])
    import django

    django.setup()
    from ingestion.validation import Rejection, validate_record

    path = datasets.base_dataset(args.count, seed=args.seed, env=env)
    with path.open("rb") as lines:
        records = [json.loads(line, parse_float=Decimal) for line in lines]
    print(f"load average before: {environment.load_average()}")
    rates, rejected = [], 0
    deadline = time.monotonic() + MAX_SECONDS
    for _ in range(max(1, args.repeat)):
        started = time.perf_counter()
        rejected = sum(isinstance(validate_record(record), Rejection) for record in records)
        rates.append(len(records) / (time.perf_counter() - started))
        if time.monotonic() > deadline:
            break
    print(f"load average after: {environment.load_average()}\n")
    rate = report.median(rates)
    print(
        report.table(
            ("records", "runs", "rejected", "records/s (median)", "us/record", "min", "max"),
            [(len(records), len(rates), rejected, round(rate), 1e6 / rate, round(min(rates)), round(max(rates)))],
        )
    )


if __name__ == "__main__":
    main()
