import json
import tracemalloc

import pytest

from mocksource.dataset import write_dataset
from mocksource.store import DatasetError, Store
from mocksource.times import parse
from tests.records import record, records


def test_missing_dataset_names_the_command_that_creates_it(tmp_path):
    with pytest.raises(DatasetError, match="generate_customers"):
        Store(tmp_path / "customers.jsonl")


def test_index_that_does_not_match_the_data_file_is_refused(tmp_path):
    write_dataset(records(3), tmp_path / "customers.jsonl")
    with (tmp_path / "customers.jsonl").open("ab") as data_file:
        data_file.write(b'{"customer_id":"appended"}\n')

    with pytest.raises(DatasetError, match="does not match"):
        Store(tmp_path / "customers.jsonl")


def test_page_joins_lines_into_the_inside_of_a_json_array(tmp_path):
    write_dataset([{"n": 1}, {"n": 2}, {"n": 3}], tmp_path / "customers.jsonl")
    store = Store(tmp_path / "customers.jsonl")

    assert store.page(0, 2) == b'{"n":1},{"n":2}'
    assert store.page(2, 10) == b'{"n":3}'
    assert store.page(3, 4) == b""


def test_find_matches_the_exact_id_string(tmp_path):
    write_dataset([{"customer_id": "a"}], tmp_path / "customers.jsonl")

    assert Store(tmp_path / "customers.jsonl").find("a") == b'{"customer_id":"a"}'
    assert Store(tmp_path / "customers.jsonl").find("b") is None


def written(tmp_path, rows, tombstones=()):
    write_dataset(rows, tmp_path / "customers.jsonl", tombstones=tombstones)
    return Store(tmp_path / "customers.jsonl")


def ids_of(page):
    return [entry["customer_id"] for entry in json.loads(b"[" + page + b"]")]


def test_updated_page_orders_by_updated_at_then_customer_id(tmp_path):
    rows = [
        {"customer_id": "c", "updated_at": "2026-01-02T00:00:00Z"},
        {"customer_id": "b", "updated_at": "2026-01-01T00:00:00Z"},
        {"customer_id": "a", "updated_at": "2026-01-02T00:00:00Z"},
        {"customer_id": "d", "updated_at": "2026-01-01T23:00:00-02:00"},  # 2026-01-02T01:00:00Z
    ]
    store = written(tmp_path, rows)

    page, total = store.updated_page(parse("2020-01-01T00:00:00Z"), 0, 10)

    assert ids_of(page) == ["b", "a", "c", "d"]
    assert total == 4


def test_updated_page_starts_at_the_first_record_at_or_after_the_time(tmp_path):
    rows = [{"customer_id": str(second), "updated_at": f"2026-01-01T00:00:0{second}Z"} for second in range(5)]
    store = written(tmp_path, rows)

    assert store.updated_page(parse("2026-01-01T00:00:03Z"), 0, 10) == (store.page(3, 5), 2)
    assert store.updated_page(parse("2026-01-01T00:00:02.000001Z"), 0, 10)[1] == 2
    assert store.updated_page(parse("2026-01-01T00:00:05Z"), 0, 10) == (b"", 0)
    assert store.updated_page(parse("2026-01-01T00:00:00Z"), 4, 10) == (store.page(4, 5), 5)


def test_ties_on_updated_at_split_across_pages_without_overlap_or_gap(tmp_path):
    rows = records(50)
    for row in rows[::2]:
        row["updated_at"] = "2026-12-02T00:00:00Z"
    store = written(tmp_path, rows)
    since = parse("2026-12-02T00:00:00Z")

    walked = [ids_of(store.updated_page(since, start, start + 7)[0]) for start in range(0, 35, 7)]

    assert walked[-1] == []
    assert [customer_id for page in walked for customer_id in page] == sorted(row["customer_id"] for row in rows[::2])


