"""Every refused record becomes an `IngestFailure` row, never only a log line.

So does every read a later read of the same customer superseded (`superseded`): the
failures of a run are the reads whose content the customers table does not hold.
"""

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from customers.merge import staged_rows
from ingestion.classification import STAGED
from ingestion.models import IngestFailure
from ingestion.validation import Rejection

_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")
# Digits before and after the decimal point that PostgreSQL's numeric holds at most.
_NUMERIC_MAX_DIGITS = 131_072
_NUMERIC_MAX_DECIMALS = 16_383


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
    if isinstance(raw, int | Decimal) and not isinstance(raw, bool):
        # jsonb keeps a number as numeric, exactly (the field's encoder writes every digit; only
        # the sign of a zero is lost). A number numeric cannot hold would fail the whole batch's
        # insert: it is kept as its digits in a string instead.
        return raw if _numeric_holds(Decimal(raw)) else str(raw)
    if isinstance(raw, float) and not math.isfinite(raw):
        return json.dumps(raw)  # NaN, Infinity: no JSON number, kept as the upstream spelled it
    return raw


def _numeric_holds(number: Decimal) -> bool:
    """Whether PostgreSQL's numeric can hold the number: below 10^131072, at most 16383 decimals."""
    return number.as_tuple().exponent >= -_NUMERIC_MAX_DECIMALS and number.adjusted() < _NUMERIC_MAX_DIGITS


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
