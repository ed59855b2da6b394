import pytest

from mocksource.dataset import generate_dataset, write_dataset
from tests.records import records
from tests.upstream import running_mocksource

GENERATED_COUNT = 1000


@pytest.fixture(scope="session")
def generated_dataset(tmp_path_factory):
    """The generator's output at the smallest count that holds every invalid kind."""
    path = tmp_path_factory.mktemp("generated") / "customers.jsonl"
    generate_dataset(path, count=GENERATED_COUNT, seed=42)
    return path


@pytest.fixture(scope="session")
def upstream(generated_dataset):
    with running_mocksource(generated_dataset) as base_url:
        yield base_url


@pytest.fixture
def crafted_dataset(tmp_path):
    path = tmp_path / "customers.jsonl"
    write_dataset(records(25), path)
    return path
