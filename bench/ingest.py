"""Ingestion end to end over HTTP: cold, warm and 10%-changed runs, against the plain read and bulk_create.

For each size, the dataset is generated once (cached in bench/results/datasets/) and
served by mocksource under gunicorn; every scenario runs in a fresh process
(bench/runner.py) so its peak RSS is its own. Per repeat, in this order:

  read         the same pages with the same client and concurrency, nothing else
  cold         ingest into an empty customers table
  warm         ingest the same data again: nothing inserted, nothing rewritten
  changed      ingest a copy where every tenth record's address differs
  bulk_create  the ORM baseline, cold: same pages, same validation, bulk_create(2000)

Staging, failures and runs are emptied before every scenario; customers before read,
cold and bulk_create. Ratios are taken within a repeat, then the median is reported.

    python bench/ingest.py --sizes 10000,100000 --repeat 3
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import datasets, environment, report, servers
from bench.environment import RESULTS, ROOT

SCENARIOS = ("read", "cold", "warm", "changed", "bulk_create")
KNOBS = ("INGESTION_BATCH_SIZE", "INGESTION_CONCURRENCY", "INGESTION_PAGE_SIZE")
TARGET_COLD_OVER_READ = 1.5
TARGET_PEAK_RSS_MIB = 200
TARGET_RSS_GROWTH = 1.2
TARGET_ROWS_PER_SECOND = 25_000


def main() -> None:
    args = parse_args()
    servers.stop_on_sigterm()
    database_url, env = environment.migrated(args.database_url)
    knobs = {name: env.get(name, "default") for name in KNOBS} | {"mocksource workers": str(args.workers)}
    load_before = environment.load_average()
    print(f"revision {environment.revision()}; load before: {load_before}; knobs: {knobs}", flush=True)
    results = {}
    try:
        for size in args.sizes:
            if repeats := bench_size(size, args, env, database_url):
                results[size] = repeats
    finally:
        environment.empty_run_tables(database_url, customers=True)
    load_after = environment.load_average()
    summary = summarise(results)
    saved = report.save(
        "ingest",
        {
            "machine": environment.machine(database_url),
            "load_before": load_before,
            "load_after": load_after,
            "knobs": knobs,
            "repeat": args.repeat,
            "repeat_at_1m": args.repeat_at_1m,
            "summary": summary,
            "runs": results,
        },
    )
    print(f"\nrevision {environment.revision()}; load average before: {load_before}; after: {load_after}")
    print(f"knobs: {knobs}")
    print(f"raw results: {saved.relative_to(ROOT)}\n")
    print(render(summary, {size: len(runs) for size, runs in results.items()}))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=_sizes, default=[10_000, 100_000, 1_000_000], help="Default: 10k,100k,1M.")
    parser.add_argument("--repeat", type=int, default=3, help="Runs per scenario; medians are reported (default 3).")
    parser.add_argument(
        "--repeat-at-1m", type=int, help="Runs per scenario from 1M records on (default: --repeat); they take minutes."
    )
    parser.add_argument("--seed", type=int, default=42, help="Dataset seed (default 42).")
    parser.add_argument("--workers", type=int, default=2, help="mocksource gunicorn workers (default 2).")
    parser.add_argument("--scenarios", type=_scenarios, default=list(SCENARIOS), help=f"Subset of {SCENARIOS}.")
    environment.add_database_url_argument(parser)
    parser.add_argument("--profile", action="store_true", help="cProfile every cold run into bench/results/.")
    parser.add_argument("--timeout", type=float, default=1800, help="Seconds allowed per scenario (default 1800).")
    args = parser.parse_args()
    if args.repeat < 1 or (args.repeat_at_1m is not None and args.repeat_at_1m < 1):
        parser.error("--repeat and --repeat-at-1m must be at least 1")
    return args


def _sizes(text: str) -> list[int]:
    sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes are positive whole numbers, e.g. 10000,100000")
    return sizes


def _scenarios(text: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(SCENARIOS)}")
    return [name for name in SCENARIOS if name in chosen]


def bench_size(size: int, args: argparse.Namespace, env: dict[str, str], database_url: str) -> list[dict]:
    base = datasets.base_dataset(size, seed=args.seed, env=env)
    changed = datasets.changed_dataset(base)
    logs = RESULTS / "logs"
    with (
        servers.gunicorn(_mocksource_args(args), env=_mocksource_env(base), log=logs / f"mocksource-{size}.log") as url,
        servers.gunicorn(
            _mocksource_args(args), env=_mocksource_env(changed), log=logs / f"mocksource-{size}-changed.log"
        ) as changed_url,
    ):
        repeats = []
        count = args.repeat_at_1m if size >= 1_000_000 and args.repeat_at_1m else args.repeat
        for repeat in range(count):
            print(f"{size:,} records, repeat {repeat + 1}/{count}", flush=True)
            try:
                repeats.append(one_repeat(size, repeat, url, changed_url, args, env, database_url))
            except RuntimeError as exc:
                # Keep what was measured; the summary says how many runs each median has.
                print(f"  stopped: {exc}", flush=True)
                break
    return repeats


def one_repeat(
    size: int, repeat: int, url: str, changed_url: str, args: argparse.Namespace, env: dict, database_url: str
) -> dict:
    def scenario(name: str, operation: str, source: str, *, empty_customers: bool, **options) -> None:
        if name not in args.scenarios:
            return
        environment.empty_run_tables(database_url, customers=empty_customers)
        updates_before = environment.customer_updates(database_url)
        result = run_operation(operation, source, env=env, tag=f"{name}-{size}-{repeat}", args=args, **options)
        result["customer_updates"] = environment.customer_updates(database_url) - updates_before
        outcome[name] = result
        print(f"  {name:<12} {result['seconds']:8.2f} s  {result['peak_rss_mib']:6.1f} MiB  {_counters(result)}")

    outcome: dict[str, dict] = {}
    scenario("read", "read", url, empty_customers=True)
    scenario("cold", "ingest", url, empty_customers=True, profile=args.profile, trace=True)
    scenario("warm", "ingest", url, empty_customers=False, trace=True)
    scenario("changed", "ingest", changed_url, empty_customers=False)
    scenario("bulk_create", "bulk-create", url, empty_customers=True)
    return outcome


def run_operation(
    operation: str,
    source_url: str,
    *,
    env: dict,
    tag: str,
    args: argparse.Namespace,
    profile=False,
    trace=False,
    mode: str = "full",
) -> dict:
    """Run one operation in a fresh process; return its result with the process's own wall time."""
    runs = RESULTS / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    output = runs / f"{tag}.json"
    output.unlink(missing_ok=True)
    command = [sys.executable, "-m", "bench.runner", operation, "--source-url", source_url, "--output", str(output)]
    if profile:
        command += ["--profile", str(RESULTS / f"profile-{tag}.pstats")]
    if trace:
        command.append("--trace-batches")
    if mode != "full":
        command += ["--mode", mode]
    # The configured source, as a deployment names it: its host and port are the allowed ones.
    env = {**env, "INGESTION_SOURCE_URL": source_url}
    started = time.perf_counter()
    with (RESULTS / "logs" / f"{tag}.log").open("wb") as log:
        done = subprocess.run(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=args.timeout, check=False
        )
    if done.returncode or not output.exists():
        raise RuntimeError(f"{operation} exited with {done.returncode}; see bench/results/logs/{tag}.log")
    result = json.loads(output.read_text())
    result["process_seconds"] = time.perf_counter() - started
    if result.get("status") != "succeeded":
        raise RuntimeError(f"{operation} did not succeed: {result.get('error')}")
    return result


