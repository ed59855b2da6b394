"""The upstream's customers: a deterministic generator and the writer of dataset files.

Plain Python, importable without Django. Faker makes pools of names, streets and
cities once; each record then draws from the pools with a seeded `random.Random`.
Calling Faker for every field costs ~100 us a record, too slow for a million.
"""

import json
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from json.encoder import encode_basestring_ascii
from pathlib import Path

from faker import Faker

from . import store

# customer_id = uuid5(CUSTOMER_ID_NAMESPACE, str(index)); never change it, ids must stay stable.
CUSTOMER_ID_NAMESPACE = uuid.UUID("6f1c1b1e-3a0e-4c57-9d43-2d8b7a5e0c11")
DEFAULT_COUNT = 10_000
DEFAULT_SEED = 42
DEFAULT_INVALID_RATIO = 0.005
# From this count on, every kind of invalid record appears at least once.
ALL_KINDS_FROM_COUNT = 1000

INVALID_KINDS = (
    "malformed_email",
    "missing_field",
    "invalid_date_of_birth",
    "non_numeric_balance",
    "phone_too_long",
    "duplicate_email",
    "duplicate_customer_id",
)

_POOL_SIZE = 1000
_RECENT_VALID = 1000
_DOMAINS = ("example.com", "example.org", "example.net", "mail.example", "post.example")
_BIRTH_DAYS = (date(1940, 1, 1).toordinal(), date(2006, 12, 31).toordinal())
_CREATED_SECONDS = (1546300800, 1751327999)  # 2019-01-01 to 2025-06-30, UTC
# The share of the first generation modified after its creation, at a time before its end.
MODIFIED_RATIO = 0.2
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class GenerationSummary:
    path: Path
    total: int
    invalid: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def customer_id(index: int) -> str:
    return str(uuid.uuid5(CUSTOMER_ID_NAMESPACE, str(index)))


def plan_invalid(count: int, *, seed: int, invalid_ratio: float) -> dict[int, str]:
    """Which record indexes are deliberately invalid, and of which kind.

    Index 0 is always valid so that the duplicate kinds have an earlier record to copy.
    """
    wanted = round(count * invalid_ratio)
    if invalid_ratio > 0 and count >= ALL_KINDS_FROM_COUNT:
        wanted = max(wanted, len(INVALID_KINDS))
    positions = sorted(random.Random(f"invalid:{seed}").sample(range(1, count), min(wanted, max(count - 1, 0))))
    return {index: INVALID_KINDS[number % len(INVALID_KINDS)] for number, index in enumerate(positions)}


def generate_records(count: int, *, seed: int, invalid: dict[int, str]) -> Iterator[dict]:
    """Yield `count` customer records; the indexes in `invalid` are broken as planned."""
    pools = Pools(seed)
    rng = random.Random(seed)
    # A stream of its own, so that every other field is what the seed gave before updated_at.
    modified = random.Random(f"updated:{seed}")
    recent_valid: list[dict] = []
    for index in range(count):
        record = valid_record(index, rng, pools)
        record["updated_at"] = _first_modification(record["created_at"], modified)
        kind = invalid.get(index)
        if kind is None:
            recent_valid.append(record)
            if len(recent_valid) > 2 * _RECENT_VALID:
                del recent_valid[:_RECENT_VALID]
        else:
            _break(record, kind, rng, recent_valid)
        yield record


def generate_dataset(
    path: Path,
    *,
    count: int = DEFAULT_COUNT,
    seed: int = DEFAULT_SEED,
    invalid_ratio: float = DEFAULT_INVALID_RATIO,
) -> GenerationSummary:
    """Generate and write a dataset; the same arguments give byte-identical files."""
    started = time.monotonic()
    invalid = plan_invalid(count, seed=seed, invalid_ratio=invalid_ratio)
    total = write_dataset(generate_records(count, seed=seed, invalid=invalid), path)
    counts = Counter(invalid.values())
    return GenerationSummary(
        path=Path(path),
        total=total,
        invalid={kind: counts[kind] for kind in INVALID_KINDS},
        seconds=time.monotonic() - started,
    )


def write_dataset(records: Iterable[dict], path: Path, *, tombstones: Iterable[dict] = ()) -> int:
    """Write any record dicts (valid or not) and tombstones as the next generation; return the record count."""
    lines = (
        store.Line(record.get("customer_id"), record.get("updated_at"), encode_record(record)) for record in records
    )
    deleted = ((tombstone["customer_id"], tombstone["deleted_at"]) for tombstone in tombstones)
    return store.write(lines, Path(path), tombstones=deleted)


