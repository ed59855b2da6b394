"""The datasets mocksource serves to the benchmarks, generated once and cached.

They live in the git-ignored bench/results/datasets/. The "changed" variant is the
base dataset with the address of every tenth record edited, so a rerun against it
updates 10% of the customers and leaves the rest untouched. The "evolved" one is its
next generation as the upstream writes it (`generate_customers --evolve`): some records
changed, some deleted (with tombstones), some added, all at one time.
"""

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

from bench.environment import RESULTS, manage
from mocksource.dataset import write_dataset
from mocksource.store import ids_path, index_path

DATASETS = RESULTS / "datasets"
CHANGE_EVERY = 10


def base_dataset(count: int, *, seed: int, env: dict[str, str]) -> Path:
    """The dataset `generate_customers --count COUNT --seed SEED` writes, generated if missing."""
    path = DATASETS / f"customers-{count}-seed{seed}.jsonl"
    if not _complete(path):
        manage(
            env, "generate_customers", "--count", str(count), "--seed", str(seed), "--output", str(path), timeout=600
        )
    return path


def evolved_dataset(base: Path, *, at: str, changed: str, deleted: str, added: str, env: dict[str, str]) -> Path:
    """`generate_customers --evolve BASE` at `at` with these shares, written once beside `base`."""
    shares = f"c{changed}-d{deleted}-a{added}".replace("%", "")
    path = base.with_name(f"{base.stem}-next-{shares}-{at.replace(':', '')}.jsonl")
    if not _complete(path) or path.stat().st_mtime < base.stat().st_mtime:
        manage(
            env,
            "generate_customers",
            "--evolve",
            str(base),
            "--output",
            str(path),
            "--at",
            at,
            "--changed",
            changed,
            "--deleted",
            deleted,
            "--added",
            added,
            timeout=600,
        )
    return path


def changed_dataset(base: Path) -> Path:
    """`base` with every tenth record's address changed; written once next to it."""
    path = base.with_name(base.stem + "-changed10.jsonl")
    if not _complete(path) or path.stat().st_mtime < base.stat().st_mtime:
        write_dataset(_changed_records(base), path)
    return path


def _changed_records(base: Path) -> Iterator[dict]:
    with base.open("rb") as lines:
        for index, line in enumerate(lines):
            # Decimals as parsed keep their digits when written back (1234.50 stays 1234.50).
            record = json.loads(line, parse_float=Decimal)
            if index % CHANGE_EVERY == 0 and isinstance(record.get("address"), str):
                record["address"] += " (moved)"
            yield record


def _complete(path: Path) -> bool:
    return all(candidate.exists() for candidate in (path, index_path(path), ids_path(path)))
