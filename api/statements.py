"""The statements every API request runs, prepared by PostgreSQL once per connection.

Django's cursors bind parameters on the client, so PostgreSQL parses and plans each statement
again on every request: for the API key's statement (accounts/api_keys.py) planning took longer
than running it (docs/benchmarks.md). `prepared_cursor` is a Django cursor (its queries are
logged and wrapped like any other's) over psycopg's server-side binding cursor, which prepares
a statement once the connection has run it `prepare_threshold` times (the database OPTIONS,
config/settings/base.py) and from then on only executes it. Django's own cursors never
prepare. For fixed statements with parameters only: a statement built anew each time would
fill psycopg's cache of prepared statements for nothing.

Django leaves preparing off by default for connection poolers in transaction mode, which lose a
prepared statement between transactions; PgBouncer keeps them from 1.21
(`max_prepared_statements`). Behind one that does not, set API_PREPARED_STATEMENTS=false.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections


@contextmanager
def prepared_cursor(using: str = DEFAULT_DB_ALIAS) -> Iterator:
    """A Django cursor whose statements PostgreSQL prepares once per connection (API_PREPARED_STATEMENTS)."""
    connection = connections[using]
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    raw = psycopg.Cursor(connection.connection)
    with connection.make_debug_cursor(raw) if connection.queries_logged else connection.make_cursor(raw) as cursor:
        yield cursor