def encode_record(record: dict) -> bytes:
    """Compact JSON; a Decimal is written as a number with its own digits (1234.50 stays 1234.50)."""
    parts = []
    for key, value in record.items():
        if isinstance(value, str):
            text = encode_basestring_ascii(value)
        elif isinstance(value, Decimal) and value.is_finite():
            text = str(value)
        else:
            text = json.dumps(value, separators=(",", ":"))
        parts.append(f"{encode_basestring_ascii(str(key))}:{text}")
    return ("{" + ",".join(parts) + "}").encode("ascii")


class Pools:
    def __init__(self, seed: int):
        fake = Faker("en_US")
        fake.seed_instance(seed)
        self.first_names = [fake.first_name() for _ in range(_POOL_SIZE)]
        self.last_names = [fake.last_name() for _ in range(_POOL_SIZE)]
        self.streets = [fake.street_name() for _ in range(_POOL_SIZE)]
        self.places = [f"{fake.city()}, {fake.state_abbr()} {fake.postcode()}" for _ in range(_POOL_SIZE)]


def valid_record(index: int, rng: random.Random, pools: Pools) -> dict:
    first, last = rng.choice(pools.first_names), rng.choice(pools.last_names)
    # The local part has no digits, so the index after it keeps every generated email unique.
    local = re.sub(r"[^a-z.]", "", f"{first}.{last}".lower())
    area, exchange, line = rng.randint(201, 989), rng.randint(200, 999), rng.randint(0, 9999)
    phone_format = rng.randrange(3)
    if phone_format == 0:
        phone = f"+1-{area}-{exchange}-{line:04d}"
    elif phone_format == 1:
        phone = f"({area}) {exchange}-{line:04d}"
    else:
        phone = f"{area}.{exchange}.{line:04d}"
    return {
        "customer_id": customer_id(index),
        "first_name": first,
        "last_name": last,
        "email": f"{local}{index}@{rng.choice(_DOMAINS)}",
        "phone": phone,
        "address": f"{rng.randint(1, 9999)} {rng.choice(pools.streets)}, {rng.choice(pools.places)}",
        "date_of_birth": date.fromordinal(rng.randint(*_BIRTH_DAYS)).isoformat(),
        "account_balance": Decimal(rng.randint(0, 25_000_000)).scaleb(-2),
        "created_at": format_time(rng.randint(*_CREATED_SECONDS)),
    }


def format_time(seconds: int) -> str:
    """Epoch seconds as the records write times: ISO-8601 UTC, whole seconds, a Z."""
    return time.strftime(TIME_FORMAT, time.gmtime(seconds))


def _first_modification(created_at: str, rng: random.Random) -> str:
    """created_at for most records; for MODIFIED_RATIO of them a later time within the first generation."""
    created = int(datetime.fromisoformat(created_at).timestamp())  # strptime would double the generator's time
    if rng.random() >= MODIFIED_RATIO or created >= _CREATED_SECONDS[1]:
        return created_at
    return format_time(rng.randint(created + 1, _CREATED_SECONDS[1]))


def _break(record: dict, kind: str, rng: random.Random, recent_valid: list[dict]) -> None:
    """Make `record` invalid in the way `kind` names; the duplicates copy a recent valid record."""
    if kind == "malformed_email":
        local, domain = record["email"].split("@")
        record["email"] = rng.choice((f"{local}.{domain}", f"{local}@@{domain}", f"{local} @{domain}", f"{local}@"))
    elif kind == "missing_field":
        # Only fields a consumer must have; phone, address, birth date and balance are optional.
        del record[rng.choice(("first_name", "last_name", "email", "created_at"))]
    elif kind == "invalid_date_of_birth":
        year, month, day = record["date_of_birth"].split("-")
        record["date_of_birth"] = rng.choice((f"{day}/{month}/{year}", f"{year}-02-30", f"{year}-13-{day}", "unknown"))
    elif kind == "non_numeric_balance":
        record["account_balance"] = rng.choice(("12,34x", "N/A", "1.234,56 EUR", ""))
    elif kind == "phone_too_long":
        record["phone"] = f"{record['phone']} ext. {rng.randint(10000, 99999)}"
    elif kind == "duplicate_email":
        email = rng.choice(recent_valid)["email"]
        # Half of them differ only in case: the same mailbox for a case-insensitive reader.
        record["email"] = email.upper() if rng.random() < 0.5 else email
    elif kind == "duplicate_customer_id":
        record["customer_id"] = rng.choice(recent_valid)["customer_id"]
