"""The upstream's next generation: some records changed, some deleted, some added, all at one time.

Deterministic: the same dataset, seed and time give byte-identical files. Lines are read one
at a time from the current generation's maps and streamed to the next; only the changed
ones are re-encoded, the others are copied byte for byte. A changed record keeps its place
(a listing ordered by creation does not move it); added records go at the end.
"""

import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from . import store, times
from .dataset import DEFAULT_SEED, Pools, encode_record, format_time, valid_record

# What a customer changes about themselves; never the id, the creation time or the birth date.
CHANGEABLE = ("first_name", "last_name", "email", "phone", "address", "account_balance")


class EvolutionError(Exception):
    """The evolution asked for cannot be made; the message says why."""


@dataclass(frozen=True)
class EvolutionSummary:
    path: Path
    total: int
    changed: int
    deleted: int
    added: int
    tombstones: int
    at: str
    seconds: float


def share(count: int, fraction: Decimal) -> int:
    """`fraction` of `count`, rounded to the nearest whole number (halves up)."""
    return int((count * fraction).to_integral_value(rounding=ROUND_HALF_UP))


def evolve_dataset(
    source: Path,
    *,
    at: str,
    changed: Decimal,
    deleted: Decimal,
    added: Decimal,
    seed: int = DEFAULT_SEED,
    output: Path | None = None,
) -> EvolutionSummary:
    """Write the generation after `source`'s current one to `output` (default: `source` itself).

    The shares are fractions of the current record count.
    """
    started = time.monotonic()
    try:
        current = store.Store(source)
    except store.DatasetError as exc:
        raise EvolutionError(str(exc)) from None
    evolution = _Evolution(current, stamp=_checked_time(at, current), seed=seed)
    evolution.pick(
        changed=share(current.total, changed), deleted=share(current.total, deleted), added=share(current.total, added)
    )
    tombstones = evolution.tombstones()
    total = store.write(
        evolution.lines(), Path(output or source), tombstones=tombstones, next_index=evolution.next_index
    )
    return EvolutionSummary(
        path=Path(output or source),
        total=total,
        changed=evolution.changed,
        deleted=len(evolution.gone),
        added=evolution.added,
        tombstones=len(tombstones),
        at=evolution.stamp,
        seconds=time.monotonic() - started,
    )


class _Evolution:
    def __init__(self, current: store.Store, *, stamp: str, seed: int):
        self.current, self.stamp = current, stamp
        self.rng = random.Random(f"evolve:{seed}:{stamp}")
        self.pools = Pools(seed)
        self.changed = self.added = 0

    def pick(self, *, changed: int, deleted: int, added: int) -> None:
        """Choose the lines to delete and to change, disjoint, by line number, and how many to add."""
        if changed + deleted > self.current.total:
            raise EvolutionError(
                f"Changing {changed} and deleting {deleted} is more records than the {self.current.total} there are."
            )
        picked = self.rng.sample(range(self.current.total), changed + deleted)
        self.changing = set(picked[deleted:])
        # A deletion removes the customer, so every line with its id goes (a repeated id too).
        self.gone = sorted({_fields(self.current.line(number))[0] for number in picked[:deleted]} - {None})
        self._gone = set(self.gone)
        self._deleted_lines = set(picked[:deleted])
        # Every changed line and every added record takes an index of its own: fresh ids and
        # emails (the index is their unique digits); a changed line that is deleted skips one.
        self._adding = range(self.current.next_index + changed, self.current.next_index + changed + added)
        self.next_index = self._adding.stop

    def lines(self) -> Iterator[store.Line]:
        changing_index = self.current.next_index
        for number in range(self.current.total):
            line = self.current.line(number)
            customer_id, updated_at = _fields(line)
            if number in self._deleted_lines or customer_id in self._gone:
                continue
            if number in self.changing:
                line, updated_at = self._change(line, changing_index), self.stamp
                changing_index += 1
                self.changed += 1
            yield store.Line(customer_id, updated_at, line)
        for index in self._adding:
            record = valid_record(index, self.rng, self.pools)
            record["created_at"] = record["updated_at"] = self.stamp
            self.added += 1
            yield store.Line(record["customer_id"], self.stamp, encode_record(record))

    def tombstones(self) -> list[tuple[str, str]]:
        """The current generation's tombstones, then one for each id deleted now."""
        before = [_fields(line, "deleted_at") for line in self.current.tombstones()]
        return before + [(customer_id, self.stamp) for customer_id in self.gone]

    def _change(self, line: bytes, index: int) -> bytes:
        record = json.loads(line, parse_float=Decimal)  # Decimals keep a balance's digits
        fresh = valid_record(index, self.rng, self.pools)
        original = dict(record)
        for name in self.rng.sample(CHANGEABLE, self.rng.randint(1, 3)):
            record[name] = fresh[name]
        if record == original:  # a name drawn again from its pool: the email is always new
            record["email"] = fresh["email"]
        record["updated_at"] = self.stamp
        return encode_record(record)


def _checked_time(at: str, current: store.Store) -> str:
    moment = times.parse(at)
    if moment is None:
        raise EvolutionError(f"The time must be an ISO-8601 date and time with a UTC offset, not {at!r}.")
    if moment % 1_000_000:
        raise EvolutionError(f"The time must be in whole seconds, as the records write it, not {at!r}.")
    latest = current.latest_change()
    if latest is not None and moment < latest:
        raise EvolutionError(
            f"The time {at} is before the dataset's latest change, {format_time(latest // 1_000_000)}: "
            "an upstream's clock does not go back."
        )
    return format_time(moment // 1_000_000)


def _fields(line: bytes, time_field: str = "updated_at") -> tuple[str | None, object]:
    """(customer_id when it is a string, the time field) of an encoded record."""
    try:
        record = json.loads(line)
    except ValueError:
        return None, None
    if not isinstance(record, dict):
        return None, None
    customer_id = record.get("customer_id")
    return (customer_id if isinstance(customer_id, str) else None), record.get(time_field)
