"""mocksource throughput: pages/s over HTTP at 10k and 1M records, and its workers' memory.

For each size, mocksource runs under gunicorn twice: as `make run` and compose serve it
(2 sync workers, a new connection per request) and, for comparison, with threaded
workers that keep connections alive. Client
threads, each with its own keep-alive session, fetch random pages of 100 records for
--duration seconds. Reported: pages/s, records/s, p50/p99 latency, errors and the
workers' private memory (RssAnon) afterwards, medians of --repeat measurements.

    python bench/mocksource.py --sizes 10000,1000000 --duration 5 --repeat 3
"""

import argparse
import os
import random
import statistics
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import datasets, environment, report, servers
from bench.environment import RESULTS

PAGE = 100
CONFIGS = {
    "2 sync workers (as served)": ["--workers", "2"],
    "2 gthread workers, keep-alive": [
        "--workers",
        "2",
        "--worker-class",
        "gthread",
        "--threads",
        "4",
        "--keep-alive",
        "30",
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,1000000", help="Comma-separated record counts.")
    parser.add_argument("--duration", type=float, default=5.0, help="Seconds per measurement (default 5).")
    parser.add_argument("--repeat", type=int, default=3, help="Measurements per configuration (default 3).")
    parser.add_argument("--clients", type=int, default=4, help="Client threads (default 4, the ingestion's).")
    args = parser.parse_args()
    env = environment.process_env(environment.DEFAULT_DATABASE_URL)
    load_before = environment.load_average()
    rows, raw = [], {}
    for size in (int(text) for text in args.sizes.split(",")):
        dataset = datasets.base_dataset(size, seed=42, env=env)
        served = {name: value for name, value in os.environ.items() if not name.startswith(("DATABASE_", "DJANGO_"))}
        served["MOCKSOURCE_DATASET"] = str(dataset)
        for label, options in CONFIGS.items():
            log = RESULTS / "logs" / f"mocksource-bench-{size}.log"
            with servers.gunicorn([*options, "mocksource.server:application"], env=served, log=log) as url:
                runs = [measure(url, size, args.duration, args.clients) for _ in range(args.repeat)]
                memory = worker_memory_mib(url)
            raw[f"{size} {label}"] = runs
            rows.append(
                (
                    f"{size:,}",
                    label,
                    statistics.median(run["pages_per_second"] for run in runs),
                    statistics.median(run["pages_per_second"] for run in runs) * PAGE,
                    statistics.median(run["p50_ms"] for run in runs),
                    statistics.median(run["p99_ms"] for run in runs),
                    sum(run["errors"] for run in runs),
                    memory,
                )
            )
            print(f"{size:,} {label}: {rows[-1][2]:,.0f} pages/s", flush=True)
    saved = report.save("mocksource", {"load_before": load_before, "args": vars(args), "runs": raw})
    print(f"\nload average before: {load_before}; after: {environment.load_average()}; raw: {saved.name}\n")
    print(
        report.table(
            ("records", "server", "pages/s", "records/s", "p50 ms", "p99 ms", "errors", "worker RssAnon MiB"), rows
        )
    )


def measure(url: str, size: int, duration: float, clients: int) -> dict:
    """Random pages from `clients` threads for `duration` seconds."""
    last_page = max(1, -(-size // PAGE))
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration

    def client() -> None:
        session, mine, failed = requests.Session(), [], 0
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            page = {"page": random.randint(1, last_page), "limit": PAGE}
            try:
                response = session.get(f"{url}/api/customers", params=page, timeout=10)
                if response.status_code != 200 or len(response.json()["data"]) == 0:
                    failed += 1
            except (requests.RequestException, ValueError, KeyError):
                failed += 1
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "pages_per_second": len(latencies) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
        "errors": errors[0],
    }


def worker_memory_mib(url: str) -> float | None:
    """The largest private memory (RssAnon) among the gunicorn processes bound to this server's port."""
    port = url.rsplit(":", 1)[1]
    largest = None
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            cmdline = (status.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if "mocksource.server:application" not in cmdline or f"127.0.0.1:{port}" not in cmdline:
                continue
            for line in status.read_text().splitlines():
                if line.startswith("RssAnon:"):
                    value = int(line.split()[1]) / 1024
                    largest = value if largest is None else max(largest, value)
        except OSError:
            continue
    return largest


if __name__ == "__main__":
    main()
