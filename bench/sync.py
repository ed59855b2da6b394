"""Sync at scale: an incremental run and a full reconciliation over one upstream change.

The dataset of --size records is generated once, and its next generation once beside it
(`generate_customers --evolve` with 1 % changed, 0.1 % deleted, 0.5 % added at --at; both
cached in bench/results/datasets/). One mocksource under gunicorn serves a link the script
points at either generation; mocksource serves the other one from its next request, as it
does when a dataset is evolved in place. Per repeat, every run in a fresh process
(bench/runner.py), one source URL throughout, so the watermark is the one runs store:

  cold         empty tables; a full run of the base generation (it sets the watermark)
  warm         a full run of the same generation: nothing changed (the baseline)
  incremental  the link moves to the next generation; an incremental run
  reset        the link moves back; empty tables; a cold full run of the base again
  full         the link moves to the next generation; a full run, the reconciliation

The live copy the incremental run leaves is compared, row by row over the upstream's fields,
with the one the full run leaves: they must be equal, except for customers the upstream lists
twice with different content (the full walk applies the later line, the incremental walk the
changed one). n_tup_upd of
the customers table is read around each run: every changed record is rewritten once, a
soft deletion is one update, and an email handed from one customer to another within a batch
writes the giver once more (a placeholder first), so it must equal updated + deleted + handed
over.

    python bench/sync.py --size 1000000 --repeat 3
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import datasets, environment, ingest, report, servers
from bench.environment import RESULTS, ROOT

CHANGED, DELETED, ADDED = "1%", "0.1%", "0.5%"
REPORTED = ("warm", "incremental", "full")
TARGET_INCREMENTAL_SECONDS = 2.0
# The live copy, one digest of the upstream's fields per customer.
LIVE_COPY = """
    SELECT customer_id, md5(concat_ws('|', customer_id, first_name, last_name, email, phone, address,
                                      date_of_birth, account_balance, created_at)) AS digest
    FROM customers_customer WHERE deleted_at IS NULL
"""
SNAPSHOT = "bench_sync_incremental_copy"
# Customers whose live rows differ between the two copies, and how many of them the full run
# read more than once (an id the upstream lists twice: each walk's later read wins).
COMPARE = f"""
    WITH full_copy AS ({LIVE_COPY}),
    differ AS (
        (SELECT * FROM {SNAPSHOT} EXCEPT SELECT * FROM full_copy)
        UNION (SELECT * FROM full_copy EXCEPT SELECT * FROM {SNAPSHOT})
    ),
    read_twice AS (
        SELECT customer_id FROM ingestion_stagedcustomer WHERE run_id = %s
        GROUP BY customer_id HAVING count(*) > 1
    )
    SELECT count(DISTINCT customer_id),
           count(DISTINCT customer_id) FILTER (WHERE customer_id IN (SELECT customer_id FROM read_twice))
    FROM differ
