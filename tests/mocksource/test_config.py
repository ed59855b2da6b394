import pytest

from mocksource.config import DEFAULT_DATASET, PROJECT_ROOT, ConfigurationError, dataset_path, fault_config
from mocksource.faults import FaultConfig


def test_defaults_serve_the_project_dataset_without_faults():
    assert dataset_path({}) == DEFAULT_DATASET
    assert DEFAULT_DATASET.parts[-2:] == ("data", "customers.jsonl")
    assert fault_config({}) == FaultConfig()


def test_every_knob_is_read_from_its_variable():
    environ = {
        "MOCKSOURCE_DATASET": "elsewhere/customers.jsonl",
        "MOCKSOURCE_FAULT_SEED": "9",
        "MOCKSOURCE_ERROR_RATE": "0.1",
        "MOCKSOURCE_RATE_LIMIT_RATE": "0.2",
        "MOCKSOURCE_RETRY_AFTER_FORMAT": "http-date",
        "MOCKSOURCE_RETRY_AFTER_SECONDS": "4",
        "MOCKSOURCE_LATENCY_MS": "25",
        "MOCKSOURCE_TRUNCATE_RATE": "0.05",
        "MOCKSOURCE_MALFORMED_RATE": "0.05",
        "MOCKSOURCE_DISCONNECT_RATE": "0.05",
        "MOCKSOURCE_DRIP_BYTES_PER_SECOND": "1000",
    }

    assert dataset_path(environ) == PROJECT_ROOT / "elsewhere" / "customers.jsonl"
    assert fault_config(environ) == FaultConfig(
        seed=9,
        error_rate=0.1,
        rate_limit_rate=0.2,
        retry_after_format="http-date",
        retry_after_seconds=4,
        latency_ms=25,
        truncate_rate=0.05,
        malformed_rate=0.05,
        disconnect_rate=0.05,
        drip_bytes_per_second=1000,
    )


def test_absolute_dataset_path_is_kept(tmp_path):
    assert dataset_path({"MOCKSOURCE_DATASET": str(tmp_path / "c.jsonl")}) == tmp_path / "c.jsonl"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MOCKSOURCE_ERROR_RATE", "lots"),
        ("MOCKSOURCE_ERROR_RATE", "1.5"),
        ("MOCKSOURCE_DISCONNECT_RATE", "nan"),
        ("MOCKSOURCE_LATENCY_MS", "-5"),
        ("MOCKSOURCE_FAULT_SEED", "1.5"),
        ("MOCKSOURCE_RETRY_AFTER_FORMAT", "minutes"),
    ],
)
def test_bad_values_name_their_variable(name, value):
    with pytest.raises(ConfigurationError, match=name):
        fault_config({name: value})


def test_rates_adding_up_past_one_are_refused():
    with pytest.raises(ConfigurationError, match="add up"):
        fault_config({"MOCKSOURCE_ERROR_RATE": "0.7", "MOCKSOURCE_TRUNCATE_RATE": "0.7"})
