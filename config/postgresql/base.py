"""Django's PostgreSQL backend, but a persistent connection's health check sends no statement.

With CONN_HEALTH_CHECKS, Django checks a kept connection at the start of each request before
using it, and its PostgreSQL backend checks by running `SELECT 1`: a round trip, and a
statement for the server to parse and run, on every request (7 % of a customer lookup's
time in-process, 11 % of a list page's: `bench/request_cost.py`, docs/benchmarks.md). An
idle connection owes us nothing, so the check here asks the socket instead: when the server
ended the session (a restart, `pg_terminate_backend`, an idle timeout), it sent its last
words and closed, and the socket is readable; when psycopg already saw the connection
break, it says so. Either way Django closes the connection and opens a new one before the
request's first statement, as before. What no check without a round trip sees, a peer gone
silently, the request's first statement fails on, as it would have after a `SELECT 1` that
had passed a moment earlier.
"""

import select

from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        connection = self.connection
        if connection is None or connection.closed or connection.broken:
            return False
        try:
            # Nothing is due on an idle connection: anything to read (or a hang-up) is the
            # server leaving. poll, not select: select refuses descriptors above 1023.
            poller = select.poll()
            poller.register(connection.fileno(), select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False
