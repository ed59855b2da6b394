from django.core.management.base import BaseCommand, CommandError

from ingestion.retention import prune


class Command(BaseCommand):
    help = (
        "Delete staged rows no run needs any more and failure rows of runs finished more than "
        "--days days ago (default: INGESTION_RETENTION_DAYS), and change-feed events older than "
        "--changes-days (default: INGESTION_CHANGES_RETENTION_DAYS). Runs themselves are kept."
    )

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, help="Keep failures of runs finished within this many days.")
        parser.add_argument("--changes-days", type=int, help="Keep change-feed events this many days.")

    def handle(self, *args, **options):
        days = options["days"]
        changes_days = options["changes_days"]
        for name, value in (("--days", days), ("--changes-days", changes_days)):
            if value is not None and value < 0:
                raise CommandError(f"{name} must be zero or more.")
        pruned = prune(days=days, changes_days=changes_days)
        self.stdout.write(
            f"Deleted {pruned.staged:,} staged rows, {pruned.failures:,} failure rows "
            f"and {pruned.changes:,} change-feed events."
        )
