import email.utils
import json
import time

import pytest
import requests

from mocksource.faults import FaultConfig, decide
from tests.upstream import running_mocksource

PAGE = "/api/customers?page=1&limit=10"


def get(url, **kwargs):
    return requests.get(url, timeout=5, **kwargs)


def statuses(dataset, faults, paths):
    with running_mocksource(dataset, faults) as base_url:
        return [get(f"{base_url}{path}").status_code for path in paths]


def test_faults_are_off_by_default(crafted_dataset):
    assert set(statuses(crafted_dataset, None, [PAGE] * 20)) == {200}


def test_error_rate_one_answers_every_customer_request_with_a_5xx_json_error(crafted_dataset):
    with running_mocksource(crafted_dataset, FaultConfig(error_rate=1.0)) as base_url:
        responses = [get(f"{base_url}/api/customers?page={page}") for page in range(1, 31)]
        detail = get(f"{base_url}/api/customers/any-id")

    assert {response.status_code for response in responses} == {500, 502, 503}
    assert {response.json()["detail"] for response in responses} == {"Simulated upstream failure."}
    assert detail.status_code in {500, 502, 503}


def test_health_is_never_faulted(crafted_dataset):
    faults = FaultConfig(error_rate=0.5, disconnect_rate=0.5, latency_ms=500)
    with running_mocksource(crafted_dataset, faults) as base_url:
        started = time.monotonic()
        responses = [get(f"{base_url}/api/health") for _ in range(10)]

    assert {response.status_code for response in responses} == {200}
    assert time.monotonic() - started < 0.5


def test_rate_limit_sends_429_with_retry_after_in_seconds(crafted_dataset):
    with running_mocksource(crafted_dataset, FaultConfig(rate_limit_rate=1.0, retry_after_seconds=3)) as base_url:
        response = get(f"{base_url}{PAGE}")

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"
    assert response.json() == {"detail": "Rate limit exceeded."}


def test_rate_limit_sends_retry_after_as_an_http_date(crafted_dataset):
    faults = FaultConfig(rate_limit_rate=1.0, retry_after_format="http-date", retry_after_seconds=5)
    with running_mocksource(crafted_dataset, faults) as base_url:
        response = get(f"{base_url}{PAGE}")

    assert response.status_code == 429
    wait = email.utils.parsedate_to_datetime(response.headers["Retry-After"]).timestamp() - time.time()
    assert response.headers["Retry-After"].endswith(" GMT")
    assert 4 <= wait <= 7


def test_truncated_body_matches_its_content_length_and_is_not_json(crafted_dataset):
    with running_mocksource(crafted_dataset) as base_url:
        whole = get(f"{base_url}{PAGE}").content
    with running_mocksource(crafted_dataset, FaultConfig(truncate_rate=1.0)) as base_url:
        response = get(f"{base_url}{PAGE}")

    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(response.content) == len(whole) // 2
    assert response.content == whole[: len(whole) // 2]
    with pytest.raises(ValueError):
        response.json()


def test_malformed_body_is_html_or_json_of_the_wrong_shape(crafted_dataset):
    with running_mocksource(crafted_dataset, FaultConfig(malformed_rate=1.0)) as base_url:
        responses = [get(f"{base_url}/api/customers?page={page}") for page in range(1, 21)]

    assert {response.status_code for response in responses} == {200}
    bodies = {response.content for response in responses}
    assert any(body.startswith(b"<html>") for body in bodies)
    wrong_shapes = [json.loads(body) for body in bodies if body.startswith(b"{")]
    assert wrong_shapes
    assert all(not isinstance(shape.get("data"), list) for shape in wrong_shapes)


def test_disconnect_announces_the_whole_body_and_breaks_the_read(crafted_dataset):
    with (
        running_mocksource(crafted_dataset, FaultConfig(disconnect_rate=1.0)) as base_url,
        pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"),
    ):
        get(f"{base_url}{PAGE}")


def test_latency_delays_customer_requests(crafted_dataset):
    with running_mocksource(crafted_dataset, FaultConfig(latency_ms=200)) as base_url:
        started = time.monotonic()
        response = get(f"{base_url}{PAGE}")

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.2


def test_drip_streams_the_whole_body_slowly(crafted_dataset):
    with running_mocksource(crafted_dataset, FaultConfig(drip_bytes_per_second=2000)) as base_url:
        started = time.monotonic()
        # A read timeout below the total time never fires: bytes keep coming.
        response = requests.get(f"{base_url}/api/customers?limit=3", timeout=(5, 0.3))
        elapsed = time.monotonic() - started

    assert len(response.content) > 800
    assert response.json()["limit"] == 3
    assert elapsed >= len(response.content) / 2000 - 0.1


def test_faults_are_deterministic_for_a_seed(crafted_dataset):
    paths = [f"/api/customers?page={page % 5 + 1}" for page in range(40)]
    faults = FaultConfig(seed=11, error_rate=0.3, rate_limit_rate=0.2)

    first = statuses(crafted_dataset, faults, paths)

    assert statuses(crafted_dataset, faults, paths) == first
    assert statuses(crafted_dataset, FaultConfig(seed=12, error_rate=0.3, rate_limit_rate=0.2), paths) != first
    assert {200, 429} <= set(first)


def test_retrying_the_same_page_eventually_succeeds(crafted_dataset):
    with running_mocksource(crafted_dataset, FaultConfig(seed=5, error_rate=0.5)) as base_url:
        attempts = {}
        for page in range(1, 21):
            for attempt in range(1, 30):
                if get(f"{base_url}/api/customers?page={page}&limit=1").status_code == 200:
                    attempts[page] = attempt
                    break

    assert sorted(attempts) == list(range(1, 21))
    assert max(attempts.values()) > 1


def test_decision_depends_on_seed_request_and_attempt():
    config = FaultConfig(seed=1, error_rate=0.5)
    draws = [decide(config, PAGE, attempt).fault for attempt in range(200)]

    assert draws == [decide(config, PAGE, attempt).fault for attempt in range(200)]
    assert 60 < draws.count(None) < 140


@pytest.mark.parametrize(
    "knobs",
    [
        {"error_rate": 1.5},
        {"error_rate": -0.1},
        {"error_rate": 0.6, "truncate_rate": 0.6},
        {"retry_after_format": "minutes"},
        {"latency_ms": -1},
    ],
)
def test_impossible_fault_configs_are_refused(knobs):
    with pytest.raises(ValueError):
        FaultConfig(**knobs)
