"""How a test's own processes and side connections reach the test database.

The embedded server listens on a Unix socket that dj-database-url keeps in OPTIONS
(`host`), not in HOST, so both places are read.
"""

import threading
from urllib.parse import quote, urlencode

from django.db import connection


def _target() -> dict:
    db = connection.settings_dict
    options = db.get("OPTIONS", {})
    return {
        "user": db["USER"] or "",
        "password": db.get("PASSWORD") or "",
        "host": db["HOST"] or options.get("host") or "localhost",
        "port": str(db["PORT"] or options.get("port") or 5432),
        "dbname": db["NAME"],
    }


def subprocess_database_url() -> str:
    """A DATABASE_URL for a subprocess (a worker) that must use this test's database."""
    target = _target()
    credentials = quote(target["user"]) + (":" + quote(target["password"]) if target["password"] else "")
    query = urlencode({"host": target["host"], "port": target["port"]})
    return f"postgresql://{credentials}@/{target['dbname']}?{query}"


def side_connection_kwargs() -> dict:
    """Keyword arguments for `psycopg.connect` to this test's database."""
    return {key: value for key, value in _target().items() if value}


def in_another_session(function):
    """Call `function` on a thread of its own, so on a database session of its own; return its result.

    That session is as apart as another process's: it holds none of this one's advisory locks.
    Only committed rows are visible there: use it in `django_db(transaction=True)` tests.
    """
    outcome = {}

    def call():
        try:
            outcome["result"] = function()
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=call)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
