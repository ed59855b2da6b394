from django.core.management.base import BaseCommand, CommandError

from ingestion.retention import prune


class Command(BaseCommand):
    help = (
        "Delete staged rows no run needs any more and failure rows of runs finished more than "
        "--days days ago (default: INGESTION_RETENTION_DAYS). Runs themselves are kept."
    )

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, help="Keep failures of runs finished within this many days.")

    def handle(self, *args, **options):
        days = options["days"]
        if days is not None and days < 0:
            raise CommandError("--days must be zero or more.")
        pruned = prune(days=days)
        self.stdout.write(f"Deleted {pruned.staged:,} staged rows and {pruned.failures:,} failure rows.")
