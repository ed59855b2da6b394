"""Admin building blocks for rows a pipeline owns: read-only, and cheap on large tables."""

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet
from django.utils.functional import cached_property


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows the pipeline owns: nobody adds, edits or deletes them in the admin.

    Without a full result count: on a large table it is a sequential scan per page view.
    """

    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class EstimatedCountPaginator(Paginator):
    """Admin paginator that does not count a large table it was asked to show unfiltered.

    Without a filter the count is PostgreSQL's estimate (pg_class.reltuples, kept by
    autovacuum/ANALYZE); small or never-analysed tables, and every filtered list, get
    an exact count.
    """

    exact_below = 100_000

    @cached_property
    def count(self) -> int:
        estimate = large_unfiltered_rows(self.object_list, self.exact_below)
        return super().count if estimate is None else estimate


def large_unfiltered_rows(queryset, exact_below: int = EstimatedCountPaginator.exact_below) -> int | None:
    """PostgreSQL's estimate of the rows `queryset` lists when it is unfiltered and at least `exact_below`
    (too many to count or group on every page view); None when it is filtered or small enough to read."""
    if not isinstance(queryset, QuerySet) or queryset.query.where:
        return None
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [queryset.model._meta.db_table]
        )
        row = cursor.fetchone()
    estimate = row[0] if row else -1
    return estimate if estimate >= exact_below else None
