"""One JSON object per log line, for log shippers.

Only `extra` keys on an allowlist reach the output: a customer's email or address
passed by mistake as `extra` is dropped here instead of landing in the log store.

Text a client chose (a path, a method, a host) reaches log lines as arguments: every
string argument and extra is escaped and cut to a bound (`printable`), by
`PrintableArgsFilter` on the stdout handler in either format and by the JSON formatter
for extras; config/gunicorn.py does the same for its access log.
"""

import json
import logging
import traceback
from datetime import UTC, datetime

from opentelemetry import trace

# Longer than any path of ours; a 4 KB path of a scanner is cut here, with an ellipsis.
TEXT_LIMIT = 200
ELLIPSIS = "…"

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
        "suppressed",
        "erasure_id",
        "subject",
        "customers",
        "events",
        "staged",
        "staged_others",
        "tombstones",
        "failures",
        "admin_log",
        "retried",
        "applied",
        "method",
        "path",
        "status_code",
        "duration_ms",
    }
)


def printable(text: str, limit: int = TEXT_LIMIT) -> str:
    """`text` with every non-printable character as \\xNN, \\uNNNN or \\UNNNNNNNN, cut after `limit` characters.

    Non-printable is Python's sense: control characters, but also NEL and U+2028, which some
    log readers take for line breaks. A line can then never be split or recoloured by a client.
    """
    if len(text) <= limit and text.isprintable():
        return text
    pieces, length = [], 0
    for char in text:
        piece = char if char.isprintable() else _escape(char)
        if length + len(piece) > limit:
            return "".join(pieces) + ELLIPSIS
        pieces.append(piece)
        length += len(piece)
    return "".join(pieces)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


class PrintableArgsFilter(logging.Filter):
    """Escapes and bounds the string arguments of every record (Django's "Not Found: %s" path among them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(printable(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True


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
    """Formats a record as `{"time", "level", "logger", "message", ...safe extras, "trace_id"?, "exception"?}`."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, UTC)
        entry = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(
            (key, printable(value) if isinstance(value, str) else value)
            for key, value in record.__dict__.items()
            if key in SAFE_EXTRA_KEYS
        )
        # Logged inside a recorded span (tracing on, config/tracing.py): the line names its trace.
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = trace.format_trace_id(span_context.trace_id)
            entry["span_id"] = trace.format_span_id(span_context.span_id)
        if record.exc_info:
            entry["exception"] = describe_exception(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: an id that is a UUID or a Decimal must not cost the whole line.
        return json.dumps(entry, default=str, ensure_ascii=False)
