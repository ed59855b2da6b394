"""Step 2 of a run: check one upstream record and turn it into typed values.

A record is either a `ValidRecord` (ready to stage) or a `Rejection` carrying a reason
code, the problems per field and the customer id when it could be read. Unknown extra
fields are ignored. Nothing here touches the database, so it can be measured alone.

A page's records usually arrive as their JSON texts (ingestion/source.py). Most are plain:
they decode in C (msgspec) straight into the field types, and what is left to check takes a
few string tests (`_plain`): less than half the time of decoding the record and checking it
field by field (`bench/validation.py`, docs/benchmarks.md). Anything else, and any doubt, goes to the
field-by-field checks of `validate_record`, which alone decide what is refused and why: the
plain path accepts only what they accept, with the same values (a property test holds it to that).
"""

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

import msgspec
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator

from ingestion import watermarks
from ingestion.models import FailureReason
from ingestion.source import Page, RecordText, record_value

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DECIMAL_TEXT = re.compile(r"-?\d{1,13}(\.\d{1,2})?")
# C0 and C1 control characters (NUL included). Addresses may keep line breaks and tabs.
# Lone UTF-16 surrogates (valid in JSON as "\ud800") cannot be encoded as UTF-8, so
# PostgreSQL cannot store them: refused like control characters.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_MAX_BALANCE = Decimal("10000000000000")  # numeric(15, 2) holds 13 digits before the point
_CENT = Decimal("0.01")
_email_validator = EmailValidator()
# Nearly every address is a plain dot-atom at an ASCII domain. This pattern accepts only
# addresses Django's EmailValidator accepts too (a property test holds it to that), much
# faster (docs/benchmarks.md); anything it does not match is left to Django's validator to decide.
_PLAIN_EMAIL = re.compile(
    r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
    r"\.[A-Za-z]{2,63}"
)


class ValidRecord(NamedTuple):
    """A record ready to stage. A named tuple: built once per record, it is cheaper than a frozen dataclass."""

    customer_id: uuid.UUID
    first_name: str
    last_name: str
    email: str
    phone: str | None
    address: str | None
    date_of_birth: dt.date | None
    account_balance: Decimal | None
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    errors: dict[str, list[str]]
    customer_id: uuid.UUID | None


class _FieldError(Exception):
    def __init__(self, reason: str, message: str):
        self.reason = reason
        self.message = message


def validate_record(raw: Any) -> ValidRecord | Rejection:
    """Validate one upstream record; never raises for bad data."""
    if not isinstance(raw, dict):
        return Rejection(FailureReason.NOT_AN_OBJECT, {"record": ["Must be a JSON object."]}, None)
    values: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    first_reason = None
    for name, check in _CHECKS:
        try:
            values[name] = check(raw.get(name))
        except _FieldError as problem:
            errors[name] = [problem.message]
            first_reason = first_reason or problem.reason
    if errors:
        return Rejection(first_reason, errors, values.get("customer_id"))
    return ValidRecord(**values)


class Tombstone(NamedTuple):
    """An upstream deletion: which customer, and when."""

    customer_id: uuid.UUID
    deleted_at: dt.datetime


def validate_tombstone(raw: Any) -> Tombstone | Rejection:
    """Validate one entry of the upstream's tombstone listing; never raises for bad data."""
    if not isinstance(raw, dict):
        return Rejection(FailureReason.INVALID_TOMBSTONE, {"record": ["Must be a JSON object."]}, None)
    values, errors = {}, {}
    for name, check in (("customer_id", _customer_id), ("deleted_at", _created_at)):
        try:
            values[name] = check(raw.get(name))
        except _FieldError as problem:
            errors[name] = [problem.message]
    if errors:
        return Rejection(FailureReason.INVALID_TOMBSTONE, errors, values.get("customer_id"))
    return Tombstone(**values)


@dataclass(frozen=True, slots=True)
class ValidatedPage:
    """A page with the outcome of validating each of its records, in order."""

    page: Page
    outcomes: list[ValidRecord | Rejection]
    # Each refused record as it arrived (decoded, numbers exact), by its index on the page: its failure keeps it.
    refused: dict[int, Any]
    # The newest `updated_at` among all the page's records, refused ones included (ingestion/watermarks.py).
    newest: dt.datetime | None = None


