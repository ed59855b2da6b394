import pytest

from mocksource.dataset import write_dataset
from mocksource.store import DatasetError, Store
from tests.records import records


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
