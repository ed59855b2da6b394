"""What writing the change feed (and customers' history) costs an ingestion: this revision against a baseline.

The baseline is a commit without the feed (`--baseline`, e.g. the one before it), checked out
as a git worktree under bench/results/ and sharing this checkout's venv and cached datasets.
Per repeat, each side runs `bench/ingest.py --scenarios cold,warm,changed --repeat 1` at
`--size` in its own database (the two schemas differ), alternating which side goes first, so
both are measured in the same sitting. Reported: medians of cold, warm and 10%-changed
seconds per side, the ratio with/without, and the feed events each repeat wrote (counted by
pg_stat_user_tables; they must equal the inserts and updates of its three runs: an unchanged
row writes none).

    python bench/feed_cost.py --baseline 51d5c9b --size 1000000 --repeat 3
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import environment, report
from bench.environment import RESULTS, ROOT

SCENARIOS = ("cold", "warm", "changed")
TARGET_RATIO = 1.15
SAVED = re.compile(r"raw results: (\S+)")


def main() -> None:
    args = parse_args()
    baseline = _worktree(args.baseline)
    sides = {"without feed": (baseline, args.baseline_database_url), "with feed": (ROOT, args.database_url)}
    load_before = environment.load_average()
    print(f"revision {environment.revision()} against {args.baseline}; load before: {load_before}", flush=True)
    measured = {side: [] for side in sides}
    for repeat in range(args.repeat):
        order = list(sides) if repeat % 2 == 0 else list(reversed(sides))
        for side in order:
            checkout, database_url = sides[side]
            before = _inserted_events(database_url) if side == "with feed" else None
            summary = _ingest(checkout, database_url, args.size)
            # Cold writes one event per insert, changed one per update, warm none: the sum must match.
            events = _inserted_events(database_url) - before if side == "with feed" else None
            measured[side].append({"summary": summary, "events": events})
            seconds = {name: round(summary["scenarios"][name]["seconds"], 1) for name in SCENARIOS}
            print(f"repeat {repeat + 1}, {side}: {seconds}", flush=True)
    rows = _rows(measured)
    load_after = environment.load_average()
    saved = report.save(
        "feed_cost",
        {
            "machine": environment.machine(args.database_url),
            "baseline": args.baseline,
            "size": args.size,
            "load_before": load_before,
            "load_after": load_after,
            "runs": measured,
            "rows": rows,
        },
    )
    print(f"\nload average before: {load_before}; after: {load_after}; raw results: {saved.relative_to(ROOT)}\n")
    print(render(rows, args))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="A commit without the change feed.")
    parser.add_argument("--size", type=int, default=1_000_000, help="Records (default 1M).")
    parser.add_argument("--repeat", type=int, default=3, help="Alternating repeats; medians (default 3).")
    parser.add_argument(
        "--database-url", default=os.environ.get("BENCH_DATABASE_URL", environment.DEFAULT_DATABASE_URL)
    )
    parser.add_argument(
        "--baseline-database-url",
        default="postgres://postgres@127.0.0.1:5432/bench_base",
        help="The baseline's own database (its name must contain 'bench').",
    )
    return parser.parse_args()


def _worktree(revision: str) -> Path:
    """The baseline checked out beside the results, with this checkout's datasets."""
    path = RESULTS / f"baseline-{revision}"
    if not path.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), revision], cwd=ROOT, check=True)
    datasets = path / "bench" / "results" / "datasets"
    if not datasets.exists():
        datasets.parent.mkdir(parents=True, exist_ok=True)
        (RESULTS / "datasets").mkdir(parents=True, exist_ok=True)
        datasets.symlink_to(RESULTS / "datasets")
    return path


def _ingest(checkout: Path, database_url: str, size: int) -> dict:
    """One repeat of bench/ingest.py in `checkout`; its summary for `size`."""
    command = [
        sys.executable,
        "bench/ingest.py",
        "--sizes",
        str(size),
        "--repeat",
        "1",
        "--repeat-at-1m",
        "1",
        "--scenarios",
        "cold,warm,changed",
        "--database-url",
        database_url,
    ]
    done = subprocess.run(command, cwd=checkout, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode:
        raise RuntimeError(f"bench/ingest.py failed in {checkout.name}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    saved = checkout / SAVED.search(done.stdout).group(1)
    return json.loads(saved.read_text())["summary"][str(size)]


def _inserted_events(database_url: str, *, settle_seconds: float = 10.0) -> int:
    """Rows ever inserted into the feed table (pg_stat_user_tables; TRUNCATE does not reset it),
    read until two readings agree: a backend reports its counters a moment after it ends."""
    deadline, previous = time.monotonic() + settle_seconds, None
    while True:
        with environment.connect(database_url) as conn:
            row = conn.execute(
                "SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'customers_customerchange'"
            ).fetchone()
        current = row[0] if row else 0  # not migrated yet: nothing inserted
        if current == previous or time.monotonic() > deadline:
            return current
        previous = current
        time.sleep(1)


def _rows(measured: dict[str, list[dict]]) -> list[dict]:
    rows = []
    for name in SCENARIOS:
        without = [run["summary"]["scenarios"][name]["seconds"] for run in measured["without feed"]]
        with_feed = [run["summary"]["scenarios"][name]["seconds"] for run in measured["with feed"]]
        ratios = [new / old for new, old in zip(with_feed, without, strict=True)]
        rows.append(
            {
                "scenario": name,
                "without": report.median(without),
                "with": report.median(with_feed),
                "ratio": report.median(ratios),
                "rss_with": report.median(
                    run["summary"]["scenarios"][name]["peak_rss_mib"] for run in measured["with feed"]
                ),
                "rss_without": report.median(
                    run["summary"]["scenarios"][name]["peak_rss_mib"] for run in measured["without feed"]
                ),
            }
        )
    events = [run["events"] for run in measured["with feed"]]
    expected = [
        sum(run["summary"]["scenarios"][name][kind] for name in SCENARIOS for kind in ("inserted", "updated"))
        for run in measured["with feed"]
    ]
    rows.append({"scenario": "events", "events": events, "expected": expected})
    return rows


def render(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        f"Size {args.size:,}; {args.repeat} alternating repeats; medians. Target: with/without <= {TARGET_RATIO}.",
        "",
        "| run | without feed (s) | with feed (s) | with/without | target | peak RSS without/with (MiB) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows[:-1]:
        target = "met" if row["scenario"] == "warm" or row["ratio"] <= TARGET_RATIO else "not met"
        lines.append(
            f"| {row['scenario']} | {row['without']:.1f} | {row['with']:.1f} | {row['ratio']:.3f} | "
            f"{target if row['scenario'] != 'warm' else '-'} | {row['rss_without']:.0f} / {row['rss_with']:.0f} |"
        )
    lines.append("")
    lines.append(
        f"Feed events written per repeat: {rows[-1]['events']}; inserts + updates of its three runs: "
        f"{rows[-1]['expected']} ({'equal' if rows[-1]['events'] == rows[-1]['expected'] else 'NOT equal'}: "
        "one event per row written, none for an unchanged one)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
