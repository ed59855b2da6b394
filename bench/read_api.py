"""Read API latency and throughput at 10k and 1M customers.

For each size the customers table is filled by the fast COPY loader (bench/loader.py;
same rows and seq as a cold ingestion of the same dataset), the API is served by
gunicorn with config/gunicorn.py (DEBUG off, reads throttle raised out of the way),
and each endpoint is loaded for --duration seconds after a --warmup:

  list_first   GET /api/customers?page=1&limit=100
  list_last    GET /api/customers?page=LAST&limit=100
  detail       GET /api/customers/{id}, ids drawn from a fixed random sample of 1000

The load comes from wrk when it is installed (bench/wrk_paths.lua), otherwise from a
bounded thread pool of keep-alive sessions in this process. Each endpoint is measured
--repeat times, endpoints taking turns; reported are the medians of requests/s, p50
and p99, the non-2xx responses, and per endpoint the p50 at the largest size over the
p50 at the smallest.

    python bench/read_api.py --sizes 10000,1000000 --duration 10
"""

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import datasets, environment, report, servers
from bench.environment import CUSTOMERS, RESULTS, ROOT

ENDPOINTS = ("list_first", "list_last", "detail")
USERNAME = "bench-reader"
SAMPLE = 1000
TARGET_P50_GROWTH = 2.0
MAX_PYTHON_REQUESTS = 1_000_000


def main() -> None:
    args = parse_args()
    servers.stop_on_sigterm()
    database_url, env = environment.migrated(
        args.database_url, API_THROTTLE_READS="1000000/minute", GUNICORN_WORKERS=str(args.workers)
    )
    tool = "wrk" if args.tool == "auto" and shutil.which("wrk") else args.tool.replace("auto", "python")
    load_before = environment.load_average()
    print(f"revision {environment.revision()}; load before: {load_before}; load generator: {tool}", flush=True)
    results = {}
    try:
        token = _token(env)
        for size in args.sizes:
            results[size] = bench_size(size, args, env, database_url, token, tool)
    finally:
        environment.empty_run_tables(database_url, customers=True)
        _drop_user(database_url)
    load_after = environment.load_average()
    saved = report.save(
        "read_api",
        {
            "machine": environment.machine(database_url),
            "load_before": load_before,
            "load_after": load_after,
            "tool": tool,
            "settings": vars(args),
            "results": results,
        },
    )
    print(f"\nrevision {environment.revision()}; load average before: {load_before}; after: {load_after}")
    print(f"load generator: {tool}")
    print(f"raw results: {saved.relative_to(ROOT)}\n")
    print(render(results, args))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=_sizes, default=[10_000, 1_000_000], help="Default: 10k,1M.")
    parser.add_argument("--duration", type=float, default=10, help="Seconds of load per endpoint (default 10).")
    parser.add_argument("--repeat", type=int, default=3, help="Measurements per endpoint; medians (default 3).")
    parser.add_argument("--warmup", type=float, default=2, help="Seconds of unmeasured load first (default 2).")
    parser.add_argument("--connections", type=int, default=16, help="Concurrent keep-alive connections (default 16).")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn API workers (default 2, 4 threads each).")
    parser.add_argument("--seed", type=int, default=42, help="Dataset seed (default 42).")
    parser.add_argument("--tool", choices=("auto", "wrk", "python"), default="auto", help="Load generator.")
    environment.add_database_url_argument(parser)
    args = parser.parse_args()
    if args.duration <= 0 or args.connections < 1 or args.repeat < 1:
        parser.error("--duration, --connections and --repeat must be positive")
    return args


def _sizes(text: str) -> list[int]:
    sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes are positive whole numbers, e.g. 10000,1000000")
    return sizes


def _token(env: dict[str, str]) -> str:
    """A new API key (sent as `Bearer`) of a superuser made for the benchmark."""
    output = environment.manage(env, "create_api_token", USERNAME, "--superuser")
    return next(line.split(":", 1)[1].strip() for line in output.splitlines() if line.startswith("key:"))


