"""The benchmark database and the environment every benchmarked process gets.

Benchmarks run production-like (DEBUG off) against a dedicated PostgreSQL database
whose name must contain "bench": the scripts empty its tables, so a guard keeps them
away from a real one. They leave the database itself in place.
"""

import os
import platform
import secrets
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench"

CUSTOMERS = "customers_customer"
CHANGES = "customers_customerchange"
# Everything a run writes; emptied between scenarios (CASCADE reaches no other table).
RUN_TABLES = ("ingestion_stagedcustomer", "ingestion_ingestfailure", "ingestion_ingestrun")


class BenchRefused(Exception):
    """The benchmark will not run against this database."""


def add_database_url_argument(parser) -> None:
    """The `--database-url` option every benchmark takes."""
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="PostgreSQL database whose name contains 'bench' (default: BENCH_DATABASE_URL or the local 'bench').",
    )


def migrated(url: str, **extra: str) -> tuple[str, dict[str, str]]:
    """The checked database URL and the environment of benchmarked processes, after migrating it."""
    database_url = check_database_url(url)
    env = process_env(database_url, **extra)
    manage(env, "migrate", "--noinput")
    return database_url, env


def check_database_url(url: str) -> str:
    name = urlsplit(url).path.lstrip("/")
    if "bench" not in name:
        raise BenchRefused(f"The database name must contain 'bench' (got {name!r}): the benchmarks empty its tables.")
    return url


def process_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of benchmarked Django processes: production-like, loopback upstream.

    Values already exported win, so knobs such as INGESTION_BATCH_SIZE can be tried
    from the shell; DATABASE_URL always points at the benchmark database.
    """
    env = dict(os.environ)
    defaults = {
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_HTTPS": "false",
        "DJANGO_CACHE": "locmem",
        "DJANGO_LOG_LEVEL": "WARNING",
        "INGESTION_ALLOW_PRIVATE_NETWORKS": "true",
        **extra,
    }
    for name, value in defaults.items():
        env.setdefault(name, value)
    env["DATABASE_URL"] = database_url
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def manage(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    """Run `manage.py` with the benchmark environment; return its output, raise on failure."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def connect(database_url: str) -> psycopg.Connection:
    return psycopg.connect(database_url, autocommit=True)


def empty_run_tables(database_url: str, *, customers: bool) -> None:
    # The change feed goes with the customers it describes: a cold run starts from an empty feed.
    tables = (*RUN_TABLES, CUSTOMERS, CHANGES) if customers else RUN_TABLES
    with connect(database_url) as conn:
        conn.execute(f"TRUNCATE {', '.join(tables)} CASCADE")


def customer_updates(database_url: str, *, settle_seconds: float = 5.0) -> int:
    """n_tup_upd of the customers table, once the statistics stopped moving.

    A backend reports its counters when its session ends, a moment after the client
    exits; read until two readings agree, for `settle_seconds` at most.
    """
    deadline = time.monotonic() + settle_seconds
    previous = None
    while True:
        with connect(database_url) as conn:
            row = conn.execute("SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = %s", [CUSTOMERS]).fetchone()
        value = row[0] if row else 0
        if value == previous or time.monotonic() > deadline:
            return value
        previous = value
        time.sleep(0.3)


def machine(database_url: str) -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kib = int(line.split()[1])
    with connect(database_url) as conn:
        postgres = conn.execute("SHOW server_version").fetchone()[0]
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "revision": revision(),
        "cpu": cpu,
        "nproc": str(os.cpu_count()),
        "memory": f"{memory_kib / 1024 / 1024:.1f} GiB",
        "python": platform.python_version(),
        "postgresql": postgres,
    }


def revision() -> str:
    """The commit measured, marked when the application code differs from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "ingestion", "customers", "config", "mocksource"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit} (with local changes)" if changed else commit


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"
