"""The page/limit contract shared with the upstream, and a paginator tuned for large tables.

`PageLimitPagination` answers `{"data": [...], "total": N, "page": p, "limit": l}` for any
ordered queryset (count + OFFSET/LIMIT). To use it on another list endpoint:

    class RunViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
        queryset = IngestRun.objects.order_by("-id")
        pagination_class = PageLimitPagination

The project's AutoSchema (api/schema.py) documents its 400 body by itself.
"""

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from django.db import connections, transaction
from django.db.models import F, Max, OrderBy, QuerySet
from django.db.models.functions import Coalesce
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


class DenseKeyPagination(PageLimitPagination):
    """PageLimitPagination for a whole table numbered densely 1..N by `dense_key`.

    It asks the queryset it is given, nothing else: when the queryset has no WHERE clause
    (nothing narrows it), the total is max(dense_key), an index lookup, instead of a full
    count; when it is also ordered by the key alone, either way, a page is a range of the
    key instead of a growing OFFSET scan. Both need the key to be 1..N without gaps: use
    it only on a model whose writer keeps that promise (customers/merge.py for `seq`).
    """

    dense_key = "seq"

    def get_total(self, queryset: QuerySet, view) -> int:
        if not _is_whole_table(queryset):
            return super().get_total(queryset, view)
        return queryset.aggregate(total=Coalesce(Max(self.dense_key), 0))["total"]

    def get_page_rows(self, queryset: QuerySet, offset: int, limit: int, view) -> Sequence:
        direction = self._dense_order(queryset)
        key = self.dense_key
        if direction == "asc":
            return queryset.filter(**{f"{key}__gt": offset, f"{key}__lte": offset + limit})
        if direction == "desc":
            top = self.total - offset
            return queryset.filter(**{f"{key}__gt": top - limit, f"{key}__lte": top})
        return super().get_page_rows(queryset, offset, limit, view)

    def _dense_order(self, queryset: QuerySet) -> str | None:
        """ "asc" or "desc" when the queryset is the whole table ordered by the dense key alone, else None."""
        query = queryset.query
        ordering = query.order_by or (query.get_meta().ordering if query.default_ordering else ())
        if not _is_whole_table(queryset) or len(ordering) != 1:
            return None
        [term] = ordering
        if isinstance(term, str):
            name, descending = term.removeprefix("-"), term.startswith("-")
        elif isinstance(term, OrderBy) and isinstance(term.expression, F):
            name, descending = term.expression.name, term.descending
        else:
            return None
        if name != self.dense_key:
            return None
        return "desc" if descending else "asc"


def _is_whole_table(queryset: QuerySet) -> bool:
    """No WHERE clause and no UNION: every row of the table is in the queryset."""
    return not queryset.query.where and not queryset.query.combinator
