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
from django.db.models import Count, F, Max, OrderBy, Q, QuerySet, Subquery
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.response import Response

from api.statements import prepared_cursor

# Digits only: no sign, no spaces, no decimal point, no Unicode digits.
_WHOLE_NUMBER = re.compile(r"[0-9]+")
# DenseKeyPagination.page_json's statements, by model, database, shape and row format.
_PAGE_SQL: dict[tuple, str] = {}


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
    """PageLimitPagination for a table numbered 1..N by `dense_key`, whose listing may leave rows out.

    It asks the queryset it is given, nothing else. Two shapes are served without a full
    count or a growing OFFSET scan:

    - the whole table (no WHERE clause): the total is max(dense_key), an index lookup;
    - exactly `listed` (e.g. live customers), when the rows it leaves out, `holes`, keep
      their key: the total is max(dense_key) minus the holes, and a page starts at a key
      computed from the holes alone (`_key_of_rank`), so both cost one pass over an index
      of the holes however deep the page.

    Ordered by the key alone, either way, a page is then a range of the key. Anything else
    is counted and offset. The key must be 1..N without gaps: use it only on a model whose
    writer keeps that promise (customers/merge.py for `seq`). `listed` and `holes` must be
    complements; an index on the key of the holes keeps them cheap.
    """

    dense_key = "seq"
    listed: Q | None = None
    holes: Q | None = None

    def get_total(self, queryset: QuerySet, view) -> int:
        shape = self._shape(queryset)
        if shape is None:
            return super().get_total(queryset, view)
        manager = queryset.model._default_manager
        if shape == "whole":
            return manager.aggregate(total=Coalesce(Max(self.dense_key), 0))["total"]
        # One statement: the top key (a backward index scan) minus the number of holes.
        top = manager.order_by(f"-{self.dense_key}").values(self.dense_key)[:1]
        return manager.filter(self.holes).aggregate(total=Coalesce(Subquery(top), 0) - Count("*"))["total"]

    def get_page_rows(self, queryset: QuerySet, offset: int, limit: int, view) -> Sequence:
        shape, direction = self._shape(queryset), self._key_order(queryset)
        if shape is None or direction is None:
            return super().get_page_rows(queryset, offset, limit, view)
        key = self.dense_key
        # Ranks of the first and last rows of the page, counted from the lowest key.
        if direction == "asc":
            low, high = offset + 1, offset + limit
        else:
            low, high = self.total - offset - limit + 1, self.total - offset
        if shape == "whole":
            return queryset.filter(**{f"{key}__gt": low - 1, f"{key}__lte": high})
        if direction == "asc":
            return queryset.filter(**{f"{key}__gte": self._key_of_rank(queryset, low)})[:limit]
        return queryset.filter(**{f"{key}__lte": self._key_of_rank(queryset, high)})[:limit]

    def page_json(self, queryset: QuerySet, request, *, row_json: str) -> str | None:
        """The page's whole envelope as JSON text, written by PostgreSQL in one statement (so one
        snapshot, and no transaction to open), when the queryset is served by a range of the key in
        ascending order; None otherwise (paginate it as usual). `row_json` is SQL of one row's JSON
        object, as text, from the columns of alias `r`.
        """
        shape = self._shape(queryset)
        if shape is None or self._key_order(queryset) != "asc":
            return None
        self.page, self.limit = self.get_page_and_limit(request)
        low = (self.page - 1) * self.limit + 1
        with prepared_cursor(queryset.db) as cursor:
            cursor.execute(self._page_sql(queryset, shape, row_json), {"low": low, "limit": self.limit})
            self.total, data = cursor.fetchone()
        return f'{{"data":{data},"total":{self.total},"page":{self.page},"limit":{self.limit}}}'

    def _page_sql(self, queryset: QuerySet, shape: str, row_json: str) -> str:
        """The statement of `page_json`, written once per model, shape and row format: building it
        through the ORM took longer than PostgreSQL takes to run it (docs/benchmarks.md)."""
        cache_key = (queryset.model, queryset.db, shape, row_json)
        if cache_key not in _PAGE_SQL:
            table, key, listed, holes = self._names(queryset)
            top = f"coalesce((SELECT {key} FROM {table} ORDER BY {key} DESC LIMIT 1), 0)"
            if shape == "whole":
                total, rows = top, f"{key} >= %(low)s AND {key} < %(low)s + %(limit)s"
            else:
                total = f"{top} - (SELECT count(*) FROM {table} WHERE {holes})"
                rows = f"{listed} AND {key} >= ({self._key_of_rank_sql(table, key, holes, '%(low)s')})"
            _PAGE_SQL[cache_key] = (
                f"SELECT {total}, (SELECT '[' || coalesce(string_agg({row_json}, ',' ORDER BY r.{key}), '') || ']'"
                f" FROM (SELECT * FROM {table} WHERE {rows} ORDER BY {key} LIMIT %(limit)s) AS r)"
            )
        return _PAGE_SQL[cache_key]

    def _names(self, queryset: QuerySet) -> tuple[str, str, str, str]:
        """The table and key column, quoted, and the SQL of `listed` and `holes` (conditions without parameters)."""
        connection = connections[queryset.db]
        meta = queryset.model._meta
        conditions = []
        for condition in (self.listed, self.holes):
            if condition is None:
                conditions.append("true")
                continue
            query = queryset.model._default_manager.filter(condition).query
            sql, params = query.where.as_sql(query.get_compiler(connection=connection), connection)
            if params:
                raise ValueError("page_json takes `listed` and `holes` without parameters.")
            conditions.append(sql)
        quote = connection.ops.quote_name
        return quote(meta.db_table), quote(meta.get_field(self.dense_key).column), *conditions

    def _key_of_rank(self, queryset: QuerySet, rank: int) -> RawSQL:
        """The key of the `rank`-th listed row (from 1, lowest key first), as a scalar subquery."""
        table, key, _listed, holes = self._names(queryset)
        return RawSQL(self._key_of_rank_sql(table, key, holes, "%s"), (rank, rank))

    @staticmethod
    def _key_of_rank_sql(table: str, key: str, holes: str, rank: str) -> str:
        """SQL of the key of the `rank`-th listed row over the holes of `table` (`rank` is SQL too).

        With holes h_1 < h_2 < ... (keys), h_i - i listed rows lie below h_i, so hole i comes
        before the rank-th listed row exactly when h_i - i < rank; that row's key is rank plus
        the number of such holes. PostgreSQL evaluates it once, before the range scan.
        """
        return (
            f"SELECT {rank} + count(*) FROM (SELECT {key} - row_number() OVER (ORDER BY {key}) AS below"
            f" FROM {table} WHERE {holes}) AS ranked WHERE below < {rank}"
        )

    def _shape(self, queryset: QuerySet) -> str | None:
        """ "whole" for the whole table, "listed" for exactly `listed`, else None."""
        query = queryset.query
        if query.combinator:
            return None
        if not query.where:
            return "whole"
        if self.listed is not None and query.where == queryset.model._default_manager.filter(self.listed).query.where:
            return "listed"
        return None

    def _key_order(self, queryset: QuerySet) -> str | None:
        """ "asc" or "desc" when the queryset is ordered by the dense key alone, else None."""
        query = queryset.query
        ordering = query.order_by or (query.get_meta().ordering if query.default_ordering else ())
        if len(ordering) != 1:
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
