from django.contrib import admin
from django.db.models.functions import Lower
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from api.admin import EstimatedCountPaginator, ReadOnlyAdmin
from customers import changes, selectors
from customers.models import Customer, CustomerChange

# The customer page shows this many of the newest versions.
HISTORY_SHOWN = 50

SOURCE_NOTICE = (
    "These fields belong to the upstream source and are read-only here: the next ingestion "
    "would overwrite any edit. Correct the record in the source instead."
)


class UpdatedFilter(admin.SimpleListFilter):
    title = "changed since first ingestion"
    parameter_name = "updated"

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(updated_at__isnull=self.value() == "no")
        return queryset


class DeletedFilter(admin.SimpleListFilter):
    title = "in the upstream"
    parameter_name = "deleted"

    def lookups(self, request, model_admin):
        return [("no", "Live"), ("yes", "Deleted upstream")]

    def queryset(self, request, queryset):
        if self.value() == "no":
            return queryset.live()
        if self.value() == "yes":
            return queryset.deleted()
        return queryset


@admin.register(Customer)
class CustomerAdmin(ReadOnlyAdmin):
    """Read-only view of pipeline-owned rows, tuned for a million of them.

    Read-only also keeps the table's invariants (customers/merge.py): a row deleted here
    would leave a gap in the dense `seq` the API pages by.
    """

    # What fits a laptop beside the navigation and the filters; every field is on the customer's page.
    list_display = ["customer_id", "name", "email_address", "created", "state"]
    list_filter = ["created_at", UpdatedFilter, DeletedFilter]
    # Only columns an index can order can be sorted (email through the unique lower(email) index).
    sortable_by = ["created", "name", "email_address"]
    ordering = ["-created_at"]
    # Declared for the search box; get_search_results() picks the index-served lookup.
    search_fields = ["=customer_id", "=email", "first_name", "last_name"]
    search_help_text = "An exact customer id, an exact email (any case), or words of a first or last name."
    paginator = EstimatedCountPaginator
    list_per_page = 50

    class Media:
        css = {"all": ["customers/admin.css"]}

    fieldsets = [
        ("Source record", {"fields": Customer.SOURCE_FIELDS, "description": SOURCE_NOTICE}),
        ("Pipeline bookkeeping", {"fields": ["updated_at", "seq", "ingested_at", "deleted_at", "deleted_by"]}),
        ("History", {"fields": ["history"], "description": "Newest first; the fields each change changed are marked."}),
    ]
    readonly_fields = [
        *Customer.SOURCE_FIELDS, "updated_at", "seq", "ingested_at", "deleted_at", "deleted_by", "history",
    ]  # fmt: skip

    @admin.display(description="name", ordering="last_name")
    def name(self, customer):
        return f"{customer.first_name} {customer.last_name}"

    @admin.display(description="created", ordering="created_at")
    def created(self, customer):
        return _day(customer.created_at)

    @admin.display(description="state")
    def state(self, customer):
        """Deleted upstream (when), changed since its first ingestion (when), or as first ingested."""
        if customer.deleted_at is not None:
            return f"deleted {_day(customer.deleted_at)}"
        return "live" if customer.updated_at is None else f"changed {_day(customer.updated_at)}"

    @admin.display(description="email", ordering=Lower("email"))
    def email_address(self, customer):
        return customer.email

    @admin.display(description="deleted by")
    def deleted_by(self, customer):
        if customer.deleted_by_run is None:
            return "-"
        # A link by URL name: customers does not import ingestion.
        url = reverse("admin:ingestion_ingestrun_change", args=[customer.deleted_by_run])
        return format_html('<a href="{}">run {}</a>', url, customer.deleted_by_run)

    @admin.display(description="versions")
    def history(self, customer):
        versions = list(changes.history_of(customer.customer_id).order_by("-cursor")[:HISTORY_SHOWN])
        if not versions:
            return "-"
        header = format_html_join("", "<th>{}</th>", ((name,) for name in ("cursor", "change", "at", "run")))
        header += format_html_join("", "<th>{}</th>", ((name,) for name in CustomerChange.STATE_FIELDS))
        rows = format_html_join("", "<tr>{}</tr>", ((self._version_cells(version),) for version in versions))
        return format_html(
            '<table class="customer-history"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>', header, rows
        )

    @staticmethod
    def _version_cells(version: CustomerChange):
        run = "-"
        if version.run_id is not None:
            run = format_html(
                '<a href="{}">{}</a>',
                reverse("admin:ingestion_ingestrun_change", args=[version.run_id]),
                version.run_id,
            )
        cells = format_html(
            "<td>{}</td><td>{}</td><td>{}</td><td>{}</td>", version.cursor, version.kind, version.at, run
        )
        changed = set(version.changed_fields)
        for field in CustomerChange.STATE_FIELDS:
            value = "" if getattr(version, field) is None else getattr(version, field)
            template = '<td class="changed"><mark>{}</mark></td>' if field in changed else "<td>{}</td>"
            cells += format_html(template, value)
        return cells

    def has_erase_permission(self, request):
        # The erase action itself joins from ingestion/admin.py, where erasure lives.
        return request.user.has_perm("customers.erase_customer")

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        return selectors.matching_admin_search(queryset, search_term), False


def _day(moment) -> str:
    """A date and time as the list shows it, to the day (the customer's page has the time)."""
    return "-" if moment is None else timezone.localtime(moment).date().isoformat()
