"""Reads: this project's API against the read peer (bench/peer_api.py), each server alone, same rows.

Per size, the customers table is filled by the COPY loader (bench/loader.py) and the peer's
table `peer_read.customers` is made from it (the same rows, typed as dlt types them). Then, in
rounds that alternate the servers' order, each server runs alone and `wrk -t2 -c16` loads its
list page 1 (limit=100), a deep page (the middle of the listing) and detail by id (a fixed
random sample of 1000 ids) for `--duration` seconds each after a warm-up:

  ours             gunicorn with config/gunicorn.py as shipped (2 workers x 4 threads, one socket
                   per worker), an API key (Bearer) that authenticates and counts every request
                   (the read throttle's limit raised out of the way, its counting as shipped)
  peer             uvicorn, 2 workers, the table as dlt leaves it: no index on the id
  peer-indexed-1   uvicorn, 1 worker, a unique index on the id
  peer-indexed-2   uvicorn, 2 workers, a unique index on the id
  (the peers without an access log, at their fastest; ours writes one line a request, as shipped)

Reported per endpoint: medians of requests/s, p50 and p99, errors (non-2xx and socket errors),
and ours over the best peer configuration (the highest median requests/s among the peers).
Called by bench/peers.py (`--parts reads`).
"""

import math
import random
import subprocess
import sys
import time
from pathlib import Path

from bench import datasets, environment, read_api, report, servers
from bench.environment import CUSTOMERS, RESULTS, ROOT

PEER_TABLE = "peer_read.customers"
ENDPOINTS = ("list_first", "list_deep", "detail")
PEERS = {"peer": (2, False), "peer-indexed-1": (1, True), "peer-indexed-2": (2, True)}
TARGET_OVER_BEST_PEER = 1.5
TARGET_P99_MS = 100.0


def bench_reads(sizes: list[int], *, env: dict, database_url: str, peers_python: Path, args) -> dict:
    """Every size's rounds; the raw figures per server and endpoint."""
    results = {}
    token = read_api._token(env | {"API_THROTTLE_READS": "1000000000/minute"})
    try:
        for size in sizes:
            results[size] = _bench_size(
                size, env=env, database_url=database_url, python=peers_python, token=token, args=args
            )
    finally:
        read_api._drop_user(database_url)
        with environment.connect(database_url) as conn:
            conn.execute("DROP SCHEMA IF EXISTS peer_read CASCADE")
    return results


def _bench_size(size: int, *, env: dict, database_url: str, python: Path, token: str, args) -> dict:
    dataset = datasets.base_dataset(size, seed=args.seed, env=env)
    environment.empty_run_tables(database_url, customers=True)
    subprocess.run([sys.executable, "-m", "bench.loader", str(dataset)], cwd=ROOT, env=env, check=True, timeout=3600)
    total, ids = read_api._sample(database_url)
    _make_peer_table(database_url)
    paths = {
        "list_first": ["/api/customers?page=1&limit=100"],
        "list_deep": [f"/api/customers?page={max(1, math.ceil(total / 100) // 2)}&limit=100"],
        "detail": [f"/api/customers/{customer_id}" for customer_id in random.Random(2).sample(ids, len(ids))],
    }
    names = ("ours", *PEERS)
    runs: dict[str, dict[str, list[dict]]] = {name: {endpoint: [] for endpoint in ENDPOINTS} for name in names}
    for round_number in range(args.rounds):
        order = names if round_number % 2 == 0 else tuple(reversed(names))
        for name in order:
            _wait_for_quiet(database_url)
            with _server(name, env=env, database_url=database_url, python=python, size=size) as url:
                for endpoint in ENDPOINTS:
                    read_api.load("wrk", url, paths[endpoint], token, args.warmup, 16)
                    figures = read_api.load("wrk", url, paths[endpoint], token, args.duration, 16)
                    runs[name][endpoint].append(figures)
                    print(
                        f"  {size:,} round {round_number + 1}/{args.rounds} {name:<15} {endpoint:<11}"
                        f" {figures['requests_per_second']:8.1f} req/s  p50 {figures['p50_ms']:7.2f} ms"
                        f"  p99 {figures['p99_ms']:7.2f} ms  errors {figures['non2xx']}",
                        flush=True,
                    )
    return {"rows": total, "runs": runs}


def _wait_for_quiet(database_url: str, *, patience: float = 10.0) -> None:
    """Let the last server's statements end before the next server is measured.

    A stopped server's slow statements (the peer's count and OFFSET scans at 1M, which wrk gave
    up on) go on running in PostgreSQL and would load whichever server comes next: wait for
    them, and cancel what is still running after `patience` seconds.
    """
    busy = (
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND state = 'active'"
        " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
    )
    started = time.monotonic()
    with environment.connect(database_url) as conn:
        while (pids := [row[0] for row in conn.execute(busy)]) and time.monotonic() - started < 6 * patience:
            if time.monotonic() - started > patience:
                for pid in pids:
                    conn.execute("SELECT pg_cancel_backend(%s)", [pid])
            time.sleep(0.5)


