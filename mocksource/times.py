"""The one spelling of an instant mocksource reads, in queries, records and commands.

ISO-8601 with seconds and an explicit UTC offset (`Z` or `+HH:MM`), fractions of a second
to the microsecond: `2026-12-02T00:00:00Z`. A time without an offset is refused rather
than read in the server's zone, which no client can know. An instant is kept as integer
microseconds since the epoch, the key of the time-ordered index files.
"""

import re
from datetime import UTC, datetime, timedelta

RULE = "Must be an ISO-8601 date and time with seconds and a UTC offset, such as 2026-12-02T00:00:00Z."
# fromisoformat alone would also take a date alone, no offset, week dates or the basic format.
_SPELLING = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})", re.ASCII)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def parse(text: str) -> int | None:
    """Microseconds since the epoch of `text`, or None when it is not an instant so spelled."""
    if not isinstance(text, str) or not _SPELLING.fullmatch(text):
        return None
    try:
        return micros(datetime.fromisoformat(text))
    except ValueError:  # a month 13, a February 30th, an hour 24, an offset of 24 hours
        return None


def micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND
