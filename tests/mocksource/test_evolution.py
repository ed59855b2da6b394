import json
from decimal import Decimal
from io import StringIO

import pytest
import requests
from django.core.management import call_command
from django.core.management.base import CommandError

from mocksource.dataset import generate_dataset, write_dataset
from mocksource.evolution import EvolutionError, evolve_dataset
from mocksource.store import Store
from tests.mocksource.datasets import generation_files
from tests.records import records
from tests.upstream import running_mocksource

AT = "2026-12-02T00:00:00Z"
LATER = "2026-12-03T00:00:00Z"
BASE_COUNT = 2000
# 1% of 2,000 changed, 0.1% deleted, 0.5% added.
CHANGED, DELETED, ADDED = 20, 2, 10
SHARES = {"changed": Decimal("0.01"), "deleted": Decimal("0.001"), "added": Decimal("0.005")}


def lines_of(path):
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def tombstones_of(path):
    store = Store(path)
    body, _ = store.deleted_page(None, 0, 10**9)
    store.close()
    return json.loads(b"[" + body + b"]")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """2,000 valid generated records (unique ids, so every count below is exact)."""
    path = tmp_path_factory.mktemp("base") / "customers.jsonl"
    generate_dataset(path, count=BASE_COUNT, seed=3, invalid_ratio=0)
    return path


@pytest.fixture(scope="module")
def evolved(base, tmp_path_factory):
    output = tmp_path_factory.mktemp("evolved") / "customers.jsonl"
    summary = evolve_dataset(base, output=output, at=AT, seed=5, **SHARES)
    return output, summary


def test_evolving_changes_deletes_and_adds_the_stated_shares(base, evolved):
    output, summary = evolved
    after = lines_of(output)

    assert (summary.changed, summary.deleted, summary.added) == (CHANGED, DELETED, ADDED)
    assert summary.total == len(after) == BASE_COUNT - DELETED + ADDED
    assert sum(row["updated_at"] == AT for row in after) == CHANGED + ADDED
    assert [row["deleted_at"] for row in tombstones_of(output)] == [AT] * DELETED


def test_changed_records_keep_their_place_id_and_created_at_and_get_new_content(base, evolved):
    output, _ = evolved
    gone = {row["customer_id"] for row in tombstones_of(output)}
    kept = [row for row in lines_of(base) if row["customer_id"] not in gone]
    after = lines_of(output)

    assert [row["customer_id"] for row in after[: len(kept)]] == [row["customer_id"] for row in kept]
    changed = [(old, new) for old, new in zip(kept, after, strict=False) if new != old]
    assert len(changed) == CHANGED
    for old, new in changed:
        assert new["updated_at"] == AT
        assert new["created_at"] == old["created_at"]
        assert new["date_of_birth"] == old["date_of_birth"]
        assert {name for name in new if new[name] != old[name]} - {"updated_at"}


def test_added_records_come_last_with_fresh_ids_created_and_updated_at_the_evolution(base, evolved):
    output, _ = evolved
    added = lines_of(output)[-ADDED:]
    known = {row["customer_id"] for row in lines_of(base)}

    assert all(row["created_at"] == row["updated_at"] == AT for row in added)
    assert not {row["customer_id"] for row in added} & known
    emails = [row["email"].lower() for row in lines_of(output)]
    assert len(set(emails)) == len(emails)


def test_the_next_generation_starts_its_indexes_after_every_one_this_one_used(evolved):
    # Each changed record's new email and each added record's id took an index of its own.
    assert Store(evolved[0]).next_index == BASE_COUNT + CHANGED + ADDED


def test_same_input_and_seed_give_a_byte_identical_generation(base, evolved, tmp_path):
    again = tmp_path / "customers.jsonl"
    evolve_dataset(base, output=again, at=AT, seed=5, **SHARES)

    assert generation_files(again) == generation_files(evolved[0])


def test_another_seed_evolves_other_records(base, evolved, tmp_path):
    other = tmp_path / "customers.jsonl"
    evolve_dataset(base, output=other, at=AT, seed=6, **SHARES)

    assert lines_of(other) != lines_of(evolved[0])


def test_tombstones_accumulate_and_ids_stay_fresh_across_generations(evolved, tmp_path):
    path = tmp_path / "customers.jsonl"
    evolve_dataset(evolved[0], output=path, at=LATER, seed=5, **SHARES)
    first, second = lines_of(evolved[0]), lines_of(path)

    tombstones = tombstones_of(path)
    assert [row["deleted_at"] for row in tombstones] == [AT] * DELETED + [LATER] * 2
    assert not {row["customer_id"] for row in tombstones} & {row["customer_id"] for row in second}
    first_ids = {row["customer_id"] for row in first} | {row["customer_id"] for row in tombstones}
    assert not {row["customer_id"] for row in second[-10:]} & first_ids
    assert len(second) == BASE_COUNT - DELETED + ADDED - 2 + 10


