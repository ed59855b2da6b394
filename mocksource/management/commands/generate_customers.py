from django.core.management.base import BaseCommand, CommandError

from mocksource import config
from mocksource.dataset import DEFAULT_COUNT, DEFAULT_INVALID_RATIO, DEFAULT_SEED, generate_dataset


class Command(BaseCommand):
    help = "Generate the upstream's deterministic customer dataset (JSON Lines plus index files)."
    # Runs at set-up, before the rest of the project need be sound; it touches no model.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help="Number of records.")
        parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="Same seed, byte-identical files.")
        parser.add_argument(
            "--output", default=None, help="Dataset file (default: MOCKSOURCE_DATASET or data/customers.jsonl)."
        )
        parser.add_argument(
            "--invalid-ratio",
            type=float,
            default=DEFAULT_INVALID_RATIO,
            help="Fraction of deliberately invalid records; 0 turns them off.",
        )

    def handle(self, *args, count, seed, output, invalid_ratio, **options):
        if count < 0:
            raise CommandError("--count must be 0 or more.")
        if not 0 <= invalid_ratio <= 1:
            raise CommandError("--invalid-ratio must be between 0 and 1.")
        summary = generate_dataset(output or config.dataset_path(), count=count, seed=seed, invalid_ratio=invalid_ratio)
        self.stdout.write(f"Wrote {summary.total} records to {summary.path} in {summary.seconds:.1f} s.")
        self.stdout.write(f"Deliberately invalid: {sum(summary.invalid.values())}")
        for kind, number in summary.invalid.items():
            self.stdout.write(f"  {kind}: {number}")
