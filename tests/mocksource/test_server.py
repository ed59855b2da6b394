import json

import pytest
import requests

from mocksource.dataset import write_dataset
from tests.mocksource.datasets import GENERATED_COUNT
from tests.records import record, records
from tests.upstream import running_mocksource

LIMIT_ERROR = {"detail": "Invalid value for: limit.", "errors": {"limit": ["Must be an integer between 1 and 100."]}}
PAGE_ERROR = {"detail": "Invalid value for: page.", "errors": {"page": ["Must be an integer of at least 1."]}}
BAD_VALUES = [
    "0",
    "-1",
    "abc",
    "1.5",
    "",
    " 5",
    "5 ",
    "+5",
    "1e2",
    "0x10",
    "\u0661",
]  # the last is an Arabic-Indic digit one


def get(url, **kwargs):
    return requests.get(url, timeout=5, **kwargs)


def file_records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_health_reports_ok_and_the_record_count(upstream):
    response = get(f"{upstream}/api/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "total": GENERATED_COUNT}


def test_list_defaults_to_the_first_page_of_ten(upstream, generated_dataset):
    response = get(f"{upstream}/api/customers")

    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["data", "total", "page", "limit"]
    assert body["data"] == file_records(generated_dataset)[:10]
    assert (body["total"], body["page"], body["limit"]) == (GENERATED_COUNT, 1, 10)


def test_list_serves_the_requested_slice_in_file_order(upstream, generated_dataset):
    body = get(f"{upstream}/api/customers", params={"page": 3, "limit": 7}).json()

    assert body["data"] == file_records(generated_dataset)[14:21]
    assert (body["page"], body["limit"]) == (3, 7)


@pytest.mark.parametrize("value", [*BAD_VALUES, "101", "99999999999999999999"])
def test_invalid_limit_is_rejected_with_the_project_error_shape(upstream, value):
    response = get(f"{upstream}/api/customers", params={"limit": value})

    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == LIMIT_ERROR


@pytest.mark.parametrize("value", BAD_VALUES)
def test_invalid_page_is_rejected_with_the_project_error_shape(upstream, value):
    response = get(f"{upstream}/api/customers", params={"page": value})

    assert response.status_code == 400
    assert response.json() == PAGE_ERROR


def test_every_invalid_parameter_is_named(upstream):
    response = get(f"{upstream}/api/customers?page=abc&limit=0")

    assert response.status_code == 400
    assert response.json() == {
        "detail": "Invalid value for: limit, page.",
        "errors": {"limit": ["Must be an integer between 1 and 100."], "page": ["Must be an integer of at least 1."]},
    }


def test_a_repeated_parameter_is_rejected(upstream):
    response = get(f"{upstream}/api/customers?limit=5&limit=6")

    assert response.status_code == 400
    assert response.json() == {"detail": "Invalid value for: limit.", "errors": {"limit": ["Must be given only once."]}}


def test_largest_limit_is_accepted(upstream):
    body = get(f"{upstream}/api/customers", params={"limit": 100}).json()

    assert len(body["data"]) == 100


@pytest.mark.parametrize("page", [GENERATED_COUNT // 100 + 1, 10**30])
def test_page_past_the_end_is_empty_with_the_true_total(upstream, page):
    response = get(f"{upstream}/api/customers", params={"page": page, "limit": 100})

    assert response.status_code == 200
    assert response.json() == {"data": [], "total": GENERATED_COUNT, "page": page, "limit": 100}


def test_last_page_is_partial(crafted_dataset):
    with running_mocksource(crafted_dataset) as base_url:
        body = get(f"{base_url}/api/customers", params={"page": 3, "limit": 10}).json()

    assert [record["first_name"] for record in body["data"]] == [f"First{index}" for index in range(20, 25)]


@pytest.mark.parametrize("limit", [1, 7, 100])
def test_walking_every_page_yields_every_record_once_in_file_order(upstream, generated_dataset, limit):
    walked, page = [], 1
    while batch := get(f"{upstream}/api/customers", params={"page": page, "limit": limit}).json()["data"]:
        walked.extend(batch)
        page += 1

    assert walked == file_records(generated_dataset)


def test_customer_is_served_by_id(upstream, generated_dataset):
    record = file_records(generated_dataset)[123]

    response = get(f"{upstream}/api/customers/{record['customer_id']}")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == record


def test_repeated_customer_id_is_served_as_its_first_record(tmp_path):
    first, second = records(2)
    write_dataset([first, {**second, "customer_id": first["customer_id"]}], tmp_path / "customers.jsonl")

    with running_mocksource(tmp_path / "customers.jsonl") as base_url:
        body = get(f"{base_url}/api/customers/{first['customer_id']}").json()

    assert body["email"] == first["email"]


@pytest.mark.parametrize(
    "customer_id", ["00000000-0000-0000-0000-000000000000", "not-a-uuid", "6157CE3E-A2F3-5A39-ABC5-D830CE0FA8B5"]
)
def test_unknown_customer_id_is_404(upstream, customer_id):
    response = get(f"{upstream}/api/customers/{customer_id}")

    assert response.status_code == 404
    assert response.json() == {"detail": "Customer not found."}


@pytest.mark.parametrize("path", ["/", "/api", "/api/customers/", "/api/customers/a/b", "/api/health/", "/api/other"])
def test_other_paths_are_404_json(upstream, path):
    response = get(f"{upstream}{path}")

    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "HEAD"])
@pytest.mark.parametrize("path", ["/api/health", "/api/customers", "/api/customers/some-id"])
def test_methods_other_than_get_are_405_json(upstream, method, path):
    response = requests.request(method, f"{upstream}{path}", timeout=5)

    assert response.status_code == 405
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Allow"] == "GET"
    if method != "HEAD":
        assert response.json() == {"detail": f'Method "{method}" not allowed.'}


def test_balance_keeps_two_decimals_in_the_raw_json(crafted_dataset):
    with running_mocksource(crafted_dataset) as base_url:
        page = get(f"{base_url}/api/customers", params={"limit": 25}).text
        detail = get(f"{base_url}/api/customers/{record(2)['customer_id']}").text

    # records(...)[2] has a balance of 246.90: the trailing zero must survive.
    assert '"account_balance":246.90,' in page
    assert '"account_balance":246.90,' in detail


def test_empty_dataset_is_served(tmp_path):
    write_dataset([], tmp_path / "customers.jsonl")

    with running_mocksource(tmp_path / "customers.jsonl") as base_url:
        health = get(f"{base_url}/api/health").json()
        body = get(f"{base_url}/api/customers").json()

    assert health == {"status": "ok", "total": 0}
    assert body == {"data": [], "total": 0, "page": 1, "limit": 10}