def _drop_user(database_url: str) -> None:
    """The benchmark's user, its keys and their throttle counts, gone."""
    users = "SELECT id FROM auth_user WHERE username = %s"
    keys = f"SELECT 'key:' || key_id FROM accounts_apikey WHERE user_id IN ({users})"  # noqa: S608
    with environment.connect(database_url) as conn, conn.transaction():
        conn.execute(f"DELETE FROM accounts_requestcount WHERE key IN ({keys})", [USERNAME])  # noqa: S608
        conn.execute(f"DELETE FROM accounts_apikey WHERE user_id IN ({users})", [USERNAME])  # noqa: S608
        conn.execute(f"DELETE FROM authtoken_token WHERE user_id IN ({users})", [USERNAME])  # noqa: S608
        conn.execute("DELETE FROM auth_user WHERE username = %s", [USERNAME])


def bench_size(size: int, args, env: dict, database_url: str, token: str, tool: str) -> dict:
    dataset = datasets.base_dataset(size, seed=args.seed, env=env)
    environment.empty_run_tables(database_url, customers=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bench.loader", str(dataset)], cwd=ROOT, env=env, check=True, timeout=1800)
    print(f"{size:,}: loaded in {time.perf_counter() - started:.1f} s", flush=True)
    total, ids = _sample(database_url)
    last = max(1, math.ceil(total / 100))
    paths = {
        "list_first": ["/api/customers?page=1&limit=100"],
        "list_last": [f"/api/customers?page={last}&limit=100"],
        "detail": [f"/api/customers/{customer_id}" for customer_id in ids],
    }
    measured: dict = {"rows": total}
    log = RESULTS / "logs" / f"api-{size}.log"
    with servers.gunicorn(["-c", "config/gunicorn.py", "config.wsgi:application"], env=env, log=log) as url:
        items = {name: _check(url + paths[name][0], token) for name in ENDPOINTS}
        runs: dict[str, list[dict]] = {name: [] for name in ENDPOINTS}
        # Endpoints take turns within each repeat, so a noisy minute does not hit only one of them.
        for repeat in range(args.repeat):
            for name in ENDPOINTS:
                load(tool, url, paths[name], token, args.warmup, args.connections, scheme="Bearer")
                figures = load(tool, url, paths[name], token, args.duration, args.connections, scheme="Bearer")
                runs[name].append(figures)
                print(
                    f"  {repeat + 1}/{args.repeat} {name:<11} {figures['requests_per_second']:8.1f} req/s  "
                    f"p50 {figures['p50_ms']:7.2f} ms  p99 {figures['p99_ms']:7.2f} ms  non-2xx {figures['non2xx']}",
                    flush=True,
                )
    for name in ENDPOINTS:
        measured[name] = {
            "items": items[name],
            "requests_per_second": report.median(run["requests_per_second"] for run in runs[name]),
            "p50_ms": report.median(run["p50_ms"] for run in runs[name]),
            "p99_ms": report.median(run["p99_ms"] for run in runs[name]),
            "non2xx": sum(run["non2xx"] for run in runs[name]),
            "runs": runs[name],
        }
    return measured


def _sample(database_url: str) -> tuple[int, list[str]]:
    """The row count and a fixed random sample of customer ids (by seq, seeded)."""
    # The table name is a constant of this module; values travel as parameters.
    with environment.connect(database_url) as conn:
        total = conn.execute(f"SELECT coalesce(max(seq), 0) FROM {CUSTOMERS}").fetchone()[0]  # noqa: S608
        seqs = random.Random(1).sample(range(1, total + 1), min(SAMPLE, total))
        rows = conn.execute(f"SELECT customer_id FROM {CUSTOMERS} WHERE seq = ANY(%s) ORDER BY seq", [seqs])  # noqa: S608
        return total, [str(row[0]) for row in rows]


def _check(url: str, token: str) -> int:
    """Fail early on a non-200; return how many customers the response holds."""
    response = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} answered {response.status_code}: {response.text[:200]}")
    body = response.json()
    return len(body["data"]) if "data" in body else 1


