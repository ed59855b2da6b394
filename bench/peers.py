"""This project against the peer baselines, on the same upstream, the same dataset and the same rows.

Ingestion (`--parts ingestion`): per size, one mocksource (gunicorn, 2 sync workers) serves the
cached dataset; per repeat, alternating which side goes first, each in a fresh process:

  ours cold   ingest into empty tables (bench/runner.py, as bench/ingest.py runs it)
  ours warm   the same data again
  dlt cold    bench/dlt_pipeline.py --fresh: a dlt resource over the same listing, merged on
              customer_id into PostgreSQL (its own database), destination and state dropped first
  dlt warm    the same pipeline again: dlt merges what it reads into what it loaded
  read        the plain read of the same pages (our client, nothing else)

Ratios are taken within each repeat, then the median is reported.

Reads (`--parts reads`): our API against a FastAPI service over the same rows, each server alone
(bench/peer_reads.py).

dlt, FastAPI and uvicorn run in their own virtual environment (bench/results/peers-venv, from
bench/requirements-peers.txt), created on first use. Both parts by default:

    python bench/peers.py --sizes 10000,100000,1000000 --read-sizes 10000,1000000
"""

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import datasets, environment, peer_reads, report, servers
from bench.environment import RESULTS, ROOT
from bench.ingest import run_operation

REQUIREMENTS = ROOT / "bench" / "requirements-peers.txt"
VENV = RESULTS / "peers-venv"
SIDES = ("ours", "dlt")


def main() -> None:
    args = parse_args()
    servers.stop_on_sigterm()
    python = peers_python()
    database_url, env = environment.migrated(args.database_url)
    peers_url = _ensure_database(environment.check_database_url(args.peers_database_url))
    load_before = environment.load_average()
    print(f"revision {environment.revision()}; load before: {load_before}", flush=True)
    results, reads = {}, {}
    try:
        if "ingestion" in args.parts:
            for size in args.sizes:
                results[size] = bench_size(size, args, env, python, peers_url)
        if "reads" in args.parts:
            reads = peer_reads.bench_reads(
                args.read_sizes, env=env, database_url=database_url, peers_python=python, args=args
            )
    finally:
        environment.empty_run_tables(database_url, customers=True)
    summary, reads_summary = summarise(results), peer_reads.summarise(reads)
    load_after = environment.load_average()
    saved = report.save(
        "peers",
        {
            "machine": environment.machine(database_url),
            "load_before": load_before,
            "load_after": load_after,
            "results": results,
            "summary": summary,
            "reads": reads,
            "reads_summary": reads_summary,
        },
    )
    print(f"\nload average before: {load_before}; after: {load_after}; raw results: {saved.relative_to(ROOT)}\n")
    if results:
        print(render(summary), "\n")
    if reads:
        print(peer_reads.render(reads_summary))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sizes = lambda text: [int(size) for size in text.split(",")]  # noqa: E731
    parser.add_argument("--parts", type=lambda text: text.split(","), default=["ingestion", "reads"])
    parser.add_argument("--sizes", type=sizes, default=[10_000, 100_000, 1_000_000], help="Ingestion sizes.")
    parser.add_argument("--read-sizes", type=sizes, default=[10_000, 1_000_000], help="Rows the read servers serve.")
    parser.add_argument("--rounds", type=int, default=3, help="Read rounds, the servers' order alternating.")
    parser.add_argument("--duration", type=float, default=15, help="Seconds of wrk per endpoint and round.")
    parser.add_argument("--warmup", type=float, default=2, help="Seconds of unmeasured load before each.")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--repeat-at-1m", type=int, default=1, help="Repeats at 1M and above (default 1).")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workers", type=int, default=2, help="mocksource's gunicorn workers.")
    parser.add_argument("--timeout", type=float, default=3600)
    environment.add_database_url_argument(parser)
    parser.add_argument(
        "--peers-database-url",
        default="postgres://postgres@127.0.0.1:5432/bench_peers",
        help="dlt's destination, created if missing (its name must contain 'bench').",
    )
    return parser.parse_args()