"""  # noqa: S608 - built from this module's constants only


def main() -> None:
    args = parse_args()
    servers.stop_on_sigterm()
    database_url, env = environment.migrated(args.database_url)
    load_before = environment.load_average()
    print(f"revision {environment.revision()}; load before: {load_before}", flush=True)
    base = datasets.base_dataset(args.size, seed=args.seed, env=env)
    following = datasets.evolved_dataset(base, at=args.at, changed=CHANGED, deleted=DELETED, added=ADDED, env=env)
    served = RESULTS / "sync" / "served.jsonl"
    serve(served, base)
    repeats = []
    try:
        with servers.gunicorn(
            ["mocksource.server:application", "--workers", str(args.workers)],
            env=ingest._mocksource_env(served),
            log=RESULTS / "logs" / f"mocksource-sync-{args.size}.log",
        ) as url:
            for repeat in range(args.repeat):
                print(f"{args.size:,} records, repeat {repeat + 1}/{args.repeat}", flush=True)
                try:
                    repeats.append(one_repeat(repeat, url, served, base, following, args, env, database_url))
                except RuntimeError as exc:
                    print(f"  stopped: {exc}", flush=True)
                    break
    finally:
        environment.empty_run_tables(database_url, customers=True)
    load_after = environment.load_average()
    summary = summarise(repeats)
    saved = report.save(
        "sync",
        {
            "machine": environment.machine(database_url),
            "load_before": load_before,
            "load_after": load_after,
            "size": args.size,
            "at": args.at,
            "shares": {"changed": CHANGED, "deleted": DELETED, "added": ADDED},
            "summary": summary,
            "runs": repeats,
        },
    )
    print(f"\nrevision {environment.revision()}; load average before: {load_before}; after: {load_after}")
    print(f"raw results: {saved.relative_to(ROOT)}\n")
    print(render(args.size, summary, len(repeats)))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000, help="Records in the base generation (default 1M).")
    parser.add_argument("--repeat", type=int, default=3, help="Repeats; medians are reported (default 3).")
    parser.add_argument("--seed", type=int, default=42, help="Dataset seed (default 42).")
    parser.add_argument(
        "--at",
        default="2026-12-02T00:00:00Z",
        help="Time of the next generation's changes; after the base's, before now (default 2026-12-02T00:00:00Z).",
    )
    parser.add_argument("--workers", type=int, default=2, help="mocksource gunicorn workers (default 2).")
    environment.add_database_url_argument(parser)
    parser.add_argument("--timeout", type=float, default=1800, help="Seconds allowed per run (default 1800).")
    args = parser.parse_args()
    if args.repeat < 1 or args.size < 1:
        parser.error("--size and --repeat must be at least 1")
    return args


def serve(link: Path, dataset: Path) -> None:
    """Point `link` at `dataset`'s current generation in one rename."""
    link.parent.mkdir(parents=True, exist_ok=True)
    target = Path(os.path.realpath(dataset))
    staging = link.with_name(f".{link.name}.new")
    staging.unlink(missing_ok=True)
    staging.symlink_to(target)
    os.replace(staging, link)


def one_repeat(
    repeat: int, url: str, served: Path, base: Path, following: Path, args, env: dict, database_url: str
) -> dict:
    outcome: dict[str, dict] = {}

    def run(name: str, *, mode: str = "full", empty: bool = False) -> dict:
        if empty:
            environment.empty_run_tables(database_url, customers=True)
        updates_before = environment.customer_updates(database_url)
        result = ingest.run_operation(
            "ingest", url, env=env, tag=f"sync-{name}-{args.size}-{repeat}", args=args, mode=mode, trace=True
        )
        result["customer_updates"] = environment.customer_updates(database_url) - updates_before
        result["handed_over"] = handed_over(database_url)
        outcome[name] = result
        print(
            f"  {name:<12} {result['seconds']:8.2f} s  {result['peak_rss_mib']:6.1f} MiB  mode={result['mode']} "
            f"{_counters(result)} n_tup_upd={result['customer_updates']}",
            flush=True,
        )
        return result

    serve(served, base)
    run("cold", empty=True)
    run("warm")
    serve(served, following)
    run("incremental", mode="incremental")
    snapshot(database_url)
    serve(served, base)
    run("reset", empty=True)
    serve(served, following)
    run("full")
    outcome["full"]["differing"], outcome["full"]["differing_read_twice"] = compare(database_url)
    if outcome["incremental"]["mode"] != "incremental":
        raise RuntimeError("the incremental run was created as a full one: no watermark after the cold run")
    return outcome


def handed_over(database_url: str) -> int:
    """Emails the last run's merges moved from one customer to another within a batch: each giver
    is written twice (a placeholder first, then its own new email), one more `n_tup_upd`."""
    with environment.connect(database_url) as conn:
        return conn.execute(
            """
            SELECT count(*) FROM ingestion_stagedcustomer
            WHERE run_id = (SELECT max(id) FROM ingestion_ingestrun)
              AND outcome IS NULL AND conflicting_customer_id IS NOT NULL
            """
        ).fetchone()[0]


def snapshot(database_url: str) -> None:
    with environment.connect(database_url) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {SNAPSHOT}")
        conn.execute(f"CREATE TABLE {SNAPSHOT} AS {LIVE_COPY}")


def compare(database_url: str) -> tuple[int, int]:
    """Customers whose live rows differ between the incremental's copy and the full run's, and of
    those, how many the full run read twice; the snapshot is dropped."""
    with environment.connect(database_url) as conn:
        full_run = conn.execute("SELECT max(id) FROM ingestion_ingestrun").fetchone()[0]
        differing, read_twice = conn.execute(COMPARE, [full_run]).fetchone()
        conn.execute(f"DROP TABLE {SNAPSHOT}")
    return differing, read_twice


