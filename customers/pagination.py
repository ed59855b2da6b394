"""The page/limit contract shared with the upstream, and paginators tuned for large tables.

`PageLimitPagination` answers `{"data": [...], "total": N, "page": p, "limit": l}` for any
ordered queryset (count + OFFSET/LIMIT). To use it on another list endpoint:

    class RunViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
        queryset = IngestRun.objects.order_by("-id")
        pagination_class = PageLimitPagination

and document its 400 body with `customers.schema.error_responses(400, ...)`.
"""

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from django.core.paginator import Paginator
from django.db import connections, transaction
from django.db.models import Max, QuerySet
from django.db.models.functions import Coalesce
from django.utils.functional import cached_property
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.response import Response

# Digits only: no sign, no spaces, no decimal point, no Unicode digits.
_WHOLE_NUMBER = re.compile(r"[0-9]+")


@contextmanager
def read_only_snapshot(using: str) -> Iterator[None]:
    """Run the block in one REPEATABLE READ, READ ONLY transaction, so all its reads see one snapshot.

    Inside a transaction that is already open (a test case, ATOMIC_REQUESTS), the outer
    transaction's isolation applies: SET TRANSACTION must be its first statement.
    """
    connection = connections[using]
    if connection.in_atomic_block:
        yield
        return
    # A pending health check would run `SELECT 1` inside the transaction, before SET TRANSACTION.
    connection.close_if_health_check_failed()
    with transaction.atomic(using=using):
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


class PageLimitPagination(BasePagination):
    """`?page=P&limit=L` pages; `total`, `page` and `limit` come back with the rows.

    Both parameters are whole numbers >= 1 and `limit` <= `max_limit`; anything else is a
    400 naming the parameter. A page past the end is empty and still carries the true total.
    The total and the rows are read in one snapshot.
    """

    page_query_param = "page"
    limit_query_param = "limit"
    default_limit = 10
    max_limit = 100

    def paginate_queryset(self, queryset: QuerySet, request, view=None) -> list:
        self.page, self.limit = self.get_page_and_limit(request)
        offset = (self.page - 1) * self.limit
        with read_only_snapshot(queryset.db):
            self.total = self.get_total(queryset, view)
            # Past the end: nothing to read (and no OFFSET beyond what PostgreSQL accepts).
            if offset >= self.total:
                return []
            return list(self.get_page_rows(queryset, offset, self.limit, view))

    def get_page_and_limit(self, request) -> tuple[int, int]:
        page = self._whole_number(request, self.page_query_param, default=1)
        limit = self._whole_number(request, self.limit_query_param, default=self.default_limit)
        errors = {}
        if page is None or page < 1:
            errors[self.page_query_param] = ["Must be an integer of at least 1."]
        if limit is None or not 1 <= limit <= self.max_limit:
            errors[self.limit_query_param] = [f"Must be an integer between 1 and {self.max_limit}."]
        if errors:
            raise ValidationError(errors)
        return page, limit

    @staticmethod
    def _whole_number(request, name: str, *, default: int) -> int | None:
        if name not in request.query_params:
            return default
        raw = request.query_params[name]
        if not _WHOLE_NUMBER.fullmatch(raw):
            return None
        try:
            return int(raw)
        except ValueError:  # more digits than int() accepts
            return None

    def get_total(self, queryset: QuerySet, view) -> int:
        return queryset.count()

    def get_page_rows(self, queryset: QuerySet, offset: int, limit: int, view) -> Sequence:
        return queryset[offset : offset + limit]

    def get_paginated_response(self, data) -> Response:
        return Response({"data": data, "total": self.total, "page": self.page, "limit": self.limit})

    def get_paginated_response_schema(self, schema: dict) -> dict:
        return {
            "type": "object",
            "required": ["data", "total", "page", "limit"],
            "properties": {
                "data": schema,
                "total": {"type": "integer", "minimum": 0, "description": "Rows matching the request, all pages."},
                "page": {"type": "integer", "minimum": 1, "description": "The page returned."},
                "limit": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": self.max_limit,
                    "description": "The page size used.",
                },
            },
        }

    def get_schema_operation_parameters(self, view) -> list[dict]:
        return [
            {
                "name": self.page_query_param,
                "in": "query",
                "required": False,
                "description": "Page number, from 1. A page past the end is empty. Otherwise: 400.",
                "schema": {"type": "integer", "minimum": 1, "default": 1},
            },
            {
                "name": self.limit_query_param,
                "in": "query",
                "required": False,
                "description": f"Rows per page, 1 to {self.max_limit}. Otherwise: 400.",
                "schema": {"type": "integer", "minimum": 1, "maximum": self.max_limit, "default": self.default_limit},
            },
        ]


class SeqRangePagination(PageLimitPagination):
    """PageLimitPagination that reads the whole customer table by ranges of its dense `seq`.

    The view's bound filterset (`view.filterset`, see `customers.filters.FilterBackend`)
    tells whether anything narrows the listing. When nothing does, the total is max(seq),
    an index lookup, instead of a full count; when the order is also `seq` or `-seq`, a
    page is a range of seq instead of a growing OFFSET scan. Both rely on seq being
    1..N without gaps, which the ingestion merge guarantees (rows are never deleted).
    """

    def get_total(self, queryset: QuerySet, view) -> int:
        if view.filterset.narrows():
            return super().get_total(queryset, view)
        return queryset.aggregate(total=Coalesce(Max("seq"), 0))["total"]

    def get_page_rows(self, queryset: QuerySet, offset: int, limit: int, view) -> Sequence:
        order = view.filterset.seq_order()
        if order == "seq":
            return queryset.filter(seq__gt=offset, seq__lte=offset + limit)
        if order == "-seq":
            top = self.total - offset
            return queryset.filter(seq__gt=top - limit, seq__lte=top)
        return super().get_page_rows(queryset, offset, limit, view)


class EstimatedCountPaginator(Paginator):
    """Admin paginator that does not count a large table it was asked to show unfiltered.

    Without a filter the count is PostgreSQL's estimate (pg_class.reltuples, kept by
    autovacuum/ANALYZE); small or never-analysed tables, and every filtered list, get
    an exact count.
    """

    exact_below = 100_000

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if isinstance(queryset, QuerySet) and not queryset.query.where:
            estimate = self._estimated_rows(queryset)
            if estimate >= self.exact_below:
                return estimate
        return super().count

    @staticmethod
    def _estimated_rows(queryset: QuerySet) -> int:
        with connections[queryset.db].cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                [queryset.model._meta.db_table],
            )
            row = cursor.fetchone()
        return row[0] if row else -1
