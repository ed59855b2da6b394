"""One JSON object per log line, for log shippers.

Only `extra` keys on an allowlist reach the output: a customer's email or address
passed by mistake as `extra` is dropped here instead of landing in the log store.
"""

import json
import logging
import traceback
from datetime import UTC, datetime

SAFE_EXTRA_KEYS = frozenset(
    {
        "run_id",
        "page",
        "attempt",
        "reason",
        "status",
        "job_id",
        "fetched",
        "inserted",
        "updated",
        "unchanged",
        "invalid",
        "conflicts",
        "duplicates",
        "retried",
        "applied",
        "method",
        "path",
        "status_code",
        "duration_ms",
    }
)


def describe_exception(exc_info) -> str:
    """The exception's type, SQLSTATE and stack frames, without its message.

    Messages carry data: a unique violation's DETAIL names the email that clashed, and a
    failed query can quote filter values. Frames and codes are enough to find the cause.
    """
    kind, exc, tb = exc_info
    name = kind.__name__ if kind else "Exception"
    cause = getattr(exc, "__cause__", None)
    sqlstate = getattr(cause, "sqlstate", None) or getattr(exc, "sqlstate", None)
    header = f"{name} (SQLSTATE {sqlstate})" if sqlstate else name
    return header + "\n" + "".join(traceback.format_tb(tb))


class JsonFormatter(logging.Formatter):
    """Formats a record as `{"time", "level", "logger", "message", ...safe extras, "exception"?}`."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, UTC)
        entry = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update((key, value) for key, value in record.__dict__.items() if key in SAFE_EXTRA_KEYS)
        if record.exc_info:
            entry["exception"] = describe_exception(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: an id that is a UUID or a Decimal must not cost the whole line.
        return json.dumps(entry, default=str, ensure_ascii=False)
