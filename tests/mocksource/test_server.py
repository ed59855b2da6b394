import json
import time
import tracemalloc
from io import BytesIO
from types import SimpleNamespace

import pytest
import requests

from mocksource import server
from mocksource.dataset import encode_record, write_dataset
from mocksource.faults import FaultConfig
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


# --- Changes since a time, and deletions ------------------------------------------------

CHANGED_AT = "2026-12-02T00:00:00Z"
TIME_RULE = "Must be an ISO-8601 date and time with seconds and a UTC offset, such as 2026-12-02T00:00:00Z."
BAD_TIMES = ["yesterday", "2026-13-01T00:00:00Z", "2026-12-01T00:00:00", "2026-12-01", "", "2026-12-01T00:00:00 00:00"]


def changing_records():
    """60 records: the even ones modified at one shared CHANGED_AT, the odd ones never."""
    rows = records(60)
    for index, row in enumerate(rows):
        row["updated_at"] = row["created_at"] if index % 2 else CHANGED_AT
    return rows


def changing_tombstones():
    early = [{"customer_id": f"gone-{index:02d}", "deleted_at": "2026-11-01T00:00:00Z"} for index in range(5)]
    late = [{"customer_id": f"gone-{index:02d}", "deleted_at": CHANGED_AT} for index in range(20, 5, -1)]
    return early + late


@pytest.fixture(scope="module")
def changing(tmp_path_factory):
    path = tmp_path_factory.mktemp("changing") / "customers.jsonl"
    write_dataset(changing_records(), path, tombstones=changing_tombstones())
    with running_mocksource(path) as base_url:
        yield base_url


def walk(url, params, limit):
    walked, page = [], 1
    while True:
        body = get(url, params={**params, "page": page, "limit": limit}).json()
        assert list(body) == ["data", "total", "page", "limit"]
        if not body["data"]:
            return walked, body["total"]
        walked.extend(body["data"])
        page += 1


def as_served(rows):
    return [json.loads(encode_record(row)) for row in rows]


def in_change_order(rows):
    # Every time in these rows has the same width and a Z, so text order is time order.
    return as_served(sorted(rows, key=lambda row: (row["updated_at"], row["customer_id"])))


@pytest.mark.parametrize("limit", [1, 7, 100])
def test_updated_since_walks_every_record_modified_at_or_after_it_in_updated_at_then_id_order(changing, limit):
    walked, total = walk(f"{changing}/api/customers", {"updated_since": CHANGED_AT}, limit)

    # 30 records share one updated_at: their order, and so every page, is fixed by the id.
    assert [row["customer_id"] for row in walked] == sorted(row["customer_id"] for row in changing_records()[::2])
    assert walked == in_change_order(changing_records()[::2])
    assert total == 30


def test_updated_since_includes_a_record_modified_at_that_very_time(changing):
    rows = changing_records()
    since = rows[41]["updated_at"]  # 2024-01-01T00:41:00Z

    walked, total = walk(f"{changing}/api/customers", {"updated_since": since}, 100)

    assert walked == in_change_order(row for row in rows if row["updated_at"] >= since)
    assert walked[0] == as_served([rows[41]])[0]
    assert total == 30 + 10


def test_updated_since_takes_any_utc_offset_and_fractions_of_a_second(changing):
    just_after = get(f"{changing}/api/customers", params={"updated_since": "2024-01-01T00:41:00.000001Z"}).json()
    same_instant = get(f"{changing}/api/customers", params={"updated_since": "2023-12-31T19:41:00-05:00"}).json()

    assert just_after["total"] == 39
    assert same_instant["total"] == 40


def test_updated_since_after_every_change_is_an_empty_page_with_total_zero(changing):
    body = get(f"{changing}/api/customers", params={"updated_since": "2026-12-02T00:00:01Z"}).json()

    assert body == {"data": [], "total": 0, "page": 1, "limit": 10}


def test_without_updated_since_the_listing_is_still_every_line_in_file_order(changing):
    walked, total = walk(f"{changing}/api/customers", {}, 7)

    assert walked == as_served(changing_records())
    assert total == 60


@pytest.mark.parametrize("value", BAD_TIMES)
def test_invalid_updated_since_is_a_400_naming_it(changing, value):
    response = get(f"{changing}/api/customers", params={"updated_since": value})

    assert response.status_code == 400
    assert response.json() == {
        "detail": "Invalid value for: updated_since.",
        "errors": {"updated_since": [TIME_RULE]},
    }


def test_invalid_updated_since_and_page_are_named_together(changing):
    response = get(f"{changing}/api/customers", params={"updated_since": "yesterday", "page": "0"})

    assert response.status_code == 400
    assert response.json()["detail"] == "Invalid value for: page, updated_since."
    assert response.json()["errors"] == {"page": [PAGE_ERROR["errors"]["page"][0]], "updated_since": [TIME_RULE]}