def _counters(result: dict) -> str:
    names = ("fetched", "inserted", "updated", "unchanged", "invalid", "conflicts", "deleted", "restored", "tombstones")
    return " ".join(f"{name}={result[name]}" for name in names if result.get(name))


def summarise(repeats: list[dict]) -> dict:
    summary = {}
    for name in REPORTED:
        runs = [repeat[name] for repeat in repeats if name in repeat]
        if not runs:
            continue
        summary[name] = {
            "seconds": report.median(run["seconds"] for run in runs),
            "rows_per_second": report.median(run["fetched"] / run["seconds"] for run in runs),
            "peak_rss_mib": report.median(run["peak_rss_mib"] for run in runs),
            "cpu_seconds": report.median(run.get("cpu_seconds") for run in runs),
            # The batch commits (COPY, classification, merge, failures): the database's share of the run.
            "commit_seconds": report.median(sum(run.get("batch_seconds") or [0]) for run in runs),
            **{key: max(run[key] for run in runs) for key in ("fetched", "updated", "inserted", "deleted")},
            "tombstones": max(run.get("tombstones", 0) for run in runs),
            "customer_updates": max(run["customer_updates"] for run in runs),
            "handed_over": max(run.get("handed_over", 0) for run in runs),
            "rewrites_exact": all(
                run["customer_updates"] == run["updated"] + run["deleted"] + run.get("handed_over", 0) for run in runs
            ),
        }
    summary["over_warm"] = {
        name: report.median(repeat[name]["seconds"] / repeat["warm"]["seconds"] for repeat in repeats if name in repeat)
        for name in ("incremental", "full")
    }
    fulls = [repeat["full"] for repeat in repeats if "full" in repeat]
    summary["differing"] = max((run["differing"] for run in fulls), default=None)
    summary["differing_read_twice"] = max((run["differing_read_twice"] for run in fulls), default=None)
    return summary


def render(size: int, summary: dict, count: int) -> str:
    rows = [
        (
            name,
            figures["seconds"],
            round(figures["rows_per_second"]),
            figures["peak_rss_mib"],
            figures["cpu_seconds"],
            figures["commit_seconds"],
            figures["fetched"],
            figures["inserted"],
            figures["updated"],
            figures["deleted"],
            figures["tombstones"],
            figures["handed_over"],
            figures["customer_updates"],
            summary["over_warm"].get(name, 1.0),
        )
        for name, figures in summary.items()
        if name in REPORTED
    ]
    medians = report.table(
        (
            "run",
            "seconds",
            "records read/s",
            "peak RSS MiB",
            "CPU s",
            "in commits s",
            "read",
            "inserted",
            "updated",
            "deleted",
            "tombstones",
            "emails handed over",
            "n_tup_upd",
            "/ warm",
        ),
        rows,
    )
    checks = []
    if incremental := summary.get("incremental"):
        checks.append(
            (
                f"incremental <= {TARGET_INCREMENTAL_SECONDS:.0f} s",
                f"{incremental['seconds']:.2f} s",
                incremental["seconds"] <= TARGET_INCREMENTAL_SECONDS,
            )
        )
    for name in ("incremental", "full"):
        if figures := summary.get(name):
            checks.append(
                (
                    f"{name}: n_tup_upd = updated + deleted + emails handed over",
                    f"{figures['customer_updates']:,} = {figures['updated']:,} + {figures['deleted']:,}"
                    f" + {figures['handed_over']:,}",
                    figures["rewrites_exact"],
                )
            )
    if summary["differing"] is not None:
        unexplained = summary["differing"] - summary["differing_read_twice"]
        checks.append(
            (
                "incremental and full leave the same live copy, but for ids the upstream lists twice",
                f"{summary['differing']} differ, {summary['differing_read_twice']} of them listed twice",
                unexplained == 0,
            )
        )
    return (
        f"{size:,} customers; next generation {CHANGED} changed, {DELETED} deleted, {ADDED} added. "
        f"Medians of {count} repeat(s); / warm is the median of per-repeat ratios to the warm full run.\n\n"
        f"{medians}\n\n{report.table(('check', 'measured', 'met'), checks)}"
    )


if __name__ == "__main__":
    main()
