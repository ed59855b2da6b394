"""API requests counted per caller and scope in fixed windows, shared by every process.

DRF's ScopedRateThrottle with its counting replaced. DRF keeps a history of request times in
the cache and reads it, then writes it back: on the database cache that is several statements
a request, concurrent workers overwrite each other's counts, and the cache's culling deletes
other callers' histories. Here a request is one upsert of its caller's row for the current
window (`RequestCount`; the upsert is the function `accounts_count_request` of migration
0004); PostgreSQL row-locks the conflicting row, so concurrent requests never lose a count.
Once the limit is reached the upsert's WHERE leaves the row alone and returns nothing: the
request is refused, and a flood of refused requests rewrites nothing.

A request with an API key is counted by the statement that authenticates the key, before the
permission check: a key's refused (403) requests count against its budget too.

Windows are fixed (aligned to the epoch, one rate period long), so a caller can send the limit
at the end of one window and again at the start of the next: up to twice the rate in a short
burst around a boundary, never more than the rate within any one window. Requests are rows only
until the worker's prune (accounts/tasks.py) deletes windows that are over; a request deletes
nothing.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Func, IntegerField, Value
from django.db.models.expressions import Combinable
from django.utils.timezone import now
from rest_framework.throttling import ScopedRateThrottle

from accounts.client_address import client_address
from accounts.models import ApiKey, RequestCount
from accounts.windows import seconds_until, window_start

# How an API key's requests are counted: by the key's id (caller_key, and the key's own
# authenticating query in accounts/api_keys.py).
KEY_CALLER = "key:"


@dataclass(frozen=True)
class Window:
    """The fixed window that requests of one scope are counted in at one moment."""

    scope: str
    limit: int
    seconds: int
    start: datetime
    end: datetime

    @classmethod
    def at(cls, moment: datetime, *, scope: str, limit: int, seconds: int) -> "Window":
        start = window_start(moment, seconds)
        return cls(scope=scope, limit=limit, seconds=seconds, start=start, end=start + timedelta(seconds=seconds))

    def counted(self, caller: Combinable) -> Func:
        """SQL that counts one request of `caller` (an expression) in this window: its hits so
        far, or NULL once the limit is reached. The upsert is the function of migration 0004,
        so the statement that authenticates a key can count its request too."""
        return Func(
            Value(self.scope),
            caller,
            Value(self.start),
            Value(self.end),
            Value(self.limit),
            function="accounts_count_request",
            output_field=IntegerField(),
        )

    def wait(self, hits: int | None, moment: datetime | None = None) -> int:
        """0 when a request counted `hits` is within the limit, else the seconds until the window ends."""
        if hits is not None and hits <= self.limit:
            return 0
        # Never "retry after 0" while the window is still open.
        return max(1, seconds_until(self.end, moment))


class ScopedWindowThrottle(ScopedRateThrottle):
    """The view's `throttle_scope` at its rate in THROTTLE_RATES, per user (per client address
    when anonymous), counted by `count_request`; or, for an API key whose authentication
    counted the request already (accounts/api_keys.py), with the count it returned."""

    def allow_request(self, request, view) -> bool:
        moment = now()
        window = self._window(view, moment)
        if window is None:
            return True
        waits = getattr(request.auth, "throttle_waits", None)
        if waits is not None and window.scope in waits:
            self.wait_seconds = waits[window.scope]
        else:
            self.wait_seconds = window.wait(_count(window, caller_key(request)), moment)
        return self.wait_seconds == 0

    def wait(self) -> int:
        return self.wait_seconds

    @classmethod
    def window_of(cls, view) -> Window | None:
        """The window this throttle counts the view's requests in now, or None when it counts none."""
        throttles = getattr(view, "throttle_classes", ())
        if not any(isinstance(throttle, type) and issubclass(throttle, cls) for throttle in throttles):
            return None
        return cls()._window(view, now())

    def _window(self, view, moment: datetime) -> Window | None:
        self.scope = getattr(view, self.scope_attr, None)
        if not self.scope:
            return None
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        if self.rate is None:
            return None
        return Window.at(moment, scope=self.scope, limit=self.num_requests, seconds=self.duration)


def caller_key(request) -> str:
    """An API key is counted by its id, so each key has its own budget; a user by id, whatever
    token or session it comes with; anyone else by address."""
    if isinstance(getattr(request, "auth", None), ApiKey):
        return f"{KEY_CALLER}{request.auth.key_id}"
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return f"address:{client_address(request)}"


def count_request(*, scope: str, key: str, limit: int, seconds: int) -> int:
    """Count a request of the caller in the scope; 0 when it is within `limit` per `seconds`,
    else the seconds until its window ends."""
    moment = now()
    window = Window.at(moment, scope=scope, limit=limit, seconds=seconds)
    return window.wait(_count(window, key), moment)


def _count(window: Window, key: str) -> int | None:
    # Autocommitted, so the row lock ends with the statement and every worker sees the count at once.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT accounts_count_request(%s, %s, %s, %s, %s)",
            [window.scope, key, window.start, window.end, window.limit],
        )
        return cursor.fetchone()[0]


def prune() -> int:
    """Delete the rows of windows that are over; the number deleted."""
    return RequestCount.objects.filter(window_end__lte=now()).delete()[0]