def _mocksource_args(args: argparse.Namespace) -> list[str]:
    return ["mocksource.server:application", "--workers", str(args.workers)]


def _mocksource_env(dataset: Path) -> dict[str, str]:
    # An upstream we do not own: no database, none of the project's secrets.
    env = {name: value for name, value in os.environ.items() if not name.startswith(("DATABASE_", "DJANGO_"))}
    env["MOCKSOURCE_DATASET"] = str(dataset)
    return env


def _counters(result: dict) -> str:
    names = ("inserted", "updated", "unchanged", "invalid", "conflicts", "duplicates", "written")
    return " ".join(f"{name}={result[name]}" for name in names if name in result)


def summarise(results: dict[int, list[dict]]) -> dict:
    """Medians per size and scenario, ratios taken within each repeat."""
    summary = {}
    for size, repeats in results.items():
        scenarios = {}
        for name in SCENARIOS:
            runs = [repeat[name] for repeat in repeats if name in repeat]
            if not runs:
                continue
            scenarios[name] = {
                "seconds": report.median(run["seconds"] for run in runs),
                "rows_per_second": report.median(run["rows"] / run["seconds"] for run in runs),
                "peak_rss_mib": report.median(run["peak_rss_mib"] for run in runs),
                "cpu_seconds": report.median(run.get("cpu_seconds") for run in runs),
                "process_seconds": report.median(run["process_seconds"] for run in runs),
                "inserted": max(run.get("inserted", run.get("written", 0)) for run in runs),
                "updated": max(run.get("updated", 0) for run in runs),
                "customer_updates": max(run["customer_updates"] for run in runs),
                "batch_growth": report.median(_batch_growth(run.get("batch_seconds")) for run in runs),
                "commit_share": report.median(
                    sum(run["batch_seconds"]) / run["seconds"] for run in runs if run.get("batch_seconds")
                ),
            }
        summary[size] = {
            "scenarios": scenarios,
            "cold_over_read": _ratio(repeats, "cold", "read"),
            "cold_over_bulk_create": _ratio(repeats, "cold", "bulk_create"),
            "warm_over_cold": _ratio(repeats, "warm", "cold"),
        }
    return summary