def peers_python() -> Path:
    """The peers' interpreter, its environment created and installed from REQUIREMENTS when they changed."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".requirements-sha256"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if not python.exists() or not stamp.exists() or stamp.read_text() != wanted:
        print(f"installing {REQUIREMENTS.relative_to(ROOT)} into {VENV.relative_to(ROOT)}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)], check=True)
        stamp.write_text(wanted)
    return python


def _ensure_database(url: str) -> str:
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    with environment.connect(urlunsplit(parts._replace(path="/postgres"))) as conn:
        conn.autocommit = True
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    return url


def bench_size(size: int, args: argparse.Namespace, env: dict, python: Path, peers_url: str) -> list[dict]:
    dataset = datasets.base_dataset(size, seed=args.seed, env=env)
    mocksource_env = {k: v for k, v in env.items() if not k.startswith(("DATABASE_", "DJANGO_"))}
    mocksource_env["MOCKSOURCE_DATASET"] = str(dataset)
    log = RESULTS / "logs" / f"peers-mocksource-{size}.log"
    options = SimpleNamespace(timeout=args.timeout)
    count = args.repeat_at_1m if size >= 1_000_000 else args.repeat
    repeats = []
    with servers.gunicorn(
        ["mocksource.server:application", "--workers", str(args.workers)], env=mocksource_env, log=log
    ) as url:
        for repeat in range(count):
            print(f"{size:,} records, repeat {repeat + 1}/{count}", flush=True)
            outcome = {}
            for side in SIDES if repeat % 2 == 0 else reversed(SIDES):
                if side == "ours":
                    database_url = env["DATABASE_URL"]
                    environment.empty_run_tables(database_url, customers=True)
                    outcome["ours_cold"] = run_operation(
                        "ingest", url, env=env, tag=f"peers-cold-{size}-{repeat}", args=options
                    )
                    environment.empty_run_tables(database_url, customers=False)
                    outcome["ours_warm"] = run_operation(
                        "ingest", url, env=env, tag=f"peers-warm-{size}-{repeat}", args=options
                    )
                else:
                    outcome["dlt_cold"] = _dlt(python, url, peers_url, fresh=True, timeout=args.timeout)
                    outcome["dlt_warm"] = _dlt(python, url, peers_url, fresh=False, timeout=args.timeout)
                for name in (f"{side}_cold", f"{side}_warm"):
                    print(f"  {name:<10} {outcome[name]['seconds']:8.2f} s  {outcome[name]['peak_rss_mib']:6.1f} MiB")
            outcome["read"] = run_operation("read", url, env=env, tag=f"peers-read-{size}-{repeat}", args=options)
            print(f"  {'read':<10} {outcome['read']['seconds']:8.2f} s")
            repeats.append(outcome)
    return repeats


def _dlt(python: Path, source_url: str, database_url: str, *, fresh: bool, timeout: float) -> dict:
    command = [str(python), str(ROOT / "bench" / "dlt_pipeline.py"), "--source-url", source_url]
    command += ["--database-url", database_url, "--pipelines-dir", str(RESULTS / "peers-dlt-pipelines")]
    if fresh:
        command.append("--fresh")
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode:
        raise RuntimeError(f"dlt pipeline exited with {done.returncode}:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - started
    return result


def summarise(results: dict[int, list[dict]]) -> dict:
    """Medians per size; ratios within each repeat."""
    return {size: _summary(repeats) for size, repeats in results.items()}


def _summary(repeats: list[dict]) -> dict:
    def median(key, field="seconds"):
        return report.median(repeat[key][field] for repeat in repeats)

    def ratio(top, bottom):
        return report.median(repeat[top]["seconds"] / repeat[bottom]["seconds"] for repeat in repeats)

    return {
        "repeats": len(repeats),
        **{f"{key}_seconds": median(key) for key in ("ours_cold", "ours_warm", "dlt_cold", "dlt_warm", "read")},
        **{f"{key}_rss": median(key, "peak_rss_mib") for key in ("ours_cold", "ours_warm", "dlt_cold", "dlt_warm")},
        "dlt_over_ours_cold": ratio("dlt_cold", "ours_cold"),
        "dlt_over_ours_warm": ratio("dlt_warm", "ours_warm"),
        "ours_cold_over_read": ratio("ours_cold", "read"),
        "ours_warm_over_read": ratio("ours_warm", "read"),
        "dlt_cold_over_read": ratio("dlt_cold", "read"),
        "rows_ours": repeats[-1]["ours_cold"]["inserted"],
        "rows_dlt": repeats[-1]["dlt_cold"]["rows"],
    }


def render(summary: dict) -> str:
    headers = [
        "size", "repeats", "ours cold s", "dlt cold s", "dlt / ours cold", "ours warm s", "dlt warm s",
        "dlt / ours warm", "read s", "ours cold / read", "ours warm / read", "peak RSS ours / dlt (MiB)",
        "rows ours / dlt",
    ]  # fmt: skip
    return report.table(headers, [_row(size, row) for size, row in summary.items()])


def _row(size: int, row: dict) -> list:
    figures = ("ours_cold_seconds", "dlt_cold_seconds", "dlt_over_ours_cold", "ours_warm_seconds", "dlt_warm_seconds")
    figures += ("dlt_over_ours_warm", "read_seconds", "ours_cold_over_read", "ours_warm_over_read")
    return [
        f"{size:,}",
        row["repeats"],
        *(report.fmt(row[name]) for name in figures),
        f"{row['ours_cold_rss']:.0f} / {row['dlt_cold_rss']:.0f}",
        f"{row['rows_ours']:,} / {row['rows_dlt']:,}",
    ]


if __name__ == "__main__":
    main()
