"""API requests counted per caller and scope in fixed windows, shared by every process.

DRF's ScopedRateThrottle with its counting replaced. DRF keeps a history of request times in
the cache and reads it, then writes it back: on the database cache that is several statements
a request, concurrent workers overwrite each other's counts, and the cache's culling deletes
other callers' histories. Here a request is one upsert of its caller's row for the current
window (`RequestCount`); PostgreSQL row-locks the conflicting row, so concurrent requests never
lose a count. Once the limit is reached the upsert's WHERE leaves the row alone and returns
nothing: the request is refused, and a flood of refused requests rewrites nothing.

Windows are fixed (aligned to the epoch, one rate period long), so a caller can send the limit
at the end of one window and again at the start of the next: up to twice the rate in a short
burst around a boundary, never more than the rate within any one window. Requests are rows only
until the worker's prune (accounts/tasks.py) deletes windows that are over; a request deletes
nothing.
"""

from datetime import timedelta

from django.db import connection
from django.utils.timezone import now
from rest_framework.throttling import ScopedRateThrottle

from accounts.client_address import client_address
from accounts.models import ApiKey, RequestCount
from accounts.windows import seconds_until, window_start

_TABLE = connection.ops.quote_name(RequestCount._meta.db_table)
_UPSERT = f"""
    INSERT INTO {_TABLE} AS c (scope, key, window_start, window_end, hits)
    VALUES (%s, %s, %s, %s, 1)
    ON CONFLICT (scope, key, window_start) DO UPDATE
    SET hits = c.hits + 1
    WHERE c.hits < %s
    RETURNING hits
"""


class ScopedWindowThrottle(ScopedRateThrottle):
    """The view's `throttle_scope` at its rate in THROTTLE_RATES, per user (per client address
    when anonymous), counted by `count_request`."""

    def allow_request(self, request, view) -> bool:
        self.scope = getattr(view, self.scope_attr, None)
        if not self.scope:
            return True
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        if self.rate is None:
            return True
        self.wait_seconds = count_request(
            scope=self.scope, key=caller_key(request), limit=self.num_requests, seconds=self.duration
        )
        return self.wait_seconds == 0

    def wait(self) -> int:
        return self.wait_seconds


def caller_key(request) -> str:
    """An API key is counted by its id, so each key has its own budget; a user by id, whatever
    token or session it comes with; anyone else by address."""
    if isinstance(getattr(request, "auth", None), ApiKey):
        return f"key:{request.auth.key_id}"
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return f"address:{client_address(request)}"


def count_request(*, scope: str, key: str, limit: int, seconds: int) -> int:
    """Count a request of the caller in the scope; 0 when it is within `limit` per `seconds`,
    else the seconds until its window ends."""
    moment = now()
    start = window_start(moment, seconds)
    end = start + timedelta(seconds=seconds)
    # Autocommitted, so the row lock ends with the statement and every worker sees the count at once.
    with connection.cursor() as cursor:
        cursor.execute(_UPSERT, [scope, key, start, end, limit])
        row = cursor.fetchone()
    if row is not None and row[0] <= limit:
        return 0
    # Never "retry after 0" while the window is still open.
    return max(1, seconds_until(end, moment))


def prune() -> int:
    """Delete the rows of windows that are over; the number deleted."""
    return RequestCount.objects.filter(window_end__lte=now()).delete()[0]
