import json
import re
import uuid
from collections import Counter
from datetime import date
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from mocksource.dataset import (
    CUSTOMER_ID_NAMESPACE,
    DEFAULT_SEED,
    INVALID_KINDS,
    generate_dataset,
    generate_records,
    write_dataset,
)
from mocksource.store import Store
from tests.mocksource.datasets import GENERATED_COUNT, GENERATED_SEED, generation_files
from tests.records import records

# The contract's fields, in the order the generator writes them (spelled out on purpose:
# a contract test should not take its expectations from the code under test).
FIELDS = (
    "customer_id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "address",
    "date_of_birth",
    "account_balance",
    "created_at",
    "updated_at",
)
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
RAW_BALANCE = re.compile(rb'"account_balance":\d+\.\d{2}[,}]')
CREATED_AT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
# The first generation's clock: nothing in it was created or modified later.
FIRST_GENERATION_END = "2025-06-30T23:59:59Z"


def classify(path):
    """Kind of problem of every line, judged from the file alone (None: valid)."""
    seen_ids, seen_emails, kinds = set(), set(), []
    for line in path.read_bytes().splitlines():
        record = json.loads(line)
        kinds.append(_problem(record, seen_ids, seen_emails))
        seen_ids.add(record.get("customer_id"))
        seen_emails.add(str(record.get("email")).lower())
    return kinds


def _problem(record, seen_ids, seen_emails):
    if set(record) != set(FIELDS):
        return "missing_field"
    if not EMAIL.fullmatch(record["email"]):
        return "malformed_email"
    try:
        date.fromisoformat(record["date_of_birth"])
    except ValueError:
        return "invalid_date_of_birth"
    if not isinstance(record["account_balance"], float):
        return "non_numeric_balance"
    if len(record["phone"]) > 20:
        return "phone_too_long"
    if record["customer_id"] in seen_ids:
        return "duplicate_customer_id"
    if record["email"].lower() in seen_emails:
        return "duplicate_email"
    return None


def generate_output(path, *args):
    out = StringIO()
    call_command("generate_customers", "--output", str(path), *args, stdout=out)
    return out.getvalue()


def test_same_seed_gives_byte_identical_files(tmp_path, generated_dataset):
    generate_dataset(tmp_path / "again.jsonl", count=GENERATED_COUNT, seed=GENERATED_SEED)

    again = {
        name.replace("again", "customers"): data for name, data in generation_files(tmp_path / "again.jsonl").items()
    }
    assert len(again) == 7
    assert again == generation_files(generated_dataset)


def test_different_seed_gives_different_records_with_the_same_ids(tmp_path, generated_dataset):
    generate_dataset(tmp_path / "other.jsonl", count=GENERATED_COUNT, seed=7)

    other = (tmp_path / "other.jsonl").read_bytes().splitlines()
    original = generated_dataset.read_bytes().splitlines()
    assert other != original
    assert json.loads(other[0])["customer_id"] == json.loads(original[0])["customer_id"]


def test_command_prints_the_counts_of_each_invalid_kind_found_in_the_file(tmp_path):
    output = generate_output(tmp_path / "customers.jsonl", "--count", "2000", "--seed", "3")

    found = Counter(classify(tmp_path / "customers.jsonl"))
    assert "Wrote 2000 records to " in output
    assert f"Deliberately invalid: {2000 - found[None]}" in output
    for kind in INVALID_KINDS:
        assert found[kind] >= 1
        assert f"  {kind}: {found[kind]}\n" in output


def test_about_half_a_percent_of_records_are_invalid_and_spread_over_the_kinds(generated_dataset):
    found = Counter(classify(generated_dataset))

    # 0.5% of 1000 is 5, raised to 7 so that every kind appears once.
    assert {kind: found[kind] for kind in INVALID_KINDS} == dict.fromkeys(INVALID_KINDS, 1)


def test_invalid_ratio_zero_gives_only_valid_records(tmp_path):
    output = generate_output(tmp_path / "customers.jsonl", "--count", "2000", "--invalid-ratio", "0")

    assert set(classify(tmp_path / "customers.jsonl")) == {None}
    assert "Deliberately invalid: 0" in output


def test_small_count_is_quick_and_exact(tmp_path):
    generate_output(tmp_path / "customers.jsonl", "--count", "50")

    assert Store(tmp_path / "customers.jsonl").total == 50
    assert len((tmp_path / "customers.jsonl").read_bytes().splitlines()) == 50


def test_zero_records_make_an_empty_dataset(tmp_path):
    summary = generate_dataset(tmp_path / "customers.jsonl", count=0)

    assert summary.total == 0
    assert Store(tmp_path / "customers.jsonl").total == 0


