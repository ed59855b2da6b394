"""Results of database checks reused for a few seconds in each process: /api/ready and the ingestion metrics.

Load balancers poll readiness and anyone may flood it, and a scrape runs three aggregate
queries over every run; caching the result bounds what a flood costs the database to one
check per window per process, whatever the request rate.
"""

import threading
from collections.abc import Callable
from time import monotonic


class Recent:
    """The last result of a check, reused until it is `seconds` old."""

    def __init__(self):
        self._lock = threading.Lock()
        self._result = None
        self._expires = float("-inf")

    def get(self, check: Callable, *, seconds: float):
        """`check()`'s result, computed again only once the last one is `seconds` old (0: always)."""
        if seconds <= 0:
            return check()
        # Held across the check: the other threads of a gthread worker wait for its result
        # instead of each running the same check at the moment the window ends.
        with self._lock:
            if monotonic() >= self._expires:
                self._result = check()
                # Counted from the end of the check: a slow check (a connect time-out) is not repeated at once.
                self._expires = monotonic() + seconds
            return self._result

    def clear(self) -> None:
        with self._lock:
            self._result = None
            self._expires = float("-inf")


READY = Recent()
INGESTION = Recent()


def clear_all() -> None:
    """Forget every cached result (tests; a process starts empty)."""
    READY.clear()
    INGESTION.clear()