def _make_peer_table(database_url: str) -> None:
    """The rows our API serves, as dlt's merge leaves them for the peer: text ids, no index."""
    with environment.connect(database_url) as conn:
        conn.execute("DROP SCHEMA IF EXISTS peer_read CASCADE")
        conn.execute("CREATE SCHEMA peer_read")
        conn.execute(
            f"CREATE TABLE {PEER_TABLE} AS SELECT customer_id::text AS customer_id, first_name::text,"  # noqa: S608
            " last_name::text, email::text, phone::text, address, date_of_birth, account_balance, created_at,"
            f" updated_at FROM {CUSTOMERS} WHERE deleted_at IS NULL ORDER BY seq"
        )
        conn.execute(f"VACUUM ANALYZE {PEER_TABLE}")


class _server:
    """One server of the comparison, alone on the machine while it is loaded."""

    def __init__(self, name: str, *, env: dict, database_url: str, python: Path, size: int):
        self.name, self.env, self.database_url, self.python, self.size = name, env, database_url, python, size

    def __enter__(self) -> str:
        log = RESULTS / "logs" / f"peer-reads-{self.name}-{self.size}.log"
        if self.name == "ours":
            env = self.env | {"API_THROTTLE_READS": "1000000000/minute"}
            self._serving = servers.gunicorn(["-c", "config/gunicorn.py", "config.wsgi:application"], env=env, log=log)
        else:
            workers, indexed = PEERS[self.name]
            with environment.connect(self.database_url) as conn:
                conn.execute("DROP INDEX IF EXISTS peer_read.peer_customer_id")
                if indexed:
                    conn.execute(f"CREATE UNIQUE INDEX peer_customer_id ON {PEER_TABLE} (customer_id)")
            # No access log: the peer at its fastest (ours logs every request, as shipped).
            argv = [str(self.python), "-m", "uvicorn", "bench.peer_api:app", "--workers", str(workers)]
            argv += ["--no-access-log"]
            env = {key: value for key, value in self.env.items() if not key.startswith("DJANGO_")}
            env["PEER_DATABASE_URL"] = self.database_url
            self._serving = servers.serving(
                lambda port: [*argv, "--host", "127.0.0.1", "--port", str(port)],
                env=env,
                log=log,
                health="/api/customers?page=1&limit=1",
            )
        url = self._serving.__enter__()
        time.sleep(1)  # every worker up, not only the first to answer
        return url

    def __exit__(self, *exc_info):
        return self._serving.__exit__(*exc_info)


def summarise(results: dict) -> dict:
    """Per size and endpoint: each server's medians, the best peer, and ours over it."""
    summary = {}
    for size, measured in results.items():
        summary[size] = {}
        for endpoint in ENDPOINTS:
            rows = {}
            for name, by_endpoint in measured["runs"].items():
                figures = by_endpoint[endpoint]
                rows[name] = {
                    "requests_per_second": report.median(f["requests_per_second"] for f in figures),
                    "p50_ms": report.median(f["p50_ms"] for f in figures),
                    "p99_ms": report.median(f["p99_ms"] for f in figures),
                    "errors": sum(f["non2xx"] for f in figures),
                    "per_round": [round(f["requests_per_second"], 1) for f in figures],
                }
            best = max(PEERS, key=lambda name: rows[name]["requests_per_second"])
            ours = rows["ours"]
            ratio = ours["requests_per_second"] / rows[best]["requests_per_second"]
            summary[size][endpoint] = {
                "servers": rows,
                "best_peer": best,
                "ours_over_best_peer": ratio,
                "met": ratio >= TARGET_OVER_BEST_PEER and ours["p99_ms"] <= TARGET_P99_MS and ours["errors"] == 0,
            }
    return summary


def render(summary: dict) -> str:
    headers = [
        "rows", "endpoint", "ours req/s", "ours p50 / p99 ms", "ours errors", "peer (no index, 2 w) req/s",
        "peer indexed 1 w req/s", "peer indexed 2 w req/s", "best peer p50 / p99 ms", "ours / best peer", "target met",
    ]  # fmt: skip
    rows = []
    for size, endpoints in summary.items():
        for endpoint, row in endpoints.items():
            servers_ = row["servers"]
            ours, best = servers_["ours"], servers_[row["best_peer"]]
            rows.append(
                [
                    f"{size:,}",
                    endpoint,
                    report.fmt(ours["requests_per_second"]),
                    f"{ours['p50_ms']:.1f} / {ours['p99_ms']:.1f}",
                    ours["errors"],
                    *(report.fmt(servers_[name]["requests_per_second"]) for name in PEERS),
                    f"{best['p50_ms']:.1f} / {best['p99_ms']:.1f}",
                    report.fmt(row["ours_over_best_peer"]),
                    "yes" if row["met"] else "**no**",
                ]
            )
    return report.table(headers, rows)