@pytest.mark.parametrize(("args", "message"), [(["--count", "-1"], "--count"), (["--invalid-ratio", "2"], "ratio")])
def test_command_refuses_bad_arguments(tmp_path, args, message):
    with pytest.raises(CommandError, match=message):
        generate_output(tmp_path / "customers.jsonl", *args)


def test_valid_records_have_the_contract_format(generated_dataset):
    lines = generated_dataset.read_bytes().splitlines()

    for index, (line, problem) in enumerate(zip(lines, classify(generated_dataset), strict=True)):
        if problem is not None:
            continue
        record = json.loads(line)
        assert list(record) == list(FIELDS)
        assert record["customer_id"] == str(uuid.uuid5(CUSTOMER_ID_NAMESPACE, str(index)))
        assert RAW_BALANCE.search(line), line
        assert CREATED_AT.fullmatch(record["created_at"])
        assert CREATED_AT.fullmatch(record["updated_at"])
        # Same fixed-width format, so text order is time order.
        assert record["created_at"] <= record["updated_at"] <= FIRST_GENERATION_END
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", record["date_of_birth"])
        assert all(isinstance(record[name], str) and record[name] for name in FIELDS if name != "account_balance")


def test_a_fifth_of_the_first_generation_was_modified_after_creation(generated_dataset):
    records = [json.loads(line) for line in generated_dataset.read_bytes().splitlines()]
    later = [record for record in records if record["updated_at"] != record.get("created_at", record["updated_at"])]

    assert 0.15 < len(later) / len(records) < 0.25
    assert all(record["updated_at"] > record["created_at"] for record in later)


def test_updated_at_draws_leave_the_other_fields_as_before(generated_dataset):
    # The modification times come from their own random stream: every other field is
    # what this seed generated before records had an updated_at.
    first = json.loads(generated_dataset.read_bytes().splitlines()[0])

    assert (first["first_name"], first["last_name"], first["created_at"]) == (
        "Lynn",
        "Rodriguez",
        "2023-08-22T09:28:35Z",
    )


def test_valid_emails_are_unique_ignoring_case(generated_dataset):
    records = [json.loads(line) for line in generated_dataset.read_bytes().splitlines()]
    valid = [record for record, problem in zip(records, classify(generated_dataset), strict=True) if problem is None]

    assert len({record["email"].lower() for record in valid}) == len(valid)


def test_duplicate_records_reuse_an_earlier_value(generated_dataset):
    records = [json.loads(line) for line in generated_dataset.read_bytes().splitlines()]
    kinds = classify(generated_dataset)
    duplicate_id = records[kinds.index("duplicate_customer_id")]
    duplicate_email = records[kinds.index("duplicate_email")]

    original = next(record for record in records if record["customer_id"] == duplicate_id["customer_id"])
    assert original != duplicate_id
    assert any(
        record["email"].lower() == duplicate_email["email"].lower()
        for record in records
        if record is not duplicate_email
    )


def test_write_dataset_writes_crafted_records_as_given(tmp_path):
    crafted = [*records(3), {"customer_id": "crafted", "account_balance": "12,34x"}, {"no_id": True}]

    assert write_dataset(crafted, tmp_path / "customers.jsonl") == 5

    lines = (tmp_path / "customers.jsonl").read_bytes().splitlines()
    assert [json.loads(line) for line in lines[3:]] == crafted[3:]
    assert b'"account_balance":0.00,' in lines[0]
    assert Store(tmp_path / "customers.jsonl").find("crafted") == lines[3]


def test_write_dataset_replaces_the_files_without_leaving_temporaries(tmp_path):
    write_dataset(records(10), tmp_path / "customers.jsonl")
    write_dataset(records(4), tmp_path / "customers.jsonl")

    assert Store(tmp_path / "customers.jsonl").total == 4
    assert sorted(path.name for path in tmp_path.iterdir()) == ["customers.jsonl", "customers.jsonl.generations"]
    # The current generation and the one before it, for a server still reading that.
    assert len(list((tmp_path / "customers.jsonl.generations").iterdir())) == 2


def test_record_builder_is_deterministic_continues_from_start_and_uses_the_generators_ids():
    built = records(5, start=10)

    assert [record["first_name"] for record in built] == [f"First{index}" for index in range(10, 15)]
    generated = list(generate_records(15, seed=DEFAULT_SEED, invalid={}))[10:]
    assert [record["customer_id"] for record in built] == [record["customer_id"] for record in generated]
    assert len({record["email"] for record in built}) == 5
    assert records(5, start=10) == built
    # No updated_at: the pipeline stages none yet, and its tests compare what it kept with what they sent.
    assert all(list(record) == list(FIELDS[:-1]) for record in built)
