"""Load and soak: API readers while an ingestion runs, on a production-like stack.

    .venv/bin/python bench/soak.py --seconds 30 --readers 4 --records 100000

Starts, on free 127.0.0.1 ports: mocksource serving a generated dataset, the API under
gunicorn (config/gunicorn.py) and a procrastinate worker, against DATABASE_URL (default
postgres://postgres@127.0.0.1:5432/soak, created and migrated when missing). Then, for
--seconds, reader threads list random pages (limit 100) and fetch customers they have seen,
while one ingestion runs through POST /api/ingest; the ingestion is awaited to its end.

Prints a markdown table. Exits 1 when any read failed (a non-2xx answer or an exception)
or the ingestion did not succeed. Every process it starts is stopped on the way out,
also on Ctrl-C or SIGTERM.
"""

import argparse
import math
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import requests
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config import processes

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/soak"
READY_TIMEOUT = 60.0
REQUEST_TIMEOUT = 10.0
PAGE_LIMIT = 100
# Ids a reader remembers for detail requests; enough to spread reads over the table.
MAX_KNOWN_IDS = 20_000
MAX_REQUESTS_PER_READER = 10_000_000
FINISHED = {"succeeded", "failed", "abandoned"}


class SoakError(Exception):
    """A set-up step failed; the message says which."""


