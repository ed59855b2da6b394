"""Failed sign-ins counted per username and per client address; too many lock them out for a window.

State lives in PostgreSQL (`AuthFailure`), so every gunicorn worker on every machine sees
the same counters. A failure is one upsert of the username's and the address's rows for the
current window (fixed windows of ACCOUNTS_LOCKOUT_MINUTES); the failure that reaches
ACCOUNTS_LOCKOUT_FAILURES sets `locked_until`, one window from then. A locked caller is refused
before any password or token is checked, and refused attempts are not counted, so a lockout
is never extended by the attacker. Nothing is written on success: a success resets no counter,
its own or anyone else's.
"""

import json
import logging
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Max, Q, QuerySet, Subquery
from django.utils.timezone import now

from accounts.models import AuthFailure, AuthFailureKind
from accounts.windows import seconds_until, window_start

logger = logging.getLogger(__name__)

KEY_LENGTH = AuthFailure._meta.get_field("key").max_length
_TABLE = connection.ops.quote_name(AuthFailure._meta.db_table)
# Both rows in one statement, so a failure is counted atomically without a transaction;
# the conflict update is row-locked by PostgreSQL, so concurrent failures never lose a count.
_UPSERT = f"""
    INSERT INTO {_TABLE} AS f (kind, key, window_start, failures, locked_until)
    VALUES {{rows}}
    ON CONFLICT (kind, key, window_start) DO UPDATE
    SET failures = f.failures + 1,
        locked_until = CASE WHEN f.failures + 1 >= %s THEN coalesce(f.locked_until, %s) END
    RETURNING kind, key, failures, locked_until
"""


def username_key(username: str) -> str:
    """Usernames count case-insensitively, so changing the case gains no attempts."""
    return username.casefold()[:KEY_LENGTH]


def locks(*, address: str, username: str | None = None) -> QuerySet:
    """The lockouts in force on the address or the username."""
    caller = Q(kind=AuthFailureKind.ADDRESS, key=address)
    if username is not None:
        caller |= Q(kind=AuthFailureKind.USERNAME, key=username_key(username))
    return AuthFailure.objects.filter(caller, locked_until__gt=now())


# The same end of the address's lockout as SQL, for a statement written out (accounts/api_keys.py):
# one row, column `locked_until` (NULL when not locked). Parameters: %(address)s, %(moment)s (now).
ADDRESS_LOCKED_UNTIL_SQL = f"""
    SELECT max(f.locked_until) AS locked_until FROM {_TABLE} f
    WHERE f.kind = '{AuthFailureKind.ADDRESS.value}' AND f.key = %(address)s AND f.locked_until > %(moment)s
"""


def locked_until(*, address: str) -> Subquery:
    """The end of the address's lockout as a subquery, for a query that is made anyway to read it too."""
    return Subquery(locks(address=address).order_by("-locked_until").values("locked_until")[:1])


def retry_after(*, address: str, username: str | None = None) -> int:
    """Seconds until neither the address nor the username is locked out; 0 when neither is."""
    return seconds_until(locks(address=address, username=username).aggregate(end=Max("locked_until"))["end"])


def record_failure(*, door: str, address: str, username: str | None = None) -> int:
    """Count a failed sign-in from the address (and for the username); the seconds it locks them out, or 0."""
    moment = now()
    window = timedelta(minutes=settings.ACCOUNTS_LOCKOUT_MINUTES)
    limit = settings.ACCOUNTS_LOCKOUT_FAILURES
    start = window_start(moment, window.total_seconds())
    until = moment + window
    first_locks = until if limit <= 1 else None
    keys = [(AuthFailureKind.ADDRESS, address)]
    if username is not None:
        keys.append((AuthFailureKind.USERNAME, username_key(username)))
    values = [value for kind, key in keys for value in (kind.value, key, start, 1, first_locks)]
    with connection.cursor() as cursor:
        cursor.execute(_UPSERT.format(rows=", ".join(["(%s, %s, %s, %s, %s)"] * len(keys))), [*values, limit, until])
        counted = {kind: (failures, end) for kind, _, failures, end in cursor.fetchall()}
    _log_failure(door, address, username, max(failures for failures, _ in counted.values()))
    for kind, key in keys:
        if counted[kind][0] == limit:  # exactly one failure reaches the limit, however many race
            seconds = int(window.total_seconds())
            logger.warning("locked out: %s for %d s after %d failures", _describe(kind, key), seconds, limit)
    return max(seconds_until(end, moment) for _, end in counted.values())


def prune() -> int:
    """Delete the rows of windows that are over and hold no lockout in force; the number deleted."""
    moment = now()
    window = timedelta(minutes=settings.ACCOUNTS_LOCKOUT_MINUTES)
    over = AuthFailure.objects.filter(window_start__lte=moment - window).filter(
        Q(locked_until__isnull=True) | Q(locked_until__lte=moment)
    )
    return over.delete()[0]


def _log_failure(door: str, address: str, username: str | None, failures: int) -> None:
    who = f"username={_quoted(username)} " if username is not None else ""
    logger.warning("authentication failed: door=%s %saddress=%s failures=%d", door, who, address, failures)


def _describe(kind: str, key: str) -> str:
    return f"username={_quoted(key)}" if kind == AuthFailureKind.USERNAME else f"address={key}"


def _quoted(untrusted: str) -> str:
    # A JSON string: quoted, with newlines, control characters and non-ASCII escaped,
    # so a username can neither forge a log line nor reach a terminal as a control sequence.
    return json.dumps(untrusted[:KEY_LENGTH])