def _ratio(repeats: list[dict], top: str, bottom: str) -> float | None:
    return report.median(
        repeat[top]["seconds"] / repeat[bottom]["seconds"] for repeat in repeats if top in repeat and bottom in repeat
    )


def _batch_growth(batches: list[float] | None) -> float | None:
    """Mean time of the last tenth of batch commits over the first tenth (1.0 = flat)."""
    if not batches or len(batches) < 20:
        return None
    full = batches[:-1]  # the last commit holds the remainder of the run
    tenth = max(1, len(full) // 10)
    first, last = sum(full[:tenth]) / tenth, sum(full[-tenth:]) / tenth
    return last / first if first else None


def render(summary: dict, repeats: dict[int, int]) -> str:
    rows = []
    for size, figures in summary.items():
        for name, scenario in figures["scenarios"].items():
            rows.append(
                (
                    f"{size:,}",
                    name,
                    scenario["seconds"],
                    round(scenario["rows_per_second"]),
                    scenario["peak_rss_mib"],
                    scenario["cpu_seconds"],
                    scenario["inserted"] if name != "read" else None,
                    scenario["updated"] if name != "read" else None,
                    scenario["customer_updates"] if name in ("warm", "changed") else None,
                    _percent(scenario["commit_share"]),
                    scenario["batch_growth"],
                )
            )
    medians = report.table(
        (
            "records",
            "scenario",
            "seconds",
            "rows/s",
            "peak RSS MiB",
            "CPU s",
            "inserted",
            "updated",
            "n_tup_upd",
            "in commits",
            "batch growth",
        ),
        rows,
    )
    ratios = report.table(
        ("records", "cold / read", "cold / bulk_create", "warm / cold"),
        [
            (f"{size:,}", figures["cold_over_read"], figures["cold_over_bulk_create"], figures["warm_over_cold"])
            for size, figures in summary.items()
        ],
    )
    runs = ", ".join(f"{count} run(s) at {size:,}" for size, count in repeats.items())
    return (
        f"Medians of {runs}; ratios are medians of per-repeat ratios. in commits = share of the run spent "
        f"in batch commits (the database work); CPU s = CPU time of the ingesting process (all its threads); "
        f"batch growth = mean commit time of the last tenth of batches / "
        f"the first tenth.\n\n{medians}\n\n{ratios}\n\n{render_targets(summary)}"
    )


def _percent(share: float | None) -> str | None:
    return None if share is None else f"{share:.0%}"


def render_targets(summary: dict) -> str:
    checks = []
    small = summary.get(10_000)
    if small and small["cold_over_read"] is not None:
        ratio = small["cold_over_read"]
        checks.append((f"10k cold <= {TARGET_COLD_OVER_READ} x read", f"{ratio:.2f} x", ratio <= TARGET_COLD_OVER_READ))
    for size, figures in summary.items():
        warm, cold = figures["scenarios"].get("warm"), figures["scenarios"].get("cold")
        if warm and cold:
            checks.append(
                (
                    f"{size:,} warm no slower than cold",
                    f"{figures['warm_over_cold']:.2f} x",
                    warm["seconds"] <= cold["seconds"],
                )
            )
            rewritten = warm["updated"] + warm["customer_updates"]
            checks.append(
                (
                    f"{size:,} warm rewrites 0 rows",
                    f"updated={warm['updated']}, n_tup_upd={warm['customer_updates']}",
                    rewritten == 0,
                )
            )
    large, medium = summary.get(1_000_000), summary.get(100_000)
    if large and "cold" in large["scenarios"]:
        cold = large["scenarios"]["cold"]
        checks.append(
            (
                f"1M peak RSS <= {TARGET_PEAK_RSS_MIB} MiB",
                f"{cold['peak_rss_mib']:.0f} MiB",
                cold["peak_rss_mib"] <= TARGET_PEAK_RSS_MIB,
            )
        )
        checks.append(
            (
                f"1M >= {TARGET_ROWS_PER_SECOND:,} rows/s",
                f"{cold['rows_per_second']:,.0f}",
                cold["rows_per_second"] >= TARGET_ROWS_PER_SECOND,
            )
        )
        if medium and "cold" in medium["scenarios"]:
            growth = cold["peak_rss_mib"] / medium["scenarios"]["cold"]["peak_rss_mib"]
            checks.append((f"RSS 1M / 100k <= {TARGET_RSS_GROWTH}", f"{growth:.2f}", growth <= TARGET_RSS_GROWTH))
    return report.table(("target", "measured", "met"), checks) if checks else ""


if __name__ == "__main__":
    main()
