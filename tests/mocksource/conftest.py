import pytest

from mocksource.dataset import generate_dataset, write_dataset
from tests.mocksource.datasets import GENERATED_COUNT, GENERATED_SEED
from tests.records import records
from tests.upstream import running_mocksource


@pytest.fixture(scope="session")
def generated_dataset(tmp_path_factory):
    """The generator's output at the smallest count that holds every invalid kind."""
    path = tmp_path_factory.mktemp("generated") / "customers.jsonl"
    generate_dataset(path, count=GENERATED_COUNT, seed=GENERATED_SEED)
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