def test_lines_without_a_readable_updated_at_are_only_in_the_full_listing(tmp_path):
    rows = [
        {"customer_id": "a"},
        {"customer_id": "b", "updated_at": "yesterday"},
        {"updated_at": "2026-01-01T00:00:00Z"},
    ]
    store = written(tmp_path, rows)

    assert store.total == 3
    assert store.updated_page(parse("1970-01-01T00:00:00Z"), 0, 10) == (b'{"updated_at":"2026-01-01T00:00:00Z"}', 1)


def test_tombstones_are_paged_in_deleted_at_then_customer_id_order_from_any_time(tmp_path):
    tombstones = [
        {"customer_id": "z", "deleted_at": "2026-01-01T00:00:00Z"},
        {"customer_id": "y", "deleted_at": "2026-02-01T00:00:00Z"},
        {"customer_id": "x", "deleted_at": "2026-02-01T00:00:00Z"},
    ]
    store = written(tmp_path, records(2), tombstones)

    assert store.deleted_page(None, 0, 2) == (
        b'{"customer_id":"z","deleted_at":"2026-01-01T00:00:00Z"},'
        b'{"customer_id":"x","deleted_at":"2026-02-01T00:00:00Z"}',
        3,
    )
    assert ids_of(store.deleted_page(None, 2, 4)[0]) == ["y"]
    assert ids_of(store.deleted_page(parse("2026-02-01T00:00:00Z"), 0, 10)[0]) == ["x", "y"]
    assert store.deleted_page(parse("2026-02-01T00:00:01Z"), 0, 10) == (b"", 0)


def test_a_dataset_is_a_pointer_to_its_current_generation(tmp_path):
    path = tmp_path / "customers.jsonl"
    write_dataset(records(3), path)
    first = path.resolve()
    write_dataset(records(4), path)
    second = path.resolve()
    write_dataset(records(5), path)

    # The previous generation stays for a server still reading it; older ones go.
    assert not first.exists()
    assert second.exists()
    assert path.is_symlink()
    assert path.resolve().parent.parent == second.parent.parent
    assert sorted(entry.name for entry in path.resolve().parent.iterdir()) == [
        "customers.jsonl",
        "customers.jsonl.deleted.idx",
        "customers.jsonl.deleted.jsonl",
        "customers.jsonl.ids.idx",
        "customers.jsonl.idx",
        "customers.jsonl.meta.json",
        "customers.jsonl.updated.idx",
    ]
    assert Store(path).total == 5


def test_a_store_keeps_reading_the_generation_it_opened(tmp_path):
    path = tmp_path / "customers.jsonl"
    write_dataset(records(3), path)
    store = Store(path)
    write_dataset(records(4), path)
    write_dataset(records(5), path)

    assert store.total == 3
    assert ids_of(store.page(0, 3)) == [row["customer_id"] for row in records(3)]
    assert store.replaced()
    assert not Store(path).replaced()


def test_an_open_store_holds_no_python_object_per_record(tmp_path):
    small, large = tmp_path / "small", tmp_path / "large"
    small.mkdir()
    large.mkdir()

    def retained(directory, count):
        write_dataset(records(count), directory / "customers.jsonl", tombstones=tombstones(count))
        tracemalloc.start()
        store = Store(directory / "customers.jsonl")
        store.updated_page(parse("2020-01-01T00:00:00Z"), count // 2, count // 2 + 100)
        store.deleted_page(parse("2020-01-01T00:00:00Z"), count // 2, count // 2 + 100)
        store.find(record(count - 1)["customer_id"])
        size = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        store.close()
        return size

    # What an open store keeps grows with nothing: the files are mapped, not read.
    assert retained(large, 20_000) < 64 * 1024
    assert retained(large, 20_000) - retained(small, 200) < 8 * 1024


def tombstones(count):
    return [{"customer_id": f"gone-{index}", "deleted_at": "2026-01-01T00:00:00Z"} for index in range(count)]
