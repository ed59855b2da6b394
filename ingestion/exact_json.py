"""JSON whose numbers keep every digit the upstream wrote.

The standard library reads 0.1000000000000000055511151231257827 as a float, refuses an
integer longer than its int-string conversion limit (4300 digits by default) and writes a
Decimal only through a float. Pages are read with `loads`; a rejected record's `raw` is
written with `ExactJSONEncoder` and read with `ExactJSONDecoder`, so its numbers come back
with the digits they arrived with.
"""

import json
from decimal import Decimal
from typing import Any


def _integer(text: str) -> int | Decimal:
    try:
        return int(text)
    except ValueError:  # longer than int() converts; Decimal has no such limit
        return Decimal(text)


class ExactJSONDecoder(json.JSONDecoder):
    """Reads fractions, and integers too long for int(), as exact Decimals."""

    def __init__(self, **kwargs):
        super().__init__(parse_float=Decimal, parse_int=_integer, **kwargs)


def loads(document: str | bytes) -> Any:
    """Parse JSON with `ExactJSONDecoder`."""
    return json.loads(document, cls=ExactJSONDecoder)


class ExactJSONEncoder(json.JSONEncoder):
    """Writes a finite Decimal as a JSON number with all its digits: 1E+400, 0.10, not a float."""

    def encode(self, o: Any) -> str:
        if isinstance(o, Decimal) and o.is_finite():
            return str(o)  # a finite Decimal's str() is always a valid JSON number
        if isinstance(o, dict):
            scalar = super().encode
            return "{" + ",".join([f"{scalar(key)}:{self.encode(value)}" for key, value in o.items()]) + "}"
        if isinstance(o, list):
            return "[" + ",".join([self.encode(value) for value in o]) + "]"
        return super().encode(o)