def load(
    tool: str, url: str, paths: list[str], token: str, duration: float, connections: int, *, scheme: str = "Bearer"
) -> dict:
    """Load `paths` of `url` for `duration` seconds; `scheme` is "Bearer" (API keys) or "Token" (DRF tokens)."""
    if duration <= 0:
        return {}
    return (_wrk if tool == "wrk" else _python_load)(url, paths, f"{scheme} {token}", duration, connections)


def _wrk(url: str, paths: list[str], authorization: str, duration: float, connections: int) -> dict:
    listing = RESULTS / "wrk-paths.txt"
    listing.write_text("\n".join(paths) + "\n")
    threads = min(2, connections)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--timeout", "10s"]
    command += ["-s", str(ROOT / "bench" / "wrk_paths.lua"), url]
    env = dict(os.environ, WRK_PATHS=str(listing), WRK_AUTHORIZATION=authorization)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=duration + 60, check=True)
    summary = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))
    return {
        "requests": summary["requests"],
        "requests_per_second": summary["requests"] / summary["seconds"],
        "p50_ms": summary["p50_us"] / 1000,
        "p99_ms": summary["p99_us"] / 1000,
        "non2xx": summary["non2xx"] + summary["socket_errors"],
    }


def _python_load(url: str, paths: list[str], authorization: str, duration: float, connections: int) -> dict:
    """Closed-loop load from `connections` threads, each with its own keep-alive session."""
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + duration

    def worker(offset: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = authorization
        mine, bad, count = [], 0, offset
        while time.monotonic() < deadline and len(mine) < MAX_PYTHON_REQUESTS:
            started = time.perf_counter()
            try:
                ok = session.get(url + paths[count % len(paths)], timeout=10).status_code // 100 == 2
            except requests.RequestException:
                ok = False
            mine.append(time.perf_counter() - started)
            bad += not ok
            count += 1
        with lock:
            latencies.extend(mine)
            failures[0] += bad

    threads = [threading.Thread(target=worker, args=(number * 97,)) for number in range(connections)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration + 30)
    elapsed = time.monotonic() - started
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {
        "requests": len(latencies),
        "requests_per_second": len(latencies) / elapsed,
        "p50_ms": cuts[49] * 1000,
        "p99_ms": cuts[98] * 1000,
        "non2xx": failures[0],
    }


def render(results: dict, args) -> str:
    rows = []
    for size, measured in results.items():
        for name in ENDPOINTS:
            figures = measured[name]
            rows.append(
                (
                    f"{size:,}",
                    name,
                    figures["items"],
                    round(figures["requests_per_second"], 1),
                    figures["p50_ms"],
                    figures["p99_ms"],
                    figures["non2xx"],
                )
            )
    text = (
        f"Medians of {args.repeat} measurements of {args.duration:g} s per endpoint, each after {args.warmup:g} s "
        f"of warm-up; {args.connections} connections, {args.workers} gunicorn workers of 4 threads.\n\n"
    )
    text += report.table(("customers", "endpoint", "rows in response", "req/s", "p50 ms", "p99 ms", "non-2xx"), rows)
    sizes = list(results)
    if len(sizes) > 1:
        small, large = results[sizes[0]], results[sizes[-1]]
        growth = [
            (
                name,
                large[name]["p50_ms"] / small[name]["p50_ms"],
                large[name]["p50_ms"] / small[name]["p50_ms"] <= TARGET_P50_GROWTH,
            )
            for name in ENDPOINTS
        ]
        label = f"p50 {sizes[-1]:,} / {sizes[0]:,}"
        text += "\n\n" + report.table(("endpoint", label, f"<= {TARGET_P50_GROWTH:g} x"), growth)
    return text


if __name__ == "__main__":
    main()
