"""Deliberate misbehaviour, off by default: which fault (if any) a request gets.

A decision is a pure function of (seed, the request's path and query, how many times
this process has seen that exact request), so a run is reproducible and a retry of
the same page gets a fresh draw.
"""

import hashlib
import threading
from dataclasses import dataclass
from enum import StrEnum

RETRY_AFTER_FORMATS = ("seconds", "http-date")
ERROR_STATUSES = (500, 502, 503)
# Distinct requests remembered for the attempt counter; the oldest are forgotten
# first, so memory stays bounded however many ids a client looks up.
MAX_TRACKED_REQUESTS = 100_000


class Fault(StrEnum):
    ERROR = "error"
    RATE_LIMIT = "rate_limit"
    TRUNCATE = "truncate"
    MALFORMED = "malformed"
    DISCONNECT = "disconnect"


@dataclass(frozen=True)
class FaultConfig:
    """Fault knobs; every rate is a fraction (0..1) of /api/customers requests."""

    seed: int = 0
    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after_format: str = "seconds"
    retry_after_seconds: int = 1
    latency_ms: int = 0
    truncate_rate: float = 0.0
    malformed_rate: float = 0.0
    disconnect_rate: float = 0.0
    drip_bytes_per_second: int = 0

    def __post_init__(self):
        for name, rate in self.rates():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {rate}.")
        if sum(rate for _, rate in self.rates()) > 1.0:
            raise ValueError("The fault rates must add up to at most 1.")
        if self.retry_after_format not in RETRY_AFTER_FORMATS:
            raise ValueError(f"retry_after_format must be 'seconds' or 'http-date', not {self.retry_after_format!r}.")
        for name in ("retry_after_seconds", "latency_ms", "drip_bytes_per_second"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative.")

    def rates(self) -> tuple[tuple[Fault, float], ...]:
        """The rated faults in the order their bands are laid on [0, 1)."""
        return (
            (Fault.ERROR, self.error_rate),
            (Fault.RATE_LIMIT, self.rate_limit_rate),
            (Fault.TRUNCATE, self.truncate_rate),
            (Fault.MALFORMED, self.malformed_rate),
            (Fault.DISCONNECT, self.disconnect_rate),
        )

    @property
    def any_rated(self) -> bool:
        return any(rate > 0 for _, rate in self.rates())


@dataclass(frozen=True)
class Decision:
    fault: Fault | None
    variant: int  # picks among a fault's flavours (which 5xx, which malformed body)


NO_FAULT = Decision(None, 0)


def draw(seed: int, request_key: str, attempt: int) -> tuple[float, int]:
    """A uniform number in [0, 1) and a free integer, both fixed by the three inputs."""
    digest = hashlib.blake2b(f"{seed}\0{request_key}\0{attempt}".encode(), digest_size=16).digest()
    return int.from_bytes(digest[:8], "little") / 2**64, int.from_bytes(digest[8:], "little")


def decide(config: FaultConfig, request_key: str, attempt: int) -> Decision:
    """Which fault the `attempt`-th sight (0-based) of `request_key` gets."""
    uniform, variant = draw(config.seed, request_key, attempt)
    upper = 0.0
    for fault, rate in config.rates():
        upper += rate
        if uniform < upper:
            return Decision(fault, variant)
    return Decision(None, variant)


class AttemptCounter:
    """How many times this process has seen each request; safe across server threads."""

    def __init__(self, limit: int = MAX_TRACKED_REQUESTS):
        self._seen: dict[str, int] = {}
        self._limit = limit
        self._lock = threading.Lock()

    def next_attempt(self, request_key: str) -> int:
        with self._lock:
            attempt = self._seen.pop(request_key, 0)
            self._seen[request_key] = attempt + 1
            if len(self._seen) > self._limit:
                del self._seen[next(iter(self._seen))]
            return attempt
