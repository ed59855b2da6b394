"""JSON that keeps decimals exact: Decimal("10.50") is written as the number 10.50.

The standard library's encoder can only write a Decimal as a string or through a float
(10.5). The encoder below writes it as a marked string, and the renderer then unquotes
exactly those strings. The marker holds a per-process random token that never leaves the
process, so no string coming from data or a request can pass for one.
"""

import re
import secrets
from decimal import Decimal

from rest_framework.renderers import JSONRenderer
from rest_framework.settings import api_settings
from rest_framework.utils.encoders import JSONEncoder

_MARKER = f"decimal-{secrets.token_hex(16)}:"
_MARKED = re.compile(rf'"{_MARKER}(-?[0-9]+(?:\.[0-9]+)?)"'.encode())


class DecimalLiteralJSONEncoder(JSONEncoder):
    def default(self, obj):
        if isinstance(obj, Decimal) and obj.is_finite():
            return f"{_MARKER}{obj:f}"
        return super().default(obj)


class DecimalLiteralJSONRenderer(JSONRenderer):
    """DRF's JSONRenderer, with every finite Decimal written as a JSON number with all its digits."""

    encoder_class = DecimalLiteralJSONEncoder

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return _MARKED.sub(rb"\1", super().render(data, accepted_media_type, renderer_context))


def exact_decimal_renderers() -> list[type]:
    """The project's renderers, with DecimalLiteralJSONRenderer in place of DRF's JSONRenderer."""
    return [
        DecimalLiteralJSONRenderer if renderer is JSONRenderer else renderer
        for renderer in api_settings.DEFAULT_RENDERER_CLASSES
    ]