def test_a_repeated_updated_since_is_rejected(changing):
    response = get(f"{changing}/api/customers?updated_since={CHANGED_AT}&updated_since={CHANGED_AT}")

    assert response.status_code == 400
    assert response.json()["errors"] == {"updated_since": ["Must be given only once."]}


@pytest.mark.parametrize("limit", [1, 4, 100])
def test_deleted_lists_every_tombstone_in_deleted_at_then_id_order(changing, limit):
    walked, total = walk(f"{changing}/api/customers/deleted", {}, limit)

    assert walked == sorted(changing_tombstones(), key=lambda row: (row["deleted_at"], row["customer_id"]))
    assert walked[4:6] == [
        {"customer_id": "gone-04", "deleted_at": "2026-11-01T00:00:00Z"},
        {"customer_id": "gone-06", "deleted_at": CHANGED_AT},
    ]
    assert total == 20


def test_deleted_since_lists_tombstones_at_or_after_it(changing):
    at = get(f"{changing}/api/customers/deleted", params={"since": CHANGED_AT, "limit": 100}).json()
    after = get(f"{changing}/api/customers/deleted", params={"since": "2026-12-02T00:00:01+00:00"}).json()

    assert [row["customer_id"] for row in at["data"]] == [f"gone-{index:02d}" for index in range(6, 21)]
    assert at["total"] == 15
    assert after == {"data": [], "total": 0, "page": 1, "limit": 10}


@pytest.mark.parametrize("value", BAD_TIMES)
def test_invalid_since_is_a_400_naming_it(changing, value):
    response = get(f"{changing}/api/customers/deleted", params={"since": value})

    assert response.status_code == 400
    assert response.json() == {"detail": "Invalid value for: since.", "errors": {"since": [TIME_RULE]}}


def test_deleted_pages_are_validated_like_the_listing(changing):
    response = get(f"{changing}/api/customers/deleted", params={"limit": "101"})

    assert response.status_code == 400
    assert response.json() == LIMIT_ERROR


def test_a_dataset_without_deletions_has_no_tombstones(upstream):
    assert get(f"{upstream}/api/customers/deleted").json() == {"data": [], "total": 0, "page": 1, "limit": 10}


# --- A new generation under a running server ---------------------------------------------


def test_a_new_generation_is_served_from_the_next_request_without_a_restart(tmp_path):
    path = tmp_path / "customers.jsonl"
    write_dataset(records(5), path)
    with running_mocksource(path) as base_url:
        before = get(f"{base_url}/api/customers").json()["total"]
        write_dataset(records(8), path)
        after = get(f"{base_url}/api/customers").json()["total"]
        health = get(f"{base_url}/api/health").json()

    assert (before, after, health["total"]) == (5, 8, 8)


def test_a_request_in_flight_finishes_on_the_generation_it_started_with(tmp_path, monkeypatch):
    path = tmp_path / "customers.jsonl"
    write_dataset(records(5), path)
    during = []

    def evolve_while_asleep(seconds):
        # The configured latency is the pause of a request already under way: the upstream
        # moves to its next generation then, and a second request is served meanwhile.
        if not during:
            during.append(None)
            write_dataset(records(8, start=100), path)
            during[0] = get(f"{base_url}/api/customers", params={"limit": 100}).json()

    monkeypatch.setattr(server, "time", SimpleNamespace(sleep=evolve_while_asleep, time=time.time))
    with running_mocksource(path, FaultConfig(latency_ms=1)) as base_url:
        in_flight = get(f"{base_url}/api/customers", params={"limit": 100}).json()
        afterwards = get(f"{base_url}/api/customers", params={"limit": 100}).json()

    assert in_flight["data"] == as_served(records(5))
    assert in_flight["total"] == 5
    assert during[0]["data"] == afterwards["data"] == as_served(records(8, start=100))


def test_the_app_holds_no_python_object_per_record_across_generations(tmp_path):
    path = tmp_path / "customers.jsonl"
    write_dataset(changing_records() * 300, path, tombstones=changing_tombstones() * 300)
    app = server.create_app(path)

    def serve(query, route="/api/customers"):
        environ = {"PATH_INFO": route, "QUERY_STRING": query, "REQUEST_METHOD": "GET", "wsgi.input": BytesIO()}
        return b"".join(app(environ, lambda status, headers: None))

    serve(f"updated_since={CHANGED_AT}&page=50&limit=100")
    write_dataset(changing_records() * 400, path, tombstones=changing_tombstones() * 400)
    tracemalloc.start()
    serve(f"updated_since={CHANGED_AT}&page=50&limit=100")  # opens the new generation
    serve("page=200&limit=100")
    serve(f"since={CHANGED_AT}&page=20&limit=100", route="/api/customers/deleted")
    retained = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    total = json.loads(serve("limit=1"))["total"]
    app.store.close()

    # 24,000 records in the new generation; what the app keeps of them is a few mappings.
    assert total == 24_000
    assert retained < 16 * 1024
