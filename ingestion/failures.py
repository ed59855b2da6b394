"""Every refused record becomes an `IngestFailure` row, never only a log line.

So does every read a later read of the same customer superseded (`superseded`): the
failures of a run are the reads whose content the customers table does not hold.
"""

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from customers.merge import staged_rows
from ingestion.classification import STAGED
from ingestion.models import IngestFailure
from ingestion.validation import Rejection

_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class RejectedRecord:
    page: int
    position: int
    rejection: Rejection
    raw: Any


def record_rejections(run_id: int, rejected: Iterable[RejectedRecord]) -> int:
    """Store records that failed validation, with their problems and raw content."""
    rows = [
        IngestFailure(
            run_id=run_id,
            page=item.page,
            position=item.position,
            customer_id=item.rejection.customer_id,
            reason=item.rejection.reason,
            errors=item.rejection.errors,
            raw=_storable(item.raw),
        )
        for item in rejected
    ]
    IngestFailure.objects.bulk_create(rows, batch_size=1000)
    return len(rows)


def _storable(raw: Any) -> Any:
    # jsonb holds neither NUL nor lone UTF-16 surrogates: each becomes the text of its JSON
    # escape ("\u0000", "\ud800"), so the record stays readable and says what was there.
    if isinstance(raw, str):
        return _UNSTORABLE.sub(lambda match: f"\\u{ord(match.group()):04x}", raw)
    if isinstance(raw, dict):
        return {_storable(key): _storable(value) for key, value in raw.items()}
    if isinstance(raw, list):
        return [_storable(value) for value in raw]
    if hasattr(raw, "as_tuple"):  # Decimal from the exact JSON parse
        # Past a double's range (1e400) a float would be an infinity jsonb refuses: keep the digits.
        number = float(raw)
        return number if math.isfinite(number) else str(raw)
    if isinstance(raw, float) and not math.isfinite(raw):
        return str(raw)  # JSON has no Infinity or NaN
    return raw


_CONFLICT_MESSAGES = {
    "email_conflict": "Email already belongs to customer {other}.",
    "superseded": "Read again later in this run with different content; the later read was applied.",
}


def _conflicts_sql(listed: bool) -> str:
    return f"""
INSERT INTO {IngestFailure._meta.db_table}
    (run_id, page, position, customer_id, reason, errors, raw, conflicting_customer_id, created_at)
SELECT t.run_id, t.page, t.position, t.customer_id, t.outcome,
       jsonb_build_object(
           CASE t.outcome WHEN 'email_conflict' THEN 'email' ELSE 'customer_id' END,
           jsonb_build_array(CASE t.outcome
               WHEN 'email_conflict' THEN replace(%(email_message)s, '{{other}}', t.conflicting_customer_id::text)
               ELSE %(superseded_message)s END)),
       jsonb_build_object(
           'customer_id', t.customer_id, 'first_name', t.first_name, 'last_name', t.last_name,
           'email', t.email, 'phone', t.phone, 'address', t.address,
           'date_of_birth', t.date_of_birth, 'account_balance', t.account_balance,
           'created_at', to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
       t.conflicting_customer_id, now()
FROM {STAGED} t
WHERE (({staged_rows("t", listed=listed)}) OR (t.run_id = %(run)s AND t.position = ANY(%(also)s)))
  AND t.outcome IN ('email_conflict', 'superseded')
"""


_RECORD_CONFLICTS = {listed: _conflicts_sql(listed) for listed in (False, True)}


def record_conflicts(
    cursor,
    *,
    run_id: int,
    first: int = 0,
    last: int = 0,
    positions: list[int] | None = None,
    also: list[int] = (),
) -> None:
    """Store the staged rows classification refused or superseded, in the batch and at positions `also`."""
    cursor.execute(
        _RECORD_CONFLICTS[positions is not None],
        {
            "run": run_id,
            "first": first,
            "last": last,
            "positions": positions,
            "also": list(also),
            "email_message": _CONFLICT_MESSAGES["email_conflict"],
            "superseded_message": _CONFLICT_MESSAGES["superseded"],
        },
    )
