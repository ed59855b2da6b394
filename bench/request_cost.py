"""What one API request costs in-process: Django's WSGI handler called directly, no server, no network.

The customers table is filled as bench/read_api.py fills it (bench/loader.py), and each
request goes through the whole middleware stack with an API key (`Bearer`) that authenticates
and is counted by the read throttle (its limit raised out of the way), exactly as under
gunicorn, minus the HTTP server. Measured: list page 1 (limit=100) and a customer by id over
a fixed sample of ids, `--requests` each, after a warm-up; the median of `--repeat` rounds,
in ms a request. What is left is this process's Python and its round trips to PostgreSQL.

With `--against-django-health-check` each round also measures the same requests with Django's
own check of a kept connection (a `SELECT 1` at the start of every request) in place of
ours (config/postgresql/base.py), the two alternating, and reports the ratio.

    python bench/request_cost.py --size 10000 --against-django-health-check
"""

import argparse
import io
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import datasets, environment, report
from bench.environment import ROOT
from bench.read_api import _drop_user, _sample, _token

ENDPOINTS = ("list_first", "detail")


def main() -> None:
    args = parse_args()
    database_url, env = environment.migrated(args.database_url, API_THROTTLE_READS="100000000/minute")
    environment.empty_run_tables(database_url, customers=True)
    dataset = datasets.base_dataset(args.size, seed=42, env=env)
    subprocess.run([sys.executable, "-m", "bench.loader", str(dataset)], cwd=ROOT, env=env, check=True, timeout=1800)
    load_before = environment.load_average()
    print(f"revision {environment.revision()}; load before: {load_before}", flush=True)
    try:
        key = _token(env)
        _rows, ids = _sample(database_url)
        os.environ.update(env)  # this process is the benchmarked one
        results = measure(args, key, ids)
    finally:
        environment.empty_run_tables(database_url, customers=True)
        _drop_user(database_url)
    load_after = environment.load_average()
    saved = report.save(
        "request_cost",
        {
            "machine": environment.machine(database_url),
            "load_before": load_before,
            "load_after": load_after,
            "settings": vars(args),
            "results": results,
        },
    )
    print(f"\nload average before: {load_before}; after: {load_after}; raw results: {saved.relative_to(ROOT)}\n")
    sides = list(results)
    headers = ["endpoint", *(f"{side} ms" for side in sides)]
    if len(sides) == 2:
        headers.append(f"{sides[0]} / {sides[1]}")
    rows = []
    for endpoint in ENDPOINTS:
        medians = [report.median(results[side][endpoint]) for side in sides]
        row = [endpoint, *(report.fmt(value, 3) for value in medians)]
        if len(sides) == 2:
            row.append(report.fmt(medians[0] / medians[1], 2))
        rows.append(row)
    print(
        f"{args.size:,} customers; {args.requests} requests per endpoint and round; medians of {args.repeat} rounds\n"
    )
    print(report.table(headers, rows))


def measure(args, key: str, ids: list[str]) -> dict[str, dict[str, list[float]]]:
    import django

    django.setup()
    from django.core.handlers.wsgi import WSGIHandler
    from django.db.backends.postgresql import base as django_backend

    from config.postgresql import base as our_backend

    ours = our_backend.DatabaseWrapper.is_usable
    sides = {"ours": ours}
    if args.against_django_health_check:
        sides["Django's check"] = django_backend.DatabaseWrapper.is_usable
    app = WSGIHandler()
    paths = {"list_first": ["/api/customers?page=1&limit=100"], "detail": [f"/api/customers/{i}" for i in ids]}
    results: dict = {side: {endpoint: [] for endpoint in ENDPOINTS} for side in sides}
    try:
        for round_ in range(args.repeat):
            order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
            for side in order:
                our_backend.DatabaseWrapper.is_usable = sides[side]
                for endpoint in ENDPOINTS:
                    run = [paths[endpoint][n % len(paths[endpoint])] for n in range(args.requests)]
                    for path in run[: max(1, args.requests // 10)]:
                        _get(app, path, key)
                    started = time.perf_counter()
                    for path in run:
                        _get(app, path, key)
                    ms = (time.perf_counter() - started) / args.requests * 1000
                    results[side][endpoint].append(ms)
                    print(f"  round {round_ + 1}, {side:<15} {endpoint:<11} {ms:7.3f} ms", flush=True)
    finally:
        our_backend.DatabaseWrapper.is_usable = ours
    return results


def _get(app, path: str, key: str) -> None:
    target, _, query = path.partition("?")
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": target,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_ACCEPT": "application/json",
        "HTTP_AUTHORIZATION": f"Bearer {key}",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
    }
    status = []
    body = b"".join(app(environ, lambda line, headers, *rest: status.append(line)))
    if not status[0].startswith("200"):
        raise RuntimeError(f"GET {path} answered {status[0]}: {body[:200]!r}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=10_000, help="Customers loaded (default 10k).")
    parser.add_argument("--requests", type=int, default=2000, help="Requests per endpoint and round (default 2000).")
    parser.add_argument("--repeat", type=int, default=5, help="Rounds; medians (default 5).")
    parser.add_argument(
        "--against-django-health-check", action="store_true", help="Also measure with Django's SELECT 1 check."
    )
    environment.add_database_url_argument(parser)
    args = parser.parse_args()
    if args.size < 1 or args.requests < 1 or args.repeat < 1:
        parser.error("--size, --requests and --repeat must be positive")
    return args


if __name__ == "__main__":
    main()