def validate_page(page: Page) -> ValidatedPage:
    """Validate every record of a page (a run does it on the fetch threads)."""
    outcomes, refused, times = [], {}, []
    for index, item in enumerate(page.records):
        plain = _plain(item) if isinstance(item, RecordText) else None
        if plain is None:
            raw = record_value(item)
            outcome = validate_record(raw)
            if isinstance(outcome, Rejection):
                refused[index] = raw
            plain = outcome, raw.get("updated_at") if isinstance(raw, dict) else None
        outcomes.append(plain[0])
        times.append(plain[1])
    return ValidatedPage(page, outcomes, refused, watermarks.newest(times))


def validate_tombstone_page(page: Page) -> ValidatedPage:
    raws = [record_value(item) for item in page.records]
    outcomes = [validate_tombstone(raw) for raw in raws]
    refused = {
        index: raw
        for index, (raw, outcome) in enumerate(zip(raws, outcomes, strict=True))
        if isinstance(outcome, Rejection)
    }
    times = [raw.get("updated_at") if isinstance(raw, dict) else None for raw in raws]
    return ValidatedPage(page, outcomes, refused, watermarks.newest(times))


class _PlainRecord(msgspec.Struct):
    """A record as the C decoder reads it: the id and the date parsed, the rest as JSON gave them.

    Only to find plain records fast: a record that does not decode into this (a missing
    name, a number for a phone, an id that is no UUID) is checked field by field instead.
    """

    customer_id: uuid.UUID
    first_name: str
    last_name: str
    email: str
    created_at: str
    phone: str | None = None
    address: str | None = None
    date_of_birth: dt.date | None = None
    account_balance: Any = None
    updated_at: Any = None


# Numbers as the exact decoder reads them: fractions as Decimals with every digit.
_PLAIN_DECODER = msgspec.json.Decoder(_PlainRecord, float_hook=Decimal)


def _plain(text: RecordText) -> tuple[ValidRecord, Any] | None:
    """A plain record's ValidRecord and its `updated_at`, or None for validate_record to judge.

    Each test below accepts only what the field's check in `_CHECKS` accepts, and the values
    are the ones it would return: msgspec reads a UUID and a YYYY-MM-DD date exactly as
    uuid.UUID and date.fromisoformat do, and refuses every spelling they might read otherwise.
    """
    try:
        record = _PLAIN_DECODER.decode(text)
    except (msgspec.MsgspecError, RecursionError):
        return None
    first, last, email, phone, address = record.first_name, record.last_name, record.email, record.phone, record.address
    if not (0 < len(first) <= 100 and 0 < len(last) <= 100 and len(email) <= 255) or first.isspace() or last.isspace():
        return None
    if (phone is not None and len(phone) > 20) or (address is not None and len(address) > 1000):
        return None
    # One search over the texts under the same rule; the plain email pattern has no such characters.
    if _CONTROL.search(f"{first}{last}{phone or ''}") or (address and _CONTROL_MULTILINE.search(address)):
        return None
    if not _PLAIN_EMAIL.fullmatch(email):
        return None
    balance = _plain_balance(record.account_balance)
    if balance is _NOT_PLAIN:
        return None
    try:
        created_at = dt.datetime.fromisoformat(record.created_at)
        if created_at.tzinfo is not dt.UTC:  # a "Z" time reads as UTC itself: nothing to convert
            created_at = _created_at(record.created_at)
    except (ValueError, _FieldError):
        return None
    # tuple.__new__ rather than the named tuple's own __new__, a Python function: a quarter of the time.
    fields = (record.customer_id, first, last, email, phone, address, record.date_of_birth, balance, created_at)
    return _new_tuple(ValidRecord, fields), record.updated_at


_new_tuple = tuple.__new__


_NOT_PLAIN = object()


def _plain_balance(value: Any) -> Any:
    """What `_account_balance` returns for None, an integer or an exact fraction it accepts; else _NOT_PLAIN."""
    if value is None:
        return None
    if type(value) is int:
        return Decimal(value).quantize(_CENT) if -_MAX_BALANCE < value < _MAX_BALANCE else _NOT_PLAIN
    if type(value) is Decimal and value.is_finite() and value.copy_abs() < _MAX_BALANCE:
        cents = value.quantize(_CENT)
        return cents if cents == value else _NOT_PLAIN
    return _NOT_PLAIN


