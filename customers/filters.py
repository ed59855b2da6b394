"""Query parameters of the customer listing."""

from datetime import timedelta

import django_filters
from django.core.exceptions import ValidationError
from django.db.models import F
from django.db.models.functions import Lower
from django_filters.fields import IsoDateTimeField

from customers import selectors
from customers.models import Customer

# Parameter -> ORDER BY, each served by one index scan (customers/models.py). Keys that
# are not unique get a unique tie-breaker in the same direction, so pages are stable.
ORDERINGS = {
    # Plain names, so the paginator sees the dense key (api/pagination.py, DenseKeyPagination).
    "seq": ["seq"],
    "-seq": ["-seq"],
    "created_at": [F("created_at").asc(), F("customer_id").asc()],
    "-created_at": [F("created_at").desc(), F("customer_id").desc()],
    # Never-updated rows (NULL) come last in both directions, in ingestion order.
    "updated_at": [F("updated_at").asc(nulls_last=True), F("seq").asc()],
    "-updated_at": [F("updated_at").desc(nulls_last=True), F("seq").desc()],
    "last_name": [F("last_name").asc(), F("customer_id").asc()],
    "-last_name": [F("last_name").desc(), F("customer_id").desc()],
    # Emails are unique ignoring case: no tie-breaker needed.
    "email": [Lower("email").asc()],
    "-email": [Lower("email").desc()],
}
ORDERING_LABELS = {
    "seq": "ingestion order (the default)",
    "-seq": "last ingested first",
    "created_at": "oldest created first",
    "-created_at": "newest created first",
    "updated_at": "least recently changed first, never-changed last",
    "-updated_at": "most recently changed first, never-changed last",
    "last_name": "last name, A to Z",
    "-last_name": "last name, Z to A",
    "email": "email, A to Z, ignoring case",
    "-email": "email, Z to A, ignoring case",
}


class _StorableDateTimeField(IsoDateTimeField):
    """An ISO 8601 date-time PostgreSQL can compare: its offsets stop at 15:59, Python's at 23:59."""

    def to_python(self, value):
        moment = super().to_python(value)
        offset = moment.utcoffset() if moment is not None else None
        if offset is not None and abs(offset) >= timedelta(hours=16):
            raise ValidationError(self.error_messages["invalid"], code="invalid")
        return moment


class DateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = _StorableDateTimeField


class CustomerFilter(django_filters.FilterSet):
    email = django_filters.CharFilter(
        method="filter_email", max_length=255, help_text="Exact email address, ignoring case."
    )
    search = django_filters.CharFilter(
        method="filter_search",
        max_length=100,
        help_text=(
            "Words to find in first or last names, ignoring case; every word must match. Words of three "
            "characters or more match anywhere in a name, shorter ones at its start."
        ),
    )
    created_after = DateTimeFilter(
        field_name="created_at",
        lookup_expr="gte",
        help_text="ISO 8601 date-time; created at or after it (without an offset: UTC).",
    )
    created_before = DateTimeFilter(
        field_name="created_at",
        lookup_expr="lt",
        help_text="ISO 8601 date-time; created strictly before it (without an offset: UTC).",
    )
    updated_since = DateTimeFilter(
        field_name="updated_at",
        lookup_expr="gte",
        help_text=(
            "ISO 8601 date-time; changed at or after it. Never-changed (new) customers are left out, and "
            "`updated_at` is when its transaction started, so polling with it can miss changes: follow "
            "GET /api/changes instead."
        ),
    )
    ordering = django_filters.ChoiceFilter(
        method="filter_ordering",
        choices=list(ORDERING_LABELS.items()),
        empty_label=None,
        help_text="Sort key; a leading `-` sorts descending. Ties are broken by customer_id.",
    )

    class Meta:
        model = Customer
        fields = []

    def filter_email(self, queryset, name, value):
        return selectors.with_email(queryset, value)

    def filter_search(self, queryset, name, value):
        return selectors.matching_name(queryset, value)

    def filter_ordering(self, queryset, name, value):
        return queryset.order_by(*ORDERINGS[value])