@dataclass
class Result:
    """What one reader saw: latencies per kind, and the failures."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {"list": [], "detail": []})
    errors: dict[str, int] = field(default_factory=lambda: {"list": 0, "detail": 0})
    error_samples: list[str] = field(default_factory=list)


class Shared:
    """The largest `total` and the customer ids seen so far, shared by the readers."""

    def __init__(self):
        self.lock = threading.Lock()
        self.total = 0
        self.ids: list[str] = []

    def learn(self, body: dict) -> None:
        with self.lock:
            self.total = max(self.total, body["total"])
            room = MAX_KNOWN_IDS - len(self.ids)
            self.ids.extend(row["customer_id"] for row in body["data"][: max(room, 0)])

    def pick(self, rng: random.Random) -> tuple[int, str | None]:
        with self.lock:
            pages = max(1, math.ceil(self.total / PAGE_LIMIT))
            return rng.randint(1, pages), rng.choice(self.ids) if self.ids else None


# --- Processes -------------------------------------------------------------------------


def manage(env: dict[str, str], *args: str) -> str:
    """Run `manage.py ARGS`; return its stdout, or raise SoakError with its output."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=900
    )
    if result.returncode != 0:
        raise SoakError(f"manage.py {' '.join(args)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return result.stdout


def start(name: str, argv: list[str], env: dict[str, str], logs: Path, children: dict) -> None:
    children[name] = processes.start(argv, cwd=PROJECT_DIR, env=env, log=logs / f"{name}.log")


def create_database(url: str, *, fresh: bool) -> None:
    """CREATE DATABASE unless it exists, after dropping it when `fresh` (via the server's `postgres` database)."""
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(url, dbname="postgres", autocommit=True) as connection:
        if fresh:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def environment(database_url: str, source_url: str) -> dict[str, str]:
    """Production settings, except plain http and a loopback upstream; reads never throttled."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("DJANGO_", "API_", "INGESTION_"))}
    return env | {
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_HTTPS": "false",
        "DJANGO_CACHE": "locmem",
        "API_THROTTLE_READS": "10000000/minute",
        "INGESTION_SOURCE_URL": source_url,
        "INGESTION_ALLOW_PRIVATE_NETWORKS": "true",
        "PYTHONUNBUFFERED": "1",
    }


def start_stack(args, workdir: Path, children: dict) -> tuple[str, str]:
    """Dataset, database, mocksource, API and worker; return the API's URL and a superuser's token."""
    api, upstream = f"http://127.0.0.1:{processes.free_port()}", f"http://127.0.0.1:{processes.free_port()}"
    env = environment(args.database_url, upstream)
    dataset = workdir / "customers.jsonl"
    say(f"Generating {args.records} records; preparing {urlsplit(args.database_url).path.lstrip('/')}.")
    manage(env, "generate_customers", "--count", str(args.records), "--output", str(dataset))
    create_database(args.database_url, fresh=args.fresh)
    manage(env, "migrate", "--noinput")
    token = next(
        line.split(":", 1)[1].strip()
        for line in manage(env, "create_api_token", "soak", "--superuser").splitlines()
        if line.startswith("token:")
    )
    gunicorn = [sys.executable, "-m", "gunicorn"]
    # mocksource is an upstream we do not own: no database for it.
    upstream_env = {name: value for name, value in env.items() if name != "DATABASE_URL"} | {
        "MOCKSOURCE_DATASET": str(dataset)
    }
    start(
        "mocksource",
        [*gunicorn, "mocksource.server:application", "--bind", upstream[7:], "--workers", "2", "--no-control-socket"],
        upstream_env,
        workdir,
        children,
    )
    start(
        "web",
        [*gunicorn, "-c", "config/gunicorn.py", "config.wsgi:application", "--bind", api[7:]],
        env,
        workdir,
        children,
    )
    # Two slots, as in `make run`: the minute sweep must not wait behind the ingestion.
    start(
        "worker", [sys.executable, "manage.py", "procrastinate", "worker", "--concurrency", "2"], env, workdir, children
    )
    urls = {"mocksource": f"{upstream}/api/health", "web": f"{api}/api/health"}
    processes.wait_healthy(urls, children, timeout=READY_TIMEOUT, error=SoakError)
    return api, token


# --- Load ------------------------------------------------------------------------------


def read(api: str, token: str, stop_at: float, shared: Shared, seed: int) -> Result:
    """List random pages and fetch seen customers until `stop_at`; a non-2xx or an exception is an error."""
    rng, result = random.Random(seed), Result()
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token}"
    for _ in range(MAX_REQUESTS_PER_READER):
        if time.monotonic() >= stop_at:
            break
        page, known = shared.pick(rng)
        kind = "detail" if known and rng.random() < 0.5 else "list"
        url = (
            f"{api}/api/customers/{known}"
            if kind == "detail"
            else f"{api}/api/customers?page={page}&limit={PAGE_LIMIT}"
        )
        started = time.perf_counter()
        try:
            response = session.get(url, timeout=REQUEST_TIMEOUT)
            problem = None if response.ok else f"{response.status_code} {url[len(api) :]}"
            if kind == "list" and response.ok:
                shared.learn(response.json())
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            problem = f"{type(exc).__name__} {url[len(api) :]}"
        result.latencies[kind].append(time.perf_counter() - started)
        if problem:
            result.errors[kind] += 1
            if len(result.error_samples) < 5:
                result.error_samples.append(problem)
    session.close()
    return result


def start_ingestion(api: str, token: str) -> int:
    response = requests.post(f"{api}/api/ingest", headers={"Authorization": f"Token {token}"}, timeout=REQUEST_TIMEOUT)
    if response.status_code != 202:
        raise SoakError(f"POST /api/ingest answered {response.status_code}: {response.text[:500]}")
    return response.json()["id"]


def wait_for_run(api: str, token: str, run_id: int, timeout: float, children: dict) -> dict:
    """The run once finished, or as it stands when `timeout` runs out; stop early if a service died."""
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token}"
    deadline = time.monotonic() + timeout
    run = {}
    while time.monotonic() < deadline:
        processes.check_alive(children, error=SoakError)
        run = session.get(f"{api}/api/ingest/runs/{run_id}", timeout=REQUEST_TIMEOUT).json()
        if run["status"] in FINISHED:
            break
        time.sleep(0.5)
    session.close()
    return run


def soak(
    api: str, token: str, children: dict, *, seconds: float, readers: int, ingest_timeout: float
) -> tuple[list[Result], dict]:
    """Readers for `seconds`, an ingestion started as they start; both awaited."""
    shared, results = Shared(), [None] * readers
    stop_at = time.monotonic() + seconds

    def run_reader(index: int) -> None:
        results[index] = read(api, token, stop_at, shared, seed=index)

    # Daemons: on Ctrl-C the stack is stopped at once, not after the readers' last request.
    threads = [threading.Thread(target=run_reader, args=(index,), daemon=True) for index in range(readers)]
    for thread in threads:
        thread.start()
    run_id = start_ingestion(api, token)
    run = wait_for_run(api, token, run_id, ingest_timeout, children)
    for thread in threads:
        thread.join(timeout=seconds + REQUEST_TIMEOUT + 5)
    if None in results:
        raise SoakError("A reader thread did not finish; its requests are not counted.")
    return results, run


# --- Report ----------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def report(results: list[Result], run: dict, *, seconds: float, readers: int, records: int) -> tuple[str, int]:
    """The markdown tables and the total number of failed reads."""
    lines = [
        f"Readers: {readers} threads for {seconds:.0f} s; dataset: {records} records.",
        "",
        "| Requests | Count | Requests/s | p50 (ms) | p99 (ms) | Errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    rows = (
        ("list (random page, limit 100)", ("list",)),
        ("detail (seen ids)", ("detail",)),
        ("all", ("list", "detail")),
    )
    for label, kinds in rows:
        latencies = [value for result in results for kind in kinds for value in result.latencies[kind]]
        failed = sum(result.errors[kind] for result in results for kind in kinds)
        lines.append(
            f"| {label} | {len(latencies)} | {len(latencies) / seconds:.0f} | {percentile(latencies, 0.5) * 1000:.1f} "
            f"| {percentile(latencies, 0.99) * 1000:.1f} | {failed} |"
        )
    counters = ("fetched", "inserted", "updated", "unchanged", "invalid", "conflicts", "duplicates")
    lines += [
        "",
        "| Ingestion | Status | Duration (s) | Records/s | " + " | ".join(counters) + " |",
        "|---|---|---:|---:|" + "---:|" * len(counters),
        f"| run {run.get('id')} | {run.get('status')} | {run.get('duration_seconds') or 0:.1f} "
        f"| {run.get('records_per_second') or 0:.0f} | " + " | ".join(str(run.get(name)) for name in counters) + " |",
    ]
    samples = [sample for result in results for sample in result.error_samples][:5]
    if samples:
        lines += ["", "First errors: " + "; ".join(samples)]
    if run.get("error"):
        lines += ["", f"Ingestion error: {run['error'][:500]}"]
    return "\n".join(lines), sum(sum(result.errors.values()) for result in results)


# --- Main ------------------------------------------------------------------------------


def say(message: str) -> None:
    print(f"[soak] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="How long the readers run (default 30).")
    parser.add_argument("--readers", type=int, default=4, help="Reader threads (default 4).")
    parser.add_argument("--records", type=int, default=100_000, help="Records in the upstream (default 100000).")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
        help=f"PostgreSQL database to use, created when missing (default DATABASE_URL or {DEFAULT_DATABASE_URL}).",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="Drop and recreate the database first, so the ingestion inserts every record (otherwise a "
        "database kept from an earlier soak sees them unchanged).",
    )
    parser.add_argument(
        "--ingest-timeout", type=float, default=900.0, help="Longest wait for the ingestion to finish (default 900 s)."
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.readers < 1 or args.records < 1:
        parser.error("--seconds, --readers and --records must be positive.")
    return args


def _stop_on_signal(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_signal)
    children: dict[str, subprocess.Popen] = {}
    with tempfile.TemporaryDirectory(prefix="soak-") as workdir:
        try:
            api, token = start_stack(args, Path(workdir), children)
            say(f"Stack up; {args.readers} readers for {args.seconds:.0f} s while an ingestion runs.")
            results, run = soak(
                api, token, children, seconds=args.seconds, readers=args.readers, ingest_timeout=args.ingest_timeout
            )
        except (SoakError, KeyboardInterrupt, requests.RequestException, psycopg.Error) as error:
            say(f"ERROR: {str(error) or type(error).__name__}")
            for log in sorted(Path(workdir).glob("*.log")):
                say(f"--- last lines of {log.name} ---\n" + "\n".join(log.read_text().splitlines()[-15:]))
            return 1
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            processes.stop(children)
            signal.signal(signal.SIGINT, signal.default_int_handler)
    table, errors = report(results, run, seconds=args.seconds, readers=args.readers, records=args.records)
    print(table)
    return 1 if errors or run.get("status") != "succeeded" else 0


if __name__ == "__main__":
    sys.exit(main())