def test_evolving_in_place_is_served_at_once_by_a_running_server(tmp_path):
    path = tmp_path / "customers.jsonl"
    write_dataset(records(1000), path)
    with running_mocksource(path) as base_url:
        assert requests.get(f"{base_url}/api/customers", timeout=5).json()["total"] == 1000
        summary = evolve_dataset(path, at=AT, seed=1, **SHARES)
        gone = requests.get(f"{base_url}/api/customers/deleted", timeout=5).json()["data"][0]["customer_id"]
        listing = requests.get(f"{base_url}/api/customers", params={"limit": 100}, timeout=5).json()
        changes = requests.get(f"{base_url}/api/customers", params={"updated_since": AT, "limit": 100}, timeout=5)
        detail = requests.get(f"{base_url}/api/customers/{gone}", timeout=5)
        walked = [
            row["customer_id"]
            for page in range(1, 11)
            for row in requests.get(f"{base_url}/api/customers", params={"page": page, "limit": 100}, timeout=5).json()[
                "data"
            ]
        ]

    assert listing["total"] == summary.total == 1000 - 1 + 5
    assert changes.json()["total"] == 10 + 5
    assert all(row["updated_at"] == AT for row in changes.json()["data"])
    assert detail.status_code == 404
    assert gone not in walked
    assert gone not in {row["customer_id"] for row in changes.json()["data"]}


def test_a_time_before_the_latest_change_is_refused(evolved, tmp_path):
    with pytest.raises(EvolutionError, match="2026-12-02T00:00:00Z"):
        evolve_dataset(evolved[0], output=tmp_path / "customers.jsonl", at="2026-12-01T00:00:00Z", **SHARES)


def test_changing_and_deleting_more_than_every_record_is_refused(tmp_path):
    write_dataset(records(10), tmp_path / "customers.jsonl")

    with pytest.raises(EvolutionError, match="more records than"):
        evolve_dataset(
            tmp_path / "customers.jsonl", at=AT, changed=Decimal("0.6"), deleted=Decimal("0.5"), added=Decimal(0)
        )


def evolve_command(*args):
    out = StringIO()
    call_command("generate_customers", *args, stdout=out)
    return out.getvalue()


def test_the_command_evolves_in_place_and_says_what_it_did(tmp_path):
    path = tmp_path / "customers.jsonl"
    write_dataset(records(1000), path)

    output = evolve_command(
        "--evolve", str(path), "--changed", "1%", "--deleted", "0.1%", "--added", "0.5%", "--at", AT
    )

    assert f"Wrote the next generation of {path}: 1004 records" in output
    assert f"10 changed, 1 deleted, 5 added at {AT}; 1 tombstone in all" in output
    assert Store(path).total == 1004


def test_the_command_writes_elsewhere_with_output_and_normalises_the_time_to_utc(tmp_path):
    write_dataset(records(1000), tmp_path / "customers.jsonl")

    evolve_command(
        "--evolve", str(tmp_path / "customers.jsonl"), "--output", str(tmp_path / "next.jsonl"),
        "--at", "2026-12-02T01:00:00+01:00", "--seed", "9",
    )  # fmt: skip

    assert Store(tmp_path / "customers.jsonl").total == 1000
    assert sum(row.get("updated_at") == AT for row in lines_of(tmp_path / "next.jsonl")) == 10 + 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--changed", "1"], "--changed must be a percentage"),
        (["--deleted=-1%"], "--deleted must be a percentage"),
        (["--added", "150%"], "--added must be a percentage"),
        (["--at", "yesterday"], "--at must be"),
        (["--at", "2026-12-02T00:00:00"], "--at must be"),
        (["--at", "2026-12-02T00:00:00.5Z"], "whole seconds"),
        (["--at", AT, "--count", "5"], "--count"),
        (["--at", AT, "--invalid-ratio", "0"], "--invalid-ratio"),
        ([], "--at"),
    ],
)
def test_the_command_refuses_bad_evolution_arguments(tmp_path, args, message):
    write_dataset(records(10), tmp_path / "customers.jsonl")
    arguments = ["--evolve", str(tmp_path / "customers.jsonl"), *args]
    if "--at" not in args and args:
        arguments += ["--at", AT]

    with pytest.raises(CommandError, match=message):
        evolve_command(*arguments)


def test_the_command_refuses_a_missing_dataset_to_evolve(tmp_path):
    with pytest.raises(CommandError, match="generate_customers"):
        evolve_command("--evolve", str(tmp_path / "nothing.jsonl"), "--at", AT)
