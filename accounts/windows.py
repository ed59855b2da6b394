"""Fixed time windows, aligned to the epoch: the lockout and the throttle count in them."""

import math
from datetime import UTC, datetime

from django.utils.timezone import now


def window_start(moment: datetime, seconds: float) -> datetime:
    """The start of the fixed window of `seconds` that holds the moment."""
    return datetime.fromtimestamp(moment.timestamp() // seconds * seconds, UTC)


def seconds_until(end: datetime | None, moment: datetime | None = None) -> int:
    """Seconds from now until `end`, rounded up (never "retry after 0" while it is ahead); 0 for none or past."""
    if end is None:
        return 0
    return max(0, math.ceil((end - (moment or now())).total_seconds()))
