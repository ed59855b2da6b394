"""Mocksource's settings. This module is the only place in mocksource that reads the environment.

It keeps its own two small readers (`_int`, `_rate`) rather than use config/env.py: mocksource
stands for an upstream we do not own, so it imports nothing from the other apps (a test
enforces it) and its server runs without the project's settings. Bad values raise
`ConfigurationError` at start, naming the variable.
"""

import os
from collections.abc import Mapping
from pathlib import Path

from .faults import RETRY_AFTER_FORMATS, FaultConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATASET = PROJECT_ROOT / "data" / "customers.jsonl"


class ConfigurationError(Exception):
    pass


def dataset_path(environ: Mapping[str, str] | None = None) -> Path:
    """MOCKSOURCE_DATASET (relative to the project root), or data/customers.jsonl."""
    value = (os.environ if environ is None else environ).get("MOCKSOURCE_DATASET", "").strip()
    return PROJECT_ROOT / value if value else DEFAULT_DATASET


def fault_config(environ: Mapping[str, str] | None = None) -> FaultConfig:
    """The MOCKSOURCE_* fault knobs; all off when unset."""
    env = os.environ if environ is None else environ
    retry_after_format = env.get("MOCKSOURCE_RETRY_AFTER_FORMAT", "seconds").strip().lower()
    if retry_after_format not in RETRY_AFTER_FORMATS:
        raise ConfigurationError(
            f"MOCKSOURCE_RETRY_AFTER_FORMAT must be 'seconds' or 'http-date', not {retry_after_format!r}."
        )
    try:
        return FaultConfig(
            seed=_int(env, "MOCKSOURCE_FAULT_SEED", 0),
            error_rate=_rate(env, "MOCKSOURCE_ERROR_RATE"),
            rate_limit_rate=_rate(env, "MOCKSOURCE_RATE_LIMIT_RATE"),
            retry_after_format=retry_after_format,
            retry_after_seconds=_int(env, "MOCKSOURCE_RETRY_AFTER_SECONDS", 1, minimum=0),
            latency_ms=_int(env, "MOCKSOURCE_LATENCY_MS", 0, minimum=0),
            truncate_rate=_rate(env, "MOCKSOURCE_TRUNCATE_RATE"),
            malformed_rate=_rate(env, "MOCKSOURCE_MALFORMED_RATE"),
            disconnect_rate=_rate(env, "MOCKSOURCE_DISCONNECT_RATE"),
            drip_bytes_per_second=_int(env, "MOCKSOURCE_DRIP_BYTES_PER_SECOND", 0, minimum=0),
        )
    except ValueError as exc:  # only the sum of the rates is left for FaultConfig to refuse
        raise ConfigurationError(f"MOCKSOURCE_*_RATE: {exc}") from None


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int | None = None) -> int:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, not {value!r}.") from None
    if minimum is not None and number < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum}, not {number}.")
    return number


def _rate(env: Mapping[str, str], name: str) -> float:
    value = env.get(name, "").strip()
    if not value:
        return 0.0
    try:
        rate = float(value)
    except ValueError:
        rate = -1.0
    if not 0.0 <= rate <= 1.0:
        raise ConfigurationError(f"{name} must be a number between 0 and 1, not {value!r}.")
    return rate
