import uuid

from django.core.management.base import BaseCommand, CommandError

from ingestion import erasure
from ingestion.models import ErasureDoor


class Command(BaseCommand):
    help = (
        "Erase a customer's personal data from every copy the pipeline keeps (customers, staged rows, "
        "failures, history, change feed) and keep later ingestions from bringing it back. "
        "With --lift, let ingestions bring the id in again."
    )

    def add_arguments(self, parser):
        parser.add_argument("customer_id", help="The customer's upstream id (a UUID).")
        parser.add_argument("--reason", default="", help="Why, for the audit entry (no personal data, please).")
        parser.add_argument("--lift", action="store_true", help="Lift the id's suppression instead of erasing.")
        parser.add_argument("--by", default="command line", help="Who asked, for the audit entry.")

    def handle(self, *args, customer_id, reason, lift, by, **options):
        try:
            subject = uuid.UUID(customer_id)
        except ValueError:
            raise CommandError(f"{customer_id!r} is not a customer id: a UUID is expected.") from None
        if lift:
            try:
                entry = erasure.lift(subject, by=by, door=ErasureDoor.COMMAND, reason=reason)
            except erasure.ErasureRefused as refused:
                raise CommandError(str(refused)) from None
            self.stdout.write(f"Suppression lifted (audit entry {entry.pk}); later ingestions may bring it in again.")
            return
        entry = erasure.erase(subject, by=by, door=ErasureDoor.COMMAND, reason=reason)
        removed = ", ".join(f"{table} {count:,}" for table, count in entry.removed.items())
        self.stdout.write(f"Erased (audit entry {entry.pk}): {removed}. Later ingestions skip the id.")
