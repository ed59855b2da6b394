import re
from decimal import Decimal

from django.core.management.base import BaseCommand, CommandError

from mocksource import config, times
from mocksource.dataset import DEFAULT_COUNT, DEFAULT_INVALID_RATIO, DEFAULT_SEED, generate_dataset
from mocksource.evolution import EvolutionError, evolve_dataset

_PERCENTAGE = re.compile(r"([0-9]+(?:\.[0-9]+)?)%", re.ASCII)
EVOLVE_SHARES = {"changed": "1%", "deleted": "0.1%", "added": "0.5%"}


class Command(BaseCommand):
    help = (
        "Generate the upstream's deterministic customer dataset (JSON Lines plus index files), "
        "or with --evolve write its next generation."
    )
    # Runs at set-up, before the rest of the project need be sound; it touches no model.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, default=None, help=f"Number of records (default {DEFAULT_COUNT}).")
        parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="Same seed, byte-identical files.")
        parser.add_argument(
            "--output", default=None, help="Dataset file (default: MOCKSOURCE_DATASET or data/customers.jsonl)."
        )
        parser.add_argument(
            "--invalid-ratio",
            type=float,
            default=None,
            help=f"Fraction of deliberately invalid records; 0 turns them off (default {DEFAULT_INVALID_RATIO}).",
        )
        parser.add_argument(
            "--evolve", metavar="DATASET", default=None, help="Write the next generation of DATASET (to --output)."
        )
        for name, default in EVOLVE_SHARES.items():
            parser.add_argument(f"--{name}", default=default, help=f"With --evolve: share of records {name}.")
        parser.add_argument(
            "--at", default=None, help="With --evolve: the time of the changes, such as 2026-12-02T00:00:00Z."
        )

    def handle(self, *args, evolve, **options):
        if evolve is not None:
            return self.evolve(evolve, **options)
        count = DEFAULT_COUNT if options["count"] is None else options["count"]
        ratio = DEFAULT_INVALID_RATIO if options["invalid_ratio"] is None else options["invalid_ratio"]
        if count < 0:
            raise CommandError("--count must be 0 or more.")
        if not 0 <= ratio <= 1:
            raise CommandError("--invalid-ratio must be between 0 and 1.")
        summary = generate_dataset(
            options["output"] or config.dataset_path(), count=count, seed=options["seed"], invalid_ratio=ratio
        )
        self.stdout.write(f"Wrote {summary.total} records to {summary.path} in {summary.seconds:.1f} s.")
        self.stdout.write(f"Deliberately invalid: {sum(summary.invalid.values())}")
        for kind, number in summary.invalid.items():
            self.stdout.write(f"  {kind}: {number}")

    def evolve(self, source, *, at, seed, output, **options):
        for name in ("count", "invalid_ratio"):
            if options[name] is not None:
                raise CommandError(
                    f"--{name.replace('_', '-')} shapes a first generation; --evolve keeps the dataset's."
                )
        if at is None:
            raise CommandError("--evolve needs --at, the time of the changes, such as 2026-12-02T00:00:00Z.")
        if (moment := times.parse(at)) is None:
            raise CommandError(
                f"--at must be an ISO-8601 date and time with a UTC offset, such as 2026-12-02T00:00:00Z, not {at!r}."
            )
        if moment % 1_000_000:
            raise CommandError(f"--at must be in whole seconds, as the records write times, not {at!r}.")
        shares = {name: _percentage(name, options[name]) for name in EVOLVE_SHARES}
        try:
            summary = evolve_dataset(source, output=output, at=at, seed=seed, **shares)
        except EvolutionError as exc:
            raise CommandError(str(exc)) from None
        tombstones = f"{summary.tombstones} tombstone{'' if summary.tombstones == 1 else 's'}"
        self.stdout.write(
            f"Wrote the next generation of {summary.path}: {summary.total} records in {summary.seconds:.1f} s."
        )
        self.stdout.write(
            f"{summary.changed} changed, {summary.deleted} deleted, {summary.added} added at {summary.at}; "
            f"{tombstones} in all."
        )


def _percentage(name: str, text: str) -> Decimal:
    match = _PERCENTAGE.fullmatch(text)
    if match is None or Decimal(match[1]) > 100:
        raise CommandError(f"--{name} must be a percentage from 0% to 100%, such as 1% or 0.5%, not {text!r}.")
    return Decimal(match[1]) / 100
