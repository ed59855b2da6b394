"""Records per second of validation alone, on the 10k dataset, each of three ways:

  validate_record   the field-by-field checks of records decoded once beforehand
                    (Decimals kept exact), as before the plain path existed, without decoding
  exact decode + validate_record
                    each page of 100 as the upstream sends it, decoded by the exact decoder
                    (the standard library's json) and checked field by field: the client's
                    work per page before msgspec
  C decode + validate_page
                    the same pages read by the client now (ingestion/source.py keeps each
                    record's text) and validated by `validate_page` (plain records decoded in
                    C into their types, the rest as above)

The median of --repeat runs is reported for each, and each way's time per record against the
second's.

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
    from ingestion import exact_json, source
    from ingestion.source import Page
    from ingestion.validation import Rejection, validate_page, validate_record

    path = datasets.base_dataset(args.count, seed=args.seed, env=env)
    lines = path.read_bytes().splitlines()
    records = [json.loads(line, parse_float=Decimal) for line in lines]
    # The pages as the upstream serves them: its envelope around 100 records.
    bodies = [
        b'{"data":[%b],"total":%d,"page":%d,"limit":100}' % (b",".join(lines[start : start + 100]), len(lines), number)
        for number, start in enumerate(range(0, len(lines), 100), start=1)
    ]

    def old_pages() -> int:
        documents = (exact_json.loads(body)["data"] for body in bodies)
        return sum(isinstance(validate_record(raw), Rejection) for data in documents for raw in data)

    def new_pages() -> int:
        pages = (validate_page(Page(1, 100, len(lines), source._envelope(body)["data"])) for body in bodies)
        return sum(isinstance(outcome, Rejection) for page in pages for outcome in page.outcomes)

    ways = {
        "validate_record (records decoded beforehand)": lambda: sum(
            isinstance(validate_record(record), Rejection) for record in records
        ),
        "exact decode + validate_record": old_pages,
        "C decode + validate_page": new_pages,
    }
    print(f"load average before: {environment.load_average()}")
    rows = []
    for name, way in ways.items():
        rates, rejected = [], 0
        deadline = time.monotonic() + MAX_SECONDS
        for _ in range(max(1, args.repeat)):
            started = time.perf_counter()
            rejected = way()
            rates.append(len(records) / (time.perf_counter() - started))
            if time.monotonic() > deadline:
                break
        rate = report.median(rates)
        rows.append(
            [name, len(records), len(rates), rejected, round(rate), 1e6 / rate, round(min(rates)), round(max(rates))]
        )
    print(f"load average after: {environment.load_average()}\n")
    reference = next(row[5] for row in rows if row[0].startswith("exact"))
    headers = ("way", "records", "runs", "rejected", "records/s (median)", "us/record", "min", "max")
    print(report.table((*headers, "time / exact decode"), [(*row, row[5] / reference) for row in rows]))


if __name__ == "__main__":
    main()