def _require(value: Any) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise _FieldError(FailureReason.MISSING_FIELD, "This field is required.")
    return value


def _text(value: Any, *, max_length: int, multiline: bool = False) -> str:
    if not isinstance(value, str):
        raise _FieldError(FailureReason.INVALID_TYPE, "Must be a string.")
    if len(value) > max_length:
        raise _FieldError(FailureReason.TOO_LONG, f"At most {max_length} characters (got {len(value)}).")
    if (_CONTROL_MULTILINE if multiline else _CONTROL).search(value):
        raise _FieldError(
            FailureReason.INVALID_CHARACTERS, "Contains NUL bytes, control characters or unpaired surrogates."
        )
    return value


def _customer_id(value: Any) -> uuid.UUID:
    _require(value)
    if not isinstance(value, str):
        raise _FieldError(FailureReason.INVALID_TYPE, "Must be a UUID string.")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise _FieldError(FailureReason.INVALID_UUID, "Must be a UUID.") from None


def _name(value: Any) -> str:
    return _text(_require(value), max_length=100)


def _email(value: Any) -> str:
    email = _text(_require(value), max_length=255)
    if _PLAIN_EMAIL.fullmatch(email):
        return email
    try:
        _email_validator(email)
    except ValidationError:
        raise _FieldError(FailureReason.INVALID_EMAIL, "Must be a valid email address.") from None
    return email


def _optional_text(max_length: int, *, multiline: bool = False):
    def check(value: Any) -> str | None:
        if value is None:
            return None
        return _text(value, max_length=max_length, multiline=multiline)

    return check


def _date_of_birth(value: Any) -> dt.date | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise _FieldError(FailureReason.INVALID_DATE, "Must be a date as YYYY-MM-DD.")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise _FieldError(FailureReason.INVALID_DATE, "Must be a real calendar date.") from None


def _account_balance(value: Any) -> Decimal | None:
    if value is None:
        return None
    # bool is an int in Python; JSON true is not a balance.
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        raise _FieldError(FailureReason.INVALID_DECIMAL, "Must be a number.")
    if isinstance(value, str) and not _DECIMAL_TEXT.fullmatch(value):
        raise _FieldError(FailureReason.INVALID_DECIMAL, "Must be a number with at most two decimals.")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise _FieldError(FailureReason.INVALID_DECIMAL, "Must be a number.") from None
    if not number.is_finite():
        raise _FieldError(FailureReason.INVALID_DECIMAL, "Must be a finite number.")
    # Magnitude first: quantize() itself fails on numbers beyond Decimal's precision. copy_abs(),
    # unlike abs(), does no rounding, which traps an exponent past the context's (1e1000000).
    if number.copy_abs() >= _MAX_BALANCE:
        raise _FieldError(FailureReason.INVALID_DECIMAL, "Must be smaller than 10^13 in absolute value.")
    if number != number.quantize(Decimal("0.01")):
        raise _FieldError(FailureReason.INVALID_DECIMAL, "Must have at most two decimals.")
    return number.quantize(Decimal("0.01"))


def _created_at(value: Any) -> dt.datetime:
    _require(value)
    if not isinstance(value, str):
        raise _FieldError(FailureReason.INVALID_DATETIME, "Must be an ISO-8601 date-time string.")
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise _FieldError(FailureReason.INVALID_DATETIME, "Must be an ISO-8601 date-time.") from None
    if moment.tzinfo is None:
        raise _FieldError(FailureReason.INVALID_DATETIME, "Must carry a time zone (for example a trailing Z).")
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError:  # 9999-12-31T23:00-05:00 is past the last representable UTC moment
        raise _FieldError(FailureReason.INVALID_DATETIME, "Must be a representable date-time.") from None


_CHECKS = (
    ("customer_id", _customer_id),
    ("first_name", _name),
    ("last_name", _name),
    ("email", _email),
    ("phone", _optional_text(20)),
    ("address", _optional_text(1000, multiline=True)),
    ("date_of_birth", _date_of_birth),
    ("account_balance", _account_balance),
    ("created_at", _created_at),
)
