"""Environment variables read into checked values; a bad one raises ImproperlyConfigured naming it.

Used by config/settings/base.py (the only application module that reads the environment),
config/gunicorn.py and the `make run` supervisor, which passes `environ` to read its
children's environment. Importing Django's exception does not configure Django.
"""

import ipaddress
import os
import re
from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
# DRF's "N/period" throttle rates. DRF reads only the period's first letter (so "10/month" would be
# ten a minute); only these spellings pass.
_RATE = re.compile(r"([0-9]+)/(s|sec|second|m|min|minute|h|hour|d|day)")


def env_str(name: str, default: str | None = None, *, environ: Mapping[str, str] = os.environ) -> str | None:
    """The stripped value, or `default` when the variable is unset."""
    value = environ.get(name)
    return default if value is None else value.strip()


def env_bool(name: str, default: bool, *, environ: Mapping[str, str] = os.environ) -> bool:
    """1/0, true/false, yes/no, on/off (any case); empty is false, unset is `default`."""
    value = environ.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false (1/0, yes/no, on/off), not {value!r}.")


def env_int(name: str, default: int, *, minimum: int = 0, environ: Mapping[str, str] = os.environ) -> int:
    """A whole number of at least `minimum`; unset or blank is `default`."""
    return _number(name, default, minimum, int, "a whole number", environ)


def env_float(name: str, default: float, *, minimum: float = 0.0, environ: Mapping[str, str] = os.environ) -> float:
    """A number of at least `minimum`; unset or blank is `default`."""
    return _number(name, default, minimum, float, "a number", environ)


def _number(name, default, minimum, parse, kind: str, environ: Mapping[str, str]):
    value = environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        number = parse(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be {kind}, not {value!r}.") from None
    if number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {number}.")
    return number


def env_list(name: str, default: list[str], *, environ: Mapping[str, str] = os.environ) -> list[str]:
    """Comma-separated items, stripped, empty ones dropped; unset is `default`."""
    value = environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_trace_exporters(*, environ: Mapping[str, str] = os.environ) -> tuple[list[str], str | None]:
    """The trace exporters OpenTelemetry's variables ask for ([] = tracing off), and the OTLP endpoint if set.

    OTEL_TRACES_EXPORTER by name (lower case); unset, "otlp" when an OTLP endpoint is set;
    OTEL_SDK_DISABLED=true or "none" is off; "none" beside another exporter is refused.
    """
    endpoint = env_str("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", environ=environ) or env_str(
        "OTEL_EXPORTER_OTLP_ENDPOINT", environ=environ
    )
    names = [name.lower() for name in env_list("OTEL_TRACES_EXPORTER", ["otlp"] if endpoint else [], environ=environ)]
    if env_bool("OTEL_SDK_DISABLED", False, environ=environ) or names == ["none"]:
        return [], endpoint
    if "none" in names:
        raise ImproperlyConfigured(f"OTEL_TRACES_EXPORTER lists 'none' beside other exporters: {names}.")
    return names, endpoint


def env_rate(name: str, default: str, *, environ: Mapping[str, str] = os.environ) -> str:
    """A throttle rate in DRF's format, N/second|minute|hour|day with N >= 1; unset or blank is `default`."""
    value = environ.get(name, "").strip()
    if not value:
        return default
    match = _RATE.fullmatch(value)
    if match is None or int(match[1]) < 1:
        raise ImproperlyConfigured(
            f"{name} must be a rate such as 1200/minute (a whole number of requests, at least 1, "
            f"per second, minute, hour or day), not {value!r}."
        )
    return value


def env_networks(
    name: str, *, environ: Mapping[str, str] = os.environ
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated IPv4/IPv6 networks in CIDR notation (a bare address is one host); unset is none."""
    networks = []
    for item in env_list(name, [], environ=environ):
        try:
            networks.append(ipaddress.ip_network(item))
        except ValueError as exc:
            # 10.0.0.1/8 is refused rather than read as 10.0.0.0/8: it may have meant /32.
            hint = " (an address with host bits set)" if "host bits" in str(exc) else ""
            raise ImproperlyConfigured(
                f"{name} must be comma-separated networks such as 10.0.0.0/8 or 2001:db8::/32, not {item!r}{hint}."
            ) from None
    return tuple(networks)


def env_port(name: str, default: int, *, environ: Mapping[str, str] = os.environ) -> int:
    """A TCP port number, 1 to 65535; unset or blank is `default`."""
    value = environ.get(name, "").strip()
    if not value:
        return default
    if not _is_port(value):
        raise ImproperlyConfigured(f"{name} must be a port number between 1 and 65535, not {value!r}.")
    return int(value)


def env_ports(name: str, default: list[int], *, environ: Mapping[str, str] = os.environ) -> list[int]:
    """Comma-separated TCP port numbers, empty items dropped; unset is `default`."""
    if environ.get(name) is None:
        return default
    items = env_list(name, [], environ=environ)
    for item in items:
        if not _is_port(item):
            raise ImproperlyConfigured(
                f"{name} must be comma-separated port numbers between 1 and 65535, not {item!r}."
            )
    return [int(item) for item in items]


def _is_port(value: str) -> bool:
    # ASCII digits only: str.isdigit() also takes "²" (which int() refuses) and "٨٠" (which it reads as 80).
    return value.isascii() and value.isdigit() and 0 < int(value) < 65536
