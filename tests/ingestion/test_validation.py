import uuid
from decimal import Decimal

import pytest

from ingestion.validation import Rejection, ValidRecord, validate_record
from tests.records import record


def test_valid_record_becomes_typed_values():
    raw = record(1, account_balance=Decimal("12.50"), date_of_birth="1980-01-31", created_at="2024-01-10T17:07:01Z")
    result = validate_record(raw)
    assert isinstance(result, ValidRecord)
    assert result.customer_id == uuid.UUID(raw["customer_id"])
    assert result.account_balance == Decimal("12.50")
    assert result.date_of_birth.isoformat() == "1980-01-31"
    assert result.created_at.isoformat() == "2024-01-10T17:07:01+00:00"


def test_unknown_extra_fields_are_ignored():
    assert isinstance(validate_record({**record(1), "loyalty_tier": "gold"}), ValidRecord)


def test_optional_fields_may_be_null():
    result = validate_record(record(1, phone=None, address=None, date_of_birth=None, account_balance=None))
    assert isinstance(result, ValidRecord)
    assert (result.phone, result.address, result.date_of_birth, result.account_balance) == (None, None, None, None)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("customer_id", None, "missing_field"),
        ("customer_id", "not-a-uuid", "invalid_uuid"),
        ("customer_id", 12345, "invalid_type"),
        ("first_name", None, "missing_field"),
        ("first_name", "   ", "missing_field"),
        ("first_name", "x" * 101, "too_long"),
        ("last_name", 42, "invalid_type"),
        ("email", "not-an-email", "invalid_email"),
        ("email", "a@b@example.com", "invalid_email"),
        ("email", None, "missing_field"),
        ("email", "x" * 250 + "@example.com", "too_long"),
        ("phone", "+1 555 0100 0200 0300 0400", "too_long"),
        ("phone", "555\x000100", "invalid_characters"),
        ("first_name", "Ann\x00", "invalid_characters"),
        ("last_name", "Smith\x1b[31m", "invalid_characters"),
        ("address", "1 Road\x07", "invalid_characters"),
        ("date_of_birth", "31/01/1980", "invalid_date"),
        ("date_of_birth", "1980-02-30", "invalid_date"),
        ("date_of_birth", "19800131", "invalid_date"),
        ("account_balance", "12,34x", "invalid_decimal"),
        ("account_balance", True, "invalid_decimal"),
        ("account_balance", Decimal("1.234"), "invalid_decimal"),
        ("account_balance", Decimal("NaN"), "invalid_decimal"),
        ("account_balance", Decimal("1e20"), "invalid_decimal"),
        ("account_balance", Decimal("1e30"), "invalid_decimal"),
        # Exponents past the decimal context's limits (Emax 999999), which abs() would trap.
        ("account_balance", Decimal("-4.5e1000000"), "invalid_decimal"),
        ("account_balance", Decimal("1e-2000000"), "invalid_decimal"),
        ("account_balance", Decimal("9" * 5000), "invalid_decimal"),
        ("account_balance", 1e300, "invalid_decimal"),
        ("account_balance", float("inf"), "invalid_decimal"),
        ("account_balance", [1], "invalid_decimal"),
        ("created_at", None, "missing_field"),
        ("created_at", "yesterday", "invalid_datetime"),
        ("created_at", "2024-01-10T17:07:01", "invalid_datetime"),
        ("created_at", "9999-12-31T23:59:59-01:00", "invalid_datetime"),
        ("created_at", True, "invalid_datetime"),
    ],
)
def test_invalid_field_is_rejected_with_reason_and_field_error(field, value, reason):
    result = validate_record(record(1, **{field: value}))
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert list(result.errors) == [field]
    assert result.errors[field][0]


def test_missing_key_counts_as_missing_field():
    raw = record(1)
    del raw["last_name"]
    result = validate_record(raw)
    assert result.reason == "missing_field"
    assert result.errors == {"last_name": ["This field is required."]}


def test_rejection_keeps_the_customer_id_when_it_parses():
    result = validate_record(record(1, email="broken"))
    assert result.customer_id == uuid.UUID(record(1)["customer_id"])


def test_every_problem_is_reported_and_the_first_gives_the_reason():
    result = validate_record(record(1, email="broken", date_of_birth="never"))
    assert set(result.errors) == {"email", "date_of_birth"}
    assert result.reason == "invalid_email"


@pytest.mark.parametrize("raw", [None, "text", 12, ["a"]])
def test_a_record_that_is_not_an_object_is_rejected(raw):
    result = validate_record(raw)
    assert result.reason == "not_an_object"
    assert result.customer_id is None


def test_address_may_contain_line_breaks():
    assert isinstance(validate_record(record(1, address="1 Road\nTown\tNorth")), ValidRecord)


@pytest.mark.parametrize("value", [12, 12.5, "12.50", "-3", Decimal("0.10")])
def test_balance_accepts_numbers_and_numeric_text(value):
    result = validate_record(record(1, account_balance=value))
    assert result.account_balance == Decimal(str(value)).quantize(Decimal("0.01"))


def test_created_at_with_offset_is_normalised_to_utc():
    result = validate_record(record(1, created_at="2024-01-10T19:07:01+02:00"))
    assert result.created_at.isoformat() == "2024-01-10T17:07:01+00:00"


@pytest.mark.parametrize("field", ["first_name", "last_name", "email", "phone", "address"])
def test_lone_surrogate_in_any_text_field_is_invalid_characters(field):
    result = validate_record(record(1, **{field: "a\udc80b@example.com" if field == "email" else "a\udc80b"}))

    assert isinstance(result, Rejection)
    assert result.reason == "invalid_characters"
    assert result.errors == {field: ["Contains NUL bytes, control characters or unpaired surrogates."]}
